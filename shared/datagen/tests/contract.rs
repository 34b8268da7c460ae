//! Cross-check with the project's own contract code (`streamcube-model`): the
//! generated good rows pass its reader and validator, and exactly the bad rows
//! fail, in both formats; the catalog reads without rejections.

use streamcube_datagen::{BadRowKind, GenConfig, write_catalog, write_events, write_events_jsonl};
use streamcube_model::event::Validator;
use streamcube_model::reader::{EventReader, Format};

fn cfg() -> GenConfig {
    GenConfig {
        events: 20_000,
        viewers: 5_000,
        titles: 300,
        bad_rows: 2 * BadRowKind::ALL.len() as u32,
        ..GenConfig::default()
    }
}

/// (accepted, rejected) rows of a generated file, per the model crate.
fn judge(bytes: &[u8], format: Format) -> (u64, u64) {
    let validator = Validator::now();
    let mut reader = EventReader::new(bytes, format).expect("reader");
    let (mut ok, mut bad) = (0, 0);
    while let Some(row) = reader.next_row().expect("no I/O error") {
        match row.fields.as_ref().map(|f| validator.validate(f)) {
            Ok(Ok(_)) => ok += 1,
            _ => bad += 1,
        }
    }
    (ok, bad)
}

#[test]
fn csv_rows_are_judged_as_intended() {
    let mut buf = Vec::new();
    let s = write_events(&cfg(), &mut buf, |_| {}).unwrap();
    assert_eq!(judge(&buf, Format::Csv), (s.valid, s.bad_rows));
}

#[test]
fn jsonl_rows_are_judged_as_intended() {
    let mut buf = Vec::new();
    let s = write_events_jsonl(&cfg(), &mut buf, |_| {}).unwrap();
    assert_eq!(judge(&buf, Format::JsonLines), (s.valid, s.bad_rows));
}

#[test]
fn catalog_reads_cleanly() {
    let mut buf = Vec::new();
    let n = write_catalog(&cfg(), &mut buf).unwrap();
    let (entries, rejected, _) = streamcube_model::catalog::read_catalog(buf.as_slice()).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(entries.len(), n as usize);
}

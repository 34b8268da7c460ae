//! Accounting for every input row: per-file reports and quarantine records.
//!
//! The pipeline's first property is that nothing is lost: each row ends in silver (accepted),
//! is recognised as a resend (duplicate) or lands in the quarantine with its line and reasons
//! (rejected), and per file `rows = accepted + duplicates + rejected`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::FieldError;

/// The counts of one input (a file, a request, a batch).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Rejected rows per `field:reason`; a row with several problems counts under each.
    pub rejected_by_reason: BTreeMap<String, u64>,
}

impl FileReport {
    /// Counts one rejected row under each distinct `field:reason` it has.
    pub fn reject(&mut self, errors: &[FieldError]) {
        self.rejected += 1;
        let mut keys: Vec<String> = errors.iter().map(FieldError::key).collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            *self.rejected_by_reason.entry(k).or_default() += 1;
        }
    }

    /// Whether every row is accounted for.
    pub fn is_balanced(&self) -> bool {
        self.accepted
            .checked_add(self.duplicates)
            .and_then(|n| n.checked_add(self.rejected))
            == Some(self.rows)
    }

    /// Adds another report's counts to this one.
    pub fn absorb(&mut self, o: &FileReport) {
        self.rows += o.rows;
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        for (k, v) in &o.rejected_by_reason {
            *self.rejected_by_reason.entry(k.clone()).or_default() += v;
        }
    }
}

/// One quarantined row: where it was, what it was, and why it was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// 1-based line in the source (0 when the source has no lines, like a Kafka record).
    pub line: u64,
    /// The row as received (bytes that are not UTF-8 shown as U+FFFD).
    pub raw: String,
    pub errors: Vec<FieldError>,
    /// Where the row came from beyond the file, e.g. Kafka topic, partition and offset.
    #[serde(default, flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub origin: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Field, Reason};

    #[test]
    fn a_row_counts_once_per_distinct_reason() {
        let mut r = FileReport {
            rows: 2,
            ..FileReport::default()
        };
        let e = FieldError::new(Field::Country, Reason::UnknownCountry);
        r.reject(&[e, e, FieldError::new(Field::Device, Reason::UnknownDevice)]);
        r.accepted = 1;
        assert!(r.is_balanced());
        assert_eq!(
            r.rejected_by_reason.get("country:unknown_country"),
            Some(&1)
        );
        assert_eq!(r.rejected_by_reason.len(), 2);
    }

    #[test]
    fn quarantine_records_are_json_lines() {
        let rec = Rejection {
            line: 7,
            raw: "a,b".into(),
            errors: vec![FieldError::new(Field::Row, Reason::FieldCount)],
            origin: BTreeMap::from([("offset".to_owned(), serde_json::json!(42))]),
        };
        let text = serde_json::to_string(&rec).expect("json");
        assert_eq!(
            text,
            r#"{"line":7,"raw":"a,b","errors":[{"field":"row","reason":"field_count"}],"offset":42}"#
        );
        assert_eq!(serde_json::from_str::<Rejection>(&text).expect("back"), rec);
    }
}

//! Privacy and residency on the AWS backend, on the local AWS emulator (`moto_server`, started by
//! `scripts/emulator.sh`): a catalog, a CSV and a JSON-lines file (with refused rows and resends)
//! through the bronze path, batches through the HTTP handler the Lambda functions run (a refused
//! event, a resend, a batch with a `DE` event that gets 403), consolidation, an erasure through
//! `DELETE /v1/viewers/{id}`, consolidation again. Then every item of the three DynamoDB tables,
//! every object of both buckets and every log line (captured at trace level) is searched for the
//! raw viewer ids sent, the erased viewer is looked for in silver and in every cell block, and
//! the cube is compared with a recount of the events sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::query::{Query, QueryLimits, first_hour};
use streamcube_pipeline::{Pipeline, PipelineConfig};

mod common;

use common::{backend, logs, scan};

#[path = "../../../tests/support/probe.rs"]
mod probe;

use probe::{Ev, Gen, contains_bytes, found_in, hmac_sha256, token};

const KEY: [u8; 32] = [0x5a; 32];
const DAYS: [&str; 2] = ["2026-05-12", "2026-05-13"];

/// The pipeline's pseudonym of `viewer`, computed independently of its code.
fn pseudonym(viewer: &str) -> [u8; 32] {
    hmac_sha256(&KEY, viewer.as_bytes())
}

/// (plays, unique viewers) per group.
type Tally = BTreeMap<Vec<String>, (u64, u64)>;

/// The independent recount: each event id once, erased viewers left out.
fn recount(events: &[Ev], erased: &HashSet<String>, key: impl Fn(&Ev) -> Vec<String>) -> Tally {
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<Vec<String>, (u64, HashSet<&str>)> = BTreeMap::new();
    for e in events {
        if !seen.insert(e.id.as_str()) || erased.contains(&e.viewer) {
            continue;
        }
        let g = groups.entry(key(e)).or_default();
        g.0 += 1;
        g.1.insert(e.viewer.as_str());
    }
    groups
        .into_iter()
        .map(|(k, (p, v))| (k, (p, v.len() as u64)))
        .collect()
}

fn recounts(events: &[Ev], erased: &HashSet<String>) -> Vec<Tally> {
    vec![
        recount(events, erased, |e| vec![e.day()]),
        recount(events, erased, |e| vec![e.hour()]),
        recount(events, erased, |e| vec![e.day(), e.country.to_owned()]),
        recount(events, erased, |e| vec![e.day(), e.content.clone()]),
    ]
}

/// What the cube answers through `GET /v1/cube`, for the groupings of [`recounts`].
async fn answers(p: &Pipeline, responses: &mut Vec<String>) -> Vec<Tally> {
    let mut out = Vec::new();
    for (granularity, group_by) in [
        ("day", None),
        ("hour", None),
        ("day", Some("country")),
        ("day", Some("content_id")),
    ] {
        let mut uri = format!(
            "/v1/cube?from={}&to={}&granularity={granularity}&measures=plays,unique_viewers",
            DAYS[0], DAYS[1]
        );
        if let Some(g) = group_by {
            uri.push_str(&format!("&group_by={g}"));
        }
        let (status, body) = call(p, "GET", &uri, None, "").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let tally = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let mut key = vec![r[granularity].as_str().expect("bucket").to_owned()];
                if let Some(g) = group_by {
                    key.push(r[g].as_str().expect("group").to_owned());
                }
                let n = |k: &str| r[k].as_u64().expect("number");
                (key, (n("plays"), n("unique_viewers")))
            })
            .collect();
        out.push(tally);
        responses.push(body);
    }
    out
}

/// One request through the HTTP handler the Lambda functions and `streamcube serve` run.
async fn call(
    p: &Pipeline,
    method: &str,
    uri: &str,
    ctype: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(uri);
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let req = req.body(Bytes::from(body.to_owned())).expect("request");
    let resp = streamcube_pipeline::http::handle(p, req, "privacy-test").await;
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(resp.body()).into_owned(),
    )
}

/// Every byte of an item's names and values.
fn item_bytes(item: &HashMap<String, AttributeValue>) -> Vec<u8> {
    fn value(v: &AttributeValue, out: &mut Vec<u8>) {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => out.extend_from_slice(s.as_bytes()),
            AttributeValue::B(b) => out.extend_from_slice(b.as_ref()),
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => {
                for s in v {
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
            }
            AttributeValue::Bs(v) => {
                for b in v {
                    out.extend_from_slice(b.as_ref());
                    out.push(0);
                }
            }
            AttributeValue::L(l) => l.iter().for_each(|x| value(x, out)),
            AttributeValue::M(m) => {
                for (k, x) in m {
                    out.extend_from_slice(k.as_bytes());
                    out.push(0);
                    value(x, out);
                }
            }
            AttributeValue::Bool(b) => out.push(u8::from(*b)),
            _ => out.extend_from_slice(format!("{v:?}").as_bytes()),
        }
        out.push(0);
    }
    let mut out = Vec::new();
    for (k, v) in item {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        value(v, &mut out);
    }
    out
}

/// Every object of a bucket, with its bytes.
async fn objects(store: &Arc<dyn ObjectStore>) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<_> = store.list(None).try_collect().await.expect("list");
    let mut out = Vec::new();
    for m in metas {
        let bytes = store
            .get(&m.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.push((m.location.to_string(), bytes.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_viewer_id_on_aws_and_erasure_reaches_every_sketch() {
    let logs = logs("trace");
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut g = Gen::new(seed, DAYS);
    let aws = backend("privacy").await;
    let stores = aws.stores().expect("the S3 clients build");
    let mut config = PipelineConfig::new(Pseudonymizer::new(
        &PseudonymKey::from_bytes("k1", KEY.to_vec()).expect("key"),
    ));
    config.served_countries = PipelineConfig::parse_countries("BR,AR").expect("countries");
    let p = Pipeline::new(stores.clone(), config);
    let run = aws.names.silver_table.clone();

    // Accepted viewers send valid events; refused ones only rows a file sends and the pipeline
    // refuses; API-only ones only requests the API refuses.
    let viewers: Vec<String> = (0..16)
        .map(|_| format!("viewer-Zq7{}", token(&mut g.rng, 14)))
        .collect();
    let refused: Vec<String> = (0..4)
        .map(|_| format!("viewer-Qx9{}", token(&mut g.rng, 14)))
        .collect();
    let api_only: Vec<String> = (0..3)
        .map(|_| format!("viewer-Wk4{}", token(&mut g.rng, 14)))
        .collect();
    let erased_viewer = viewers[0].clone();
    let always = [&erased_viewer];

    // Files through the bronze path.
    let catalog = "content_id,title,genre,release_year,duration_seconds\n\
                   c1,One,drama,2019,5400\nc2,Two,comedy,2021,1800\nc3,Three,drama,2020,3600\n\
                   c4,Four,documentary,2018,2700\n";
    let csv_events = g.batch(&viewers, &always, 80);
    let mut csv_text = String::from(
        "event_id,occurred_at,viewer_id,content_id,device,country,watch_seconds,bitrate_kbps,buffering_ms,completed\n",
    );
    for e in &csv_events {
        csv_text.push_str(&e.csv());
        csv_text.push('\n');
    }
    csv_text.push_str(&csv_events[2].csv());
    csv_text.push('\n');
    csv_text.push_str(&format!(
        "bad-1,2026-05-12T04:00:00Z,{},c1,toaster,BR,60,,,true\n",
        refused[0]
    ));
    csv_text.push_str(&format!(
        "bad-2,2026-05-12T05:00:00Z,{},c2,tv,DE,60,,,true\n",
        refused[1]
    ));
    let jsonl_events = g.batch(&viewers, &always, 50);
    let mut jsonl_text: String = jsonl_events
        .iter()
        .map(|e| format!("{}\n", e.json()))
        .collect();
    jsonl_text.push_str(&format!(
        "{{\"event_id\":\"bad-3\",\"viewer_id\":\"{}\" broken\n",
        refused[2]
    ));
    let mut de_row = g.event(&refused[3], DAYS[1]);
    de_row.id = "bad-4".into();
    de_row.country = "DE";
    jsonl_text.push_str(&format!("{}\n", de_row.json()));
    let landed: BTreeMap<String, Vec<u8>> = [
        (format!("reference/catalog/{run}/catalog.csv"), catalog),
        (format!("events/{run}/events.csv"), csv_text.as_str()),
        (format!("events/{run}/events.jsonl"), jsonl_text.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_bytes().to_vec()))
    .collect();
    let mut quarantine_keys = Vec::new();
    for (key, bytes) in &landed {
        stores
            .bronze
            .put(&Path::from(key.as_str()), bytes.clone().into())
            .await
            .expect("landed");
    }
    for key in landed.keys().rev() {
        // reference/ sorts after events/: the catalog first.
        let out = p.process_object(key, None).await.expect("processed");
        let c = &out.report.counts;
        assert_eq!(c.rows, c.accepted + c.duplicates + c.rejected);
        if key.ends_with(".csv") && key.starts_with("events/") {
            assert_eq!(
                (c.accepted, c.duplicates, c.rejected),
                (csv_events.len() as u64, 1, 2),
                "{c:?}"
            );
        }
        if key.ends_with(".jsonl") {
            assert_eq!(
                (c.accepted, c.duplicates, c.rejected),
                (jsonl_events.len() as u64, 0, 2),
                "{c:?}"
            );
        }
        if key.starts_with("events/") {
            assert_eq!(
                c.rejected_by_reason.get("country:country_not_served"),
                Some(&1),
                "{c:?}"
            );
        }
        quarantine_keys.extend(out.report.quarantine_objects().map(str::to_owned));
    }
    assert_eq!(quarantine_keys.len(), 2, "{quarantine_keys:?}");

    // Batches through the API handler.
    let mut responses = Vec::new();
    let api_events = g.batch(&viewers, &always, 40);
    let mut array: Vec<serde_json::Value> = api_events.iter().map(Ev::json).collect();
    let mut invalid = g.event(&api_only[0], DAYS[0]);
    invalid.device = "fridge";
    array.insert(3, invalid.json());
    let (status, body) = call(
        &p,
        "POST",
        "/v1/events",
        Some("application/json"),
        &serde_json::Value::Array(array).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        r["accepted"].as_u64(),
        Some(api_events.len() as u64),
        "{body}"
    );
    assert_eq!(r["rejected"][0]["index"].as_u64(), Some(3), "{body}");
    responses.push(body);
    let (status, body) = call(
        &p,
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        &format!("{}\n", api_events[1].json()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""duplicates":1"#), "{body}");
    responses.push(body);

    let sent: Vec<Ev> = [&csv_events, &jsonl_events, &api_events]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let unique_sent = sent.iter().map(|e| &e.id).collect::<HashSet<_>>().len();
    assert_eq!(scan(&aws, &aws.names.silver_table).await.len(), unique_sent);

    // Residency: a batch with a DE event is refused whole; silver is unchanged.
    let mut foreign = g.event(&api_only[2], DAYS[0]);
    foreign.country = "DE";
    let batch = serde_json::json!([g.event(&api_only[1], DAYS[0]).json(), foreign.json()]);
    let (status, body) = call(
        &p,
        "POST",
        "/v1/events",
        Some("application/json"),
        &batch.to_string(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("country_not_served"), "{body}");
    responses.push(body);
    assert_eq!(scan(&aws, &aws.names.silver_table).await.len(), unique_sent);

    // Consolidate every hour of both days, as the stream would; compare with the recount.
    let days: Vec<chrono::NaiveDate> = DAYS.iter().map(|d| d.parse().expect("day")).collect();
    let hours: Vec<i64> = days
        .iter()
        .flat_map(|d| first_hour(*d)..first_hour(*d) + 24)
        .collect();
    for o in p.consolidate_hours(&hours).await.expect("consolidated") {
        assert!(o.result.is_ok(), "{o:?}");
    }
    let nobody = HashSet::new();
    assert_eq!(answers(&p, &mut responses).await, recounts(&sent, &nobody));

    // Erase through the API, consolidate again.
    let theirs = sent
        .iter()
        .filter(|e| e.viewer == erased_viewer)
        .map(|e| &e.id)
        .collect::<HashSet<_>>()
        .len();
    let (status, body) = call(
        &p,
        "DELETE",
        &format!("/v1/viewers/{erased_viewer}"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(r["events_deleted"].as_u64(), Some(theirs as u64), "{body}");
    responses.push(body);
    for o in p.consolidate_hours(&hours).await.expect("consolidated") {
        assert!(o.result.is_ok(), "{o:?}");
    }
    let erased: HashSet<String> = [erased_viewer.clone()].into();
    assert_eq!(
        answers(&p, &mut responses).await,
        recounts(&sent, &erased),
        "after the erasure the cube equals the recount without the erased viewer"
    );
    // The same through the pipeline's own query, at hour granularity per country.
    let q = Query::from_params(
        [
            ("from", DAYS[0]),
            ("to", DAYS[1]),
            ("granularity", "hour"),
            ("group_by", "country"),
            ("measures", "plays,unique_viewers"),
        ],
        &QueryLimits::default(),
    )
    .expect("query");
    let answer = p.query(&q).await.expect("answer");
    let got: Tally = answer
        .result
        .to_json_rows()
        .iter()
        .map(|r| {
            (
                vec![
                    r["hour"].as_str().expect("hour").to_owned(),
                    r["country"].as_str().expect("country").to_owned(),
                ],
                (
                    r["plays"].as_u64().expect("plays"),
                    r["unique_viewers"].as_u64().expect("uniques"),
                ),
            )
        })
        .collect();
    assert_eq!(
        got,
        recount(&sent, &erased, |e| vec![e.hour(), e.country.to_owned()])
    );

    // Every item of every table: no raw viewer id; the erased viewer in no silver item and in no
    // cell block; only the published generations' cells are left.
    let accepted_ids: BTreeSet<String> = viewers.iter().cloned().collect();
    let refused_ids: BTreeSet<String> = refused.iter().cloned().collect();
    let api_ids: BTreeSet<String> = api_only.iter().cloned().collect();
    let every_id: Vec<String> = accepted_ids
        .iter()
        .chain(&refused_ids)
        .chain(&api_ids)
        .cloned()
        .collect();
    let gone = pseudonym(&erased_viewer);
    let silver = scan(&aws, &aws.names.silver_table).await;
    assert_eq!(silver.len(), unique_sent - theirs);
    let mut silver_viewers = BTreeSet::new();
    for item in &silver {
        let bytes = item_bytes(item);
        let leaked = found_in(&String::from_utf8_lossy(&bytes), &every_id);
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} in silver item {item:?}"
        );
        match item.get("viewer") {
            Some(AttributeValue::S(v)) => silver_viewers.insert(v.clone()),
            other => panic!("silver item without a viewer: {other:?}"),
        };
    }
    let kept: BTreeSet<String> = viewers[1..]
        .iter()
        .filter(|v| sent.iter().any(|e| &e.viewer == *v))
        .map(|v| hex::encode(pseudonym(v)))
        .collect();
    assert!(!silver_viewers.contains(&hex::encode(gone)));
    assert_eq!(
        silver_viewers, kept,
        "silver holds exactly the other viewers"
    );

    let mut manifests = BTreeMap::new();
    for day in &days {
        let m = stores
            .gold
            .manifest(*day)
            .await
            .expect("manifest")
            .expect("published");
        assert_eq!(
            m.events,
            recount(&sent, &erased, |e| vec![e.day()])[&vec![day.to_string()]].0
        );
        manifests.insert(day.to_string(), m);
    }
    let mut cell_items = 0;
    let mut kept_seen = 0;
    for item in scan(&aws, &aws.names.cube_table).await {
        let bytes = item_bytes(&item);
        let leaked = found_in(&String::from_utf8_lossy(&bytes), &every_id);
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} in a cube item"
        );
        assert!(
            !contains_bytes(&bytes, &gone[..8]) && !contains_bytes(&bytes, &gone),
            "the erased viewer is still in cube item {:?}",
            item.get("pk")
        );
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            panic!("cube item without pk");
        };
        if let Some(rest) = pk.strip_prefix("cells#") {
            // cells#<day>#<level>#<generation>: only what the manifest references is left.
            let parts: Vec<&str> = rest.split('#').collect();
            let m = &manifests[parts[0]];
            let generation: u64 = parts[2].parse().expect("generation");
            let referenced = m.referenced().iter().any(|(level, g)| {
                *g == generation
                    && match level {
                        streamcube_pipeline::ports::Level::Day => parts[1] == "d",
                        streamcube_pipeline::ports::Level::Hour(h) => {
                            parts[1] == format!("h{h:02}")
                        }
                    }
            });
            assert!(referenced, "cells of an unpublished generation left: {pk}");
            cell_items += 1;
            if viewers[1..]
                .iter()
                .any(|v| contains_bytes(&bytes, &pseudonym(v)[..8]))
            {
                kept_seen += 1;
            }
        }
    }
    assert!(cell_items > 0 && kept_seen > 0, "the scan sees sketches");
    for item in scan(&aws, &aws.names.catalog_table).await {
        let leaked = found_in(&String::from_utf8_lossy(&item_bytes(&item)), &every_id);
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} in the catalog table"
        );
    }
    let partitions = aws
        .glue
        .get_partitions()
        .database_name(&aws.names.glue_database)
        .table_name(&aws.names.glue_table)
        .send()
        .await
        .expect("partitions");
    let glue_text = format!("{partitions:?}");
    assert!(glue_text.contains(DAYS[0]), "{glue_text}");
    assert!(found_in(&glue_text, &every_id).is_empty());

    // Every object of both buckets (other tests' objects too: the ids are this run's own).
    let mut bronze_with_ids = BTreeSet::new();
    for (key, bytes) in objects(&stores.bronze).await {
        let text = String::from_utf8_lossy(&bytes);
        if !found_in(&text, &every_id).is_empty() {
            assert_eq!(landed.get(&key), Some(&bytes), "bronze object {key}");
            bronze_with_ids.insert(key);
        }
    }
    assert_eq!(
        bronze_with_ids,
        landed
            .keys()
            .filter(|k| k.starts_with("events/"))
            .cloned()
            .collect()
    );
    let mut lake_keys = BTreeSet::new();
    let mut quarantine_text = String::new();
    for (key, bytes) in objects(&stores.lake).await {
        let text = String::from_utf8_lossy(&bytes);
        let accepted = found_in(&text, accepted_ids.iter().chain(&api_ids));
        assert!(
            accepted.is_empty(),
            "raw viewer ids {accepted:?} in lake object {key}"
        );
        let refused_here = found_in(&text, &refused_ids);
        if key.starts_with("quarantine/") {
            quarantine_text.push_str(&text);
        } else {
            assert!(
                refused_here.is_empty(),
                "raw viewer ids {refused_here:?} in {key}"
            );
        }
        lake_keys.insert(key);
    }
    // The quarantine holds the refused rows (the scan can see ids), and the lake holds this
    // run's reports and both days' exports.
    assert_eq!(
        found_in(&quarantine_text, &refused_ids).len(),
        refused.len()
    );
    for key in quarantine_keys {
        assert!(lake_keys.contains(&key), "{key}");
    }
    for day in DAYS {
        for key in [
            format!("exports/cube/day={day}/cube.csv"),
            format!("gold/cube/day={day}/cube.parquet"),
        ] {
            assert!(lake_keys.contains(&key), "{key} in {lake_keys:?}");
        }
    }
    assert!(lake_keys.contains(&format!("reports/events/{run}/events.csv.json")));

    // Every log line and every response: no raw viewer id at all.
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("lock")).into_owned();
    assert!(logged.contains("day published"), "the logs were captured");
    let leaked = found_in(&logged, &every_id);
    assert!(leaked.is_empty(), "raw viewer ids {leaked:?} in the logs");
    for body in &responses {
        let leaked = found_in(body, &every_id);
        assert!(
            leaked.is_empty(),
            "raw viewer ids {leaked:?} in a response: {body}"
        );
    }
    eprintln!(
        "{} silver items, {cell_items} cell items, {} lake objects, {} bytes of logs",
        silver.len(),
        lake_keys.len(),
        logged.len()
    );
}

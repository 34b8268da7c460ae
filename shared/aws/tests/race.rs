//! Two consolidations of the same day racing on the AWS backend, on the local AWS emulator
//! (`moto_server`, started by `scripts/emulator.sh`): two tasks, each with its own SDK clients
//! (two Lambda instances), released together by a barrier, over several rounds with new events in
//! between. A task recomputes either every hour of the day or, as the stream consolidator does,
//! only the hours a round touched (reading the others back from gold while the other task may be
//! replacing them). After every round the day has one manifest, moved once per publish, naming
//! the generation of the last publisher, with every event of silver; its generations are
//! readable and are the only cells and registry entries left for the day; the hours add up to the
//! day and equal a recount of the events sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamcube_aws::{AwsBackend, provision};
use streamcube_model::pseudonym::{PseudonymKey, Pseudonymizer};
use streamcube_model::query::{Query, QueryLimits, first_hour};
use streamcube_pipeline::consolidate::DaySummary;
use streamcube_pipeline::{Pipeline, PipelineConfig};

mod common;

use common::{logs, names, require, scan};

const DAY: &str = "2026-06-09";

fn text(item: &std::collections::HashMap<String, AttributeValue>, k: &str) -> String {
    match item.get(k) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    }
}

/// One day's consolidation: every hour (`None`) or the touched hours.
type Work = Option<Vec<i64>>;

async fn consolidate(p: Pipeline, day: NaiveDate, work: Work) -> DaySummary {
    let hours = work.unwrap_or_else(|| (first_hour(day)..first_hour(day) + 24).collect());
    let outcomes = p.consolidate_hours(&hours).await.expect("consolidation");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    outcomes[0].result.clone().expect("the day published")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_consolidations_end_in_one_generation_with_every_event() {
    require("AWS_ENDPOINT_URL");
    let logs = logs("streamcube_pipeline=info");
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let names = names("race");
    // Two processes' worth of clients on the same tables.
    let (one, two) = (
        AwsBackend::connect(names.clone()).await,
        AwsBackend::connect(names).await,
    );
    provision::create_tables(&one.dynamo, &one.names)
        .await
        .expect("tables created on the emulator");
    let config = || {
        PipelineConfig::new(Pseudonymizer::new(
            &PseudonymKey::from_bytes("k1", vec![3; 32]).expect("key"),
        ))
    };
    let a = Pipeline::new(one.stores().expect("stores"), config());
    let b = Pipeline::new(two.stores().expect("stores"), config());
    let day: NaiveDate = DAY.parse().expect("day");

    // (hour, event id, viewer) of every event sent.
    let mut sent: Vec<(u32, String, String)> = Vec::new();
    let mut last_version = 0;
    // `true`: every hour of the day; `false`: the hours the round touched, as the stream does.
    let rounds = [(true, true), (false, true), (false, false), (true, false)];
    for (round, (a_all, b_all)) in rounds.into_iter().enumerate() {
        let hours: Vec<u32> = (0..5).map(|_| rng.random_range(0..24)).collect();
        let mut events = Vec::new();
        let mut touched = std::collections::BTreeSet::new();
        for i in 0..120 {
            let hour = hours[rng.random_range(0..hours.len())];
            let id = format!("race{round}-{i:03}");
            let viewer = format!("v{:03}", rng.random_range(0..100));
            let device = ["tv", "web"][rng.random_range(0..2)];
            let country = ["BR", "AR"][rng.random_range(0..2)];
            events.push(serde_json::json!({
                "event_id": id,
                "occurred_at": format!("{DAY}T{hour:02}:{:02}:00Z", rng.random_range(0..60)),
                "viewer_id": viewer,
                "content_id": format!("c{}", rng.random_range(1..5)),
                "device": device,
                "country": country,
                "watch_seconds": rng.random_range(0..4000),
                "completed": rng.random_bool(0.5),
            }));
            touched.insert(first_hour(day) + i64::from(hour));
            sent.push((hour, id, viewer));
        }
        // A resend of an earlier round's event: a duplicate, stored once.
        if round > 0 {
            events.push(serde_json::json!({
                "event_id": sent[0].1,
                "occurred_at": format!("{DAY}T{:02}:00:00Z", sent[0].0),
                "viewer_id": sent[0].2,
                "content_id": "c1",
                "device": "tv",
                "country": "BR",
                "watch_seconds": 1,
                "completed": false,
            }));
        }
        let r = a.ingest_json(&events).await.expect("ingested");
        assert_eq!(r.accepted, 120, "{r:?}");
        let touched: Vec<i64> = touched.into_iter().collect();
        let work = |all: bool| (!all).then(|| touched.clone());

        // The race: both tasks released at once.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let task = |p: &Pipeline, work: Work| {
            let (p, barrier) = (p.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                consolidate(p, day, work).await
            })
        };
        let (ta, tb) = (task(&a, work(a_all)), task(&b, work(b_all)));
        let (sa, sb) = (ta.await.expect("task A"), tb.await.expect("task B"));

        // One manifest, moved once by each task, naming the last publisher's generation.
        let manifest = a
            .stores
            .gold
            .manifest(day)
            .await
            .expect("manifest")
            .expect("published");
        let mut versions = [sa.version, sb.version];
        versions.sort_unstable();
        assert_eq!(
            versions,
            [last_version + 1, last_version + 2],
            "round {round}: each task published once"
        );
        last_version = manifest.version;
        assert_eq!(manifest.version, versions[1]);
        let last = if sa.version > sb.version { &sa } else { &sb };
        assert_eq!(manifest.day_generation, last.generation, "round {round}");

        // Every event of silver, once.
        let unique: HashSet<&str> = sent.iter().map(|(_, id, _)| id.as_str()).collect();
        let silver = scan(&one, &one.names.silver_table).await;
        assert_eq!(silver.len(), unique.len());
        assert_eq!(manifest.events, silver.len() as u64, "round {round}");
        assert_eq!(last.events, manifest.events);

        // Its generations are readable, and the only ones left.
        let keep = manifest.referenced();
        for (level, generation) in &keep {
            let cells = a
                .stores
                .gold
                .cells(day, *level, *generation, None)
                .await
                .expect("cells");
            assert!(!cells.is_empty(), "{level:?} {generation}");
        }
        let stale = a
            .stores
            .gold
            .stale_generations(day, &keep)
            .await
            .expect("registry");
        assert!(stale.is_empty(), "round {round}: {stale:?}");
        let generations: BTreeSet<u64> = keep.iter().map(|(_, g)| *g).collect();
        for item in scan(&one, &one.names.cube_table).await {
            let (pk, sk) = (text(&item, "pk"), text(&item, "sk"));
            let generation = if let Some(rest) = pk.strip_prefix(&format!("cells#{DAY}#")) {
                rest.split('#').nth(1).map(str::to_owned)
            } else if pk == format!("day#{DAY}") && sk.starts_with("gen#") {
                sk.split('#').nth(2).map(str::to_owned)
            } else {
                None
            };
            if let Some(g) = generation {
                let g: u64 = g.parse().expect("generation");
                assert!(
                    generations.contains(&g),
                    "round {round}: {pk} {sk} belongs to an unpublished generation"
                );
            }
        }

        // The hours add up to the day and equal the recount.
        let answer = |granularity: &'static str| {
            let q = Query::from_params(
                [
                    ("from", DAY),
                    ("to", DAY),
                    ("granularity", granularity),
                    ("measures", "plays,watch_seconds,unique_viewers"),
                ],
                &QueryLimits::default(),
            )
            .expect("query");
            let b = b.clone();
            async move {
                let rows = b.query(&q).await.expect("answer").result.to_json_rows();
                rows.iter()
                    .map(|r| {
                        let n = |k: &str| r[k].as_u64().expect("number");
                        (
                            r[granularity].as_str().expect("bucket").to_owned(),
                            [n("plays"), n("watch_seconds"), n("unique_viewers")],
                        )
                    })
                    .collect::<BTreeMap<String, [u64; 3]>>()
            }
        };
        let day_row = answer("day").await[DAY];
        assert_eq!(day_row[0], unique.len() as u64);
        let by_hour = answer("hour").await;
        assert_eq!(by_hour.values().map(|c| c[0]).sum::<u64>(), day_row[0]);
        assert_eq!(by_hour.values().map(|c| c[1]).sum::<u64>(), day_row[1]);
        let mut recount: BTreeMap<String, (u64, BTreeSet<&str>)> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (hour, id, viewer) in &sent {
            if seen.insert(id.as_str()) {
                let e = recount
                    .entry(format!("{DAY}T{hour:02}:00:00Z"))
                    .or_default();
                e.0 += 1;
                e.1.insert(viewer.as_str());
            }
        }
        let got: BTreeMap<String, (u64, u64)> = by_hour
            .iter()
            .map(|(h, c)| (h.clone(), (c[0], c[2])))
            .collect();
        let want: BTreeMap<String, (u64, u64)> = recount
            .iter()
            .map(|(h, (p, v))| (h.clone(), (*p, v.len() as u64)))
            .collect();
        assert_eq!(got, want, "round {round}");
        let viewers: BTreeSet<&str> = sent.iter().map(|(_, _, v)| v.as_str()).collect();
        assert_eq!(day_row[2], viewers.len() as u64);
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("lock")).into_owned();
    eprintln!(
        "{} rounds, {} lost publish races retried",
        rounds.len(),
        logged.matches("lost the publish race").count()
    );
}

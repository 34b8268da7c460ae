//! Load generator for `streamcube serve`: `POST /v1/events` in batches over keep-alive
//! connections, with resent events on purpose, and the check that the server accepted every
//! event once: `accepted == unique events` and `accepted + duplicates == events sent`.
//!
//! The payloads are generated before the clock starts ([`Workload::generate`]), so the measure
//! is the server's. [`run()`] sends them and [`Summary::new`] puts the answers and the expected
//! counts side by side; the cube totals the events must add up to are in
//! [`Expected::totals`], for the caller to compare with `streamcube query` after a
//! consolidation.

pub mod run;
pub mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use run::{RunConfig, RunResult, run};
pub use workload::{BodyFormat, Expected, IdStyle, Totals, Workload, WorkloadConfig};

/// Request latencies in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_nanos() as f64 / 1e6).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[i - 1]
        };
        Latency {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// The checks of a run; all must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// Every request answered 200.
    pub all_ok: bool,
    /// No event refused by validation (the generator sends only valid events).
    pub none_rejected: bool,
    /// Every answer's counts add up to its batch's events.
    pub answers_consistent: bool,
    pub accepted_equals_unique: bool,
    pub accepted_plus_duplicates_equals_sent: bool,
}

impl Checks {
    pub fn passed(&self) -> bool {
        self.all_ok
            && self.none_rejected
            && self.answers_consistent
            && self.accepted_equals_unique
            && self.accepted_plus_duplicates_equals_sent
    }
}

/// A run's report, as printed and as written by `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub addr: String,
    pub day: String,
    pub format: BodyFormat,
    pub ids: IdStyle,
    pub connections: usize,
    pub batch_size: usize,
    pub generation_s: f64,
    pub payload_bytes: u64,
    /// What was sent: the first `batches` of the workload.
    #[serde(flatten)]
    pub sent: Expected,
    pub elapsed_s: f64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub accepted_per_s: f64,
    pub sent_per_s: f64,
    pub requests_per_s: f64,
    pub latency_ms: Latency,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    pub non_200: u64,
    pub transport_errors: u64,
    pub inconsistent_answers: u64,
    pub first_problem: Option<String>,
    pub checks: Checks,
    pub ok: bool,
}

impl Summary {
    pub fn new(
        workload: &Workload,
        run_cfg: &RunConfig,
        batch_size: usize,
        generation: Duration,
        r: &RunResult,
    ) -> Summary {
        let sent = workload.expected(r.batches_sent);
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let non_200 = r
            .statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum::<u64>();
        let checks = Checks {
            all_ok: non_200 == 0 && r.transport_errors == 0,
            none_rejected: r.rejected == 0,
            answers_consistent: r.inconsistent_answers == 0,
            accepted_equals_unique: r.accepted == sent.unique_events,
            accepted_plus_duplicates_equals_sent: r.accepted + r.duplicates == sent.events_sent,
        };
        let payload_bytes = workload
            .batches
            .iter()
            .take(r.batches_sent)
            .map(|b| b.body.len() as u64)
            .sum();
        Summary {
            addr: run_cfg.addr.to_string(),
            day: workload.day.format("%Y-%m-%d").to_string(),
            format: workload.format,
            ids: workload.ids,
            connections: run_cfg.connections,
            batch_size,
            generation_s: generation.as_secs_f64(),
            payload_bytes,
            sent,
            elapsed_s: r.elapsed.as_secs_f64(),
            accepted: r.accepted,
            duplicates: r.duplicates,
            rejected: r.rejected,
            accepted_per_s: r.accepted as f64 / secs,
            sent_per_s: sent.events_sent as f64 / secs,
            requests_per_s: r.latencies.len() as f64 / secs,
            latency_ms: Latency::of(&r.latencies),
            statuses: r.statuses.clone(),
            non_200,
            transport_errors: r.transport_errors,
            inconsistent_answers: r.inconsistent_answers,
            first_problem: r.first_problem.clone(),
            checks,
            ok: checks.passed(),
        }
    }

    /// The report for people, one figure a line.
    pub fn text(&self) -> String {
        let x = &self.sent;
        let l = &self.latency_ms;
        let statuses = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = format!(
            "target               http://{}/v1/events ({}, {} ids, {} connections, batches of {})\n\
             events sent          {} in {} batches ({} MB, generated in {:.2} s)\n\
             unique events        {}\n\
             duplicates sent      {}\n\
             elapsed              {:.3} s\n\
             accepted             {} ({:.0} events/s; {:.0} sent/s, {:.0} requests/s)\n\
             duplicates reported  {}\n\
             rejected             {}\n\
             latency per request  p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms)\n\
             answers              {statuses}; {} non-200, {} without answer, {} inconsistent\n",
            self.addr,
            self.format.content_type(),
            self.ids.as_str(),
            self.connections,
            self.batch_size,
            x.events_sent,
            x.batches,
            self.payload_bytes / 1_000_000,
            self.generation_s,
            x.unique_events,
            x.duplicates_sent,
            self.elapsed_s,
            self.accepted,
            self.accepted_per_s,
            self.sent_per_s,
            self.requests_per_s,
            self.duplicates,
            self.rejected,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.mean,
            self.non_200,
            self.transport_errors,
            self.inconsistent_answers,
        );
        let c = &self.checks;
        let mark = |ok: bool| if ok { "ok" } else { "FAILED" };
        out.push_str(&format!(
            "accepted == unique   {} ({} vs {})\n\
             accepted + dups      {} ({} vs {} sent)\n",
            mark(c.accepted_equals_unique),
            self.accepted,
            x.unique_events,
            mark(c.accepted_plus_duplicates_equals_sent),
            self.accepted + self.duplicates,
            x.events_sent,
        ));
        if let Some(p) = &self.first_problem {
            out.push_str(&format!("first problem        {p}\n"));
        }
        out.push_str(&format!(
            "result               {}\n",
            if self.ok { "ok" } else { "FAILED" }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&[]), Latency::default());
        assert_eq!(Latency::of(&[Duration::from_millis(3)]).p99, 3.0);
    }
}

//! bronze-processor: S3 `ObjectCreated` notifications of the bronze bucket, each object through
//! [`Pipeline::process_object_until`] into silver, the quarantine and a report (catalog files,
//! under the reference prefix, into the catalog).
//!
//! - **Keys arrive URL-encoded** (a space as `+`, a `+` as `%2B`); [`decode_key`] undoes it.
//! - **Redelivery is harmless:** the ledger remembers every object version processed (the
//!   notification's `versionId`, or its `eTag` when the bucket is not versioned), and rows stored
//!   by an interrupted attempt are recognised by their origin.
//! - **Records are independent:** every record of the event is tried; if any failed, the
//!   invocation fails after all were tried, so Lambda's asynchronous retries (and then the
//!   on-failure destination) get it. A retry redoes only what is not in the ledger.
//! - **Files larger than one run:** a run stops at a row boundary when the time left falls below a
//!   safety margin ([`Budget`]), and the object goes on from the [`Checkpoint`] through a
//!   [`Continuation`]: on AWS the function invokes itself asynchronously with
//!   `{"streamcube_continue": <checkpoint>}` ([`SelfInvoke`]); on the embedded backend it simply
//!   goes on in the same process ([`InProcess`]). The handler accepts either payload ([`Input`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::bronze::{Checkpoint, ObjectReport, Progress};
use streamcube_pipeline::http::ErrorChain;

/// How many parts one object may take before we call it a runaway and stop continuing it.
pub const MAX_PARTS: u32 = 1_000;

/// What the function is invoked with: an S3 notification, or the continuation of a paused
/// object that an earlier invocation handed off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Input {
    Continue(ContinuePayload),
    S3(S3Event),
}

/// `{"streamcube_continue": <checkpoint>}`, the payload of a self-invocation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContinuePayload {
    pub streamcube_continue: Checkpoint,
}

/// What became of one object of the invocation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Processed to the end by this invocation.
    Processed,
    /// The ledger had this version already: nothing was done.
    AlreadyProcessed,
    /// Paused and handed off to another invocation, which goes on from `checkpoint`.
    Continued,
    /// Not an `ObjectCreated` notification.
    Ignored,
    /// See `error`; the invocation fails so that Lambda retries it.
    Failed,
}

/// One object of the invocation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ObjectResult {
    /// The decoded key (the raw one when it could not be decoded).
    pub key: String,
    pub version: Option<String>,
    pub status: Status,
    /// Parts this invocation ran on the object.
    pub parts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ObjectReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The invocation's answer: one entry per record, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Summary {
    pub objects: Vec<ObjectResult>,
}

/// Why an invocation fails.
#[derive(Debug, thiserror::Error)]
pub enum BronzeError {
    /// Some objects failed (the others were processed); retrying the event redoes only those.
    #[error("{} of {} objects failed: {}", failed(.0).len(), .0.objects.len(), failed(.0).join("; "))]
    Failed(Summary),
}

impl From<BronzeError> for lambda_runtime::Diagnostic {
    fn from(e: BronzeError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "ObjectsFailed".to_owned(),
            error_message: e.to_string(),
        }
    }
}

fn failed(s: &Summary) -> Vec<String> {
    s.objects
        .iter()
        .filter(|o| o.status == Status::Failed)
        .map(|o| format!("{}: {}", o.key, o.error.as_deref().unwrap_or("failed")))
        .collect()
}

/// Why a key from a notification cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the notification has no object key")]
    Missing,
    #[error("the object key does not decode to UTF-8")]
    NotUtf8,
}

/// Decodes an S3 notification key: `+` is a space and `%XX` a byte (so a literal `+` arrives as
/// `%2B`); the bytes must be UTF-8.
pub fn decode_key(raw: &str) -> Result<String, KeyError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| KeyError::NotUtf8)
}

/// The test a run asks before every row: `true` stops it there.
pub type Stop = Box<dyn Fn() -> bool + Send + 'static>;

/// How long a run may go on before it must stop and hand the rest of the object off.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// Never stop (no deadline known).
    Unlimited,
    /// Stop `margin` before `until`. A continuation in the same process starts a fresh budget of
    /// `length`, as a new invocation would.
    Deadline {
        until: Instant,
        length: Duration,
        margin: Duration,
    },
    /// Stop after this many rows in each run (bounded parts, whatever the time).
    RowsPerPart(u64),
}

/// The margin left before a deadline for the writes in flight, the quarantine upload and the
/// hand-off: a tenth of the invocation's time, at least 5 s and at most 90 s, and never more than
/// half of it.
pub fn safety_margin(length: Duration) -> Duration {
    (length / 10)
        .clamp(Duration::from_secs(5), Duration::from_secs(90))
        .min(length / 2)
}

impl Budget {
    /// The budget of an invocation, from its deadline. A deadline already past or absent (a
    /// local invocation without one) means no deadline.
    pub fn from_deadline(deadline: SystemTime) -> Budget {
        match deadline.duration_since(SystemTime::now()) {
            Ok(length) if !length.is_zero() => Budget::Deadline {
                until: Instant::now() + length,
                length,
                margin: safety_margin(length),
            },
            _ => Budget::Unlimited,
        }
    }

    /// The stop test for the next run.
    pub fn stop(&self) -> Stop {
        match *self {
            Budget::Unlimited => Box::new(|| false),
            Budget::Deadline { until, margin, .. } => {
                let at = until.checked_sub(margin).unwrap_or(until);
                Box::new(move || Instant::now() >= at)
            }
            Budget::RowsPerPart(n) => {
                // Asked before every row but the first of a run: the k-th question comes after
                // k rows.
                let asked = AtomicU64::new(0);
                Box::new(move || asked.fetch_add(1, Ordering::Relaxed) + 1 >= n)
            }
        }
    }

    /// The budget of a continuation in this same process.
    fn renewed(self) -> Budget {
        match self {
            Budget::Deadline { length, margin, .. } => Budget::Deadline {
                until: Instant::now() + length,
                length,
                margin,
            },
            other => other,
        }
    }
}

/// Where a paused object goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Go on in this process (a fresh budget, as if a new invocation took over).
    InProcess,
    /// Another invocation was asked to go on; this one is done with the object.
    Sent,
}

/// Why a paused object could not be handed off.
#[derive(Debug, thiserror::Error)]
pub enum ContinuationError {
    #[error("the continuation payload does not encode")]
    Encode(#[from] serde_json::Error),
    #[error("invoking the function for the continuation failed")]
    Invoke(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Hands a paused object off so that the rest of it gets processed.
pub trait Continuation: Send + Sync {
    fn hand_off(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<Handoff, ContinuationError>> + Send;
}

/// Go on in the same process: the embedded backend, where no deadline kills the work.
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcess;

impl Continuation for InProcess {
    async fn hand_off(&self, _: &Checkpoint) -> Result<Handoff, ContinuationError> {
        Ok(Handoff::InProcess)
    }
}

/// Invoke this function asynchronously (`InvocationType::Event`) with the checkpoint. The
/// function needs `lambda:InvokeFunction` on itself and recursive loop detection set to `Allow`
/// (a large file is a chain of invocations of the same function by design).
#[derive(Clone, Debug)]
pub struct SelfInvoke {
    client: aws_sdk_lambda::Client,
    function_name: String,
}

impl SelfInvoke {
    pub fn new(client: aws_sdk_lambda::Client, function_name: String) -> Self {
        SelfInvoke {
            client,
            function_name,
        }
    }
}

impl Continuation for SelfInvoke {
    async fn hand_off(&self, checkpoint: &Checkpoint) -> Result<Handoff, ContinuationError> {
        let payload = serde_json::to_vec(&ContinuePayload {
            streamcube_continue: checkpoint.clone(),
        })?;
        self.client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| ContinuationError::Invoke(Box::new(e)))?;
        Ok(Handoff::Sent)
    }
}

/// The continuation of the configured backend, chosen at cold start.
#[derive(Clone, Debug)]
pub enum AnyContinuation {
    InProcess(InProcess),
    SelfInvoke(SelfInvoke),
}

impl Continuation for AnyContinuation {
    async fn hand_off(&self, checkpoint: &Checkpoint) -> Result<Handoff, ContinuationError> {
        match self {
            AnyContinuation::InProcess(c) => c.hand_off(checkpoint).await,
            AnyContinuation::SelfInvoke(c) => c.hand_off(checkpoint).await,
        }
    }
}

/// Handles one invocation, stopping each run a safety margin before the invocation's deadline.
pub async fn handler<C: Continuation>(
    pipeline: &Pipeline,
    continuation: &C,
    event: LambdaEvent<Input>,
) -> Result<Summary, BronzeError> {
    let budget = Budget::from_deadline(event.context.deadline());
    process(pipeline, continuation, event.payload, budget).await
}

/// What to do with one record of the invocation.
enum Job {
    Start {
        key: String,
        version: Option<String>,
    },
    Resume(Checkpoint),
    Ignore {
        key: String,
        event: String,
    },
    Invalid {
        key: String,
        error: String,
    },
}

fn job_of(record: &S3EventRecord) -> Job {
    let raw = record.s3.object.key.as_deref().unwrap_or_default();
    let event = record.event_name.clone().unwrap_or_default();
    if !event.starts_with("ObjectCreated:") {
        return Job::Ignore {
            key: raw.to_owned(),
            event,
        };
    }
    let decoded = if raw.is_empty() {
        Err(KeyError::Missing)
    } else {
        decode_key(raw)
    };
    match decoded {
        Ok(key) => Job::Start {
            key,
            version: record
                .s3
                .object
                .version_id
                .clone()
                .filter(|v| !v.is_empty())
                .or_else(|| record.s3.object.e_tag.clone().filter(|e| !e.is_empty())),
        },
        Err(e) => Job::Invalid {
            key: raw.to_owned(),
            error: e.to_string(),
        },
    }
}

/// Processes an invocation's input within `budget`: every record, each independently; fails
/// (with the summary) if any record failed.
pub async fn process<C: Continuation>(
    pipeline: &Pipeline,
    continuation: &C,
    input: Input,
    budget: Budget,
) -> Result<Summary, BronzeError> {
    let jobs: Vec<Job> = match input {
        Input::S3(event) => event.records.iter().map(job_of).collect(),
        Input::Continue(c) => vec![Job::Resume(c.streamcube_continue)],
    };
    let mut budget = budget;
    let mut summary = Summary::default();
    for job in jobs {
        let result = run_job(pipeline, continuation, job, &mut budget).await;
        summary.objects.push(result);
    }
    if summary.objects.iter().any(|o| o.status == Status::Failed) {
        return Err(BronzeError::Failed(summary));
    }
    Ok(summary)
}

async fn run_job<C: Continuation>(
    pipeline: &Pipeline,
    continuation: &C,
    job: Job,
    budget: &mut Budget,
) -> ObjectResult {
    let result = |key: String, version: Option<String>, status| ObjectResult {
        key,
        version,
        status,
        parts: 0,
        report: None,
        checkpoint: None,
        error: None,
    };
    let (key, version, mut progress) = match job {
        Job::Ignore { key, event } => {
            tracing::info!(%key, %event, "not an ObjectCreated notification; ignored");
            return result(key, None, Status::Ignored);
        }
        Job::Invalid { key, error } => {
            tracing::error!(%key, %error, "unusable record");
            return ObjectResult {
                error: Some(error),
                ..result(key, None, Status::Failed)
            };
        }
        Job::Start { key, version } => {
            let p = pipeline
                .process_object_until(&key, version.as_deref(), budget.stop())
                .await;
            (key, version, p)
        }
        Job::Resume(checkpoint) => {
            let (key, version) = (checkpoint.key.clone(), Some(checkpoint.version.clone()));
            let p = pipeline.resume_object(checkpoint, budget.stop()).await;
            (key, version, p)
        }
    };
    let mut parts = 1;
    loop {
        match progress {
            Ok(Progress::Done(outcome)) => {
                let status = if outcome.already_processed {
                    Status::AlreadyProcessed
                } else {
                    Status::Processed
                };
                return ObjectResult {
                    version: Some(outcome.report.version.clone()),
                    parts,
                    report: Some(outcome.report),
                    ..result(key, version, status)
                };
            }
            Ok(Progress::Paused(checkpoint)) => {
                let failed = |error: String| {
                    tracing::error!(key = %checkpoint.key, %error, "cannot continue the object");
                    ObjectResult {
                        version: Some(checkpoint.version.clone()),
                        parts,
                        error: Some(error),
                        checkpoint: Some(checkpoint.clone()),
                        ..result(checkpoint.key.clone(), None, Status::Failed)
                    }
                };
                if checkpoint.parts >= MAX_PARTS {
                    return failed(format!(
                        "the object took {MAX_PARTS} parts and is still not done; raise the \
                         function's timeout"
                    ));
                }
                match continuation.hand_off(&checkpoint).await {
                    Ok(Handoff::InProcess) => {
                        *budget = budget.renewed();
                        parts += 1;
                        progress = pipeline.resume_object(checkpoint, budget.stop()).await;
                    }
                    Ok(Handoff::Sent) => {
                        tracing::info!(
                            key = %checkpoint.key,
                            line = checkpoint.line,
                            rows = checkpoint.counts.rows,
                            "object handed off to a new invocation"
                        );
                        return ObjectResult {
                            version: Some(checkpoint.version.clone()),
                            parts,
                            checkpoint: Some(checkpoint),
                            ..result(key, None, Status::Continued)
                        };
                    }
                    Err(e) => return failed(ErrorChain(&e).to_string()),
                }
            }
            Err(e) => {
                let error = ErrorChain(&e).to_string();
                tracing::error!(%key, %error, transient = e.is_transient(), "object failed");
                return ObjectResult {
                    parts,
                    // Names the object and the cause, never row contents.
                    error: Some(error),
                    ..result(key, version, Status::Failed)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(
            decode_key("events/2026/11/01/batch%3D1+part.csv").expect("key"),
            "events/2026/11/01/batch=1 part.csv"
        );
        assert_eq!(decode_key("a%2Bb+c").expect("key"), "a+b c");
        assert_eq!(decode_key("caf%C3%A9.csv").expect("key"), "café.csv");
        assert!(matches!(decode_key("bad%FF.csv"), Err(KeyError::NotUtf8)));
    }

    #[test]
    fn the_margin_is_a_tenth_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(safety_margin(s(900)), s(90));
        assert_eq!(safety_margin(s(300)), s(30));
        assert_eq!(safety_margin(s(60)), s(6));
        assert_eq!(safety_margin(s(20)), s(5));
        assert_eq!(safety_margin(s(3)), Duration::from_millis(1500));
    }

    #[test]
    fn rows_per_part_stops_after_n_rows() {
        let stop = Budget::RowsPerPart(3).stop();
        // Asked after rows 1, 2, 3 of a run.
        assert_eq!([stop(), stop(), stop()], [false, false, true]);
    }

    #[test]
    fn a_past_or_missing_deadline_means_no_deadline() {
        assert!(matches!(
            Budget::from_deadline(SystemTime::UNIX_EPOCH),
            Budget::Unlimited
        ));
        let soon = SystemTime::now() + Duration::from_secs(600);
        match Budget::from_deadline(soon) {
            Budget::Deadline { margin, .. } => {
                assert!(margin <= Duration::from_secs(60), "{margin:?}");
            }
            other => panic!("expected a deadline, got {other:?}"),
        }
        let budget = |left: u64| Budget::Deadline {
            until: Instant::now() + Duration::from_secs(left),
            length: Duration::from_secs(60),
            margin: Duration::from_secs(6),
        };
        // Within the margin of the deadline: stop; well before it: go on.
        assert!(budget(5).stop()());
        assert!(!budget(50).stop()());
        // A continuation in this process gets a fresh budget of the same length.
        assert!(!budget(5).renewed().stop()());
    }

    #[test]
    fn the_input_is_a_notification_or_a_continuation() {
        let cont = serde_json::json!({"streamcube_continue": {
            "key": "events/a.csv", "version": "v1", "line": 10,
            "counts": {"rows": 9, "accepted": 9, "duplicates": 0, "rejected": 0,
                       "rejected_by_reason": {}},
            "parts": 1, "quarantine": []
        }});
        assert!(matches!(
            serde_json::from_value::<Input>(cont).expect("continuation"),
            Input::Continue(c) if c.streamcube_continue.line == 10
        ));
        let s3 = serde_json::json!({"Records": []});
        assert!(matches!(
            serde_json::from_value::<Input>(s3).expect("s3"),
            Input::S3(_)
        ));
        assert!(serde_json::from_value::<Input>(serde_json::json!({"x": 1})).is_err());
    }
}

//! Ingesting a batch of events sent as JSON (the HTTP API and the Kafka consumer).

use serde::{Deserialize, Serialize};
use streamcube_model::event::{Field, FieldError, RawFields, Reason, SilverEvent, Validator};

use crate::ports::PutOutcome;
use crate::{Pipeline, PipelineError};

/// One refused event of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    /// Position in the batch, from 0.
    pub index: usize,
    /// The event id as sent, when there was a usable one.
    pub event_id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// What became of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<RejectedEvent>,
}

/// A batch checked against the contract and the deployment, ready to be written.
pub struct Checked {
    pub events: Vec<(usize, SilverEvent)>,
    pub rejected: Vec<RejectedEvent>,
    /// Countries of valid events that this deployment does not serve.
    pub not_served: Vec<String>,
}

impl Pipeline {
    /// Validates and pseudonymizes JSON events; `origin` is stored with each (see
    /// [`SilverEvent::origin`]).
    pub fn check_json(&self, values: &[serde_json::Value], validator: &Validator) -> Checked {
        let mut out = Checked {
            events: Vec::with_capacity(values.len()),
            rejected: Vec::new(),
            not_served: Vec::new(),
        };
        for (index, v) in values.iter().enumerate() {
            let Some(obj) = v.as_object() else {
                out.rejected.push(RejectedEvent {
                    index,
                    event_id: None,
                    errors: vec![FieldError::new(Field::Row, Reason::MalformedJson)],
                });
                continue;
            };
            let raw = RawFields::from_json_object(obj);
            match validator.validate(&raw) {
                Ok(ev) => {
                    if !self.config.serves(ev.country) {
                        let c = ev.country.as_str().to_owned();
                        if !out.not_served.contains(&c) {
                            out.not_served.push(c);
                        }
                        continue;
                    }
                    out.events.push((
                        index,
                        SilverEvent::new(&ev, &self.config.pseudonymizer, String::new()),
                    ));
                }
                Err(errors) => out.rejected.push(RejectedEvent {
                    index,
                    event_id: raw.event_id_hint().map(str::to_owned),
                    errors,
                }),
            }
        }
        out
    }

    /// Ingests a batch from the HTTP API: all-or-nothing on residency (a batch with any event of a
    /// country this deployment does not serve is refused whole, so the client can send it to the
    /// right region), per event otherwise. A resent event is a duplicate, never stored twice.
    #[tracing::instrument(skip_all, fields(events = values.len()), err)]
    pub async fn ingest_json(
        &self,
        values: &[serde_json::Value],
    ) -> Result<IngestResult, PipelineError> {
        let checked = self.check_json(values, &Validator::now());
        if !checked.not_served.is_empty() {
            return Err(PipelineError::CountryNotServed(checked.not_served));
        }
        let events: Vec<SilverEvent> = checked.events.into_iter().map(|(_, e)| e).collect();
        let outcomes = if events.is_empty() {
            Vec::new()
        } else {
            self.stores.silver.put_new(&events).await?
        };
        let mut result = IngestResult {
            rejected: checked.rejected,
            ..IngestResult::default()
        };
        for o in outcomes {
            match o {
                PutOutcome::Inserted | PutOutcome::AlreadyStored => result.accepted += 1,
                PutOutcome::Duplicate => result.duplicates += 1,
            }
        }
        tracing::info!(
            accepted = result.accepted,
            duplicates = result.duplicates,
            rejected = result.rejected.len(),
            "batch ingested"
        );
        Ok(result)
    }
}

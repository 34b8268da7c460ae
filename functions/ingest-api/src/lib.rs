//! ingest-api: the write side of the HTTP API.
//!
//! `POST /v1/events` (one event, a JSON array or NDJSON; at most 500 events and 1 MiB) and
//! `GET /v1/health`, answered by the handler `streamcube serve` runs too. Erasure
//! (`DELETE /v1/viewers/{viewer_id}`) is the `erasure` function's: it needs permissions (the
//! pseudonym index, deletes, republishing gold) that the write path should not hold.

use lambda_http::{Body, Error, Request, Response};
use streamcube_lambda::{Route, respond};
use streamcube_pipeline::Pipeline;

/// The routes this function owns.
pub const ROUTES: &[Route] = &[("POST", "events"), ("GET", "health")];

/// Handles one API Gateway request.
pub async fn handler(pipeline: &Pipeline, req: Request) -> Result<Response<Body>, Error> {
    Ok(respond(pipeline, ROUTES, req).await)
}

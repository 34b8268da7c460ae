//! erasure: `DELETE /v1/viewers/{viewer_id}` (LGPD/GDPR right to erasure), answered by the
//! handler `streamcube serve` runs too, with what was removed: `{events_deleted, days}`.
//!
//! A function of its own because it needs more than ingestion does (reading the pseudonym index,
//! deleting from silver, republishing gold), and the write API should not carry those
//! permissions.

use lambda_http::{Body, Error, Request, Response};
use streamcube_lambda::{Route, respond};
use streamcube_pipeline::Pipeline;

/// The routes this function owns.
pub const ROUTES: &[Route] = &[("DELETE", "viewers/")];

/// Handles one API Gateway request.
pub async fn handler(pipeline: &Pipeline, req: Request) -> Result<Response<Body>, Error> {
    Ok(respond(pipeline, ROUTES, req).await)
}

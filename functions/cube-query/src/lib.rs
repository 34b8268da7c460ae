//! cube-query: the read side of the HTTP API, `GET /v1/cube` (and `GET /v1/health`), answered by
//! the handler `streamcube serve` runs too. It needs read access to gold only.

use lambda_http::{Body, Error, Request, Response};
use streamcube_lambda::{Route, respond};
use streamcube_pipeline::Pipeline;

/// The routes this function owns.
pub const ROUTES: &[Route] = &[("GET", "cube"), ("GET", "health")];

/// Handles one API Gateway request.
pub async fn handler(pipeline: &Pipeline, req: Request) -> Result<Response<Body>, Error> {
    Ok(respond(pipeline, ROUTES, req).await)
}

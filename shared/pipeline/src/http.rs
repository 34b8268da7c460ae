//! The HTTP API, over plain `http` types so that the Lambda functions (through `lambda_http`) and
//! the local server (`streamcube serve`) run the very same code.
//!
//! | route | does |
//! |---|---|
//! | `GET /v1/health` | liveness probe |
//! | `POST /v1/events` | one event, a JSON array or NDJSON; at most 500 events and 1 MiB |
//! | `GET /v1/cube` | a cube query ([`streamcube_model::query::Query::from_params`]) |
//! | `DELETE /v1/viewers/{viewer_id}` | erase a viewer |
//!
//! This module is the one place where errors become status codes. Bad input gets a precise 4xx;
//! anything internal gets an opaque 500 carrying the request id, while the cause goes to the log.
//! No store or SDK error text ever reaches a response body.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;
use streamcube_model::query::{JsonRows, Query, QueryError};

use crate::ports::StoreError;
use crate::{Pipeline, PipelineError};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The most events one request may carry.
pub const MAX_EVENTS: usize = 500;
/// Seconds a throttled client is asked to wait.
const RETRY_AFTER_SECS: u32 = 1;

/// Everything a request can fail with, each with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    #[error("the service is busy; retry after {RETRY_AFTER_SECS} s")]
    Throttled,
    #[error("internal error; quote the request id when reporting it")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Query(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Throttled => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Query(_) => "bad_query",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Forbidden(_) => "country_not_served",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Throttled => "throttled",
            ApiError::Internal => "internal",
        }
    }

    /// Maps a pipeline error; internal causes are logged here with the request id, never shown.
    pub fn from_pipeline(e: PipelineError, request_id: &str) -> ApiError {
        match e {
            PipelineError::Store(StoreError::Throttled) => ApiError::Throttled,
            PipelineError::Query(q) => ApiError::Query(q),
            PipelineError::CountryNotServed(c) => ApiError::Forbidden(format!(
                "this deployment does not serve events from {}; send them to the region that does",
                c.join(", ")
            )),
            other => {
                tracing::error!(request_id, error = %ErrorChain(&other), "request failed");
                ApiError::Internal
            }
        }
    }

    /// The response for this error.
    pub fn into_response(self, request_id: &str) -> Response<Bytes> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Detail<'a>,
            request_id: &'a str,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: String,
        }
        let body = Body {
            error: Detail {
                code: self.code(),
                message: self.to_string(),
            },
            request_id,
        };
        let mut resp = json_response(self.status(), &body, request_id);
        match self {
            ApiError::Throttled => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            ApiError::MethodNotAllowed(allow) => {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

/// Displays an error with its sources, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T, request_id: &str) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Bytes::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The route part of a path: what follows `/v1/`, wherever it is (API Gateway stages and local
/// function URLs add prefixes).
pub fn route(path: &str) -> Option<&str> {
    path.find("/v1/").map(|i| &path[i + 4..])
}

/// Handles one request.
pub async fn handle(p: &Pipeline, req: Request<Bytes>, request_id: &str) -> Response<Bytes> {
    match dispatch(p, req, request_id).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(request_id),
    }
}

async fn dispatch(
    p: &Pipeline,
    req: Request<Bytes>,
    request_id: &str,
) -> Result<Response<Bytes>, ApiError> {
    let path = req.uri().path().to_owned();
    let Some(r) = route(&path) else {
        return Err(ApiError::NotFound);
    };
    let r = r.trim_end_matches('/');
    match (r, req.method()) {
        ("health", &Method::GET) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
            request_id,
        )),
        ("health", _) => Err(ApiError::MethodNotAllowed("GET")),
        ("events", &Method::POST) => {
            let values = parse_events(&req)?;
            let result = p
                .ingest_json(&values)
                .await
                .map_err(|e| ApiError::from_pipeline(e, request_id))?;
            Ok(json_response(StatusCode::OK, &result, request_id))
        }
        ("events", _) => Err(ApiError::MethodNotAllowed("POST")),
        ("cube", &Method::GET) => {
            let params = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes());
            let q = Query::from_params(params, &p.config.query_limits)?;
            let answer = p
                .query(&q)
                .await
                .map_err(|e| ApiError::from_pipeline(e, request_id))?;
            let wants_csv = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/csv"));
            if wants_csv {
                let mut resp = Response::new(Bytes::from(answer.result.to_csv()));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                return Ok(resp);
            }
            #[derive(Serialize)]
            struct CubeAnswer<'a> {
                columns: &'a [String],
                rows: JsonRows<'a>,
                generations: &'a std::collections::BTreeMap<chrono::NaiveDate, u64>,
            }
            Ok(json_response(
                StatusCode::OK,
                &CubeAnswer {
                    columns: &answer.result.columns,
                    rows: answer.result.json_rows(),
                    generations: &answer.generations,
                },
                request_id,
            ))
        }
        ("cube", _) => Err(ApiError::MethodNotAllowed("GET")),
        (r, m) if r.starts_with("viewers/") => {
            if m != Method::DELETE {
                return Err(ApiError::MethodNotAllowed("DELETE"));
            }
            let raw = &r["viewers/".len()..];
            let viewer = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| ApiError::BadRequest("the viewer id is not valid UTF-8".into()))?;
            if viewer.is_empty() || viewer.contains('/') {
                return Err(ApiError::BadRequest(
                    "give one viewer id: DELETE /v1/viewers/{viewer_id}".into(),
                ));
            }
            let erasure = p
                .erase_viewer(&viewer)
                .await
                .map_err(|e| ApiError::from_pipeline(e, request_id))?;
            Ok(json_response(StatusCode::OK, &erasure, request_id))
        }
        _ => Err(ApiError::NotFound),
    }
}

/// The events of a POST body: one JSON object, a JSON array, or NDJSON.
pub fn parse_events(req: &Request<Bytes>) -> Result<Vec<serde_json::Value>, ApiError> {
    let body = req.body();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body has {} bytes; at most {MAX_BODY_BYTES} are accepted",
            body.len()
        )));
    }
    let media = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let values = match media.as_deref() {
        Some("application/json") => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(v @ serde_json::Value::Object(_)) => vec![v],
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "the body must be a JSON object or an array of objects".into(),
                ));
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "the body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )));
            }
        },
        Some("application/x-ndjson") => {
            let mut values = Vec::new();
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = serde_json::from_slice(line).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "line {} of the NDJSON body is not valid JSON (column {})",
                        i + 1,
                        e.column()
                    ))
                })?;
                values.push(v);
            }
            values
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send application/json or application/x-ndjson, not {}",
                other.unwrap_or("a body without Content-Type")
            )));
        }
    };
    if values.len() > MAX_EVENTS {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body has {} events; at most {MAX_EVENTS} are accepted per request",
            values.len()
        )));
    }
    Ok(values)
}

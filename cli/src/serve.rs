//! `streamcube serve`: the HTTP API on 127.0.0.1, running the same handler as the Lambda
//! functions ([`streamcube_pipeline::http::handle`]).

use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use clap::Args;
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::http::{ApiError, MAX_BODY_BYTES, handle};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default: this server has no authentication).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
}

fn request_id(req: &axum::extract::Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map_or_else(|| hex::encode(rand::random::<[u8; 8]>()), str::to_owned)
}

async fn api(State(p): State<Pipeline>, req: axum::extract::Request) -> Response {
    let id = request_id(&req);
    let (parts, body) = req.into_parts();
    let resp = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => handle(&p, http::Request::from_parts(parts, bytes), &id).await,
        Err(_) => ApiError::PayloadTooLarge(format!("the body is over {MAX_BODY_BYTES} bytes"))
            .into_response(&id),
    };
    resp.map(Body::from)
}

/// The router, for the server and for tests.
pub fn router(p: Pipeline) -> axum::Router {
    axum::Router::new().fallback(api).with_state(p)
}

pub async fn serve(p: Pipeline, args: &ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr()?;
    // One write, and a closed stdout (a supervisor that read the address and went away) must
    // not take the server down.
    {
        use std::io::Write;
        let banner = format!(
            "serving on http://{addr}\n\
             \x20 POST   /v1/events              (application/json or application/x-ndjson)\n\
             \x20 GET    /v1/cube?from=..&to=..  (Accept: text/csv for CSV)\n\
             \x20 DELETE /v1/viewers/{{viewer_id}}\n\
             \x20 GET    /v1/health\n"
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    axum::serve(listener, router(p))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

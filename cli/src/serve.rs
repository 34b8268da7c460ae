//! `streamcube serve`: the HTTP API on 127.0.0.1, running the same handler as the Lambda
//! functions ([`streamcube_pipeline::http::handle`]), and the dashboard beside it.
//!
//! | path | answers |
//! |---|---|
//! | `/v1/...` | the API |
//! | `/config.json` | the dashboard's `config.json` if the build has one, else the same-origin config |
//! | anything else | the built dashboard (`--dashboard DIR`), or a page saying how to build it |
//!
//! On AWS the dashboard is a static site (S3 and CloudFront) whose `config.json` a deploy step
//! writes; locally the same files are served here, so the page finds the API on its own origin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use clap::Args;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use streamcube_pipeline::Pipeline;
use streamcube_pipeline::http::{ApiError, ErrorChain, MAX_BODY_BYTES, handle};
use tower_http::services::ServeDir;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default: this server has no authentication).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Directory of the built dashboard, served under `/` (build it with `npm ci && npm run
    /// build` in `dashboard/`).
    #[arg(
        long = "dashboard",
        value_name = "DIR",
        env = "STREAMCUBE_DASHBOARD_DIR",
        default_value = "dashboard/dist"
    )]
    pub dashboard: PathBuf,
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

/// Where the dashboard is, and what its generated `config.json` says.
#[derive(Clone)]
struct Dashboard {
    dir: Arc<Path>,
    max_range_days: u32,
}

impl Dashboard {
    /// Whether the directory holds a build. Checked per request, so that building the dashboard
    /// while the server runs needs no restart.
    async fn is_built(&self) -> bool {
        tokio::fs::metadata(self.dir.join("index.html"))
            .await
            .is_ok_and(|m| m.is_file())
    }
}

/// The build's `config.json`, or the same-origin configuration when the build has none.
async fn config_json(State(d): State<Dashboard>) -> Response {
    let body = match tokio::fs::read(d.dir.join("config.json")).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let config = serde_json::json!({
                "apiBaseUrl": "",
                "authHeader": null,
                "maxRangeDays": d.max_range_days,
            });
            config.to_string().into_bytes()
        }
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), dir = %d.dir.display(), "reading config.json");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A file of the dashboard, or the page that says how to build it.
async fn dashboard_file(State(d): State<Dashboard>, req: axum::extract::Request) -> Response {
    if !d.is_built().await {
        let status = if req.uri().path() == "/" {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        return (status, axum::response::Html(not_built_page(&d.dir))).into_response();
    }
    match ServeDir::new(&*d.dir).try_call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), dir = %d.dir.display(), "serving the dashboard");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn not_built_page(dir: &Path) -> String {
    let dir = dir
        .display()
        .to_string()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>streamcube: the dashboard is not built</title>\n\
         <h1>The dashboard is not built</h1>\n\
         <p>This server looks for it in <code>{dir}</code>. Build it from the repository root:</p>\n\
         <pre>cd dashboard\nnpm ci &amp;&amp; npm run build</pre>\n\
         <p>then reload this page, or point <code>--dashboard DIR</code> (or \
         <code>STREAMCUBE_DASHBOARD_DIR</code>) at a build. The API answers under \
         <a href=\"/v1/health\">/v1/</a> either way.</p>\n</html>\n"
    )
}

/// The router: the API under `/v1/`, the dashboard everywhere else.
pub fn router(p: Pipeline, dashboard_dir: &Path) -> axum::Router {
    let dashboard = Dashboard {
        dir: Arc::from(dashboard_dir),
        max_range_days: p.config.query_limits.max_days,
    };
    let api_routes = axum::Router::new()
        .route("/v1", any(api))
        .route("/v1/{*route}", any(api))
        .with_state(p);
    axum::Router::new()
        .route("/config.json", get(config_json))
        .fallback(dashboard_file)
        .with_state(dashboard)
        .merge(api_routes)
}

pub async fn serve(p: Pipeline, args: &ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr()?;
    let built = args.dashboard.join("index.html").is_file();
    // One write, and a closed stdout (a supervisor that read the address and went away) must
    // not take the server down.
    {
        use std::io::Write;
        let dashboard = if built {
            format!(
                "dashboard on http://{addr}/ (from {})",
                args.dashboard.display()
            )
        } else {
            format!(
                "dashboard on http://{addr}/: not built in {} (run `npm ci && npm run build` in dashboard/)",
                args.dashboard.display()
            )
        };
        let banner = format!(
            "serving on http://{addr}\n\
             \x20 POST   /v1/events              (application/json or application/x-ndjson)\n\
             \x20 GET    /v1/cube?from=..&to=..  (Accept: text/csv for CSV)\n\
             \x20 DELETE /v1/viewers/{{viewer_id}}\n\
             \x20 GET    /v1/health\n\
             {dashboard}\n"
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    axum::serve(listener, router(p, &args.dashboard))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::setup::Settings;

    /// Sends a GET over a socket and returns (status, content type, body).
    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let ctype = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        (status, ctype, body.to_owned())
    }

    fn settings(data_dir: &Path) -> Settings {
        Settings {
            backend: crate::setup::BackendKind::Embedded,
            data_dir: data_dir.to_owned(),
            pseudonym_key: None,
            pseudonym_keyring: None,
            pseudonym_key_id: "k1".into(),
            cuboids: "country,device,genre,content_id".into(),
            served_countries: "*".into(),
        }
    }

    /// Serves `dashboard_dir` on a free port in a background runtime.
    fn start(data_dir: &Path, dashboard_dir: &Path) -> SocketAddr {
        let (p, _) = settings(data_dir).embedded().expect("pipeline");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let app = router(p, dashboard_dir);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let _ = axum::serve(listener, app).await;
            });
        });
        addr
    }

    #[test]
    fn serves_the_dashboard_beside_the_api() {
        let data = tempfile::tempdir().expect("tmp");
        let site = tempfile::tempdir().expect("tmp");
        let addr = start(data.path(), site.path());

        // Not built yet: `/` says how to build it; the API answers as before.
        let (status, ctype, body) = get(addr, "/");
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(body.contains("npm ci &amp;&amp; npm run build"), "{body}");
        assert_eq!(get(addr, "/app.js").0, 404);
        let (status, _, body) = get(addr, "/v1/health");
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
        let (status, _, body) = get(addr, "/v1/nothing");
        assert_eq!(status, 404);
        assert!(body.contains(r#""code":"not_found""#), "{body}");

        // Without a config.json the page gets the same-origin one, with the range limit.
        let (status, ctype, body) = get(addr, "/config.json");
        assert_eq!((status, ctype.as_str()), (200, "application/json"));
        let config: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            config,
            serde_json::json!({"apiBaseUrl": "", "authHeader": null, "maxRangeDays": 366})
        );

        // Built (while the server runs): files are served, and a deployed config.json wins.
        std::fs::write(
            site.path().join("index.html"),
            "<!doctype html><title>t</title>",
        )
        .expect("write");
        std::fs::write(site.path().join("app.js"), "console.log(1)").expect("write");
        let (status, ctype, body) = get(addr, "/");
        assert_eq!(
            (status, body.as_str()),
            (200, "<!doctype html><title>t</title>")
        );
        assert!(ctype.starts_with("text/html"), "{ctype}");
        let (status, ctype, _) = get(addr, "/app.js");
        assert_eq!(status, 200);
        assert!(ctype.contains("javascript"), "{ctype}");
        assert_eq!(get(addr, "/missing.js").0, 404);
        assert_eq!(get(addr, "/../Cargo.toml").0, 404);
        std::fs::write(
            site.path().join("config.json"),
            r#"{"apiBaseUrl":"https://api.example","authHeader":"Authorization"}"#,
        )
        .expect("write");
        let (_, _, body) = get(addr, "/config.json");
        assert_eq!(
            body,
            r#"{"apiBaseUrl":"https://api.example","authHeader":"Authorization"}"#
        );
    }
}

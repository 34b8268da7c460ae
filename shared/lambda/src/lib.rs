//! What every streamcube Lambda function shares.
//!
//! - [`Settings::from_env`] reads the configuration once per cold start and fails with a clear
//!   message when something is missing: the backend is chosen explicitly, never by falling back.
//! - [`respond`] adapts a `lambda_http` request to [`streamcube_pipeline::http::handle`], the
//!   handler `streamcube serve` runs too, and keeps each function to its own routes.

use std::path::PathBuf;

use bytes::Bytes;
use lambda_http::{Body, Request, RequestExt, Response};
use streamcube_aws::{AwsBackend, AwsNames};
#[cfg(feature = "embedded")]
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::CuboidSet;
use streamcube_model::pseudonym::{KeyRing, PseudonymKey, Pseudonymizer};
use streamcube_pipeline::http::{ApiError, handle, route};
use streamcube_pipeline::{Pipeline, PipelineConfig};

/// Why a function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be set ({1})")]
    Missing(&'static str, &'static str),
    #[error("{0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[cfg(feature = "embedded")]
    #[error("the embedded backend cannot open its data directory: {0}")]
    Embedded(#[from] streamcube_embedded::EmbeddedError),
    #[error(
        "STREAMCUBE_BACKEND is `embedded`, but this build has no embedded backend: deployment \
         builds carry the AWS one only; build with `--features embedded` to run locally"
    )]
    EmbeddedNotBuilt,
    #[error("the AWS backend cannot start: {0}")]
    Aws(#[from] streamcube_aws::AwsError),
    #[error("cannot create the local key file {0}: {1}")]
    KeyFile(PathBuf, std::io::Error),
}

/// The backends a function can run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and a local directory, for `cargo lambda watch` and tests (builds with the
    /// `embedded` feature only).
    Embedded { data_dir: PathBuf },
    /// DynamoDB, S3 and Glue.
    Aws(AwsNames),
}

/// Whether a function pseudonymizes viewer ids, and so needs the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// Writes events (ingest, bronze, Kafka) or finds a viewer (erasure): the key is required.
    Pseudonymizes,
    /// Reads silver or gold only (query, consolidation): the function is never given the key.
    None,
}

/// A function's configuration, from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub backend: Backend,
    pub key: Option<PseudonymKey>,
    /// Secrets Manager secret holding the key (AWS).
    pub key_secret: Option<String>,
    pub cuboids: CuboidSet,
    pub served_countries: String,
}

impl Settings {
    /// Reads the settings through `get` (the process environment in `main`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let backend = match get("STREAMCUBE_BACKEND").as_deref().map(str::trim) {
            Some("embedded") if !cfg!(feature = "embedded") => {
                return Err(ConfigError::EmbeddedNotBuilt);
            }
            Some("embedded") => Backend::Embedded {
                data_dir: get("STREAMCUBE_DATA_DIR").map(PathBuf::from).ok_or(
                    ConfigError::Missing(
                        "STREAMCUBE_DATA_DIR",
                        "the embedded backend's data directory",
                    ),
                )?,
            },
            Some("aws") => Backend::Aws(AwsNames::from_env(&get)?),
            Some(other) => {
                return Err(ConfigError::Invalid(
                    "STREAMCUBE_BACKEND",
                    format!("`{other}`; use `embedded` or `aws`"),
                ));
            }
            None => {
                return Err(ConfigError::Missing(
                    "STREAMCUBE_BACKEND",
                    "`embedded` for SQLite and a local directory, `aws` for DynamoDB and S3",
                ));
            }
        };
        let key_id = get("STREAMCUBE_PSEUDONYM_KEY_ID").unwrap_or_else(|| "k1".to_owned());
        let key = get("STREAMCUBE_PSEUDONYM_KEY")
            .map(|hex| PseudonymKey::from_hex(&key_id, &hex))
            .transpose()
            .map_err(|e| ConfigError::Invalid("STREAMCUBE_PSEUDONYM_KEY", e.to_string()))?;
        let cuboids = match get("STREAMCUBE_CUBOIDS").filter(|s| !s.trim().is_empty()) {
            Some(spec) => CuboidSet::parse(&spec)
                .map_err(|e| ConfigError::Invalid("STREAMCUBE_CUBOIDS", e.to_string()))?,
            None => CuboidSet::default(),
        };
        Ok(Settings {
            backend,
            key,
            key_secret: get("STREAMCUBE_PSEUDONYM_SECRET_ARN").filter(|s| !s.trim().is_empty()),
            cuboids,
            served_countries: get("STREAMCUBE_SERVED_COUNTRIES").unwrap_or_default(),
        })
    }

    /// The pipeline on the configured backend, for a function that pseudonymizes. On the
    /// embedded backend a missing key is created in the data directory (owner-only); on AWS it
    /// is read from Secrets Manager and required.
    pub async fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        self.pipeline_for(KeyUse::Pseudonymizes).await
    }

    /// The pipeline on the configured backend; `use_key` says whether the key is needed. A
    /// function that never pseudonymizes gets a random key of its own, which nothing it does
    /// ever uses (silver and gold hold pseudonyms already).
    pub async fn pipeline_for(&self, use_key: KeyUse) -> Result<Pipeline, ConfigError> {
        let (stores, keys) = match &self.backend {
            #[cfg(not(feature = "embedded"))]
            Backend::Embedded { .. } => return Err(ConfigError::EmbeddedNotBuilt),
            #[cfg(feature = "embedded")]
            Backend::Embedded { data_dir } => {
                let backend = EmbeddedBackend::open(data_dir)?;
                let key = match &self.key {
                    Some(k) => k.clone(),
                    None => local_key(data_dir)?,
                };
                (backend.stores(), KeyRing::single(key))
            }
            Backend::Aws(names) => {
                let aws = AwsBackend::connect(names.clone()).await;
                let keys = match (&self.key_secret, use_key) {
                    (Some(secret), _) => {
                        streamcube_aws::secret::load_keys(&aws.secrets, secret).await?
                    }
                    (None, KeyUse::None) => KeyRing::single(unused_key()?),
                    (None, KeyUse::Pseudonymizes) => {
                        return Err(ConfigError::Missing(
                            "STREAMCUBE_PSEUDONYM_SECRET_ARN",
                            "the Secrets Manager secret holding the pseudonymization key",
                        ));
                    }
                };
                (aws.stores()?, keys)
            }
        };
        let mut config = PipelineConfig::new(Pseudonymizer::from_ring(&keys));
        config.cuboids = self.cuboids.clone();
        config.served_countries = PipelineConfig::parse_countries(&self.served_countries)
            .map_err(|e| ConfigError::Invalid("STREAMCUBE_SERVED_COUNTRIES", e))?;
        Ok(Pipeline::new(stores, config))
    }
}

/// A key for a function that never pseudonymizes: random, so it cannot match real pseudonyms.
fn unused_key() -> Result<PseudonymKey, ConfigError> {
    PseudonymKey::from_bytes("unused", rand::random::<[u8; 32]>().to_vec())
        .map_err(|e| ConfigError::Invalid("the process key", e.to_string()))
}

#[cfg(feature = "embedded")]
fn local_key(dir: &std::path::Path) -> Result<PseudonymKey, ConfigError> {
    let path = dir.join("pseudonym.key");
    let fail = |e| ConfigError::KeyFile(path.clone(), e);
    if !path.exists() {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let secret: [u8; 32] = rand::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        match options.open(&path) {
            Ok(mut f) => f.write_all(hex::encode(secret).as_bytes()).map_err(fail)?,
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let text = std::fs::read_to_string(&path).map_err(fail)?;
    PseudonymKey::from_hex("local", text.trim())
        .map_err(|e| ConfigError::Invalid("the local pseudonym.key", e.to_string()))
}

/// A route a function answers: method and the path after `/v1/` (a trailing `/` matches a
/// prefix, as in `viewers/`).
pub type Route = (&'static str, &'static str);

fn allowed(routes: &[Route], method: &str, path: &str) -> bool {
    let Some(r) = route(path) else { return false };
    let r = r.trim_end_matches('/');
    routes.iter().any(|(m, p)| {
        *m == method && (r == *p || (p.ends_with('/') && r.starts_with(*p) && r.len() > p.len()))
    })
}

/// Answers an API Gateway request with the shared handler, for the routes this function owns.
pub async fn respond(p: &Pipeline, routes: &[Route], req: Request) -> Response<Body> {
    let request_id = req
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
    let (parts, body) = req.into_parts();
    let resp = if allowed(routes, parts.method.as_str(), parts.uri.path()) {
        let bytes = match body {
            Body::Empty => Bytes::new(),
            Body::Text(t) => Bytes::from(t),
            Body::Binary(b) => Bytes::from(b),
            _ => Bytes::new(),
        };
        handle(p, http_request(parts, bytes), &request_id).await
    } else {
        ApiError::NotFound.into_response(&request_id)
    };
    let (parts, bytes) = resp.into_parts();
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Response::from_parts(parts, body)
}

fn http_request(
    parts: lambda_http::http::request::Parts,
    body: Bytes,
) -> lambda_http::http::Request<Bytes> {
    lambda_http::http::Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_backend_must_be_chosen_explicitly() {
        let err = Settings::from_env(env(&[])).expect_err("no backend");
        assert!(
            err.to_string()
                .starts_with("STREAMCUBE_BACKEND must be set"),
            "{err}"
        );
        let err = Settings::from_env(env(&[("STREAMCUBE_BACKEND", "local")])).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "STREAMCUBE_BACKEND is not valid: `local`; use `embedded` or `aws`"
        );
        let err = Settings::from_env(env(&[("STREAMCUBE_BACKEND", "aws")])).expect_err("names");
        assert!(
            err.to_string()
                .contains("STREAMCUBE_SILVER_TABLE must be set"),
            "{err}"
        );
    }

    #[cfg(feature = "embedded")]
    #[test]
    fn the_embedded_backend_needs_its_directory_and_a_valid_key() {
        let err = Settings::from_env(env(&[("STREAMCUBE_BACKEND", "embedded")])).expect_err("dir");
        assert!(
            err.to_string()
                .starts_with("STREAMCUBE_DATA_DIR must be set"),
            "{err}"
        );
        let err = Settings::from_env(env(&[
            ("STREAMCUBE_BACKEND", "embedded"),
            ("STREAMCUBE_DATA_DIR", "/tmp/x"),
            ("STREAMCUBE_PSEUDONYM_KEY", "abc"),
        ]))
        .expect_err("key");
        assert!(
            err.to_string()
                .starts_with("STREAMCUBE_PSEUDONYM_KEY is not valid"),
            "{err}"
        );
    }

    /// A deployment build asked for the local backend says so at cold start instead of
    /// falling back to anything.
    #[cfg(not(feature = "embedded"))]
    #[test]
    fn a_deployment_build_refuses_the_embedded_backend() {
        let err = Settings::from_env(env(&[
            ("STREAMCUBE_BACKEND", "embedded"),
            ("STREAMCUBE_DATA_DIR", "/tmp/x"),
        ]))
        .expect_err("not built");
        assert!(matches!(err, ConfigError::EmbeddedNotBuilt), "{err}");
        assert!(err.to_string().contains("--features embedded"), "{err}");
    }

    #[test]
    fn routes_are_matched_after_v1() {
        let routes: &[Route] = &[
            ("POST", "events"),
            ("DELETE", "viewers/"),
            ("GET", "health"),
        ];
        assert!(allowed(routes, "POST", "/v1/events"));
        assert!(allowed(routes, "POST", "/prod/v1/events/"));
        assert!(allowed(routes, "DELETE", "/v1/viewers/abc"));
        assert!(!allowed(routes, "DELETE", "/v1/viewers/"));
        assert!(!allowed(routes, "GET", "/v1/cube"));
        assert!(!allowed(routes, "GET", "/health"));
    }
}

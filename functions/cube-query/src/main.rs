//! Cold start: read the configuration and open the backend once, then serve invocations.

use lambda_http::{Error, run, service_fn};
use streamcube_lambda::{KeyUse, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let pipeline = Settings::from_env(|k| std::env::var(k).ok())?
        .pipeline_for(KeyUse::None)
        .await?;
    run(service_fn(move |req| {
        let pipeline = pipeline.clone();
        async move { cube_query::handler(&pipeline, req).await }
    }))
    .await
}

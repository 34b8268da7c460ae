//! Cold start: read the configuration and open the backend once, then serve invocations.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use streamcube_lambda::{KeyUse, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // Consolidation reads pseudonyms from silver; it never needs the key.
    let pipeline = Settings::from_env(|k| std::env::var(k).ok())?
        .pipeline_for(KeyUse::None)
        .await?;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let pipeline = pipeline.clone();
        async move { cube_consolidator::handler(&pipeline, event).await }
    }))
    .await
}

//! Cold start: read the configuration and open the backend once, then serve invocations.

use aws_lambda_events::event::kafka::KafkaEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use streamcube_lambda::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let pipeline = Settings::from_env(|k| std::env::var(k).ok())?
        .pipeline()
        .await?;
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        let pipeline = pipeline.clone();
        async move { kafka_ingest::handler(&pipeline, event).await }
    }))
    .await
}

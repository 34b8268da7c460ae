//! Cold start: read the configuration, open the backend and choose how a paused object goes on,
//! once; then serve invocations.

use bronze_processor::{AnyContinuation, InProcess, Input, SelfInvoke};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use streamcube_lambda::{Backend, ConfigError, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env(|k| std::env::var(k).ok())?;
    let pipeline = settings.pipeline().await?;
    let continuation = match settings.backend {
        Backend::Embedded { .. } => AnyContinuation::InProcess(InProcess),
        Backend::Aws(_) => {
            let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").map_err(|_| {
                ConfigError::Missing(
                    "AWS_LAMBDA_FUNCTION_NAME",
                    "set by Lambda; the function invokes itself to continue large files",
                )
            })?;
            let config = aws_config::load_from_env().await;
            AnyContinuation::SelfInvoke(SelfInvoke::new(aws_sdk_lambda::Client::new(&config), name))
        }
    };
    run(service_fn(move |event: LambdaEvent<Input>| {
        let (pipeline, continuation) = (pipeline.clone(), continuation.clone());
        async move { bronze_processor::handler(&pipeline, &continuation, event).await }
    }))
    .await
}

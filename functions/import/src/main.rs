//! Lambda entry point: tracing, clients built once, the handler built from the environment ([`lambda::build`]),
//! then the runtime loop.
//!
//! [`lambda::build`]: tributary_import::lambda::build

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let import = tributary_import::lambda::build(&|name| std::env::var(name), &clients).await?;
    let import = &import;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // The invocation's deadline (epoch milliseconds) as an `Instant`, so the import checkpoints in time.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = Instant::now() + left;
        Ok::<_, lambda_runtime::Error>(import.handle(event.payload, Some(deadline)).await)
    }))
    .await
}

//! Lambda entry point: tracing, clients built once, the handler built from the environment ([`lambda::build`]),
//! then the runtime loop.
//!
//! [`lambda::build`]: tributary_stitch::lambda::build

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let stitch = tributary_stitch::lambda::build(&|name| std::env::var(name), &clients).await?;
    let stitch = &stitch;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(stitch.handle(event.payload).await)
    }))
    .await
}

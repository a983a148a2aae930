//! Lambda entry point: tracing, clients built once, the handler built from the environment ([`lambda::build`]),
//! then the runtime loop.
//!
//! [`lambda::build`]: tributary_deliver::lambda::build

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let deliver = tributary_deliver::lambda::build(&|name| std::env::var(name), &clients).await?;
    let deliver = &deliver;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(deliver.handle(event.payload).await)
    }))
    .await
}

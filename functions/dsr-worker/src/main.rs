//! Lambda entry point: tracing, clients built once, the handler (with its signing key) built from the environment
//! ([`lambda::build`]), then the runtime loop, each invocation dispatched by [`lambda::invoke`]: an SQS batch from
//! the DSR queue, or the schedule's sweep of the waiting list.
//!
//! [`lambda::build`]: tributary_dsr_worker::lambda::build
//! [`lambda::invoke`]: tributary_dsr_worker::lambda::invoke

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tributary_aws::AwsClients;
use tributary_dsr_worker::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let worker = lambda::build(&|name| std::env::var(name), &clients).await?;
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| lambda::invoke(worker, event.payload))).await
}

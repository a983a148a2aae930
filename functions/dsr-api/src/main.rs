//! Lambda entry point: tracing, clients built once, the handler (with its signing key) built from the environment
//! ([`lambda::build`]), then the runtime loop.
//!
//! [`lambda::build`]: tributary_dsr_api::lambda::build

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let clients = AwsClients::from_env().await;
    let api = tributary_dsr_api::lambda::build(&|name| std::env::var(name), &clients).await?;
    let api = &api;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, lambda_runtime::Error>(api.handle(event.payload).await)
    }))
    .await
}

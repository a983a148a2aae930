//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (DynamoDB).
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_profile_api::ProfileApi;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let table_name = std::env::var("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let config_uri = std::env::var("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    // Open the TLS connection during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    let api = ProfileApi::new(clients.dynamo_table(table_name), Arc::new(workspace));
    let api = &api;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, lambda_runtime::Error>(api.handle(event.payload).await)
    }))
    .await
}

//! Lambda entry point: tracing, config from the environment, clients and the signing key loaded once, then the
//! runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (DynamoDB), which holds requests, the waiting list and the audit log.
//! - `DSR_QUEUE_URL`: the DSR worker's queue (SQS).
//! - `RESULTS_BUCKET`: the bucket of access and portability exports (links to them are presigned).
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - `DSR_SIGNING_KEY`: `s3://bucket/key` or a path of the PEM file holding the signing key and its certificate.
//! - `DSR_CERTIFICATE_URL` (optional): discovery's `processor_certificate`; unset, this API's own `cert.pem`.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_dsr_api::{DsrApi, RsaSigner};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let table_name = env("PROFILES_TABLE")?;
    let queue_url = env("DSR_QUEUE_URL")?;
    let results_bucket = env("RESULTS_BUCKET")?;
    let config_uri = env("WORKSPACE_CONFIG")?;
    let key_uri = env("DSR_SIGNING_KEY")?;
    let certificate_url = std::env::var("DSR_CERTIFICATE_URL").ok().filter(|u| !u.trim().is_empty());

    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    let signer = RsaSigner::from_pem(&tributary_aws::read_location(&clients, &key_uri).await?)
        .map_err(|e| anyhow::anyhow!("signing key {key_uri}: {e}"))?;
    // Open the TLS connections during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    let api = DsrApi::new(
        clients.dynamo_table(table_name),
        clients.sqs_queue(queue_url),
        signer,
        clients.s3_links(results_bucket, ""),
        Arc::new(workspace),
        certificate_url,
    );
    let api = &api;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, lambda_runtime::Error>(api.handle(event.payload).await)
    }))
    .await
}

//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (DynamoDB), which holds requests, the waiting list and the audit log.
//! - `DSR_QUEUE_URL`: the DSR worker's queue (SQS).
//! - `RESULTS_BUCKET`: the bucket of access and portability exports (links to them are presigned).
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - `DSR_SIGNING_KEY`: `s3://bucket/key` or a path of the PEM file holding the signing key and its certificate.
//! - `DSR_CERTIFICATE_URL` (optional): discovery's `processor_certificate`; unset, this API's own `cert.pem`.

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, S3Links, SqsQueue};

use crate::{DsrApi, RsaSigner};

/// The handler the Lambda binary runs.
pub type Handler = DsrApi<DynamoTable, SqsQueue, RsaSigner, S3Links>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace and the signing key, opens the connections during init (`clients.warm()`). Fails as `main`'s
/// init fails, with the same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let var = |name: &str| env(name).with_context(|| format!("{name} is not set"));
    let table_name = var("PROFILES_TABLE")?;
    let queue_url = var("DSR_QUEUE_URL")?;
    let results_bucket = var("RESULTS_BUCKET")?;
    let config_uri = var("WORKSPACE_CONFIG")?;
    let key_uri = var("DSR_SIGNING_KEY")?;
    let certificate_url = env("DSR_CERTIFICATE_URL").ok().filter(|u| !u.trim().is_empty());

    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    let signer = RsaSigner::from_pem(&tributary_aws::read_location(clients, &key_uri).await?)
        .map_err(|e| anyhow::anyhow!("signing key {key_uri}: {e}"))?;
    // Open the TLS connections during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    Ok(DsrApi::new(
        clients.dynamo_table(table_name),
        clients.sqs_queue(queue_url),
        signer,
        clients.s3_links(results_bucket, ""),
        Arc::new(workspace),
        certificate_url,
    ))
}

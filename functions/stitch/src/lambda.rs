//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (identities, profiles, ledger, events, dedup).
//! - `DELIVERY_QUEUE_URL`: where stitched events are handed to delivery.
//! - `CHANGES_QUEUE_URL` (optional): the profile change feed the audience refresh drains; written only when the
//!   workspace has audiences.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, SqsQueue};
use tributary_core::metrics::StdoutMetrics;

use crate::{Stitch, StitchSettings};

/// The handler the Lambda binary runs.
pub type Handler = Stitch<DynamoTable, SqsQueue, StdoutMetrics>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace, opens the connections during init (`clients.warm()`). Fails as `main`'s init fails, with the
/// same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let table = env("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let delivery = env("DELIVERY_QUEUE_URL").context("DELIVERY_QUEUE_URL is not set")?;
    let config_uri = env("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    let has_audiences = !workspace.audiences.is_empty();
    // Open the TLS connection during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    let stitch = Stitch::new(
        clients.dynamo_table(table),
        clients.sqs_queue(delivery),
        StdoutMetrics,
        Arc::new(workspace),
        StitchSettings::default(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(match env("CHANGES_QUEUE_URL") {
        Ok(url) if has_audiences => stitch.with_changes(clients.sqs_queue(url)),
        _ => stitch,
    })
}

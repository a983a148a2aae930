//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (profiles, memberships, due items, the run's state).
//! - `CHANGES_QUEUE_URL`: the profile change feed stitch writes and each run drains.
//! - `DELIVERY_QUEUE_URL`: where enter/exit events go.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, SqsQueue};
use tributary_core::metrics::StdoutMetrics;

use crate::{Audiences, RefreshSettings};

/// The handler the Lambda binary runs.
pub type Handler = Audiences<DynamoTable, SqsQueue, StdoutMetrics>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace, opens the connections during init (`clients.warm()`). Fails as `main`'s init fails, with the
/// same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let var = |name: &str| env(name).with_context(|| format!("{name} is not set"));
    let (table, changes, delivery) = (var("PROFILES_TABLE")?, var("CHANGES_QUEUE_URL")?, var("DELIVERY_QUEUE_URL")?);
    let config_uri = var("WORKSPACE_CONFIG")?;
    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    clients.warm().await;

    Ok(Audiences::new(
        clients.dynamo_table(table),
        clients.sqs_queue(changes),
        clients.sqs_queue(delivery),
        StdoutMetrics,
        Arc::new(workspace),
        RefreshSettings::default(),
    )
    .map_err(anyhow::Error::msg)?)
}

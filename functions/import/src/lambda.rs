//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (import states live there, one partition per source; its `suppressed`
//!   index lists the identity items of erased subjects, whose rows are skipped).
//! - `EVENTS_QUEUE_URL`: where imported rows go, as events of their source.
//! - `IMPORT_QUEUE_URL`: the queue this function consumes (S3 notifications), where it queues its continuations.
//! - `IMPORT_BUCKET`: the bucket files arrive in (`imports/<source-id>/…`); reports go to `import-reports/`.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, S3Store, SqsQueue};
use tributary_core::metrics::StdoutMetrics;

use crate::{Import, ImportSettings};

/// The handler the Lambda binary runs.
pub type Handler = Import<DynamoTable, SqsQueue, S3Store, StdoutMetrics>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace, opens the connections during init (`clients.warm()`). Fails as `main`'s init fails, with the
/// same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let var = |name: &str| env(name).with_context(|| format!("{name} is not set"));
    let (table, events, imports, bucket) =
        (var("PROFILES_TABLE")?, var("EVENTS_QUEUE_URL")?, var("IMPORT_QUEUE_URL")?, var("IMPORT_BUCKET")?);
    let config_uri = var("WORKSPACE_CONFIG")?;
    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    clients.warm().await;

    Ok(Import::new(
        clients.dynamo_table(table.clone()),
        clients.sqs_queue(events),
        clients.sqs_queue(imports),
        clients.s3_store(bucket.clone(), ""),
        StdoutMetrics,
        Arc::new(workspace),
        ImportSettings::new(bucket),
    )
    .with_suppressions(clients.dynamo_table(table)))
}

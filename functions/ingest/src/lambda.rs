//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `EVENTS_QUEUE_URL`: the events queue.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - `QUARANTINE_BUCKET`: the bucket whose `quarantine/` prefix holds events a tracking plan quarantines.
//! - `PROFILES_TABLE`: the profile table, where governed sources' counters are added to (`stats#<source>` items) and
//!   whose `suppressed` index lists the identity items of erased subjects (their events are dropped).

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, S3Store, SqsQueue};

use crate::{Ingest, IngestSettings, StdoutMetrics};

/// The handler the Lambda binary runs.
pub type Handler = Ingest<SqsQueue, StdoutMetrics, S3Store, DynamoTable>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace, opens the connections during init (`clients.warm()`). Fails as `main`'s init fails, with the
/// same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let var = |name: &str| env(name).with_context(|| format!("{name} is not set"));
    let queue_url = var("EVENTS_QUEUE_URL")?;
    let config_uri = var("WORKSPACE_CONFIG")?;
    // Required rather than optional: without it a quarantining source could only answer 503.
    let quarantine_bucket = var("QUARANTINE_BUCKET")?;
    // Required too: without it governed sources would report nothing, and erased subjects' events would be queued,
    // silently.
    let profiles_table = var("PROFILES_TABLE")?;
    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    // Open the TLS connection during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    Ok(Ingest::new(clients.sqs_queue(queue_url), StdoutMetrics, Arc::new(workspace), IngestSettings::default())
        .with_quarantine(clients.s3_store(quarantine_bucket, ""))
        .with_stats(clients.dynamo_table(profiles_table.clone()))
        // Scanned lazily (not during init) and at most once a minute.
        .with_suppressions(clients.dynamo_table(profiles_table)))
}

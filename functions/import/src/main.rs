//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (import states live there, one partition per source; its `suppressed`
//!   index lists the identity items of erased subjects, whose rows are skipped).
//! - `EVENTS_QUEUE_URL`: where imported rows go, as events of their source.
//! - `IMPORT_QUEUE_URL`: the queue this function consumes (S3 notifications), where it queues its continuations.
//! - `IMPORT_BUCKET`: the bucket files arrive in (`imports/<source-id>/…`); reports go to `import-reports/`.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_core::metrics::StdoutMetrics;
use tributary_import::{Import, ImportSettings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let (table, events, imports, bucket) =
        (var("PROFILES_TABLE")?, var("EVENTS_QUEUE_URL")?, var("IMPORT_QUEUE_URL")?, var("IMPORT_BUCKET")?);
    let config_uri = var("WORKSPACE_CONFIG")?;
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    clients.warm().await;

    let import = Import::new(
        clients.dynamo_table(table.clone()),
        clients.sqs_queue(events),
        clients.sqs_queue(imports),
        clients.s3_store(bucket.clone(), ""),
        StdoutMetrics,
        Arc::new(workspace),
        ImportSettings::new(bucket),
    )
    .with_suppressions(clients.dynamo_table(table));
    let import = &import;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // The invocation's deadline (epoch milliseconds) as an `Instant`, so the import checkpoints in time.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = Instant::now() + left;
        Ok::<_, lambda_runtime::Error>(import.handle(event.payload, Some(deadline)).await)
    }))
    .await
}

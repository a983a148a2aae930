//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (profiles, memberships, due items, the run's state).
//! - `CHANGES_QUEUE_URL`: the profile change feed stitch writes and each run drains.
//! - `DELIVERY_QUEUE_URL`: where enter/exit events go.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//!
//! The EventBridge Scheduler schedules invoke it with `{}` (incremental) or `{"full": true}` (full pass).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_audiences::{Audiences, RefreshRequest, RefreshSettings};
use tributary_aws::AwsClients;
use tributary_core::metrics::StdoutMetrics;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let (table, changes, delivery) = (var("PROFILES_TABLE")?, var("CHANGES_QUEUE_URL")?, var("DELIVERY_QUEUE_URL")?);
    let config_uri = var("WORKSPACE_CONFIG")?;
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    clients.warm().await;

    let audiences = Audiences::new(
        clients.dynamo_table(table),
        clients.sqs_queue(changes),
        clients.sqs_queue(delivery),
        StdoutMetrics,
        Arc::new(workspace),
        RefreshSettings::default(),
    )
    .map_err(anyhow::Error::msg)?;
    let audiences = &audiences;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RefreshRequest>| async move {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let deadline = Instant::now() + Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        // An error fails the invocation: Lambda retries the scheduler's asynchronous invocation (twice by
        // default), and the next scheduled run picks up whatever is left; the lease keeps two runs apart.
        audiences.handle(event.payload, Some(deadline)).await.map_err(lambda_runtime::Error::from)
    }))
    .await
}

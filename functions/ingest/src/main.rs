//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `EVENTS_QUEUE_URL`: the events queue.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - `QUARANTINE_BUCKET`: the bucket whose `quarantine/` prefix holds events a tracking plan quarantines.
//! - `PROFILES_TABLE`: the profile table, where governed sources' counters are added to (`stats#<source>` items) and
//!   whose `suppressed` index lists the identity items of erased subjects (their events are dropped).

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_ingest::{Ingest, IngestSettings, StdoutMetrics};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let queue_url = std::env::var("EVENTS_QUEUE_URL").context("EVENTS_QUEUE_URL is not set")?;
    let config_uri = std::env::var("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    // Required rather than optional: without it a quarantining source could only answer 503.
    let quarantine_bucket = std::env::var("QUARANTINE_BUCKET").context("QUARANTINE_BUCKET is not set")?;
    // Required too: without it governed sources would report nothing, and erased subjects' events would be queued,
    // silently.
    let profiles_table = std::env::var("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    // Open the TLS connection during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    let ingest =
        Ingest::new(clients.sqs_queue(queue_url), StdoutMetrics, Arc::new(workspace), IngestSettings::default())
            .with_quarantine(clients.s3_store(quarantine_bucket, ""))
            .with_stats(clients.dynamo_table(profiles_table.clone()))
            // Scanned lazily (not during init) and at most once a minute.
            .with_suppressions(clients.dynamo_table(profiles_table));
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, lambda_runtime::Error>(ingest.handle(event.payload).await)
    }))
    .await
}

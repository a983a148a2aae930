//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `EVENTS_QUEUE_URL`: the events queue.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_core::ports::ObjectStore;
use tributary_ingest::{Ingest, IngestSettings, StdoutMetrics};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time() // CloudWatch stamps every line
        .init();

    let queue_url = std::env::var("EVENTS_QUEUE_URL").context("EVENTS_QUEUE_URL is not set")?;
    let config_uri = std::env::var("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let clients = AwsClients::from_env().await;
    let workspace = load_workspace(&clients, &config_uri).await?;
    // Open the TLS connection during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    let ingest =
        Ingest::new(clients.sqs_queue(queue_url), StdoutMetrics, Arc::new(workspace), IngestSettings::default());
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, lambda_runtime::Error>(ingest.handle(event.payload).await)
    }))
    .await
}

async fn load_workspace(clients: &AwsClients, uri: &str) -> anyhow::Result<tributary_core::config::WorkspaceConfig> {
    let text = match uri.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').context("WORKSPACE_CONFIG must look like s3://bucket/key")?;
            let bytes = clients
                .s3_store(bucket, "")
                .get(key)
                .await
                .map_err(|e| anyhow::anyhow!("reading workspace config {uri}: {e}"))?
                .with_context(|| format!("workspace config {uri} does not exist"))?;
            String::from_utf8(bytes).context("workspace config is not UTF-8")?
        }
        None => std::fs::read_to_string(uri).with_context(|| format!("reading workspace config {uri}"))?,
    };
    tributary_core::config::load(&text).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("{uri}: {e}")).collect();
        anyhow::anyhow!(lines.join("\n"))
    })
}

//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (identities, profiles, ledger, events, dedup).
//! - `DELIVERY_QUEUE_URL`: where stitched events are handed to delivery.
//! - `CHANGES_QUEUE_URL` (optional): the profile change feed the audience refresh drains; written only when the
//!   workspace has audiences.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_core::metrics::StdoutMetrics;
use tributary_stitch::{Stitch, StitchSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let table = std::env::var("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let delivery = std::env::var("DELIVERY_QUEUE_URL").context("DELIVERY_QUEUE_URL is not set")?;
    let config_uri = std::env::var("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
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
    let stitch = match std::env::var("CHANGES_QUEUE_URL") {
        Ok(url) if has_audiences => stitch.with_changes(clients.sqs_queue(url)),
        _ => stitch,
    };
    let stitch = &stitch;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(stitch.handle(event.payload).await)
    }))
    .await
}

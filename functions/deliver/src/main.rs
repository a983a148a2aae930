//! Lambda entry point: tracing, config from the environment, clients built once, then the runtime loop.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (receipts live with the profiles; profile traits are read from it).
//! - `DELIVERY_QUEUE_URL`: the queue this function consumes (its records' visibility carries the backoff).
//! - `DELIVERY_DLQ_URL`: where given-up deliveries go, one dead letter per (destination, event).
//! - `DELIVERY_MAX_RECEIVE_COUNT`: the queue's `maxReceiveCount`, so the function dead-letters with a reason first.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - Whatever `${NAME}` the workspace's destinations name (tokens, signing secrets).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tributary_aws::AwsClients;
use tributary_core::delivery::DestinationKind;
use tributary_core::metrics::StdoutMetrics;
use tributary_deliver::export::ExportSender;
use tributary_deliver::http::HttpSender;
use tributary_deliver::{resolve_destinations, Deliver, DeliverSettings, Senders};

// Many small JSON allocations across threads: mimalloc handles them with less contention than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let table = std::env::var("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let queue = std::env::var("DELIVERY_QUEUE_URL").context("DELIVERY_QUEUE_URL is not set")?;
    let dlq = std::env::var("DELIVERY_DLQ_URL").context("DELIVERY_DLQ_URL is not set")?;
    let config_uri = std::env::var("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let max_receive_count = match std::env::var("DELIVERY_MAX_RECEIVE_COUNT") {
        Ok(v) => v.parse().context("DELIVERY_MAX_RECEIVE_COUNT must be a number")?,
        Err(_) => DeliverSettings::default().max_receive_count,
    };
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &config_uri).await?;
    // A destination whose secret is missing stops the function here, not at the first event.
    let destinations = resolve_destinations(&workspace, &|name| std::env::var(name).ok())?;
    let exports: BTreeMap<_, _> = destinations
        .iter()
        .filter(|d| d.kind == DestinationKind::S3Export)
        .filter_map(|d| d.transport.bucket.clone())
        .map(|b| (b.clone(), clients.s3_store(b, "")))
        .collect();
    let http = HttpSender::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?;
    clients.warm().await;

    let deliver = Deliver::new(
        clients.dynamo_table(table),
        clients.sqs_queue(queue),
        clients.sqs_queue(dlq),
        Senders { http, exports: ExportSender::new(exports) },
        StdoutMetrics,
        Arc::new(workspace),
        destinations,
        DeliverSettings { max_receive_count },
    );
    let deliver = &deliver;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(deliver.handle(event.payload).await)
    }))
    .await
}

//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, exactly as `main.rs` runs it. The emulator deployment test (tests/tests/aws_stack.rs) builds it with the
//! variables the deployed stack gives the function, so the template and this code are checked against each other.
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (receipts live with the profiles; profile traits are read from it).
//! - `DELIVERY_QUEUE_URL`: the queue this function consumes (its records' visibility carries the backoff).
//! - `DELIVERY_DLQ_URL`: where given-up deliveries go, one dead letter per (destination, event).
//! - `DELIVERY_MAX_RECEIVE_COUNT`: the queue's `maxReceiveCount`, so the function dead-letters with a reason first.
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - Whatever `${NAME}` the workspace's destinations name (tokens, signing secrets).

use std::collections::BTreeMap;
use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use lambda_runtime::Error;
use tributary_aws::{AwsClients, DynamoTable, S3Store, SqsQueue};
use tributary_core::delivery::DestinationKind;
use tributary_core::metrics::StdoutMetrics;

use crate::export::ExportSender;
use crate::http::HttpSender;
use crate::{resolve_destinations, Deliver, DeliverSettings, Senders};

/// The handler the Lambda binary runs.
pub type Handler = Deliver<DynamoTable, SqsQueue, Senders<S3Store>, StdoutMetrics>;

/// Builds the handler as `main` does at cold start: reads its variables, destination secrets included, through `env`
/// (`std::env::var` in `main`), loads the workspace, opens the connections during init (`clients.warm()`). Fails as
/// `main`'s init fails, with the same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let table = env("PROFILES_TABLE").context("PROFILES_TABLE is not set")?;
    let queue = env("DELIVERY_QUEUE_URL").context("DELIVERY_QUEUE_URL is not set")?;
    let dlq = env("DELIVERY_DLQ_URL").context("DELIVERY_DLQ_URL is not set")?;
    let config_uri = env("WORKSPACE_CONFIG").context("WORKSPACE_CONFIG is not set")?;
    let max_receive_count = match env("DELIVERY_MAX_RECEIVE_COUNT") {
        Ok(v) => v.parse().context("DELIVERY_MAX_RECEIVE_COUNT must be a number")?,
        Err(_) => DeliverSettings::default().max_receive_count,
    };
    let workspace = tributary_aws::load_workspace(clients, &config_uri).await?;
    // A destination whose secret is missing stops the function here, not at the first event.
    let destinations = resolve_destinations(&workspace, &|name| env(name).ok())?;
    let exports: BTreeMap<_, _> = destinations
        .iter()
        .filter(|d| d.kind == DestinationKind::S3Export)
        .filter_map(|d| d.transport.bucket.clone())
        .map(|b| (b.clone(), clients.s3_store(b, "")))
        .collect();
    let http = HttpSender::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?;
    clients.warm().await;

    Ok(Deliver::new(
        clients.dynamo_table(table),
        clients.sqs_queue(queue),
        clients.sqs_queue(dlq),
        Senders { http, exports: ExportSender::new(exports) },
        StdoutMetrics,
        Arc::new(workspace),
        destinations,
        DeliverSettings { max_receive_count },
    ))
}

//! The Lambda function's wiring (feature `lambda`): the handler built from its environment variables on the AWS
//! adapters, and the dispatch of an invocation, exactly as `main.rs` runs them. The emulator deployment test
//! (tests/tests/aws_stack.rs) builds it with the variables the deployed stack gives the function, so the template and
//! this code are checked against each other.
//!
//! The function has two triggers: the DSR queue (an SQS batch) and a schedule that sweeps the waiting list (any
//! other payload, e.g. `{"sweep": true}`).
//!
//! Environment (set by infra/template.yaml):
//! - `PROFILES_TABLE`: the profile table (requests, the waiting list, the audit log, everything erased).
//! - `DSR_QUEUE_URL`: this function's own queue (callbacks and swept requests go back onto it).
//! - `RESULTS_BUCKET`: where access and portability exports are written (links are presigned).
//! - `WORKSPACE_CONFIG`: `s3://bucket/key` of the workspace file, or a path inside the deployment package.
//! - `DSR_SIGNING_KEY`: `s3://bucket/key` or a path of the PEM holding the signing key and its certificate.
//! - `EVENTS_DLQ_URL`, `DELIVERY_DLQ_URL`, `CHANGES_DLQ_URL`, `DELIVERY_QUEUE_URL`: queues an erasure searches.
//! - `ARCHIVE_BUCKET` (quarantined events under `quarantine/`) and `IMPORT_BUCKET` (partner files under `imports/`,
//!   reports under `import-reports/`): buckets an erasure searches, with each `s3_export` destination's bucket.

use std::env::VarError;
use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::Error;
use serde_json::{json, Value};
use tributary_aws::{AwsClients, DynamoTable, S3Links, S3Store, SqsQueue};
use tributary_dsr_api::RsaSigner;

use crate::{DsrWorker, Holdings, HttpClient, ObjectPlace, WorkerSettings};

/// The handler the Lambda binary runs.
pub type Handler = DsrWorker<DynamoTable, SqsQueue, S3Store, RsaSigner, S3Links, HttpClient>;

/// Builds the handler as `main` does at cold start: reads its variables through `env` (`std::env::var` in `main`),
/// loads the workspace and the signing key, opens the connections during init (`clients.warm()`). Fails as `main`'s
/// init fails, with the same errors (converted into a Lambda runtime error as `main`'s `?` converts them).
pub async fn build(env: &dyn Fn(&str) -> Result<String, VarError>, clients: &AwsClients) -> Result<Handler, Error> {
    let var = |name: &str| env(name).with_context(|| format!("{name} is not set"));
    let workspace = tributary_aws::load_workspace(clients, &var("WORKSPACE_CONFIG")?).await?;
    let key_uri = var("DSR_SIGNING_KEY")?;
    let signer = RsaSigner::from_pem(&tributary_aws::read_location(clients, &key_uri).await?)
        .map_err(|e| anyhow::anyhow!("signing key {key_uri}: {e}"))?;
    let results_bucket = var("RESULTS_BUCKET")?;
    let destinations = tributary_deliver::resolve_destinations(&workspace, &|name: &str| env(name).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut holdings = Holdings::default();
    // The dead-letter queues, and the delivery queue: deliveries still waiting would reach destinations after the
    // erasure (and after their deletion call). The events queue needs no search: stitch drops suppressed events.
    for (name, variable) in [
        ("events-dlq", "EVENTS_DLQ_URL"),
        ("delivery-dlq", "DELIVERY_DLQ_URL"),
        ("profile-changes-dlq", "CHANGES_DLQ_URL"),
        ("delivery", "DELIVERY_QUEUE_URL"),
    ] {
        holdings.queues.push((name.to_string(), clients.sqs_queue(var(variable)?)));
    }
    let archive = var("ARCHIVE_BUCKET")?;
    let imports = var("IMPORT_BUCKET")?;
    let place = |name: &str, bucket: &str, prefix: &str, partner_files: bool| ObjectPlace {
        name: name.to_string(),
        store: clients.s3_store(bucket, ""),
        prefix: prefix.to_string(),
        whole_files: partner_files,
        imports: partner_files,
    };
    holdings.objects.push(place("quarantine", &archive, "quarantine/", false));
    holdings.objects.push(place("import_files", &imports, "imports/", true));
    holdings.objects.push(place("import_reports", &imports, "import-reports/", false));
    for d in &destinations {
        if let Some(bucket) = &d.transport.bucket {
            let prefix = d.transport.prefix.clone().unwrap_or_default();
            holdings.objects.push(place(&format!("export:{}", d.id), bucket, &prefix, false));
        }
    }
    let http = HttpClient::new(&workspace.delivery.allow_private_hosts).map_err(anyhow::Error::msg)?;
    // Open the TLS connections during init, which is billed the same but keeps the first request fast.
    clients.warm().await;

    Ok(DsrWorker::new(
        clients.dynamo_table(var("PROFILES_TABLE")?),
        clients.sqs_queue(var("DSR_QUEUE_URL")?),
        clients.s3_store(&results_bucket, ""),
        signer,
        clients.s3_links(&results_bucket, ""),
        http,
        Arc::new(workspace),
        WorkerSettings::default(),
    )
    .with_holdings(holdings)
    .with_destinations(destinations))
}

/// One invocation: an SQS batch from the DSR queue (its `batchItemFailures` answer), or anything else, which sweeps
/// the waiting list (`{"queued": N}`).
pub async fn invoke(worker: &Handler, payload: Value) -> Result<Value, Error> {
    if payload.get("Records").is_some() {
        let sqs: SqsEvent = serde_json::from_value(payload)?;
        return Ok(serde_json::to_value(worker.handle(sqs).await)?);
    }
    let queued = worker.sweep().await?;
    Ok(json!({ "queued": queued }))
}

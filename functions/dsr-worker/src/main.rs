//! Lambda entry point: tracing, config from the environment, clients and the signing key loaded once, then the
//! runtime loop. The function has two triggers: the DSR queue (an SQS batch) and a schedule that sweeps the waiting
//! list (any other payload, e.g. `{"sweep": true}`).
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

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use tributary_aws::AwsClients;
use tributary_dsr_api::RsaSigner;
use tributary_dsr_worker::{DsrWorker, Holdings, HttpClient, ObjectPlace, WorkerSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tributary_aws::init_tracing();

    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let clients = AwsClients::from_env().await;
    let workspace = tributary_aws::load_workspace(&clients, &env("WORKSPACE_CONFIG")?).await?;
    let key_uri = env("DSR_SIGNING_KEY")?;
    let signer = RsaSigner::from_pem(&tributary_aws::read_location(&clients, &key_uri).await?)
        .map_err(|e| anyhow::anyhow!("signing key {key_uri}: {e}"))?;
    let results_bucket = env("RESULTS_BUCKET")?;
    let destinations = tributary_deliver::resolve_destinations(&workspace, &|name: &str| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut holdings = Holdings::default();
    // The dead-letter queues, and the delivery queue: deliveries still waiting would reach destinations after the
    // erasure (and after their deletion call). The events queue needs no search: stitch drops suppressed events.
    for (name, var) in [
        ("events-dlq", "EVENTS_DLQ_URL"),
        ("delivery-dlq", "DELIVERY_DLQ_URL"),
        ("profile-changes-dlq", "CHANGES_DLQ_URL"),
        ("delivery", "DELIVERY_QUEUE_URL"),
    ] {
        holdings.queues.push((name.to_string(), clients.sqs_queue(env(var)?)));
    }
    let archive = env("ARCHIVE_BUCKET")?;
    let imports = env("IMPORT_BUCKET")?;
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

    let worker = DsrWorker::new(
        clients.dynamo_table(env("PROFILES_TABLE")?),
        clients.sqs_queue(env("DSR_QUEUE_URL")?),
        clients.s3_store(&results_bucket, ""),
        signer,
        clients.s3_links(&results_bucket, ""),
        http,
        Arc::new(workspace),
        WorkerSettings::default(),
    )
    .with_holdings(holdings)
    .with_destinations(destinations);
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if event.payload.get("Records").is_some() {
            let sqs: SqsEvent = serde_json::from_value(event.payload)?;
            return Ok::<_, lambda_runtime::Error>(serde_json::to_value(worker.handle(sqs).await)?);
        }
        let queued = worker.sweep().await?;
        Ok(json!({ "queued": queued }))
    }))
    .await
}

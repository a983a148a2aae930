//! Every function of the stack built as its Lambda binary builds it (`<crate>::lambda::build`) from the variables
//! a [`Deployment`] gives it, and invoked as the stack's wiring invokes it: HTTP requests to the function the HTTP
//! API routes them to, SQS batches to the function a queue's event source mapping names ([`Poller`]). Shared by the
//! emulator deployment test (tests/aws_stack.rs) and the cost benchmark (`bench-cost`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::Value;
use tributary_aws::{AwsClients, SqsQueue};
use tributary_core::ports::{Queue, ReceivedMessage};

use crate::stack::{Deployment, Trigger};

/// Every function, built as its binary builds it, from the variables the stack gives it.
pub struct Functions {
    pub ingest: tributary_ingest::lambda::Handler,
    pub stitch: tributary_stitch::lambda::Handler,
    pub deliver: tributary_deliver::lambda::Handler,
    pub import: tributary_import::lambda::Handler,
    pub audiences: tributary_audiences::lambda::Handler,
    pub dsr_api: tributary_dsr_api::lambda::Handler,
    pub dsr_worker: tributary_dsr_worker::lambda::Handler,
    pub profile_api: tributary_profile_api::lambda::Handler,
}

/// A handler built, or a panic saying which function would not start on the stack's variables.
fn started<T>(binary: &str, built: Result<T, lambda_runtime::Error>) -> T {
    built.unwrap_or_else(|e| panic!("{binary} does not start on the variables the stack gives it: {e}"))
}

impl Functions {
    pub async fn new(stack: &Deployment, aws: &AwsClients) -> Functions {
        use tributary_audiences::lambda as audiences;
        use tributary_deliver::lambda as deliver;
        use tributary_dsr_api::lambda as dsr_api;
        use tributary_dsr_worker::lambda as dsr_worker;
        use tributary_import::lambda as import;
        use tributary_ingest::lambda as ingest;
        use tributary_profile_api::lambda as profile_api;
        use tributary_stitch::lambda as stitch;
        Functions {
            ingest: started("ingest", ingest::build(&stack.env_of("ingest"), aws).await),
            stitch: started("stitch", stitch::build(&stack.env_of("stitch"), aws).await),
            deliver: started("deliver", deliver::build(&stack.env_of("deliver"), aws).await),
            import: started("import", import::build(&stack.env_of("import"), aws).await),
            audiences: started("audiences", audiences::build(&stack.env_of("audiences"), aws).await),
            dsr_api: started("dsr-api", dsr_api::build(&stack.env_of("dsr-api"), aws).await),
            dsr_worker: started("dsr-worker", dsr_worker::build(&stack.env_of("dsr-worker"), aws).await),
            profile_api: started("profile-api", profile_api::build(&stack.env_of("profile-api"), aws).await),
        }
    }

    /// Calls the function built from `binary` (the one the HTTP API routes the request to) with `req`.
    pub async fn http(&self, binary: &str, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match binary {
            "ingest" => self.ingest.handle(req).await,
            "profile-api" => self.profile_api.handle(req).await,
            "dsr-api" => self.dsr_api.handle(req).await,
            other => panic!("the HTTP API routes a request to {other}, which does not serve HTTP"),
        }
    }

    /// Hands an SQS batch to the function the poller's mapping names, as Lambda does.
    pub async fn consume(&self, poller: &Poller, event: SqsEvent) -> SqsBatchResponse {
        match poller.trigger.binary.as_str() {
            "stitch" => self.stitch.handle(event).await,
            "deliver" => self.deliver.handle(event).await,
            "import" => self.import.handle(event, Some(Instant::now() + poller.timeout)).await,
            "dsr-worker" => {
                let payload = serde_json::to_value(event).expect("an SQS event as JSON");
                let out = tributary_dsr_worker::lambda::invoke(&self.dsr_worker, payload).await.expect("invoke");
                serde_json::from_value(out).expect("the worker answers an SQS batch with batchItemFailures")
            }
            other => panic!("the stack maps {} to {other}, which does not consume SQS", poller.trigger.queue),
        }
    }
}

/// A queue the stack maps to a function, as Lambda's poller sees it.
pub struct Poller {
    pub trigger: Trigger,
    pub queue: SqsQueue,
    /// The queue's own visibility timeout: what Lambda's receives hide a batch for.
    pub visibility: Duration,
    /// The function's timeout: the deadline the import handler is given.
    pub timeout: Duration,
}

/// One poller per SQS trigger of the stack, its queue reached through `aws`.
pub fn pollers(stack: &Deployment, aws: &AwsClients) -> Vec<Poller> {
    let seconds = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()).expect("seconds");
    stack
        .triggers()
        .into_iter()
        .map(|trigger| {
            let visibility = seconds(&stack.queue(&trigger.queue)["attributes"]["VisibilityTimeout"]);
            let timeout = seconds(&stack.functions()[&stack.function_id(&trigger.binary)]["timeout"]);
            Poller {
                queue: aws.sqs_queue(&trigger.queue_url),
                trigger,
                visibility: Duration::from_secs(visibility),
                timeout: Duration::from_secs(timeout),
            }
        })
        .collect()
}

/// How [`drain`] treats records a function reports failed.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery {
    /// How many times one message may be handed back after failing; one more failure panics. Zero: any failed
    /// record panics (a test that expects none).
    pub max_redeliveries: u32,
    /// The whole drain's budget: panics with what is still in flight when it is spent.
    pub within: Duration,
}

/// Plays Lambda's pollers until every mapped queue is empty: receives up to the mapping's batch size (10 at most,
/// an SQS receive's cap), hands the batch to `consume`, deletes the records it did not report failed, and makes
/// the failed ones visible again at once (Lambda waits out the visibility timeout; a harness need not) until
/// `redelivery.max_redeliveries` is spent. `consume` is where a caller times or logs a batch; it gets the
/// messages as received. Returns how many batches ran.
pub async fn drain<F>(pollers: &[Poller], redelivery: Redelivery, mut consume: F) -> usize
where
    F: AsyncFnMut(&Poller, &[ReceivedMessage]) -> SqsBatchResponse,
{
    let deadline = Instant::now() + redelivery.within;
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut batches = 0;
    loop {
        let mut ran = 0;
        for p in pollers {
            loop {
                let max = p.trigger.batch_size.min(10);
                let messages = p.queue.receive(max, p.visibility, Duration::ZERO).await.expect("receive");
                if messages.is_empty() {
                    break;
                }
                ran += messages.len();
                batches += 1;
                let resp = consume(p, &messages).await;
                let failed: BTreeSet<&str> =
                    resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
                for m in &messages {
                    if !failed.contains(m.message_id.as_str()) {
                        p.queue.delete(&m.receipt_handle).await.expect("delete a handled record");
                        continue;
                    }
                    let n = failures.entry(m.message_id.clone()).or_default();
                    *n += 1;
                    assert!(
                        *n <= redelivery.max_redeliveries,
                        "{} failed record {} of {} {} time(s); see the function's warnings above",
                        p.trigger.binary,
                        m.message_id,
                        p.trigger.queue,
                        n
                    );
                    eprintln!(
                        "{} reported record {} of {} failed (time {n}); handing it back",
                        p.trigger.binary, m.message_id, p.trigger.queue
                    );
                    p.queue.change_visibility(&m.receipt_handle, Duration::ZERO).await.expect("make it visible");
                }
            }
        }
        if ran > 0 {
            continue;
        }
        let mut left = 0;
        for p in pollers {
            left += p.queue.approximate_len().await.expect("approximate_len");
        }
        if left == 0 {
            return batches;
        }
        assert!(Instant::now() < deadline, "the pipeline did not settle: {left} messages in flight");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The SQS event Lambda would hand the poller's function for `messages`.
pub fn sqs_event(poller: &Poller, messages: &[ReceivedMessage]) -> SqsEvent {
    tributary_local::runtime::sqs_event(messages, &poller.trigger.queue_arn).expect("an SqsEvent")
}

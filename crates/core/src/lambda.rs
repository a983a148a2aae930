//! What the queue-driven functions share: the partial batch response they hand back to Lambda, and the loop that
//! puts messages on a queue.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};

use crate::ports::{OutgoingMessage, PortError, Queue, MAX_SEND_BATCH};

/// Whether this process runs in a Lambda execution environment (Lambda sets `AWS_LAMBDA_RUNTIME_API` in every one).
pub fn in_execution_environment() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty())
}

/// Whether TLS clients should trust root certificates compiled into the binary instead of reading the system's
/// bundle, which costs milliseconds of every cold start: in Lambda, unless `SSL_CERT_FILE` or `SSL_CERT_DIR` names
/// a trust store (e.g. one holding a private CA), which the system-roots path honours. The AWS clients
/// (`tributary-aws`) and the outbound HTTP clients (deliver's `ssrf`) decide with this one rule.
pub fn built_in_tls_roots() -> bool {
    let named = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    in_execution_environment() && !named("SSL_CERT_FILE") && !named("SSL_CERT_DIR")
}

/// The partial batch response naming the records that must come back (`ReportBatchItemFailures`).
pub fn batch_response(failed_message_ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failed_message_ids
        .into_iter()
        .map(|item_identifier| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = item_identifier;
            f
        })
        .collect();
    resp
}

/// How often and how patiently [`send_all`] tries.
#[derive(Debug, Clone, Copy)]
pub struct SendRetry {
    /// Tries per message, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub backoff: Duration,
}

/// Sends every message, at most [`MAX_SEND_BATCH`] per call, trying again what the queue refused while the
/// refusals are retryable. The messages' `id`s must be unique among them: they name what was refused.
///
/// `sleep` waits between tries (core has no runtime of its own: pass `tokio::time::sleep`). The error is the last
/// refusal: [`PortError::Invalid`] when a message can never be accepted, otherwise [`PortError::Unavailable`].
pub async fn send_all<Q, S, F>(
    queue: &Q,
    mut pending: Vec<OutgoingMessage>,
    retry: SendRetry,
    sleep: S,
) -> Result<(), PortError>
where
    Q: Queue + ?Sized,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut delay = retry.backoff;
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        let mut failed = Vec::new();
        let mut fatal = None;
        for chunk in pending.chunks(MAX_SEND_BATCH) {
            match queue.send_batch(chunk).await {
                Ok(refused) => {
                    if let Some(bad) = refused.iter().find(|f| !f.retryable) {
                        fatal = Some(PortError::Invalid(bad.reason.clone()));
                    }
                    failed.extend(refused.into_iter().map(|f| f.id));
                }
                Err(e) => {
                    if !e.is_retryable() {
                        fatal = Some(e);
                    }
                    failed.extend(chunk.iter().map(|m| m.id.clone()));
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        pending.retain(|m| failed.contains(&m.id));
        if attempt < attempts {
            sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(PortError::Unavailable(format!("the queue refused {} messages", pending.len())))
}

/// Runs `call` until it succeeds, fails with an error that is not retryable, or `retry.attempts` tries are spent
/// (the last error is returned); waits `retry.backoff` before the second try, doubled before each further one. Only
/// for calls that are safe to repeat — a read, an unconditional put — since a retryable error may come after the
/// call took effect. `sleep` as for [`send_all`].
pub async fn retried<T, C, CF, S, SF>(retry: SendRetry, sleep: S, mut call: C) -> Result<T, PortError>
where
    C: FnMut() -> CF,
    CF: Future<Output = Result<T, PortError>>,
    S: Fn(Duration) -> SF,
    SF: Future<Output = ()>,
{
    let mut delay = retry.backoff;
    let mut tries = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && tries < retry.attempts => {
                sleep(delay).await;
                delay = delay.saturating_mul(2);
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_is_tried_again_while_it_fails_for_now_with_doubling_waits() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let waits = std::sync::Mutex::new(Vec::new());
        let sleep = |d: Duration| {
            waits.lock().expect("waits").push(d.as_millis());
            async {}
        };
        let policy = SendRetry { attempts: 4, backoff: Duration::from_millis(50) };
        let flaky = || async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Err(PortError::Throttled("t".into())),
                1 => Err(PortError::Unavailable("u".into())),
                n => Ok(n),
            }
        };
        assert_eq!(retried(policy, sleep, flaky).await.expect("third try"), 2);
        assert_eq!(*waits.lock().expect("waits"), [50, 100]);

        let down = || async { Err::<(), _>(PortError::Unavailable("down".into())) };
        waits.lock().expect("waits").clear();
        assert!(matches!(retried(policy, sleep, down).await, Err(PortError::Unavailable(_))));
        assert_eq!(*waits.lock().expect("waits"), [50, 100, 200], "four tries in all");

        let invalid = || async { Err::<(), _>(PortError::Invalid("bad key".into())) };
        waits.lock().expect("waits").clear();
        assert!(matches!(retried(policy, sleep, invalid).await, Err(PortError::Invalid(_))));
        assert!(waits.lock().expect("waits").is_empty(), "a call that cannot succeed is not repeated");
    }

    #[test]
    fn failures_are_named_by_message_id() {
        let resp = batch_response(["a".to_string(), "b".to_string()]);
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}));
        assert!(batch_response(Vec::new()).batch_item_failures.is_empty());
    }

    /// Refuses the first `refusals` messages it is sent (retryable or not), then takes everything.
    struct Refusing {
        refusals: std::sync::Mutex<usize>,
        retryable: bool,
        taken: std::sync::Mutex<Vec<String>>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Refusing {
        fn new(refusals: usize, retryable: bool) -> Self {
            Refusing {
                refusals: std::sync::Mutex::new(refusals),
                retryable,
                taken: Default::default(),
                calls: Default::default(),
            }
        }
    }

    impl Queue for Refusing {
        async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<crate::ports::FailedEntry>, PortError> {
            assert!(messages.len() <= MAX_SEND_BATCH);
            self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut left = self.refusals.lock().unwrap();
            let mut refused = Vec::new();
            for m in messages {
                if *left > 0 {
                    *left -= 1;
                    refused.push(crate::ports::FailedEntry {
                        id: m.id.clone(),
                        retryable: self.retryable,
                        reason: "refused".into(),
                    });
                } else {
                    self.taken.lock().unwrap().push(m.body.clone());
                }
            }
            Ok(refused)
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<crate::ports::ReceivedMessage>, PortError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn approximate_len(&self) -> Result<u64, PortError> {
            Ok(0)
        }
    }

    fn messages(n: usize) -> Vec<OutgoingMessage> {
        (0..n).map(|i| OutgoingMessage { id: format!("m{i}"), body: format!("body {i}") }).collect()
    }

    fn retry(attempts: u32) -> SendRetry {
        SendRetry { attempts, backoff: Duration::from_millis(1) }
    }

    async fn no_wait(_: Duration) {}

    #[tokio::test]
    async fn everything_is_sent_in_batches_and_refusals_are_tried_again() {
        let q = Refusing::new(3, true);
        send_all(&q, messages(25), retry(3), no_wait).await.unwrap();
        let mut taken = q.taken.lock().unwrap().clone();
        taken.sort();
        let mut want: Vec<String> = (0..25).map(|i| format!("body {i}")).collect();
        want.sort();
        assert_eq!(taken, want, "each message exactly once");
        // 3 batches, then one more for the 3 refused ones.
        assert_eq!(q.calls.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_queue_that_keeps_refusing_is_unavailable_after_the_last_try() {
        let q = Refusing::new(usize::MAX, true);
        let waits = std::sync::Mutex::new(Vec::new());
        let err = send_all(&q, messages(2), retry(3), |d| {
            waits.lock().unwrap().push(d);
            no_wait(d)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, PortError::Unavailable(_)), "{err}");
        assert_eq!(*waits.lock().unwrap(), [Duration::from_millis(1), Duration::from_millis(2)], "backoff doubles");
    }

    #[tokio::test]
    async fn a_refusal_that_cannot_succeed_stops_at_once() {
        let q = Refusing::new(1, false);
        let err = send_all(&q, messages(2), retry(5), no_wait).await.unwrap_err();
        assert!(matches!(err, PortError::Invalid(_)), "{err}");
        assert_eq!(q.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

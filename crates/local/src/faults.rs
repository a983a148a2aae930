//! Fault injection: [`Faulty`] wraps any adapter of the three ports ([`TableStore`], [`Queue`], [`ObjectStore`])
//! and makes a share of its calls misbehave the way a cloud service does, so that a whole pipeline can be run
//! through failures (the chaos test runs `tributary serve` with `TRIBUTARY_FAULTS` set). Each faulted call is,
//! with equal odds, one of:
//!
//! - **throttled**: refused before it reaches the store ([`PortError::Throttled`]);
//! - **unavailable**: refused before it reaches the store ([`PortError::Unavailable`]);
//! - **lost reply**: the call is made and takes effect, then the caller is told it failed (a timeout after the
//!   write landed: the case that breaks naive exactly-once code);
//! - **slow**: the call is made after a delay ([`FaultPlan::delay`]) and succeeds.
//!
//! `TRIBUTARY_FAULTS` is a comma-separated list of `port=rate` (`table`, `queue`, `objects`; rate in 0..=1) and
//! `delay_ms=N`, e.g. `table=0.1,queue=0.02,objects=0.05,delay_ms=50`. Unset or empty: no faults, and the wrapper
//! only forwards.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tributary_core::ports::{
    EarlierVersion, FailedEntry, Item, ItemKey, KeyPage, ObjectMeta, ObjectStore, OutgoingMessage, PortError,
    QueryPage, Queue, ReceivedMessage, SparseIndex, TableStore, TransactError, WriteOp,
};

/// The environment variable `tributary serve` reads its fault plans from.
pub const FAULTS_ENV: &str = "TRIBUTARY_FAULTS";
/// Longest delay a slow call may be given.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// How often one wrapped adapter misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Share of calls that get a fault, 0..=1.
    pub rate: f64,
    /// How long a slow call waits before it is made.
    pub delay: Duration,
}

/// The fault plan of each port, as `TRIBUTARY_FAULTS` gives them (`None`: that port is left alone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub table: Option<FaultPlan>,
    pub queue: Option<FaultPlan>,
    pub objects: Option<FaultPlan>,
}

impl Faults {
    /// Parses a `TRIBUTARY_FAULTS` value; the error names the part that is wrong.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut rates: [Option<f64>; 3] = [None; 3];
        let mut delay = Duration::from_millis(50);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) =
                part.split_once('=').ok_or_else(|| format!("{FAULTS_ENV}: {part:?} is not NAME=VALUE"))?;
            let slot = match name.trim() {
                "table" => 0,
                "queue" => 1,
                "objects" => 2,
                "delay_ms" => {
                    let ms: u64 = value.trim().parse().map_err(|_| format!("{FAULTS_ENV}: delay_ms={value:?}"))?;
                    delay = Duration::from_millis(ms).min(MAX_DELAY);
                    continue;
                }
                other => {
                    return Err(format!("{FAULTS_ENV}: unknown port {other:?} (table, queue, objects or delay_ms)"))
                }
            };
            let rate: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("{FAULTS_ENV}: {name}={value:?} is not a rate between 0 and 1"))?;
            rates[slot] = Some(rate);
        }
        let plan = |rate: Option<f64>| rate.filter(|r| *r > 0.0).map(|rate| FaultPlan { rate, delay });
        Ok(Faults { table: plan(rates[0]), queue: plan(rates[1]), objects: plan(rates[2]) })
    }

    /// The plans in the environment (none when unset).
    pub fn from_env() -> Result<Faults, String> {
        match std::env::var(FAULTS_ENV) {
            Ok(spec) => Faults::parse(&spec),
            Err(_) => Ok(Faults::default()),
        }
    }

    pub fn any(&self) -> bool {
        self.table.is_some() || self.queue.is_some() || self.objects.is_some()
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Throttled,
    Unavailable,
    LostReply,
    Slow,
}

/// An adapter whose calls fail now and then by its [`FaultPlan`]; with no plan it only forwards.
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    inner: T,
    plan: Option<Arc<FaultPlan>>,
    /// The port's name in the injected errors.
    port: &'static str,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, port: &'static str, plan: Option<FaultPlan>) -> Self {
        Faulty { inner, plan: plan.map(Arc::new), port }
    }

    /// The wrapped adapter (for calls of its own that are not part of the port).
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn draw(&self) -> Option<Fault> {
        let plan = self.plan.as_ref()?;
        let mut rng = rand::rng();
        if rng.random::<f64>() >= plan.rate {
            return None;
        }
        Some([Fault::Throttled, Fault::Unavailable, Fault::LostReply, Fault::Slow][rng.random_range(0..4)])
    }

    /// Runs `call` through a drawn fault, if any.
    async fn guard<R, E>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<R, E>>,
        lift: impl Fn(PortError) -> E,
    ) -> Result<R, E> {
        let injected = |what: &str| format!("injected fault: {} {op} {what}", self.port);
        match self.draw() {
            None => call.await,
            Some(Fault::Throttled) => Err(lift(PortError::Throttled(injected("throttled")))),
            Some(Fault::Unavailable) => Err(lift(PortError::Unavailable(injected("unavailable")))),
            Some(Fault::LostReply) => {
                let _ = call.await;
                Err(lift(PortError::Unavailable(injected("timed out after it took effect"))))
            }
            Some(Fault::Slow) => {
                let delay = self.plan.as_ref().map_or(Duration::ZERO, |p| p.delay);
                tokio::time::sleep(delay).await;
                call.await
            }
        }
    }
}

fn port(e: PortError) -> PortError {
    e
}

impl<T: TableStore> TableStore for Faulty<T> {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        self.guard("get", self.inner.get(key), port).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        self.guard("get_many", self.inner.get_many(keys), port).await
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        self.guard("query", self.inner.query(pk, sk_prefix, start_after, limit), port).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        self.guard("transact", self.inner.transact(ops), TransactError::Port).await
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        self.guard("write", self.inner.write(op), port).await
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: serde_json::Map<String, serde_json::Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        self.guard("add", self.inner.add(key, deltas, set, expires_at), port).await
    }

    async fn scan_index(
        &self,
        index: &SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, PortError> {
        self.guard("scan_index", self.inner.scan_index(index, segment, total_segments, cursor, limit), port).await
    }
}

impl<T: Queue> Queue for Faulty<T> {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<FailedEntry>, PortError> {
        self.guard("send_batch", self.inner.send_batch(messages), port).await
    }

    async fn receive(
        &self,
        max: usize,
        visibility_timeout: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, PortError> {
        self.guard("receive", self.inner.receive(max, visibility_timeout, wait), port).await
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), PortError> {
        self.guard("delete", self.inner.delete(receipt_handle), port).await
    }

    async fn change_visibility(&self, receipt_handle: &str, visibility_timeout: Duration) -> Result<(), PortError> {
        self.guard("change_visibility", self.inner.change_visibility(receipt_handle, visibility_timeout), port).await
    }

    async fn approximate_len(&self) -> Result<u64, PortError> {
        self.guard("approximate_len", self.inner.approximate_len(), port).await
    }
}

impl<T: ObjectStore> ObjectStore for Faulty<T> {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.guard("put", self.inner.put(key, bytes), port).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.guard("get", self.inner.get(key), port).await
    }

    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        self.guard("get_range", self.inner.get_range(key, start, end), port).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        self.guard("head", self.inner.head(key), port).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        self.guard("list", self.inner.list(prefix), port).await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.guard("delete", self.inner.delete(key), port).await
    }

    async fn list_earlier_versions(&self, prefix: &str) -> Result<Vec<EarlierVersion>, PortError> {
        self.guard("list_earlier_versions", self.inner.list_earlier_versions(prefix), port).await
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.guard("get_version", self.inner.get_version(key, version_id), port).await
    }

    async fn delete_earlier_versions(&self, key: &str) -> Result<usize, PortError> {
        self.guard("delete_earlier_versions", self.inner.delete_earlier_versions(key), port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::ports::Condition;
    use tributary_core::testing::MemoryTable;

    #[test]
    fn plans_parse_and_bad_parts_are_named() {
        assert_eq!(Faults::parse("").expect("empty"), Faults::default());
        let f = Faults::parse("table=0.1, queue=0.02,delay_ms=5").expect("valid");
        assert_eq!(f.table, Some(FaultPlan { rate: 0.1, delay: Duration::from_millis(5) }));
        assert_eq!(f.queue.as_ref().map(|p| p.rate), Some(0.02));
        assert_eq!(f.objects, None);
        assert!(f.any());
        assert!(!Faults::parse("table=0").expect("zero").any());
        for bad in ["table", "table=2", "table=x", "disk=0.1", "delay_ms=-1"] {
            let e = Faults::parse(bad).expect_err(bad);
            assert!(e.starts_with(FAULTS_ENV), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn every_call_faults_at_rate_one_and_none_at_rate_zero() {
        let plan = FaultPlan { rate: 1.0, delay: Duration::from_millis(1) };
        let table = Faulty::new(MemoryTable::default(), "table", Some(plan));
        let key = ItemKey::new("p", "s");
        let op = |v: u64| WriteOp::Put {
            item: Item { key: key.clone(), attrs: serde_json::Map::new(), version: v, expires_at: None },
            condition: Condition::None,
        };
        let (mut failed, mut landed) = (0, 0);
        for v in 1..=200 {
            if table.write(op(v)).await.is_err() {
                failed += 1;
            }
            if table.inner().get(&key).await.expect("inner get").is_some_and(|i| i.version == v) {
                landed += 1;
            }
        }
        // Every kind shows up: refusals (nothing written), lost replies (written, yet an error), slow successes.
        assert!(failed > 100 && failed < 200, "{failed}");
        assert!(landed > 50 && landed < 150, "{landed}");
        assert!(landed > 200 - failed, "some writes that reported an error took effect: {failed} failed, {landed}");

        let calm = Faulty::new(MemoryTable::default(), "table", None);
        for v in 1..=50 {
            calm.write(op(v)).await.expect("no fault without a plan");
        }
    }
}

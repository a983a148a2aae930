//! A [`TableStore`] wrapper that forwards every call to an inner table and lets a test fail chosen calls, or run
//! something right before a transaction: a crash half-way through a sequence of writes, a store that is down for
//! reads, a partition that throttles, a concurrent writer that wins a race.
//!
//! Why one wrapper: handler tests each used to carry their own forwarding wrapper, and every method added to the
//! port meant a stub in every copy. Here the forwarding is written once, and a test only says what goes wrong.
//!
//! A test decides per call with a rule ([`FaultyTable::with_rule`]) that sees the method and its arguments
//! ([`Call`]), or with the ready-made switches of [`FaultyTable`]. Clones share the inner table and the faults, so
//! a test keeps a handle on the table it gave a handler and changes the faults as it goes.
//!
//! The order in which faults are decided is on [`FaultyTable`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};

use crate::ports::{Item, ItemKey, KeyPage, PortError, QueryPage, SparseIndex, TableStore, TransactError, WriteOp};

/// The methods of [`TableStore`], to count calls by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    GetMany,
    Query,
    Transact,
    Write,
    Add,
    ScanIndex,
}

impl Method {
    const ALL: [Method; 7] =
        [Method::Get, Method::GetMany, Method::Query, Method::Transact, Method::Write, Method::Add, Method::ScanIndex];

    fn slot(self) -> usize {
        self as usize
    }
}

/// One call on its way to the inner table: the method and its arguments, as a rule sees them.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Get(&'a ItemKey),
    GetMany(&'a [ItemKey]),
    Query { pk: &'a str, sk_prefix: &'a str, start_after: Option<&'a str>, limit: usize },
    Transact(&'a [WriteOp]),
    Write(&'a WriteOp),
    Add { key: &'a ItemKey, deltas: &'a [(String, i64)], set: &'a Map<String, Value>, expires_at: Option<i64> },
    ScanIndex { index: &'a SparseIndex, segment: u32, total_segments: u32, cursor: Option<&'a str>, limit: usize },
}

impl Call<'_> {
    pub fn method(&self) -> Method {
        match self {
            Call::Get(_) => Method::Get,
            Call::GetMany(_) => Method::GetMany,
            Call::Query { .. } => Method::Query,
            Call::Transact(_) => Method::Transact,
            Call::Write(_) => Method::Write,
            Call::Add { .. } => Method::Add,
            Call::ScanIndex { .. } => Method::ScanIndex,
        }
    }

    /// `get`, `get_many`, `query` and `scan_index`.
    pub fn is_read(&self) -> bool {
        matches!(self, Call::Get(_) | Call::GetMany(_) | Call::Query { .. } | Call::ScanIndex { .. })
    }

    /// `transact`, `write` and `add`.
    pub fn is_write(&self) -> bool {
        !self.is_read()
    }

    /// The item keys the call names: read, written, checked or added to (none for a query or a scan).
    pub fn keys(&self) -> Vec<&ItemKey> {
        match self {
            Call::Get(key) | Call::Add { key, .. } => vec![key],
            Call::GetMany(keys) => keys.iter().collect(),
            Call::Transact(ops) => ops.iter().map(WriteOp::key).collect(),
            Call::Write(op) => vec![op.key()],
            Call::Query { .. } | Call::ScanIndex { .. } => Vec::new(),
        }
    }
}

type Rule = Arc<dyn Fn(&Call<'_>) -> Option<PortError> + Send + Sync>;
type Hook<T> = Box<dyn FnOnce(Arc<T>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Why a call does not reach the inner table.
enum Fault {
    Port(PortError),
    /// A transaction whose first condition fails, as when another writer got there first.
    LostRace,
}

struct State<T> {
    rules: Vec<Rule>,
    read_error: Option<PortError>,
    prefix_errors: Vec<(String, PortError)>,
    failing_transactions: usize,
    lost_races: usize,
    /// Writes still let through; `None` is no limit.
    write_budget: Option<u64>,
    before_transaction: Vec<Hook<T>>,
    calls: [usize; Method::ALL.len()],
}

/// A [`TableStore`] over `inner` that fails the calls a test chooses, or runs something right before a
/// transaction. Clones share the inner table, the faults and the counts.
///
/// For each call, in this order: the call is counted ([`calls`](Self::calls)); the rules
/// ([`with_rule`](Self::with_rule)), in the order they were added, then the switches
/// ([`fail_reads`](Self::fail_reads), [`fail_writes_with_prefix`](Self::fail_writes_with_prefix),
/// [`fail_next_transactions`](Self::fail_next_transactions), [`lose_next_races`](Self::lose_next_races),
/// [`crash_after_writes`](Self::crash_after_writes)) may fail it — the first that does wins, and the call never
/// reaches the inner table; a transaction that is let through first runs the hooks queued by
/// [`before_next_transaction`](Self::before_next_transaction); then the call is forwarded. A failed transaction
/// comes back as [`TransactError::Port`], except a lost race.
pub struct FaultyTable<T> {
    inner: Arc<T>,
    state: Arc<Mutex<State<T>>>,
}

impl<T> Clone for FaultyTable<T> {
    fn clone(&self) -> Self {
        FaultyTable { inner: Arc::clone(&self.inner), state: Arc::clone(&self.state) }
    }
}

impl<T: Default> Default for FaultyTable<T> {
    fn default() -> Self {
        FaultyTable::new(T::default())
    }
}

impl<T> FaultyTable<T> {
    /// Forwards everything to `inner` until told otherwise.
    pub fn new(inner: T) -> Self {
        let state = State {
            rules: Vec::new(),
            read_error: None,
            prefix_errors: Vec::new(),
            failing_transactions: 0,
            lost_races: 0,
            write_budget: None,
            before_transaction: Vec::new(),
            calls: [0; Method::ALL.len()],
        };
        FaultyTable { inner: Arc::new(inner), state: Arc::new(Mutex::new(state)) }
    }

    /// The wrapped table, for seeding and inspecting it past the faults.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        // A rule that panicked (an assertion) leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a rule: called with every call before it is forwarded; `Some` fails the call with that error. A rule
    /// may also just look (count, assert) and answer `None`.
    pub fn with_rule(self, rule: impl Fn(&Call<'_>) -> Option<PortError> + Send + Sync + 'static) -> Self {
        self.add_rule(rule);
        self
    }

    /// [`with_rule`](Self::with_rule) on a table already handed out.
    pub fn add_rule(&self, rule: impl Fn(&Call<'_>) -> Option<PortError> + Send + Sync + 'static) {
        self.state().rules.push(Arc::new(rule));
    }

    /// Drops every rule added so far.
    pub fn clear_rules(&self) {
        self.state().rules.clear();
    }

    /// While `Some`, every read (`get`, `get_many`, `query`, `scan_index`) fails with this error.
    pub fn fail_reads(&self, error: Option<PortError>) {
        self.state().read_error = error;
    }

    /// While `Some`, every write (`transact`, `write`, `add`) that names a key whose partition key starts with
    /// `pk_prefix` fails with this error; a transaction fails whole if any of its operations does. Each prefix has
    /// its own switch.
    pub fn fail_writes_with_prefix(&self, pk_prefix: &str, error: Option<PortError>) {
        let mut state = self.state();
        state.prefix_errors.retain(|(p, _)| p != pk_prefix);
        if let Some(e) = error {
            state.prefix_errors.push((pk_prefix.to_owned(), e));
        }
    }

    /// The next `n` transactions fail with [`PortError::Unavailable`] (replacing any count left).
    pub fn fail_next_transactions(&self, n: usize) {
        self.state().failing_transactions = n;
    }

    /// The next `n` transactions fail with [`TransactError::ConditionFailed`] on operation 0, as when another
    /// writer changed the item first (replacing any count left).
    pub fn lose_next_races(&self, n: usize) {
        self.state().lost_races = n;
    }

    /// `Some(n)`: the next `n` writes (`transact`, `write`, `add`) go through, and every write after them fails
    /// with [`PortError::Unavailable`], as if the process had crashed there. `None` lifts the limit. A write that
    /// another fault fails first spends nothing; one that reaches the inner table spends one, whatever its outcome.
    pub fn crash_after_writes(&self, budget: Option<u64>) {
        self.state().write_budget = budget;
    }

    /// Queues `hook` to run, with the inner table, right before the next transaction that reaches it (after the
    /// read that preceded it, before its commit): a concurrent writer winning a race. Hooks queued before one
    /// transaction all run before it, in order.
    pub fn before_next_transaction<F, Fut>(&self, hook: F)
    where
        F: FnOnce(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.state().before_transaction.push(Box::new(move |inner| Box::pin(hook(inner))));
    }

    /// How many calls of `method` were made, failed ones included.
    pub fn calls(&self, method: Method) -> usize {
        self.state().calls[method.slot()]
    }

    fn decide(&self, call: &Call<'_>) -> Option<Fault> {
        let rules = {
            let mut state = self.state();
            state.calls[call.method().slot()] += 1;
            state.rules.clone()
        };
        // Outside the lock: a rule may panic, or look at this table.
        if let Some(e) = rules.iter().find_map(|rule| rule(call)) {
            return Some(Fault::Port(e));
        }
        let mut state = self.state();
        if call.is_read() {
            return state.read_error.clone().map(Fault::Port);
        }
        let keys = call.keys();
        if let Some((_, e)) = state.prefix_errors.iter().find(|(p, _)| keys.iter().any(|k| k.pk.starts_with(p))) {
            return Some(Fault::Port(e.clone()));
        }
        if matches!(call, Call::Transact(_)) {
            if state.failing_transactions > 0 {
                state.failing_transactions -= 1;
                return Some(Fault::Port(PortError::Unavailable("injected transaction failure".into())));
            }
            if state.lost_races > 0 {
                state.lost_races -= 1;
                return Some(Fault::LostRace);
            }
        }
        match &mut state.write_budget {
            Some(0) => Some(Fault::Port(PortError::Unavailable("injected crash".into()))),
            Some(left) => {
                *left -= 1;
                None
            }
            None => None,
        }
    }

    /// Fails the call with a port error, if a fault says so.
    fn check(&self, call: &Call<'_>) -> Result<(), PortError> {
        match self.decide(call) {
            None => Ok(()),
            Some(Fault::Port(e)) => Err(e),
            // Only transactions lose races.
            Some(Fault::LostRace) => Err(PortError::ConditionFailed("injected lost race".into())),
        }
    }
}

impl<T: TableStore + 'static> TableStore for FaultyTable<T> {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        self.check(&Call::Get(key))?;
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        self.check(&Call::GetMany(keys))?;
        self.inner.get_many(keys).await
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        self.check(&Call::Query { pk, sk_prefix, start_after, limit })?;
        self.inner.query(pk, sk_prefix, start_after, limit).await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        match self.decide(&Call::Transact(&ops)) {
            None => {}
            Some(Fault::Port(e)) => return Err(TransactError::Port(e)),
            Some(Fault::LostRace) => return Err(TransactError::ConditionFailed { index: 0 }),
        }
        let hooks = std::mem::take(&mut self.state().before_transaction);
        for hook in hooks {
            hook(Arc::clone(&self.inner)).await;
        }
        self.inner.transact(ops).await
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        self.check(&Call::Write(&op))?;
        self.inner.write(op).await
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: Map<String, Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        self.check(&Call::Add { key, deltas, set: &set, expires_at })?;
        self.inner.add(key, deltas, set, expires_at).await
    }

    async fn scan_index(
        &self,
        index: &SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, PortError> {
        self.check(&Call::ScanIndex { index, segment, total_segments, cursor, limit })?;
        self.inner.scan_index(index, segment, total_segments, cursor, limit).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::ports::{Condition, ROOT_PROFILES};
    use crate::testing::MemoryTable;

    fn attrs(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    fn put(pk: &str, sk: &str) -> WriteOp {
        let item = Item { key: ItemKey::new(pk, sk), attrs: attrs(json!({"n": 1})), version: 1, expires_at: None };
        WriteOp::Put { item, condition: Condition::NotExists }
    }

    fn down() -> PortError {
        PortError::Unavailable("down".into())
    }

    /// One call of every method; `Ok` for each that succeeded.
    async fn every_call(t: &FaultyTable<MemoryTable>, pk: &str) -> [bool; 7] {
        let key = ItemKey::new(pk, "s");
        [
            t.get(&key).await.is_ok(),
            t.get_many(std::slice::from_ref(&key)).await.is_ok(),
            t.query(pk, "", None, 10).await.is_ok(),
            t.transact(vec![WriteOp::Check { key: key.clone(), condition: Condition::None }]).await.is_ok(),
            t.write(WriteOp::Delete { key: key.clone(), condition: Condition::None }).await.is_ok(),
            t.add(&key, &[("n".into(), 1)], Map::new(), None).await.is_ok(),
            t.scan_index(&ROOT_PROFILES, 0, 1, None, 10).await.is_ok(),
        ]
    }

    #[tokio::test]
    async fn without_faults_it_keeps_the_ports_promises() {
        let t = FaultyTable::new(MemoryTable::default());
        crate::testing::table_store_contract(&t).await;
        assert!(t.calls(Method::Transact) > 0 && t.calls(Method::ScanIndex) > 0);
    }

    #[tokio::test]
    async fn a_rule_sees_each_call_with_its_arguments_and_fails_the_ones_it_picks() {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        let t = FaultyTable::new(MemoryTable::default()).with_rule(move |call| {
            log.lock().unwrap().push(format!("{:?} {:?}", call.method(), call.keys()));
            match call {
                Call::Query { pk: "p#bad", sk_prefix: "x", start_after: Some("a"), limit: 3 } => Some(down()),
                Call::Transact(ops) if ops.len() == 2 => Some(PortError::Throttled("slow".into())),
                _ => None,
            }
        });
        assert!(t.query("p#bad", "x", Some("a"), 3).await.is_err());
        assert!(t.query("p#bad", "x", None, 3).await.is_ok());
        let two = vec![put("p#1", "a"), put("p#2", "a")];
        assert_eq!(t.transact(two.clone()).await, Err(TransactError::Port(PortError::Throttled("slow".into()))));
        assert!(t.inner().items().is_empty(), "a failed call never reaches the inner table");
        assert_eq!(t.transact(two[..1].to_vec()).await, Ok(()));
        assert_eq!(t.inner().items().len(), 1);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0], "Query []");
        assert!(seen[2].starts_with("Transact [ItemKey { pk: \"p#1\""), "{seen:?}");

        // Rules added later apply too, in order; clearing them lets everything through again.
        t.add_rule(|call| call.is_read().then(down));
        assert_eq!(every_call(&t, "p#3").await, [false, false, false, true, true, true, false]);
        t.clear_rules();
        assert_eq!(every_call(&t, "p#3").await, [true; 7]);
    }

    #[tokio::test]
    async fn clones_share_the_table_the_faults_and_the_counts() {
        let t = FaultyTable::new(MemoryTable::default());
        let handed_out = t.clone();
        t.fail_reads(Some(down()));
        assert_eq!(handed_out.get(&ItemKey::new("p", "s")).await, Err(down()));
        handed_out.write(put("p", "s")).await.expect("write");
        assert_eq!(t.inner().items().len(), 1);
        assert_eq!((t.calls(Method::Get), t.calls(Method::Write), t.calls(Method::Add)), (1, 1, 0));
    }

    #[tokio::test]
    async fn reads_fail_while_switched_on() {
        let t = FaultyTable::new(MemoryTable::default());
        t.fail_reads(Some(PortError::Throttled("slow".into())));
        assert_eq!(every_call(&t, "p#1").await, [false, false, false, true, true, true, false]);
        assert_eq!(t.get(&ItemKey::new("p#1", "s")).await, Err(PortError::Throttled("slow".into())));
        t.fail_reads(None);
        assert_eq!(every_call(&t, "p#1").await, [true; 7]);
        assert_eq!(Method::ALL.map(|m| t.calls(m)), [3, 2, 2, 2, 2, 2, 2], "failed calls count too");
    }

    #[tokio::test]
    async fn writes_under_a_prefix_fail_and_a_transaction_fails_whole() {
        let t = FaultyTable::new(MemoryTable::default());
        t.fail_writes_with_prefix("audit#", Some(down()));
        t.fail_writes_with_prefix("log#", Some(PortError::Invalid("bad".into())));
        assert_eq!(every_call(&t, "audit#1").await, [true, true, true, false, false, false, true]);
        assert_eq!(every_call(&t, "p#1").await, [true; 7]);
        assert_eq!(t.write(put("log#1", "a")).await, Err(PortError::Invalid("bad".into())));
        let mixed = vec![put("p#2", "a"), put("audit#2", "a")];
        assert_eq!(t.transact(mixed.clone()).await, Err(TransactError::Port(down())));
        assert!(t.inner().get(&ItemKey::new("p#2", "a")).await.expect("get").is_none(), "nothing of it written");
        // A partition key that holds the prefix elsewhere is not under it.
        assert_eq!(t.write(put("p#audit#3", "a")).await, Ok(()));
        t.fail_writes_with_prefix("audit#", None);
        assert_eq!(t.transact(mixed).await, Ok(()));
        assert_eq!(t.write(put("log#1", "a")).await, Err(PortError::Invalid("bad".into())), "its own switch");
    }

    #[tokio::test]
    async fn the_next_transactions_fail_or_lose_their_race_then_work_again() {
        let t = FaultyTable::new(MemoryTable::default());
        t.fail_next_transactions(2);
        for _ in 0..2 {
            let failed = t.transact(vec![put("p#1", "a")]).await;
            assert!(matches!(failed, Err(TransactError::Port(PortError::Unavailable(_)))), "{failed:?}");
        }
        assert_eq!(t.write(put("p#2", "a")).await, Ok(()), "single writes are not transactions");
        assert_eq!(t.transact(vec![put("p#1", "a")]).await, Ok(()));

        t.lose_next_races(1);
        assert_eq!(t.transact(vec![put("p#3", "a")]).await, Err(TransactError::ConditionFailed { index: 0 }));
        assert_eq!(t.transact(vec![put("p#3", "a")]).await, Ok(()));
        assert_eq!(t.inner().items().len(), 3);
        // Setting a count replaces what was left.
        t.fail_next_transactions(5);
        t.fail_next_transactions(0);
        assert_eq!(t.transact(vec![put("p#4", "a")]).await, Ok(()));
    }

    #[tokio::test]
    async fn a_crash_after_n_writes_fails_every_write_after_them_until_lifted() {
        let t = FaultyTable::new(MemoryTable::default());
        t.crash_after_writes(Some(3));
        assert_eq!(t.transact(vec![put("p#1", "a")]).await, Ok(()));
        // A write refused by the inner table still spent its turn.
        assert!(t.write(put("p#1", "a")).await.is_err());
        assert_eq!(t.add(&ItemKey::new("c", "1"), &[("n".into(), 1)], Map::new(), None).await, Ok(()));
        assert_eq!(t.write(put("p#2", "a")).await, Err(PortError::Unavailable("injected crash".into())));
        let failed = t.transact(vec![put("p#2", "a")]).await;
        assert_eq!(failed, Err(TransactError::Port(PortError::Unavailable("injected crash".into()))));
        assert!(t.get(&ItemKey::new("p#1", "a")).await.expect("reads still work").is_some());
        assert_eq!(t.inner().items().len(), 2);
        // A write failed by another fault spends nothing.
        t.crash_after_writes(Some(1));
        t.fail_next_transactions(1);
        assert!(t.transact(vec![put("p#2", "a")]).await.is_err());
        assert_eq!(t.transact(vec![put("p#2", "a")]).await, Ok(()));
        assert!(t.write(put("p#3", "a")).await.is_err());
        t.crash_after_writes(None);
        assert_eq!(t.write(put("p#3", "a")).await, Ok(()));
    }

    #[tokio::test]
    async fn hooks_run_once_right_before_the_next_transaction() {
        let t = FaultyTable::new(MemoryTable::default());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        // A concurrent writer takes the key between the caller's read and its commit.
        t.before_next_transaction(move |inner| async move {
            inner.write(put("p#1", "a")).await.expect("the racing write");
            flag.store(true, Ordering::SeqCst);
        });
        t.before_next_transaction(|inner| async move {
            assert!(inner.get(&ItemKey::new("p#1", "a")).await.expect("get").is_some(), "in the order queued");
            inner.write(put("p#9", "a")).await.expect("the second write");
        });
        assert_eq!(t.write(put("p#2", "a")).await, Ok(()), "a single write does not run them");
        assert!(!ran.load(Ordering::SeqCst));
        assert!(t.get(&ItemKey::new("p#1", "a")).await.expect("get").is_none());
        // A transaction failed before it reaches the table leaves them queued.
        t.fail_next_transactions(1);
        assert!(t.transact(vec![put("p#1", "a")]).await.is_err());
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(t.transact(vec![put("p#1", "a")]).await, Err(TransactError::ConditionFailed { index: 0 }));
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(t.inner().items().len(), 3);
        // Run once: the next transaction commits undisturbed.
        assert_eq!(t.transact(vec![put("p#4", "a")]).await, Ok(()));
        assert_eq!(t.calls(Method::Transact), 3);
    }
}

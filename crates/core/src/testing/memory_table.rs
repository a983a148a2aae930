//! An in-memory [`TableStore`] that keeps the port's promises (conditions, all-or-nothing transactions, expiry,
//! paging, atomic adds) — it passes [`super::table_store_contract`] — for handler and read-path tests that need a
//! table but not SQLite or DynamoDB. Clones share the data, so a test keeps a handle on the table it gave a handler.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};

use crate::ports::{
    add_number, check_add, check_get_many, check_index_values, check_scan, check_transaction, scan_segment, Condition,
    Item, ItemKey, KeyPage, PortError, QueryPage, ScanCursor, SparseIndex, TableStore, TransactError, WriteOp,
};

#[derive(Default)]
struct State {
    items: BTreeMap<ItemKey, Item>,
    /// Returned by every call while set.
    fail: Option<PortError>,
    queries: usize,
    adds: usize,
}

#[derive(Clone, Default)]
pub struct MemoryTable(Arc<Mutex<State>>);

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn live(item: &Item, now: i64) -> bool {
    item.expires_at.is_none_or(|t| t > now)
}

impl MemoryTable {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves plain data behind; keep using it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn guard(&self) -> Result<MutexGuard<'_, State>, PortError> {
        let state = self.state();
        match &state.fail {
            Some(e) => Err(e.clone()),
            None => Ok(state),
        }
    }

    /// Stores an item with version 1 and no expiry, without conditions: for seeding a test.
    pub fn put(&self, key: ItemKey, attrs: Map<String, Value>) {
        let item = Item { key: key.clone(), attrs, version: 1, expires_at: None };
        self.state().items.insert(key, item);
    }

    /// While `Some`, every call fails with this error.
    pub fn fail_with(&self, error: Option<PortError>) {
        self.state().fail = error;
    }

    /// Every stored item, expired ones included, in key order.
    pub fn items(&self) -> Vec<Item> {
        self.state().items.values().cloned().collect()
    }

    /// `query` calls so far (each is one page).
    pub fn queries(&self) -> usize {
        self.state().queries
    }

    /// `add` calls so far, failed ones included.
    pub fn adds(&self) -> usize {
        self.state().adds
    }
}

fn holds(items: &BTreeMap<ItemKey, Item>, key: &ItemKey, condition: &Condition, now: i64) -> bool {
    let current = items.get(key).filter(|i| live(i, now));
    match condition {
        Condition::None => true,
        Condition::NotExists => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::VersionIs(v) => current.is_some_and(|i| i.version == *v),
    }
}

/// The put's attribute rules ([`check_index_values`]), as every adapter applies them.
fn check_op(op: &WriteOp) -> Result<(), PortError> {
    match op {
        WriteOp::Put { item, .. } => check_index_values(&item.attrs),
        WriteOp::Delete { .. } | WriteOp::Check { .. } => Ok(()),
    }
}

fn apply(items: &mut BTreeMap<ItemKey, Item>, op: WriteOp) {
    match op {
        WriteOp::Put { item, .. } => {
            items.insert(item.key.clone(), item);
        }
        WriteOp::Delete { key, .. } => {
            items.remove(&key);
        }
        WriteOp::Check { .. } => {}
    }
}

impl TableStore for MemoryTable {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        let now = now_s();
        Ok(self.guard()?.items.get(key).filter(|i| live(i, now)).cloned())
    }

    /// One lock for all the keys, so the items come from one moment of the table.
    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        check_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_s();
        let state = self.guard()?;
        Ok(keys.iter().map(|key| state.items.get(key).filter(|i| live(i, now)).cloned()).collect())
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        let now = now_s();
        let mut state = self.guard()?;
        state.queries += 1;
        let mut items: Vec<Item> = state
            .items
            .range(ItemKey::new(pk, sk_prefix)..)
            .take_while(|(k, _)| k.pk == pk && k.sk.starts_with(sk_prefix))
            .filter(|(k, i)| start_after.is_none_or(|a| k.sk.as_str() > a) && live(i, now))
            .map(|(_, i)| i.clone())
            .take(limit.saturating_add(1))
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| i.key.sk.clone())
        } else {
            None
        };
        Ok(QueryPage { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        check_transaction(&ops)?;
        ops.iter().try_for_each(check_op)?;
        let now = now_s();
        let mut state = self.guard()?;
        if let Some(index) = ops.iter().position(|op| !holds(&state.items, op.key(), op.condition(), now)) {
            return Err(TransactError::ConditionFailed { index });
        }
        for op in ops {
            apply(&mut state.items, op);
        }
        Ok(())
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        check_op(&op)?;
        let now = now_s();
        let mut state = self.guard()?;
        if !holds(&state.items, op.key(), op.condition(), now) {
            return Err(PortError::ConditionFailed("the condition of the write does not hold".into()));
        }
        apply(&mut state.items, op);
        Ok(())
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: Map<String, Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        let now = now_s();
        let mut state = self.state();
        state.adds += 1;
        if let Some(e) = &state.fail {
            return Err(e.clone());
        }
        check_add(deltas, &set)?;
        // An expired item counts as absent: the add starts from an empty item with version 0.
        let mut item = match state.items.get(key).filter(|i| live(i, now)) {
            Some(i) => i.clone(),
            None => Item { key: key.clone(), attrs: Map::new(), version: 0, expires_at: None },
        };
        for (name, delta) in deltas {
            let sum = add_number(item.attrs.get(name), *delta)
                .ok_or_else(|| PortError::Invalid(format!("attribute {name:?} does not hold a number to add to")))?;
            item.attrs.insert(name.clone(), sum);
        }
        item.attrs.extend(set);
        if expires_at.is_some() {
            item.expires_at = expires_at;
        }
        state.items.insert(key.clone(), item);
        Ok(())
    }

    /// Walks the items in key order from the cursor's key, keeping those of the segment; exact pages (`next` is set
    /// only when another key follows).
    async fn scan_index(
        &self,
        index: &SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, PortError> {
        check_scan(index, segment, total_segments, limit)?;
        let after = match cursor {
            Some(c) => Some(ScanCursor::decode(c, index, segment, total_segments)?.after),
            None => None,
        };
        let now = now_s();
        let state = self.guard()?;
        let start = match &after {
            Some(k) => std::ops::Bound::Excluded(k),
            None => std::ops::Bound::Unbounded,
        };
        let mut keys: Vec<ItemKey> = state
            .items
            .range((start, std::ops::Bound::Unbounded))
            .filter(|(k, i)| {
                live(i, now)
                    && i.attrs.get(index.attribute).is_some_and(Value::is_string)
                    && scan_segment(&k.pk, total_segments) == segment
            })
            .map(|(k, _)| k.clone())
            .take(limit.saturating_add(1))
            .collect();
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| ScanCursor { segment, total_segments, after: k.clone(), value: None }.encode(index))
        } else {
            None
        };
        Ok(KeyPage { keys, next })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_table_passes_the_table_store_contract() {
        super::super::table_store_contract(&super::MemoryTable::default()).await;
    }

    #[tokio::test]
    async fn get_many_fails_like_get() {
        use crate::ports::{ItemKey, PortError, TableStore};
        let t = super::MemoryTable::default();
        t.put(ItemKey::new("p", "a"), serde_json::Map::new());
        let keys = [ItemKey::new("p", "b"), ItemKey::new("p", "a")];
        let down = PortError::Unavailable("down".into());
        t.fail_with(Some(down.clone()));
        assert_eq!(t.get_many(&keys).await, Err(down));
        // Nothing asked, nothing called.
        assert_eq!(t.get_many(&[]).await, Ok(Vec::new()));
        t.fail_with(None);
        let got = t.get_many(&keys).await.expect("get_many");
        assert_eq!(got.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true]);
    }
}

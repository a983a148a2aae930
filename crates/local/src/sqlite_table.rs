//! DynamoDB-style tables in one SQLite file: partition key + sort key, JSON attributes, a version, an expiry,
//! conditional writes and all-or-nothing transactions.
//!
//! Several logical tables share one database file (a `tbl` column). Attributes are stored as JSON text; versions
//! are stored bit-for-bit as SQLite integers, so every `u64` round-trips. Expired items stay on disk until
//! [`SqliteTable::purge_expired`] removes them, but are invisible to reads and count as absent for conditions from
//! the second they expire, which is what DynamoDB's TTL guarantees callers who filter on it.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};
use tributary_core::ports::{
    add_number, check_add, check_get_many, check_index_values, check_scan, check_transaction, scan_segment, Condition,
    Item, ItemKey, KeyPage, PortError, QueryPage, ScanCursor, SparseIndex, TableStore, TransactError, WriteOp,
    SPARSE_INDEXES,
};

use crate::sqlite_queue::{now_ms, sqlite_error, Db};

/// DynamoDB's item size limit; enforced on the JSON form so oversized items fail locally too.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's key length limits (bytes).
const MAX_PK_BYTES: usize = 2048;
const MAX_SK_BYTES: usize = 1024;
/// Attribute names the AWS adapter uses for the key, the version and the expiry.
const RESERVED_ATTRS: [&str; 4] = ["pk", "sk", "v", "ttl"];

const TABLE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tributary_table_items (
    tbl        TEXT    NOT NULL,
    pk         TEXT    NOT NULL,
    sk         TEXT    NOT NULL,
    attrs      TEXT    NOT NULL,
    v          INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
";

/// The partial index behind one [`SparseIndex`]: the keys of the rows whose attribute is a string, like
/// DynamoDB's sparse global secondary index (expired rows stay in it until purged; scans skip them). The
/// attribute and the name are compile-time constants of [`SPARSE_INDEXES`] and plain identifiers (checked by a
/// test), so they can be written into the SQL.
fn sparse_index_ddl(index: &SparseIndex) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS tributary_table_items_{name} ON tributary_table_items (tbl, pk, sk) WHERE {filter};",
        name = index.name,
        filter = sparse_index_filter(index)
    )
}

/// The partial index's condition; a query must repeat it word for word for SQLite to use the index.
fn sparse_index_filter(index: &SparseIndex) -> String {
    format!("json_type(attrs, '$.\"{}\"') = 'text'", index.attribute)
}

/// One page of one segment, walking the partial index in key order from `after`. Rows of other segments are
/// stepped over (the segment is a hash of the partition key, which SQL cannot compute here), so a page reads about
/// `limit × total_segments` index entries, never the whole table, and holds at most `limit + 1` keys in memory.
fn scan_page(
    conn: &Connection,
    table: &str,
    index: &SparseIndex,
    segment: u32,
    total_segments: u32,
    after: Option<ItemKey>,
    limit: usize,
) -> Result<Vec<ItemKey>, PortError> {
    let err = |e| sqlite_error("scan_index", e);
    // `INDEXED BY` makes SQLite use the partial index or fail, never fall back to reading every row.
    let sql = format!(
        "SELECT pk, sk FROM tributary_table_items INDEXED BY tributary_table_items_{name}
         WHERE tbl = ?1 AND (pk, sk) > (?2, ?3) AND {filter} AND (expires_at IS NULL OR expires_at > ?4)
         ORDER BY pk, sk",
        name = index.name,
        filter = sparse_index_filter(index)
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    // Keys are never empty, so ("", "") is before every one of them.
    let after = after.unwrap_or_else(|| ItemKey::new("", ""));
    let mut rows = stmt.query(params![table, after.pk, after.sk, now_s()]).map_err(err)?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        let pk: String = row.get(0).map_err(err)?;
        if scan_segment(&pk, total_segments) != segment {
            continue;
        }
        keys.push(ItemKey { pk, sk: row.get(1).map_err(err)? });
        if keys.len() > limit {
            break;
        }
    }
    Ok(keys)
}

/// The statement of a [`TableStore::get_many`] of `n` keys: the keys as a `VALUES` list, each with its position,
/// joined on the primary key, so that one statement reads them all by primary-key lookups. Parameters: `?1` the
/// table, `?2` now (epoch seconds), then each key's partition and sort key. At most [`MAX_GET_MANY`] keys, so the
/// text stays small (a few kB) and the parameters far below SQLite's limit.
///
/// [`MAX_GET_MANY`]: tributary_core::ports::MAX_GET_MANY
fn get_many_sql(n: usize) -> String {
    let values: Vec<String> = (0..n).map(|i| format!("({i}, ?{}, ?{})", 3 + 2 * i, 4 + 2 * i)).collect();
    format!(
        "WITH wanted(i, pk, sk) AS (VALUES {})
         SELECT wanted.i, t.pk, t.sk, t.attrs, t.v, t.expires_at
         FROM wanted JOIN tributary_table_items AS t ON t.tbl = ?1 AND t.pk = wanted.pk AND t.sk = wanted.sk
         WHERE t.expires_at IS NULL OR t.expires_at > ?2",
        values.join(", ")
    )
}

/// The unexpired items of `keys` (distinct, checked by the caller), in the order asked, with one statement.
fn get_many_rows(conn: &Connection, table: &str, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
    let err = |e| sqlite_error("get_many", e);
    let now = now_s();
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(2 + 2 * keys.len());
    params.push(&table);
    params.push(&now);
    for key in keys {
        params.push(&key.pk);
        params.push(&key.sk);
    }
    let mut stmt = conn.prepare_cached(&get_many_sql(keys.len())).map_err(err)?;
    let rows = stmt
        .query_map(params.as_slice(), |r| {
            let at: i64 = r.get(0)?;
            Ok((at, RawItem { pk: r.get(1)?, sk: r.get(2)?, attrs: r.get(3)?, v: r.get(4)?, expires_at: r.get(5)? }))
        })
        .map_err(err)?;
    let mut out: Vec<Option<Item>> = vec![None; keys.len()];
    for row in rows {
        let (at, raw) = row.map_err(err)?;
        let slot = usize::try_from(at)
            .ok()
            .and_then(|at| out.get_mut(at))
            .ok_or_else(|| PortError::Unavailable("sqlite get_many: a row answered no key asked for".into()))?;
        *slot = Some(raw.into_item()?);
    }
    Ok(out)
}

/// One logical table in a SQLite database file. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteTable {
    db: Arc<Db>,
    table: Arc<str>,
}

impl std::fmt::Debug for SqliteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTable").field("table", &self.table).finish_non_exhaustive()
    }
}

impl SqliteTable {
    /// Opens (creating if needed) the database at `db_path` and the logical table `table` in it.
    pub fn open(db_path: &Path, table: &str) -> Result<Self, PortError> {
        if table.is_empty() {
            return Err(PortError::Invalid("table name must not be empty".into()));
        }
        let schema: String =
            std::iter::once(TABLE_SCHEMA.to_owned()).chain(SPARSE_INDEXES.iter().map(sparse_index_ddl)).collect();
        let db = Db::open(db_path, &schema)?;
        Ok(SqliteTable { db: Arc::new(db), table: Arc::from(table) })
    }

    /// The logical table's name inside the database file.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Every item of the table sorted by key, expired ones included (they are still stored), for tests and tooling.
    pub async fn scan_all(&self) -> Result<Vec<Item>, PortError> {
        let table = self.table.clone();
        self.db
            .call(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT pk, sk, attrs, v, expires_at FROM tributary_table_items WHERE tbl = ?1
                         ORDER BY pk, sk",
                    )
                    .map_err(|e| sqlite_error("scan", e))?;
                let rows = stmt.query_map(params![&*table], read_row).map_err(|e| sqlite_error("scan", e))?;
                let raw: Vec<RawItem> = rows.collect::<Result<_, _>>().map_err(|e| sqlite_error("scan", e))?;
                raw.into_iter().map(RawItem::into_item).collect()
            })
            .await
    }

    /// Removes expired items from disk (DynamoDB's TTL sweeper); returns how many went.
    pub async fn purge_expired(&self) -> Result<u64, PortError> {
        let table = self.table.clone();
        self.db
            .call(move |conn| {
                let n = conn
                    .execute(
                        "DELETE FROM tributary_table_items WHERE tbl = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2",
                        params![&*table, now_s()],
                    )
                    .map_err(|e| sqlite_error("purge_expired", e))?;
                Ok(n as u64)
            })
            .await
    }
}

fn now_s() -> i64 {
    now_ms().div_euclid(1000)
}

/// A row as stored, before the attributes are parsed (parsing happens outside rusqlite's row callback so a
/// corrupt value becomes a `PortError`, not a rusqlite conversion error).
struct RawItem {
    pk: String,
    sk: String,
    attrs: String,
    v: i64,
    expires_at: Option<i64>,
}

impl RawItem {
    fn into_item(self) -> Result<Item, PortError> {
        let attrs: Map<String, Value> = serde_json::from_str(&self.attrs)
            .map_err(|e| PortError::Invalid(format!("stored attributes of an item are not a JSON object: {e}")))?;
        Ok(Item {
            key: ItemKey { pk: self.pk, sk: self.sk },
            attrs,
            // Stored bit-for-bit (see `version_to_sql`).
            version: self.v as u64,
            expires_at: self.expires_at,
        })
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawItem> {
    Ok(RawItem { pk: r.get(0)?, sk: r.get(1)?, attrs: r.get(2)?, v: r.get(3)?, expires_at: r.get(4)? })
}

/// SQLite integers are i64; the bit pattern keeps every u64 exact (only equality is ever asked of it).
fn version_to_sql(v: u64) -> i64 {
    v as i64
}

fn validate_key(key: &ItemKey) -> Result<(), PortError> {
    if key.pk.is_empty() || key.sk.is_empty() {
        return Err(PortError::Invalid("partition and sort keys must not be empty".into()));
    }
    if key.pk.len() > MAX_PK_BYTES || key.sk.len() > MAX_SK_BYTES {
        return Err(PortError::Invalid(format!(
            "key too long ({} / {} bytes; limits {MAX_PK_BYTES} / {MAX_SK_BYTES})",
            key.pk.len(),
            key.sk.len()
        )));
    }
    Ok(())
}

/// Checks an operation and serialises a put's attributes once, before the transaction starts.
fn prepare(op: &WriteOp) -> Result<Option<String>, PortError> {
    match op {
        WriteOp::Put { item, .. } => {
            validate_key(&item.key)?;
            if let Some(name) = RESERVED_ATTRS.iter().find(|n| item.attrs.contains_key(**n)) {
                return Err(PortError::Invalid(format!("attribute name {name:?} is reserved")));
            }
            check_index_values(&item.attrs)?;
            let json = serde_json::to_string(&item.attrs)
                .map_err(|e| PortError::Invalid(format!("attributes cannot be serialised: {e}")))?;
            let size = json.len() + item.key.pk.len() + item.key.sk.len();
            if size > MAX_ITEM_BYTES {
                return Err(PortError::Invalid(format!("item of {size} bytes exceeds {MAX_ITEM_BYTES}")));
            }
            Ok(Some(json))
        }
        WriteOp::Delete { key, .. } | WriteOp::Check { key, .. } => {
            validate_key(key)?;
            Ok(None)
        }
    }
}

fn condition_holds(condition: &Condition, current_version: Option<u64>) -> bool {
    match condition {
        Condition::None => true,
        Condition::NotExists => current_version.is_none(),
        Condition::Exists => current_version.is_some(),
        Condition::VersionIs(v) => current_version == Some(*v),
    }
}

enum TxFailure {
    Condition(usize),
    Port(PortError),
}

/// Checks every condition, then applies every write, inside one IMMEDIATE transaction: the write lock is taken up
/// front, so no other writer can slip in between check and write, and an early return rolls everything back.
fn apply(conn: &mut Connection, table: &str, ops: &[WriteOp], prepared: &[Option<String>]) -> Result<(), TxFailure> {
    let err = |e| TxFailure::Port(sqlite_error("transaction", e));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let now = now_s();
    for (index, op) in ops.iter().enumerate() {
        let (key, condition) = (op.key(), op.condition());
        if matches!(condition, Condition::None) {
            continue;
        }
        let current: Option<i64> = tx
            .prepare_cached(
                "SELECT v FROM tributary_table_items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3
                 AND (expires_at IS NULL OR expires_at > ?4)",
            )
            .and_then(|mut s| s.query_row(params![table, &key.pk, &key.sk, now], |r| r.get(0)).optional())
            .map_err(err)?;
        if !condition_holds(condition, current.map(|v| v as u64)) {
            return Err(TxFailure::Condition(index));
        }
    }
    for (op, json) in ops.iter().zip(prepared) {
        match (op, json) {
            (WriteOp::Put { item, .. }, Some(json)) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO tributary_table_items (tbl, pk, sk, attrs, v, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        table,
                        &item.key.pk,
                        &item.key.sk,
                        json,
                        version_to_sql(item.version),
                        item.expires_at
                    ])
                })
                .map_err(err)?;
            }
            (WriteOp::Delete { key, .. }, _) => {
                tx.prepare_cached("DELETE FROM tributary_table_items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3")
                    .and_then(|mut s| s.execute(params![table, &key.pk, &key.sk]))
                    .map_err(err)?;
            }
            _ => {}
        }
    }
    tx.commit().map_err(err)
}

/// One counter update inside an IMMEDIATE transaction: read the (unexpired) item, add, set, write back. The write
/// lock is taken up front, so concurrent adds (from this process or another) serialise and none is lost.
fn apply_add(
    conn: &mut Connection,
    table: &str,
    key: &ItemKey,
    deltas: &[(String, i64)],
    set: Map<String, Value>,
    expires_at: Option<i64>,
) -> Result<(), PortError> {
    let err = |e| sqlite_error("add", e);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let current: Option<(String, i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT attrs, v, expires_at FROM tributary_table_items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3
             AND (expires_at IS NULL OR expires_at > ?4)",
        )
        .and_then(|mut s| {
            s.query_row(params![table, &key.pk, &key.sk, now_s()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
        })
        .map_err(err)?;
    // An expired item still on disk counts as absent: the add starts from nothing, as a new item.
    let (mut attrs, version, mut expiry) = match current {
        Some((json, v, exp)) => {
            let attrs: Map<String, Value> = serde_json::from_str(&json)
                .map_err(|e| PortError::Invalid(format!("stored attributes of an item are not a JSON object: {e}")))?;
            (attrs, v, exp)
        }
        None => (Map::new(), 0, None),
    };
    for (name, delta) in deltas {
        let sum = add_number(attrs.get(name), *delta)
            .ok_or_else(|| PortError::Invalid(format!("attribute {name:?} does not hold a number to add to")))?;
        attrs.insert(name.clone(), sum);
    }
    attrs.extend(set);
    if expires_at.is_some() {
        expiry = expires_at;
    }
    let json = serde_json::to_string(&attrs)
        .map_err(|e| PortError::Invalid(format!("attributes cannot be serialised: {e}")))?;
    let size = json.len() + key.pk.len() + key.sk.len();
    if size > MAX_ITEM_BYTES {
        return Err(PortError::Invalid(format!("item of {size} bytes exceeds {MAX_ITEM_BYTES}")));
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO tributary_table_items (tbl, pk, sk, attrs, v, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![table, &key.pk, &key.sk, json, version, expiry]))
    .map_err(err)?;
    tx.commit().map_err(err)
}

impl SqliteTable {
    async fn run(&self, ops: Vec<WriteOp>) -> Result<(), TxFailure> {
        let prepared = ops.iter().map(prepare).collect::<Result<Vec<_>, _>>().map_err(TxFailure::Port)?;
        let table = self.table.clone();
        self.db.call(move |conn| Ok(apply(conn, &table, &ops, &prepared))).await.map_err(TxFailure::Port)?
    }
}

impl TableStore for SqliteTable {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        validate_key(key)?;
        let table = self.table.clone();
        let key = key.clone();
        self.db
            .call(move |conn| {
                let raw = conn
                    .prepare_cached(
                        "SELECT pk, sk, attrs, v, expires_at FROM tributary_table_items
                         WHERE tbl = ?1 AND pk = ?2 AND sk = ?3 AND (expires_at IS NULL OR expires_at > ?4)",
                    )
                    .and_then(|mut s| s.query_row(params![&*table, &key.pk, &key.sk, now_s()], read_row).optional())
                    .map_err(|e| sqlite_error("get", e))?;
                raw.map(RawItem::into_item).transpose()
            })
            .await
    }

    /// One statement ([`get_many_sql`]) in one trip to the connection's thread.
    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        check_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        for (i, key) in keys.iter().enumerate() {
            validate_key(key).map_err(|e| match e {
                PortError::Invalid(why) => PortError::Invalid(format!("key {i}: {why}")),
                other => other,
            })?;
        }
        let table = self.table.clone();
        let keys = keys.to_vec();
        self.db.call(move |conn| get_many_rows(conn, &table, &keys)).await
    }

    /// Pages are exact: `next` is set only when another matching item follows.
    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<QueryPage, PortError> {
        if limit == 0 {
            return Err(PortError::Invalid("query limit must be at least 1".into()));
        }
        let table = self.table.clone();
        let (pk, prefix, after) = (pk.to_string(), sk_prefix.to_string(), start_after.map(str::to_string));
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1).saturating_add(1);
        self.db
            .call(move |conn| {
                // `sk >= prefix` lets the primary key index seek; `substr` (in characters, like `length`) keeps
                // exactly the keys that start with the prefix. TEXT compares bytewise, as DynamoDB does.
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT pk, sk, attrs, v, expires_at FROM tributary_table_items
                         WHERE tbl = ?1 AND pk = ?2 AND sk >= ?3 AND substr(sk, 1, length(?3)) = ?3
                           AND (?4 IS NULL OR sk > ?4) AND (expires_at IS NULL OR expires_at > ?5)
                         ORDER BY sk LIMIT ?6",
                    )
                    .map_err(|e| sqlite_error("query", e))?;
                let rows = stmt
                    .query_map(params![&*table, pk, prefix, after, now_s(), fetch], read_row)
                    .map_err(|e| sqlite_error("query", e))?;
                let mut raw: Vec<RawItem> = rows.collect::<Result<_, _>>().map_err(|e| sqlite_error("query", e))?;
                let more = raw.len() > limit;
                raw.truncate(limit);
                let items = raw.into_iter().map(RawItem::into_item).collect::<Result<Vec<_>, _>>()?;
                let next = if more { items.last().map(|i| i.key.sk.clone()) } else { None };
                Ok(QueryPage { items, next })
            })
            .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        check_transaction(&ops)?;
        match self.run(ops).await {
            Ok(()) => Ok(()),
            Err(TxFailure::Condition(index)) => Err(TransactError::ConditionFailed { index }),
            Err(TxFailure::Port(e)) => Err(TransactError::Port(e)),
        }
    }

    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        // The condition, not the key: keys may hold identifiers that must not reach logs.
        let what = format!("{:?} does not hold", op.condition());
        match self.run(vec![op]).await {
            Ok(()) => Ok(()),
            Err(TxFailure::Condition(_)) => Err(PortError::ConditionFailed(what)),
            Err(TxFailure::Port(e)) => Err(e),
        }
    }

    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: Map<String, Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        validate_key(key)?;
        check_add(deltas, &set)?;
        let table = self.table.clone();
        let (key, deltas) = (key.clone(), deltas.to_vec());
        self.db.call(move |conn| apply_add(conn, &table, &key, &deltas, set, expires_at)).await
    }

    /// Exact pages: `next` is set only when another key of the segment follows.
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
        let (table, index) = (self.table.clone(), *index);
        let mut keys =
            self.db.call(move |conn| scan_page(conn, &table, &index, segment, total_segments, after, limit)).await?;
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| ScanCursor { segment, total_segments, after: k.clone(), value: None }.encode(&index))
        } else {
            None
        };
        Ok(KeyPage { keys, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_index_names_are_plain_identifiers() {
        // They are written into SQL: anything else would need quoting.
        for index in SPARSE_INDEXES {
            for name in [index.attribute, index.name] {
                assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{name:?}");
            }
        }
    }

    #[tokio::test]
    async fn get_many_is_one_statement_of_primary_key_lookups() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = SqliteTable::open(&dir.path().join("t.db"), "main").expect("open");
        let plans =
            t.db.call(|conn| {
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {}", get_many_sql(tributary_core::ports::MAX_GET_MANY)))
                    .map_err(|e| sqlite_error("plan", e))?;
                let params: Vec<String> =
                    (0..2 + 2 * tributary_core::ports::MAX_GET_MANY).map(|i| i.to_string()).collect();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))
                    .map_err(|e| sqlite_error("plan", e))?;
                rows.collect::<Result<Vec<_>, _>>().map_err(|e| sqlite_error("plan", e))
            })
            .await
            .expect("plan");
        assert!(plans.iter().any(|p| p.contains("SEARCH t USING PRIMARY KEY (tbl=? AND pk=? AND sk=?)")), "{plans:?}");
        assert!(!plans.iter().any(|p| p.starts_with("SCAN t")), "never a scan of the table: {plans:?}");
    }

    #[tokio::test]
    async fn get_many_refuses_bad_keys_by_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = SqliteTable::open(&dir.path().join("t.db"), "main").expect("open");
        let keys = [ItemKey::new("p#ann@example.com", "a"), ItemKey::new("p", "b"), ItemKey::new("p", "")];
        let r = t.get_many(&keys).await;
        let Err(PortError::Invalid(why)) = r else { panic!("an empty sort key must be refused, got {r:?}") };
        assert!(why.starts_with("key 2:") && !why.contains("ann"), "{why}");
        assert_eq!(t.get_many(&keys[..2]).await, Ok(vec![None, None]));
    }

    #[tokio::test]
    async fn scans_read_the_partial_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = SqliteTable::open(&dir.path().join("t.db"), "main").expect("open");
        // Every index of the port, the suppression index as much as the roots.
        for index in SPARSE_INDEXES {
            let plans =
                t.db.call(move |conn| {
                    let sql = format!(
                        "EXPLAIN QUERY PLAN SELECT pk, sk FROM tributary_table_items INDEXED BY tributary_table_items_{}
                         WHERE tbl = ?1 AND (pk, sk) > (?2, ?3) AND {} AND (expires_at IS NULL OR expires_at > ?4)
                         ORDER BY pk, sk",
                        index.name,
                        sparse_index_filter(&index)
                    );
                    let mut stmt = conn.prepare(&sql).map_err(|e| sqlite_error("plan", e))?;
                    let rows = stmt
                        .query_map(params!["main", "", "", 0], |r| r.get::<_, String>(3))
                        .map_err(|e| sqlite_error("plan", e))?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(|e| sqlite_error("plan", e))
                })
                .await
                .expect("plan");
            let wanted = format!("USING INDEX tributary_table_items_{}", index.name);
            assert!(plans.iter().any(|p| p.contains(&wanted)), "{index:?}: {plans:?}");
            assert!(!plans.iter().any(|p| p.contains("TEMP B-TREE")), "no sort: {plans:?}");
        }
        assert!(SPARSE_INDEXES.contains(&tributary_core::ports::SUPPRESSED_IDENTITIES));
    }

    #[tokio::test]
    async fn a_database_made_before_an_index_existed_gets_it_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let t = SqliteTable::open(&path, "main").expect("open");
        let attrs = tributary_core::dsr::tombstone_attrs("email", "req-1", 1);
        let key = ItemKey::new("id#abc", "id");
        let item = Item { key: key.clone(), attrs, version: 2, expires_at: None };
        t.write(WriteOp::Put { item, condition: Condition::NotExists }).await.expect("put");
        // As a data dir of an older version: the suppression index missing.
        t.db.call(|conn| {
            conn.execute_batch("DROP INDEX tributary_table_items_suppressed;").map_err(|e| sqlite_error("drop", e))
        })
        .await
        .expect("drop the index");
        drop(t);
        let t = SqliteTable::open(&path, "main").expect("open again");
        let index = tributary_core::ports::SUPPRESSED_IDENTITIES;
        let page = t.scan_index(&index, 0, 1, None, 10).await.expect("scan");
        assert_eq!(page.keys, vec![key]);
    }
}

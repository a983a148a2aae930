//! Contract of [`TableStore`]: one DynamoDB-style table with conditional writes, all-or-nothing transactions,
//! sort-key-prefix queries with pagination, versions, TTL that hides expired items at once, atomic counter adds, and
//! parallel scans of a sparse index (whose attribute, an index key on DynamoDB, only ever holds a non-empty string:
//! DynamoDB refuses any other value with a `ValidationException`, so every adapter refuses it as invalid).

use serde_json::{json, Map, Value};

use std::collections::BTreeSet;

use crate::ports::{
    Condition, Item, ItemKey, PortError, ScanCursor, SparseIndex, TableStore, TransactError, WriteOp, MAX_GET_MANY,
    MAX_INDEX_VALUE_BYTES, MAX_SCAN_SEGMENTS, MAX_TRANSACT_ITEMS, ROOT_PROFILES, SPARSE_INDEXES, SUPPRESSED_IDENTITIES,
};

fn now_epoch_s() -> i64 {
    super::now_epoch_ms() / 1000
}

fn attrs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".to_string(), other);
            m
        }
    }
}

fn item(pk: &str, sk: &str, version: u64, a: Value) -> Item {
    Item { key: ItemKey::new(pk, sk), attrs: attrs(a), version, expires_at: None }
}

fn put(item: Item, condition: Condition) -> WriteOp {
    WriteOp::Put { item, condition }
}

async fn write_ok<T: TableStore>(t: &T, op: WriteOp, ctx: &str) {
    let shown = format!("{op:?}");
    t.write(op).await.unwrap_or_else(|e| panic!("table store contract [{ctx}]: write {shown} failed: {e}"));
}

async fn write_fails<T: TableStore>(t: &T, op: WriteOp, ctx: &str) {
    let shown = format!("{op:?}");
    let r = t.write(op).await;
    assert!(
        matches!(r, Err(PortError::ConditionFailed(_))),
        "table store contract [{ctx}]: write {shown} must fail with PortError::ConditionFailed, got {r:?}"
    );
}

async fn get_ok<T: TableStore>(t: &T, pk: &str, sk: &str, ctx: &str) -> Option<Item> {
    t.get(&ItemKey::new(pk, sk))
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: get {pk:?}/{sk:?} failed: {e}"))
}

/// Every item of `pk` under `sk_prefix`, following `next` pages of `page` items.
async fn query_all<T: TableStore>(t: &T, pk: &str, sk_prefix: &str, page: usize, ctx: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut start_after: Option<String> = None;
    for _ in 0..1000 {
        let p = t
            .query(pk, sk_prefix, start_after.as_deref(), page)
            .await
            .unwrap_or_else(|e| panic!("table store contract [{ctx}]: query {pk:?} {sk_prefix:?} failed: {e}"));
        assert!(
            p.items.len() <= page,
            "table store contract [{ctx}]: query returned {} items over limit {page}",
            p.items.len()
        );
        out.extend(p.items);
        match p.next {
            Some(n) => start_after = Some(n),
            None => return out,
        }
    }
    panic!("table store contract [{ctx}]: query pagination did not end after 1000 pages");
}

fn sks(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.key.sk.clone()).collect()
}

/// What an adapter's backing store can be held to beyond the port's semantics.
#[derive(Debug, Clone, Copy)]
pub struct ContractOptions {
    /// Concurrent adds to one item all count. True of DynamoDB, SQLite and the memory table; not of moto's
    /// DynamoDB emulation, which applies concurrent `UpdateItem` calls without isolation (a lost update was seen in
    /// CI), so the adapter is checked against it with the adds in sequence.
    pub atomic_concurrent_adds: bool,
}

/// Runs the table store contract on `t`, a fresh empty table. Panics on the first violation.
pub async fn table_store_contract<T: TableStore>(t: &T) {
    table_store_contract_with(t, ContractOptions { atomic_concurrent_adds: true }).await
}

/// [`table_store_contract`] with the store's limits stated.
pub async fn table_store_contract_with<T: TableStore>(t: &T, options: ContractOptions) {
    conditional_puts(t).await;
    versions(t).await;
    deletes(t).await;
    queries(t).await;
    transactions(t).await;
    transaction_limits(t).await;
    expiry(t).await;
    attribute_round_trip(t).await;
    get_many(t).await;
    get_many_limits(t).await;
    get_many_past_one_response(t).await;
    adds(t, options).await;
    // Last: they list every indexed item of the table, and the cases above index none.
    index_scans(t).await;
    suppression_index(t).await;
}

async fn conditional_puts<T: TableStore>(t: &T) {
    let ctx = "put NotExists";
    assert_eq!(get_ok(t, "cp#1", "profile", ctx).await, None, "table store contract [{ctx}]: get of a missing item");
    let first = item("cp#1", "profile", 1, json!({"name": "Ann"}));
    write_ok(t, put(first.clone(), Condition::NotExists), ctx).await;
    assert_eq!(
        get_ok(t, "cp#1", "profile", ctx).await,
        Some(first.clone()),
        "table store contract [{ctx}]: get after put"
    );
    write_fails(t, put(item("cp#1", "profile", 1, json!({"name": "Bob"})), Condition::NotExists), ctx).await;
    assert_eq!(
        get_ok(t, "cp#1", "profile", ctx).await,
        Some(first.clone()),
        "table store contract [{ctx}]: a failed put must not change the item"
    );

    let ctx = "put Exists";
    write_fails(t, put(item("cp#missing", "profile", 1, json!({})), Condition::Exists), ctx).await;
    assert_eq!(
        get_ok(t, "cp#missing", "profile", ctx).await,
        None,
        "table store contract [{ctx}]: failed put created an item"
    );
    let replaced = item("cp#1", "profile", 2, json!({"name": "Ann B."}));
    write_ok(t, put(replaced.clone(), Condition::Exists), ctx).await;
    assert_eq!(
        get_ok(t, "cp#1", "profile", ctx).await,
        Some(replaced),
        "table store contract [{ctx}]: put replaces all attrs"
    );

    let ctx = "put None";
    let unconditional = item("cp#1", "profile", 3, json!({"other": true}));
    write_ok(t, put(unconditional.clone(), Condition::None), ctx).await;
    assert_eq!(get_ok(t, "cp#1", "profile", ctx).await, Some(unconditional), "table store contract [{ctx}]: get");

    let ctx = "check";
    write_ok(t, WriteOp::Check { key: ItemKey::new("cp#1", "profile"), condition: Condition::Exists }, ctx).await;
    write_fails(t, WriteOp::Check { key: ItemKey::new("cp#1", "profile"), condition: Condition::NotExists }, ctx).await;
    write_ok(t, WriteOp::Check { key: ItemKey::new("cp#nope", "profile"), condition: Condition::NotExists }, ctx).await;
    assert_eq!(
        get_ok(t, "cp#nope", "profile", ctx).await,
        None,
        "table store contract [{ctx}]: a check must not write"
    );
}

async fn versions<T: TableStore>(t: &T) {
    let ctx = "VersionIs";
    let v7 = item("ver#1", "profile", 7, json!({"n": 1}));
    write_ok(t, put(v7.clone(), Condition::NotExists), ctx).await;
    assert_eq!(
        get_ok(t, "ver#1", "profile", ctx).await.map(|i| i.version),
        Some(7),
        "table store contract [{ctx}]: version stored and returned"
    );
    write_fails(t, put(item("ver#1", "profile", 9, json!({"n": 2})), Condition::VersionIs(6)), "VersionIs mismatch")
        .await;
    write_fails(t, put(item("ver#1", "profile", 9, json!({"n": 2})), Condition::VersionIs(8)), "VersionIs mismatch")
        .await;
    assert_eq!(
        get_ok(t, "ver#1", "profile", ctx).await,
        Some(v7),
        "table store contract [{ctx}]: mismatch must not write"
    );
    let v8 = item("ver#1", "profile", 8, json!({"n": 2}));
    write_ok(t, put(v8.clone(), Condition::VersionIs(7)), "VersionIs match").await;
    assert_eq!(
        get_ok(t, "ver#1", "profile", ctx).await,
        Some(v8),
        "table store contract [{ctx}]: after a matching write"
    );
    write_fails(
        t,
        put(item("ver#1", "profile", 9, json!({})), Condition::VersionIs(7)),
        "VersionIs of a superseded version",
    )
    .await;
    write_fails(
        t,
        put(item("ver#missing", "profile", 1, json!({})), Condition::VersionIs(0)),
        "VersionIs on a missing item",
    )
    .await;

    // Version 0 and large versions are values like any other.
    let zero = item("ver#0", "profile", 0, json!({}));
    write_ok(t, put(zero.clone(), Condition::NotExists), ctx).await;
    assert_eq!(get_ok(t, "ver#0", "profile", ctx).await, Some(zero), "table store contract [{ctx}]: version 0");
    write_ok(t, put(item("ver#0", "profile", 1 << 40, json!({})), Condition::VersionIs(0)), ctx).await;
    assert_eq!(
        get_ok(t, "ver#0", "profile", ctx).await.map(|i| i.version),
        Some(1 << 40),
        "table store contract [{ctx}]: large version"
    );
}

async fn deletes<T: TableStore>(t: &T) {
    let ctx = "delete";
    write_ok(t, put(item("del#1", "a", 3, json!({"x": 1})), Condition::NotExists), ctx).await;
    let key = ItemKey::new("del#1", "a");
    write_fails(
        t,
        WriteOp::Delete { key: key.clone(), condition: Condition::VersionIs(2) },
        "delete VersionIs mismatch",
    )
    .await;
    assert!(
        get_ok(t, "del#1", "a", ctx).await.is_some(),
        "table store contract [{ctx}]: failed delete removed the item"
    );
    write_fails(
        t,
        WriteOp::Delete { key: key.clone(), condition: Condition::NotExists },
        "delete NotExists of a present item",
    )
    .await;
    write_ok(t, WriteOp::Delete { key: key.clone(), condition: Condition::VersionIs(3) }, "delete VersionIs match")
        .await;
    assert_eq!(get_ok(t, "del#1", "a", ctx).await, None, "table store contract [{ctx}]: get after delete");
    write_fails(
        t,
        WriteOp::Delete { key: key.clone(), condition: Condition::Exists },
        "delete Exists of a missing item",
    )
    .await;
    write_ok(
        t,
        WriteOp::Delete { key: key.clone(), condition: Condition::None },
        "unconditional delete of a missing item",
    )
    .await;
    write_ok(t, put(item("del#1", "a", 1, json!({})), Condition::NotExists), "put after delete").await;
    write_ok(t, WriteOp::Delete { key, condition: Condition::Exists }, "delete Exists").await;
    assert_eq!(get_ok(t, "del#1", "a", ctx).await, None, "table store contract [{ctx}]: get after delete Exists");
}

async fn queries<T: TableStore>(t: &T) {
    let ctx = "query";
    // Inserted out of order; byte order puts "evt#A" before "evt#a" and "evt#10" before "evt#2".
    let mut evt: Vec<String> = (1..=12).map(|i| format!("evt#{i:03}")).collect();
    evt.extend(["evt#A".to_string(), "evt#a".to_string(), "evt#ü".to_string()]);
    let mut insert_order = evt.clone();
    insert_order.reverse();
    insert_order.swap(0, 7);
    for (i, sk) in insert_order.iter().enumerate() {
        write_ok(t, put(item("q#1", sk, 1, json!({"i": i})), Condition::None), ctx).await;
    }
    for sk in ["evt", "evu#1", "aaa", "profile"] {
        write_ok(t, put(item("q#1", sk, 1, json!({})), Condition::None), ctx).await;
    }
    write_ok(t, put(item("q#10", "evt#001", 1, json!({})), Condition::None), ctx).await;
    write_ok(t, put(item("q#", "evt#001", 1, json!({})), Condition::None), ctx).await;
    let mut expected = evt.clone();
    expected.sort();

    // First page: exactly `limit` items in sort-key order and a `next` to continue from.
    let first = t
        .query("q#1", "evt#", None, 5)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: query failed: {e}"));
    assert_eq!(sks(&first.items), expected[..5].to_vec(), "table store contract [{ctx}]: first page of 5");
    assert!(first.next.is_some(), "table store contract [{ctx}]: first page must say there may be more");
    assert!(first.items.iter().all(|i| i.key.pk == "q#1"), "table store contract [{ctx}]: items of another partition");

    for page in [1, 4, 5, 7, 100] {
        let all = query_all(t, "q#1", "evt#", page, ctx).await;
        assert_eq!(
            sks(&all),
            expected,
            "table store contract [{ctx}]: all pages of {page} concatenated, in sort-key order"
        );
    }
    let after = t
        .query("q#1", "evt#", Some("evt#005"), 3)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: query failed: {e}"));
    assert_eq!(
        sks(&after.items),
        vec!["evt#006", "evt#007", "evt#008"],
        "table store contract [{ctx}]: start_after is exclusive"
    );

    let mut whole: Vec<String> = expected.clone();
    whole.extend(["evt", "evu#1", "aaa", "profile"].map(String::from));
    whole.sort();
    assert_eq!(
        sks(&query_all(t, "q#1", "", 50, ctx).await),
        whole,
        "table store contract [{ctx}]: empty prefix = whole partition"
    );
    assert_eq!(
        sks(&query_all(t, "q#1", "evt#00", 50, ctx).await),
        expected[..9].to_vec(),
        "table store contract [{ctx}]: prefix evt#00"
    );
    assert!(query_all(t, "q#missing", "", 10, ctx).await.is_empty(), "table store contract [{ctx}]: missing partition");
    assert!(
        query_all(t, "q#1", "zzz", 10, ctx).await.is_empty(),
        "table store contract [{ctx}]: prefix matching nothing"
    );
    let attrs_back = query_all(t, "q#1", "evt#001", 10, ctx).await;
    assert_eq!(attrs_back.len(), 1, "table store contract [{ctx}]: exact-key prefix");
    let i = insert_order.iter().position(|s| s == "evt#001").unwrap_or(usize::MAX);
    assert_eq!(attrs_back[0].attrs, attrs(json!({"i": i})), "table store contract [{ctx}]: attrs returned by query");
}

async fn transactions<T: TableStore>(t: &T) {
    let ctx = "transaction failing at index 2";
    write_ok(t, put(item("tx#existing", "p", 4, json!({"keep": true})), Condition::NotExists), ctx).await;
    let ops = vec![
        put(item("tx#a", "p", 1, json!({"a": 1})), Condition::NotExists),
        put(item("tx#existing", "p", 5, json!({"changed": true})), Condition::VersionIs(4)),
        WriteOp::Check { key: ItemKey::new("tx#missing", "p"), condition: Condition::Exists },
        put(item("tx#b", "p", 1, json!({"b": 1})), Condition::None),
        WriteOp::Delete { key: ItemKey::new("tx#other", "p"), condition: Condition::None },
    ];
    let r = t.transact(ops).await;
    assert_eq!(r, Err(TransactError::ConditionFailed { index: 2 }), "table store contract [{ctx}]");
    assert_eq!(get_ok(t, "tx#a", "p", ctx).await, None, "table store contract [{ctx}]: put at index 0 was applied");
    assert_eq!(get_ok(t, "tx#b", "p", ctx).await, None, "table store contract [{ctx}]: put at index 3 was applied");
    assert_eq!(
        get_ok(t, "tx#existing", "p", ctx).await.map(|i| (i.version, i.attrs)),
        Some((4, attrs(json!({"keep": true})))),
        "table store contract [{ctx}]: conditional put at index 1 was applied"
    );

    let ctx = "transaction failing at index 0";
    let r = t
        .transact(vec![
            put(item("tx#existing", "p", 9, json!({})), Condition::NotExists),
            put(item("tx#c", "p", 1, json!({})), Condition::None),
        ])
        .await;
    assert_eq!(r, Err(TransactError::ConditionFailed { index: 0 }), "table store contract [{ctx}]");
    assert_eq!(get_ok(t, "tx#c", "p", ctx).await, None, "table store contract [{ctx}]: put at index 1 was applied");

    let ctx = "transaction succeeding";
    write_ok(t, put(item("tx#gone", "p", 2, json!({})), Condition::None), ctx).await;
    let r = t
        .transact(vec![
            put(item("tx#a", "p", 1, json!({"a": 1})), Condition::NotExists),
            put(item("tx#existing", "p", 5, json!({"changed": true})), Condition::VersionIs(4)),
            WriteOp::Delete { key: ItemKey::new("tx#gone", "p"), condition: Condition::VersionIs(2) },
            WriteOp::Check { key: ItemKey::new("tx#a", "q"), condition: Condition::NotExists },
            put(item("tx#b", "p", 1, json!({"b": 1})), Condition::None),
        ])
        .await;
    assert_eq!(r, Ok(()), "table store contract [{ctx}]");
    assert_eq!(
        get_ok(t, "tx#a", "p", ctx).await,
        Some(item("tx#a", "p", 1, json!({"a": 1}))),
        "table store contract [{ctx}]: a"
    );
    assert_eq!(
        get_ok(t, "tx#b", "p", ctx).await,
        Some(item("tx#b", "p", 1, json!({"b": 1}))),
        "table store contract [{ctx}]: b"
    );
    assert_eq!(
        get_ok(t, "tx#existing", "p", ctx).await,
        Some(item("tx#existing", "p", 5, json!({"changed": true}))),
        "table store contract [{ctx}]: conditional replace"
    );
    assert_eq!(get_ok(t, "tx#gone", "p", ctx).await, None, "table store contract [{ctx}]: conditional delete");
    assert_eq!(get_ok(t, "tx#a", "q", ctx).await, None, "table store contract [{ctx}]: a check must not write");
}

async fn transaction_limits<T: TableStore>(t: &T) {
    let ctx = "transaction of 100 operations";
    let ops: Vec<WriteOp> = (0..MAX_TRANSACT_ITEMS)
        .map(|i| put(item("txl#max", &format!("i#{i:03}"), 1, json!({"i": i})), Condition::NotExists))
        .collect();
    t.transact(ops).await.unwrap_or_else(|e| {
        panic!("table store contract [{ctx}]: a transaction of {MAX_TRANSACT_ITEMS} puts failed: {e}")
    });
    assert_eq!(
        query_all(t, "txl#max", "", 100, ctx).await.len(),
        MAX_TRANSACT_ITEMS,
        "table store contract [{ctx}]: items written"
    );

    let ctx = "transaction over the limit";
    let ops: Vec<WriteOp> = (0..=MAX_TRANSACT_ITEMS)
        .map(|i| put(item("txl#over", &format!("i#{i:03}"), 1, json!({})), Condition::None))
        .collect();
    let r = t.transact(ops).await;
    assert!(
        matches!(r, Err(TransactError::Port(PortError::Invalid(_)))),
        "table store contract [{ctx}]: {} operations must be refused with PortError::Invalid, got {r:?}",
        MAX_TRANSACT_ITEMS + 1
    );
    assert!(
        query_all(t, "txl#over", "", 100, ctx).await.is_empty(),
        "table store contract [{ctx}]: nothing may be written"
    );

    let ctx = "transaction with two operations on one key";
    let r = t
        .transact(vec![
            put(item("txl#dup", "k", 1, json!({})), Condition::None),
            put(item("txl#other", "k", 1, json!({})), Condition::None),
            WriteOp::Check { key: ItemKey::new("txl#dup", "k"), condition: Condition::NotExists },
        ])
        .await;
    assert!(
        matches!(r, Err(TransactError::Port(PortError::Invalid(_)))),
        "table store contract [{ctx}]: must be refused with PortError::Invalid, got {r:?}"
    );
    assert_eq!(get_ok(t, "txl#dup", "k", ctx).await, None, "table store contract [{ctx}]: nothing may be written");
    assert_eq!(get_ok(t, "txl#other", "k", ctx).await, None, "table store contract [{ctx}]: nothing may be written");
}

async fn expiry<T: TableStore>(t: &T) {
    let ctx = "expiry";
    let now = now_epoch_s();
    let mut expired = item("exp#1", "session", 1, json!({"old": true}));
    expired.expires_at = Some(now - 3600);
    write_ok(t, put(expired, Condition::None), ctx).await;
    let mut live = item("exp#1", "session#live", 1, json!({"live": true}));
    live.expires_at = Some(now + 3600);
    write_ok(t, put(live.clone(), Condition::None), ctx).await;

    assert_eq!(
        get_ok(t, "exp#1", "session", ctx).await,
        None,
        "table store contract [{ctx}]: an expired item is visible to get"
    );
    assert_eq!(
        get_ok(t, "exp#1", "session#live", ctx).await,
        Some(live.clone()),
        "table store contract [{ctx}]: an item expiring later is visible, with its expires_at"
    );
    assert_eq!(
        sks(&query_all(t, "exp#1", "session", 10, ctx).await),
        vec!["session#live"],
        "table store contract [{ctx}]: an expired item is visible to query"
    );
    write_fails(t, put(item("exp#1", "session", 2, json!({})), Condition::Exists), "expiry: Exists on an expired item")
        .await;
    write_fails(
        t,
        put(item("exp#1", "session", 2, json!({})), Condition::VersionIs(1)),
        "expiry: VersionIs on an expired item",
    )
    .await;
    write_fails(
        t,
        WriteOp::Check { key: ItemKey::new("exp#1", "session"), condition: Condition::Exists },
        "expiry: Check Exists on an expired item",
    )
    .await;
    let r = t
        .transact(vec![WriteOp::Check { key: ItemKey::new("exp#1", "session"), condition: Condition::NotExists }])
        .await;
    assert_eq!(r, Ok(()), "table store contract [{ctx}]: Check NotExists on an expired item in a transaction");

    let reborn = item("exp#1", "session", 1, json!({"new": true}));
    write_ok(t, put(reborn.clone(), Condition::NotExists), "expiry: NotExists treats an expired item as absent").await;
    assert_eq!(
        get_ok(t, "exp#1", "session", ctx).await,
        Some(reborn),
        "table store contract [{ctx}]: an item put over an expired one (no expiry left over)"
    );
}

async fn attribute_round_trip<T: TableStore>(t: &T) {
    let ctx = "attribute round trip";
    let a = json!({
        "string": "Grüße 世界 🎉 \"quoted\" \\ back\nslash",
        "empty_string": "",
        "int": 42,
        "negative": -17,
        "zero": 0,
        "big": 9_007_199_254_740_993_i64,
        "min_i64": i64::MIN,
        "max_u64": u64::MAX,
        "float": 12.5,
        "small_float": -0.000_123_4,
        "third": 0.333_333_333_333_333_3,
        "sum": 0.1 + 0.2,
        "precise": 1.727_558_004_960_178_8e-9,
        "large_float": 6.02214076e23,
        "true": true,
        "false": false,
        "null": null,
        "empty_object": {},
        "empty_array": [],
        "nested": {
            "list": [1, 2.5, "three", false, null, {"deep": [[], [{"deeper": "yes"}]]}],
            "traits": {"email": "ann@example.com", "plan": {"name": "pro", "seats": 3}},
        },
        "ünïcode key": "value",
    });
    let mut it = item("attrs#1", "profile", 5, a);
    it.expires_at = Some(now_epoch_s() + 86_400);
    write_ok(t, put(it.clone(), Condition::NotExists), ctx).await;
    let back = get_ok(t, "attrs#1", "profile", ctx).await;
    let Some(back) = back else {
        panic!("table store contract [{ctx}]: item not found after put");
    };
    for (name, expected) in &it.attrs {
        assert_eq!(back.attrs.get(name), Some(expected), "table store contract [{ctx}]: attribute {name:?}");
    }
    assert_eq!(back, it, "table store contract [{ctx}]: whole item (no extra attributes, same version and expiry)");
    let queried = query_all(t, "attrs#1", "", 10, ctx).await;
    assert_eq!(queried, vec![it], "table store contract [{ctx}]: whole item through query");

    // Keys themselves carry any printable text.
    let odd = item("attrs#ünï code/with:odd|chars", "sk with spaces#🎉", 1, json!({"ok": true}));
    write_ok(t, put(odd.clone(), Condition::NotExists), ctx).await;
    assert_eq!(get_ok(t, &odd.key.pk, &odd.key.sk, ctx).await, Some(odd), "table store contract [{ctx}]: unicode keys");
}

async fn get_many_ok<T: TableStore>(t: &T, keys: &[ItemKey], ctx: &str) -> Vec<Option<Item>> {
    let got = t
        .get_many(keys)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: get_many of {} keys failed: {e}", keys.len()));
    assert_eq!(got.len(), keys.len(), "table store contract [{ctx}]: get_many must answer once per key asked");
    got
}

/// `get` of every key, one by one: what `get_many` must agree with.
async fn get_each<T: TableStore>(t: &T, keys: &[ItemKey], ctx: &str) -> Vec<Option<Item>> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.push(get_ok(t, &k.pk, &k.sk, ctx).await);
    }
    out
}

async fn get_many<T: TableStore>(t: &T) {
    let ctx = "get_many";
    let now = now_epoch_s();
    assert_eq!(get_many_ok(t, &[], ctx).await, Vec::new(), "table store contract [{ctx}]: no keys, no items");

    // Two partitions, written out of the order they are asked in; one item expired, one expiring later.
    let a = item("gm#1", "a", 1, json!({"name": "Ann", "tags": ["x", "y"]}));
    let b = item("gm#1", "b", 7, json!({"n": 12.5, "m": {"k": null}, "ok": true}));
    let c = item("gm#2", "a", 1 << 40, json!({}));
    let mut later = item("gm#2", "later", 2, json!({"live": true}));
    later.expires_at = Some(now + 3600);
    let mut expired = item("gm#2", "expired", 3, json!({"old": true}));
    expired.expires_at = Some(now - 3600);
    for it in [&c, &expired, &b, &later, &a] {
        write_ok(t, put(it.clone(), Condition::NotExists), ctx).await;
    }
    let missing = |pk: &str, sk: &str| ItemKey::new(pk, sk);
    let keys = vec![
        c.key.clone(),
        missing("gm#1", "c"),
        a.key.clone(),
        expired.key.clone(),
        missing("gm#1", "a#"),
        later.key.clone(),
        missing("gm#3", "a"),
        b.key.clone(),
    ];
    let expected = vec![Some(c.clone()), None, Some(a.clone()), None, None, Some(later.clone()), None, Some(b.clone())];
    assert_eq!(
        get_many_ok(t, &keys, ctx).await,
        expected,
        "table store contract [{ctx}]: items in the order asked, None for missing and expired ones in between"
    );
    assert_eq!(
        get_many_ok(t, &keys, ctx).await,
        get_each(t, &keys, ctx).await,
        "table store contract [{ctx}]: get_many must agree with get for every key"
    );
    let mut reversed = keys.clone();
    reversed.reverse();
    let mut expected_reversed = expected;
    expected_reversed.reverse();
    assert_eq!(
        get_many_ok(t, &reversed, ctx).await,
        expected_reversed,
        "table store contract [{ctx}]: the same keys in another order"
    );
    assert_eq!(get_many_ok(t, std::slice::from_ref(&a.key), ctx).await, vec![Some(a)], "table store contract [{ctx}]");
    assert_eq!(
        get_many_ok(t, &[expired.key.clone(), missing("gm#4", "x")], ctx).await,
        vec![None, None],
        "table store contract [{ctx}]: nothing found"
    );
}

async fn get_many_limits<T: TableStore>(t: &T) {
    let ctx = "get_many of 100 keys";
    let now = now_epoch_s();
    // 50 items over 7 partitions (one expired) in one transaction, asked for between 50 missing keys.
    let stored: Vec<Item> = (0..MAX_GET_MANY / 2)
        .map(|i| {
            let mut it = item(&format!("gml#{}", i % 7), &format!("i#{i:03}"), i as u64, json!({"i": i}));
            if i == 20 {
                it.expires_at = Some(now - 60);
            }
            it
        })
        .collect();
    let ops = stored.iter().map(|it| put(it.clone(), Condition::NotExists)).collect();
    t.transact(ops).await.unwrap_or_else(|e| panic!("table store contract [{ctx}]: transaction failed: {e}"));
    let mut keys = Vec::with_capacity(MAX_GET_MANY);
    let mut expected = Vec::with_capacity(MAX_GET_MANY);
    for (i, it) in stored.iter().enumerate() {
        keys.push(ItemKey::new(format!("gml#{}", i % 7), format!("j#{i:03}")));
        expected.push(None);
        keys.push(it.key.clone());
        expected.push(if i == 20 { None } else { Some(it.clone()) });
    }
    let got = get_many_ok(t, &keys, ctx).await;
    assert_eq!(got, expected, "table store contract [{ctx}]: {MAX_GET_MANY} keys, every other one missing");
    assert_eq!(got, get_each(t, &keys, ctx).await, "table store contract [{ctx}]: get_many must agree with get");

    let ctx = "get_many refused";
    let mut over = keys.clone();
    over.push(ItemKey::new("gml#over", "x"));
    let r = t.get_many(&over).await;
    assert!(
        matches!(r, Err(PortError::Invalid(_))),
        "table store contract [{ctx}]: {} keys must be refused with PortError::Invalid, got {r:?}",
        MAX_GET_MANY + 1
    );
    for twice in [
        vec![keys[1].clone(), keys[3].clone(), keys[1].clone()],
        vec![keys[0].clone(), keys[0].clone()],
        vec![stored[20].key.clone(), keys[5].clone(), stored[20].key.clone()],
    ] {
        let r = t.get_many(&twice).await;
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: a key asked for twice (present, missing or expired) must be refused with \
             PortError::Invalid, got {r:?}"
        );
    }
}

/// More than one DynamoDB BatchGetItem response holds (16 MB): the store must still answer every key.
async fn get_many_past_one_response<T: TableStore>(t: &T) {
    let ctx = "get_many of 17 MB";
    const ITEMS: usize = 45;
    const BLOB: usize = 380_000;
    let mut keys = Vec::with_capacity(ITEMS + 1);
    for i in 0..ITEMS {
        let blob =
            super::pseudo_random_bytes(BLOB / 2, i as u64 + 1).iter().map(|b| format!("{b:02x}")).collect::<String>();
        write_ok(t, put(item("gmb#1", &format!("i#{i:02}"), 1, json!({ "blob": blob })), Condition::None), ctx).await;
        keys.push(ItemKey::new("gmb#1", format!("i#{i:02}")));
    }
    keys.insert(ITEMS / 2, ItemKey::new("gmb#1", "missing"));
    let got = get_many_ok(t, &keys, ctx).await;
    let each = get_each(t, &keys, ctx).await;
    for (i, (g, e)) in got.iter().zip(&each).enumerate() {
        // Compared without printing: each item holds 380 kB.
        assert!(g == e, "table store contract [{ctx}]: key {i} ({:?}) differs from its get", keys[i]);
        assert_eq!(g.is_some(), i != ITEMS / 2, "table store contract [{ctx}]: key {i} ({:?})", keys[i]);
    }
}

fn deltas(d: &[(&str, i64)]) -> Vec<(String, i64)> {
    d.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
}

async fn add_ok<T: TableStore>(
    t: &T,
    key: &ItemKey,
    d: &[(&str, i64)],
    set: Value,
    expires_at: Option<i64>,
    ctx: &str,
) {
    t.add(key, &deltas(d), attrs(set), expires_at)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: add {d:?} to {key:?} failed: {e}"));
}

async fn adds<T: TableStore>(t: &T, options: ContractOptions) {
    let ctx = "add creates";
    let now = now_epoch_s();
    let key = ItemKey::new("add#1", "2025-03-10T12#0123456789abcdef");
    add_ok(t, &key, &[("accepted", 2), ("dropped", 1)], json!({"name": "Order Completed"}), Some(now + 3600), ctx)
        .await;
    let created = Item {
        key: key.clone(),
        attrs: attrs(json!({"name": "Order Completed", "accepted": 2, "dropped": 1})),
        version: 0,
        expires_at: Some(now + 3600),
    };
    assert_eq!(
        get_ok(t, &key.pk, &key.sk, ctx).await,
        Some(created),
        "table store contract [{ctx}]: a missing item is created with the deltas, the set attributes, version 0"
    );

    let ctx = "add sums";
    add_ok(t, &key, &[("accepted", 3), ("quarantined", 1), ("dropped", -1)], json!({"name": "Renamed"}), None, ctx)
        .await;
    let summed = Item {
        key: key.clone(),
        attrs: attrs(json!({"name": "Renamed", "accepted": 5, "dropped": 0, "quarantined": 1})),
        version: 0,
        expires_at: Some(now + 3600),
    };
    assert_eq!(
        get_ok(t, &key.pk, &key.sk, ctx).await,
        Some(summed.clone()),
        "table store contract [{ctx}]: deltas add up (a missing attribute counts as 0), set attributes are replaced, \
         no expiry given leaves the expiry as it was"
    );
    assert_eq!(
        query_all(t, &key.pk, "2025-03-10T", 10, ctx).await,
        vec![summed],
        "table store contract [{ctx}]: an added item through query"
    );

    let ctx = "add keeps the version";
    write_ok(t, put(item("add#2", "p", 5, json!({"keep": true, "n": 1})), Condition::NotExists), ctx).await;
    add_ok(t, &ItemKey::new("add#2", "p"), &[("n", 2)], json!({}), None, ctx).await;
    assert_eq!(
        get_ok(t, "add#2", "p", ctx).await,
        Some(item("add#2", "p", 5, json!({"keep": true, "n": 3}))),
        "table store contract [{ctx}]: an add leaves the version and the other attributes alone"
    );
    write_ok(t, put(item("add#2", "p", 6, json!({})), Condition::VersionIs(5)), ctx).await;

    let ctx = "concurrent adds";
    let key = ItemKey::new("add#c", "counter");
    let worker = |w: usize| {
        let key = key.clone();
        async move {
            for _ in 0..10 {
                add_ok(t, &key, &[("a", 1), ("b", 2)], json!({"name": format!("w{w}")}), Some(now + 3600), ctx).await;
            }
        }
    };
    if options.atomic_concurrent_adds {
        tokio::join!(worker(0), worker(1), worker(2), worker(3));
    } else {
        for w in 0..4 {
            worker(w).await;
        }
    }
    let back = get_ok(t, &key.pk, &key.sk, ctx).await;
    let back = back.unwrap_or_else(|| panic!("table store contract [{ctx}]: item missing after adds"));
    assert_eq!(
        (back.attrs.get("a"), back.attrs.get("b")),
        (Some(&json!(40)), Some(&json!(80))),
        "table store contract [{ctx}]: 4 tasks × 10 adds must all count"
    );
    assert!(
        matches!(back.attrs.get("name").and_then(Value::as_str), Some("w0" | "w1" | "w2" | "w3")),
        "table store contract [{ctx}]: set attribute {:?}",
        back.attrs.get("name")
    );

    let ctx = "add with a past expiry";
    let key = ItemKey::new("add#exp", "gone");
    add_ok(t, &key, &[("a", 1)], json!({"name": "x"}), Some(now - 60), ctx).await;
    assert_eq!(get_ok(t, &key.pk, &key.sk, ctx).await, None, "table store contract [{ctx}]: expired item visible");
    assert!(
        query_all(t, &key.pk, "", 10, ctx).await.is_empty(),
        "table store contract [{ctx}]: expired item visible to query"
    );
    add_ok(t, &key, &[("a", 1)], json!({}), Some(now + 3600), "add over an expired item").await;
    assert_eq!(
        get_ok(t, &key.pk, &key.sk, ctx).await,
        Some(Item { key: key.clone(), attrs: attrs(json!({"a": 1})), version: 0, expires_at: Some(now + 3600) }),
        "table store contract [{ctx}]: an add over an expired item starts from nothing"
    );
    let mut old = item("add#exp", "put", 9, json!({"old": true, "a": 100}));
    old.expires_at = Some(now - 60);
    write_ok(t, put(old, Condition::None), ctx).await;
    add_ok(t, &ItemKey::new("add#exp", "put"), &[("a", 1)], json!({"name": "y"}), None, ctx).await;
    assert_eq!(
        get_ok(t, "add#exp", "put", ctx).await,
        Some(item("add#exp", "put", 0, json!({"a": 1, "name": "y"}))),
        "table store contract [{ctx}]: nothing of an expired item (attributes, version, expiry) survives an add"
    );

    let ctx = "add refused";
    let bad_key = ItemKey::new("add#bad", "x");
    let refused: Vec<(Vec<(String, i64)>, Value)> = vec![
        (deltas(&[("v", 1)]), json!({})),
        (deltas(&[("pk", 1)]), json!({})),
        (deltas(&[("sk", 1)]), json!({})),
        (deltas(&[("a", 1)]), json!({"ttl": 5})),
        (deltas(&[]), json!({})),
        (deltas(&[("a", 1), ("a", 2)]), json!({})),
        (deltas(&[("a", 1)]), json!({"a": "both"})),
        (deltas(&[("", 1)]), json!({})),
    ];
    for (d, set) in refused {
        let shown = format!("{d:?} {set}");
        let r = t.add(&bad_key, &d, attrs(set), None).await;
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: add {shown} must be refused with PortError::Invalid, got {r:?}"
        );
    }
    assert_eq!(get_ok(t, "add#bad", "x", ctx).await, None, "table store contract [{ctx}]: nothing may be written");
    let text = item("add#bad", "text", 1, json!({"s": "not a number", "n": 1}));
    write_ok(t, put(text.clone(), Condition::NotExists), ctx).await;
    // One delta only: moto applies the deltas before a failing one (DynamoDB does not), so a mix is not portable.
    let r = t.add(&text.key, &deltas(&[("s", 1)]), Map::new(), None).await;
    assert!(
        matches!(r, Err(PortError::Invalid(_))),
        "table store contract [{ctx}]: a delta on a string must be refused with PortError::Invalid, got {r:?}"
    );
    assert_eq!(
        get_ok(t, "add#bad", "text", ctx).await,
        Some(text),
        "table store contract [{ctx}]: a refused add must not change the item"
    );
}

/// Every key of one segment of `index`, following `next` pages of `page` keys; panics on a key listed twice.
async fn scan_segment_of<T: TableStore>(
    t: &T,
    index: &SparseIndex,
    segment: u32,
    total: u32,
    page: usize,
    ctx: &str,
) -> BTreeSet<ItemKey> {
    let mut out = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let p = t.scan_index(index, segment, total, cursor.as_deref(), page).await.unwrap_or_else(|e| {
            panic!(
                "table store contract [{ctx}]: scan of segment {segment} of {total} (page {page}) of index {:?} \
                 failed: {e}",
                index.name
            )
        });
        assert!(
            p.keys.len() <= page,
            "table store contract [{ctx}]: scan returned {} keys over limit {page}",
            p.keys.len()
        );
        for k in p.keys {
            assert!(out.insert(k.clone()), "table store contract [{ctx}]: {k:?} listed twice in segment {segment}");
        }
        match p.next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
    panic!("table store contract [{ctx}]: scan pagination did not end after 1000 pages");
}

/// Every key of the roots index, segment by segment; checks that the segments are disjoint.
async fn scan_all<T: TableStore>(t: &T, total: u32, page: usize, ctx: &str) -> (BTreeSet<ItemKey>, Vec<usize>) {
    scan_all_of(t, &ROOT_PROFILES, total, page, ctx).await
}

/// Every key of `index`, segment by segment; checks that the segments are disjoint.
async fn scan_all_of<T: TableStore>(
    t: &T,
    index: &SparseIndex,
    total: u32,
    page: usize,
    ctx: &str,
) -> (BTreeSet<ItemKey>, Vec<usize>) {
    let mut all = BTreeSet::new();
    let mut sizes = Vec::new();
    for segment in 0..total {
        let keys = scan_segment_of(t, index, segment, total, page, ctx).await;
        sizes.push(keys.len());
        for k in keys {
            let shown = format!("{k:?}");
            assert!(all.insert(k), "table store contract [{ctx}]: {shown} listed in two of {total} segments");
        }
    }
    (all, sizes)
}

fn root(pk: &str, profile: &str) -> Item {
    item(pk, "profile", 1, json!({ "root": profile, "traits": {"plan": "pro"} }))
}

async fn index_scans<T: TableStore>(t: &T) {
    let ctx = "scan_index";
    let now = now_epoch_s();
    // Indexed items: 30 root profiles (each with an unindexed neighbour in its partition), one expiring later.
    let mut expected = BTreeSet::new();
    for i in 0..30 {
        let pk = format!("ix#p{i:02}");
        let mut it = root(&pk, &format!("p{i:02}"));
        if i == 7 {
            it.expires_at = Some(now + 3600);
        }
        write_ok(t, put(it, Condition::NotExists), ctx).await;
        write_ok(t, put(item(&pk, "e#1", 1, json!({"name": "Order Completed"})), Condition::None), ctx).await;
        expected.insert(ItemKey::new(pk, "profile"));
    }
    // Not indexed: no attribute, the attribute nested or under another name, and an indexed item that expired.
    write_ok(t, put(item("ix#merged", "profile", 2, json!({"merged_into": "p01"})), Condition::None), ctx).await;
    write_ok(t, put(item("ix#nested", "profile", 1, json!({"doc": {"root": "p99"}})), Condition::None), ctx).await;
    write_ok(t, put(item("ix#other", "profile", 1, json!({"Root": "p98", "roots": "p97"})), Condition::None), ctx)
        .await;
    let mut expired = root("ix#expired", "gone");
    expired.expires_at = Some(now - 3600);
    write_ok(t, put(expired, Condition::None), ctx).await;

    // One segment, any page size: every indexed key once, nothing else.
    for page in [1, 3, 7, 30, 1000] {
        let (all, _) = scan_all(t, 1, page, ctx).await;
        assert_eq!(all, expected, "table store contract [{ctx}]: one segment in pages of {page}");
    }
    let first = t
        .scan_index(&ROOT_PROFILES, 0, 1, None, 5)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: scan failed: {e}"));
    assert_eq!(first.keys.len(), 5, "table store contract [{ctx}]: a first page of 5 of 30 is full");
    assert!(first.next.is_some(), "table store contract [{ctx}]: a first page of 5 of 30 must say there is more");

    // Four segments: a partition of the same set, the work actually split.
    let (all, sizes) = scan_all(t, 4, 4, ctx).await;
    assert_eq!(all, expected, "table store contract [{ctx}]: the union of 4 segments");
    assert!(
        sizes.iter().filter(|n| **n > 0).count() > 1,
        "table store contract [{ctx}]: 30 partitions all fell in one of 4 segments: {sizes:?}"
    );
    let (all, _) = scan_all(t, 7, 2, ctx).await;
    assert_eq!(all, expected, "table store contract [{ctx}]: the union of 7 segments");

    index_changes(t, &mut expected).await;
    index_refusals(t, &expected).await;
}

/// Deletes, attribute changes and expiry; writes during a scan.
async fn index_changes<T: TableStore>(t: &T, expected: &mut BTreeSet<ItemKey>) {
    let ctx = "scan_index changes";
    let now = now_epoch_s();
    // A merge: the merged profile loses its attribute and leaves the index; a delete removes another.
    write_ok(t, put(item("ix#p03", "profile", 2, json!({"merged_into": "p04"})), Condition::VersionIs(1)), ctx).await;
    write_ok(t, WriteOp::Delete { key: ItemKey::new("ix#p05", "profile"), condition: Condition::None }, ctx).await;
    // An expiry set later hides an item; an add can index an item (only `set`, never a delta, may touch it).
    let mut expiring = root("ix#p06", "p06");
    expiring.version = 2;
    expiring.expires_at = Some(now - 1);
    write_ok(t, put(expiring, Condition::VersionIs(1)), ctx).await;
    let added = ItemKey::new("ix#added", "profile");
    t.add(&added, &[("n".to_owned(), 1)], attrs(json!({"root": "added"})), None)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: add failed: {e}"));
    for gone in ["ix#p03", "ix#p05", "ix#p06"] {
        expected.remove(&ItemKey::new(gone, "profile"));
    }
    expected.insert(added);
    let (all, _) = scan_all(t, 1, 4, ctx).await;
    assert_eq!(&all, expected, "table store contract [{ctx}]: after a merge, a delete, an expiry and an add");
    let (all, _) = scan_all(t, 3, 5, ctx).await;
    assert_eq!(&all, expected, "table store contract [{ctx}]: after the changes, in 3 segments");

    // Writes between pages: unchanged items are listed exactly once, whatever happens around them.
    let changed = [ItemKey::new("ix#p10", "profile"), ItemKey::new("ix#p20", "profile")];
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let p = t
            .scan_index(&ROOT_PROFILES, 0, 1, cursor.as_deref(), 3)
            .await
            .unwrap_or_else(|e| panic!("table store contract [{ctx}]: scan failed: {e}"));
        seen.extend(p.keys);
        pages += 1;
        if pages == 2 {
            write_ok(t, WriteOp::Delete { key: changed[0].clone(), condition: Condition::None }, ctx).await;
            write_ok(t, put(root("ix#p20", "p20-renamed"), Condition::None), ctx).await;
            write_ok(t, put(root("ix#new", "new"), Condition::NotExists), ctx).await;
        }
        match p.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(pages < 1000, "table store contract [{ctx}]: scan pagination did not end");
    }
    for key in expected.iter().filter(|k| !changed.contains(k)) {
        let n = seen.iter().filter(|s| *s == key).count();
        assert_eq!(n, 1, "table store contract [{ctx}]: unchanged {key:?} listed {n} times during writes");
    }
    let unknown: Vec<&ItemKey> = seen.iter().filter(|k| !expected.contains(*k) && k.pk != "ix#new").collect();
    assert!(unknown.is_empty(), "table store contract [{ctx}]: listed keys never indexed: {unknown:?}");
    expected.remove(&changed[0]);
    expected.insert(ItemKey::new("ix#new", "profile"));
    let (all, _) = scan_all(t, 2, 10, ctx).await;
    assert_eq!(&all, expected, "table store contract [{ctx}]: a scan after the writes");
}

/// Writes that would give the attribute a value an index key cannot hold, and scans with bad arguments.
async fn index_refusals<T: TableStore>(t: &T, expected: &BTreeSet<ItemKey>) {
    let ctx = "scan_index refusals";
    let bad_values = [
        json!(5),
        json!(null),
        json!(""),
        json!(true),
        json!(["p"]),
        json!({"id": "p"}),
        json!("x".repeat(MAX_INDEX_VALUE_BYTES + 1)),
    ];
    for value in &bad_values {
        let it = item("ix#bad", "profile", 1, json!({ "root": value }));
        let shown = format!("{}", value).chars().take(40).collect::<String>();
        let r = t.write(put(it.clone(), Condition::None)).await;
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: a put of root = {shown} must be refused with PortError::Invalid, got {r:?}"
        );
        let r = t
            .transact(vec![put(it, Condition::None), put(item("ix#bad", "other", 1, json!({})), Condition::None)])
            .await;
        assert!(
            matches!(r, Err(TransactError::Port(PortError::Invalid(_)))),
            "table store contract [{ctx}]: a transaction putting root = {shown} must be refused with \
             PortError::Invalid, got {r:?}"
        );
        let r = t.add(&ItemKey::new("ix#bad", "profile"), &[], attrs(json!({ "root": value })), None).await;
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: an add setting root = {shown} must be refused with PortError::Invalid, \
             got {r:?}"
        );
    }
    let r = t.add(&ItemKey::new("ix#bad", "profile"), &[("root".to_owned(), 1)], Map::new(), None).await;
    assert!(
        matches!(r, Err(PortError::Invalid(_))),
        "table store contract [{ctx}]: an add with a delta on root must be refused with PortError::Invalid, got {r:?}"
    );
    // The longest value is a value like any other.
    let longest = root("ix#long", &"x".repeat(MAX_INDEX_VALUE_BYTES));
    write_ok(t, put(longest, Condition::NotExists), ctx).await;
    assert_eq!(get_ok(t, "ix#bad", "profile", ctx).await, None, "table store contract [{ctx}]: nothing may be written");
    assert_eq!(get_ok(t, "ix#bad", "other", ctx).await, None, "table store contract [{ctx}]: nothing may be written");
    let mut with_long = expected.clone();
    with_long.insert(ItemKey::new("ix#long", "profile"));
    let (all, _) = scan_all(t, 1, 100, ctx).await;
    assert_eq!(all, with_long, "table store contract [{ctx}]: refused writes are not listed");

    let refused = |what: &str, r: Result<crate::ports::KeyPage, PortError>| {
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: a scan with {what} must be refused with PortError::Invalid, got {r:?}"
        );
    };
    refused("0 segments", t.scan_index(&ROOT_PROFILES, 0, 0, None, 10).await);
    refused("too many segments", t.scan_index(&ROOT_PROFILES, 0, MAX_SCAN_SEGMENTS + 1, None, 10).await);
    refused("segment = total", t.scan_index(&ROOT_PROFILES, 4, 4, None, 10).await);
    refused("segment > total", t.scan_index(&ROOT_PROFILES, 9, 4, None, 10).await);
    refused("limit 0", t.scan_index(&ROOT_PROFILES, 0, 1, None, 0).await);
    let unknown = SparseIndex { attribute: "root", name: "not-an-index" };
    refused("an unknown index", t.scan_index(&unknown, 0, 1, None, 10).await);
    let last = t
        .scan_index(&ROOT_PROFILES, 999, MAX_SCAN_SEGMENTS, None, 10)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: the last of {MAX_SCAN_SEGMENTS} segments: {e}"));
    assert!(last.keys.len() <= 10, "table store contract [{ctx}]: over the limit");

    // Cursors: only this store's, for this same scan.
    let page = t
        .scan_index(&ROOT_PROFILES, 0, 1, None, 2)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: scan failed: {e}"));
    let Some(cursor) = page.next else {
        panic!("table store contract [{ctx}]: a page of 2 of {} ends", expected.len())
    };
    refused("a cursor of another segment count", t.scan_index(&ROOT_PROFILES, 0, 2, Some(&cursor), 10).await);
    refused("a cursor of another index", t.scan_index(&unknown, 0, 1, Some(&cursor), 10).await);
    let foreign = ScanCursor { segment: 1, total_segments: 2, after: ItemKey::new("ix#p01", "profile"), value: None };
    refused(
        "a cursor of another segment",
        t.scan_index(&ROOT_PROFILES, 0, 2, Some(&foreign.encode(&ROOT_PROFILES)), 10).await,
    );
    for garbage in ["", "garbage", "e30", "{\"pk\":\"ix#p01\",\"sk\":\"profile\"}", &cursor[..cursor.len() / 2]] {
        refused("a cursor it did not produce", t.scan_index(&ROOT_PROFILES, 0, 1, Some(garbage), 10).await);
    }
    let again = t
        .scan_index(&ROOT_PROFILES, 0, 1, Some(&cursor), 10)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: a cursor used twice: {e}"));
    assert!(
        again.keys.iter().all(|k| !page.keys.contains(k)),
        "table store contract [{ctx}]: the page after a cursor repeats the page before it"
    );
}

/// The suppression index: erasure's tombstones (`t`, `sup`, `sup_at`, no `p`) are listed, live identity items are
/// not; each index lists its own items only; a tombstone lifted (deleted) or turned back into a live item leaves it.
async fn suppression_index<T: TableStore>(t: &T) {
    let ctx = "scan_index suppressed";
    let index = &SUPPRESSED_IDENTITIES;
    assert!(SPARSE_INDEXES.contains(index), "table store contract [{ctx}]: the suppression index is a table index");
    let identity = |n: u32| format!("id#{}", crate::sha256_hex(format!("email:person{n}@example.com").as_bytes()));
    let mut tombstones = BTreeSet::new();
    for n in 0..12 {
        let pk = identity(n);
        if n % 3 == 0 {
            // A live identity item: it points at a profile and names no request.
            let live = item(&pk, "id", 1, json!({"t": "email", "p": format!("p{n}")}));
            write_ok(t, put(live, Condition::NotExists), ctx).await;
        } else {
            let attrs = crate::dsr::tombstone_attrs("email", &format!("req-{n}"), 1_700_000_000_000 + i64::from(n));
            let tomb = Item { key: ItemKey::new(pk.clone(), "id"), attrs, version: 2, expires_at: None };
            write_ok(t, put(tomb, Condition::NotExists), ctx).await;
            tombstones.insert(ItemKey::new(pk, "id"));
        }
    }
    // A tombstone written over a live item in a transaction (as an eraser does), and one by an add.
    let erased = ItemKey::new(identity(0), "id");
    let over = Item {
        key: erased.clone(),
        attrs: crate::dsr::tombstone_attrs("email", "req-0", 1_700_000_000_000),
        version: 2,
        expires_at: None,
    };
    t.transact(vec![put(over, Condition::VersionIs(1))])
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: a tombstone over a live item: {e}"));
    tombstones.insert(erased);
    let added = ItemKey::new(identity(100), "id");
    t.add(&added, &[], attrs(json!({"t": "user_id", "sup": "req-100"})), None)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: add of a tombstone: {e}"));
    tombstones.insert(added);

    for (total, page) in [(1, 1), (1, 1000), (3, 2), (4, 5)] {
        let (all, _) = scan_all_of(t, index, total, page, ctx).await;
        assert_eq!(
            all, tombstones,
            "table store contract [{ctx}]: the suppression index lists the tombstones and no live identity item \
             ({total} segments, pages of {page})"
        );
    }
    // The indexes are apart: no root profile is a tombstone, no tombstone a root profile.
    let (roots, _) = scan_all(t, 1, 1000, ctx).await;
    assert!(
        roots.is_disjoint(&tombstones) && !roots.is_empty(),
        "table store contract [{ctx}]: the roots index lists no tombstone"
    );

    // Lifting a suppression deletes the tombstone; a tombstone replaced by a live item leaves the index too.
    let lifted = ItemKey::new(identity(1), "id");
    write_ok(t, WriteOp::Delete { key: lifted.clone(), condition: Condition::Exists }, ctx).await;
    let revived = ItemKey::new(identity(2), "id");
    write_ok(t, put(item(&revived.pk, "id", 3, json!({"t": "email", "p": "p2"})), Condition::VersionIs(2)), ctx).await;
    tombstones.remove(&lifted);
    tombstones.remove(&revived);
    let (all, _) = scan_all_of(t, index, 2, 3, ctx).await;
    assert_eq!(all, tombstones, "table store contract [{ctx}]: after a lift and a revival");

    // The attribute keys the index: anything but a non-empty string is refused.
    for bad in [json!(""), json!(7), json!(null), json!({"id": "req"})] {
        let shown = bad.to_string();
        let r = t.write(put(item("id#bad", "id", 1, json!({"t": "email", "sup": bad})), Condition::None)).await;
        assert!(
            matches!(r, Err(PortError::Invalid(_))),
            "table store contract [{ctx}]: a put of sup = {shown} must be refused with PortError::Invalid, got {r:?}"
        );
    }
    // Cursors belong to one index.
    let page = t
        .scan_index(index, 0, 1, None, 2)
        .await
        .unwrap_or_else(|e| panic!("table store contract [{ctx}]: scan failed: {e}"));
    let Some(cursor) = page.next else {
        panic!("table store contract [{ctx}]: a page of 2 of {} ends", tombstones.len())
    };
    let r = t.scan_index(&ROOT_PROFILES, 0, 1, Some(&cursor), 10).await;
    assert!(
        matches!(r, Err(PortError::Invalid(_))),
        "table store contract [{ctx}]: a cursor of the suppression index must be refused by a roots scan, got {r:?}"
    );
}

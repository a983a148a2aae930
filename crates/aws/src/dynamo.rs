//! [`TableStore`] on one DynamoDB table with string keys `pk` (hash) and `sk` (range).
//!
//! Items are stored as `pk`, `sk`, `v` (version, N), `ttl` (expiry in epoch seconds, N, absent when the item does
//! not expire) and one top-level attribute per JSON attribute. DynamoDB deletes expired items only eventually, so
//! every read filters them and every condition treats them as absent.
//!
//! Every call is metered (see `billing.rs` for the rules): [`DynamoTable::usage`] gives the requests made and the
//! request units DynamoDB bills for them, estimated from item sizes, next to the `ConsumedCapacity` DynamoDB
//! reported. Reads are strongly consistent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ConsumedCapacity, Delete, KeysAndAttributes, Put, ReturnConsumedCapacity,
    ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use serde_json::{Map, Number, Value};
use tributary_core::ports::{
    check_add, check_get_many, check_index_values, check_scan, check_transaction, Condition, Item, ItemKey, KeyPage,
    PortError, QueryPage, ScanCursor, SparseIndex, TableStore, TransactError, WriteOp,
};

use crate::billing::{self, Consistency, Meter, Usage};
use crate::error::{self, Kind};

const PK: &str = "pk";
const SK: &str = "sk";
const VERSION: &str = "v";
const TTL: &str = "ttl";
/// Most items one Query call is asked for; DynamoDB also stops at 1 MB.
const QUERY_BATCH: usize = 1000;
/// Most index entries one Scan call is asked for; DynamoDB also stops at 1 MB (about ten thousand keys here).
const SCAN_BATCH: usize = 1000;
/// GetItem, BatchGetItem and Query read strongly consistently. The meter bills reads by this same flag, so that the
/// two cannot drift apart.
const CONSISTENT_READ: bool = true;
/// Most BatchGetItem calls one `get_many` makes: the first, then retries of the keys DynamoDB left unprocessed
/// (throttling, or more than 16 MB of items). 45 items of 380 kB take two.
const BATCH_GET_CALLS: u32 = 6;
/// Wait before the first retry of unprocessed keys, doubled before each next one (25, 50, 100, 200, 400 ms: under a
/// second in all), as AWS asks of batch retries.
const BATCH_GET_BACKOFF: Duration = Duration::from_millis(25);

/// One DynamoDB table. Clones share the connection pool and the usage counter.
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    usage: Arc<Meter>,
}

// ---------------------------------------------------------------------------------------------------------------
// JSON <-> AttributeValue.
// ---------------------------------------------------------------------------------------------------------------

/// JSON to a DynamoDB attribute value: objects → M, arrays → L, strings → S, numbers → N, bools → BOOL,
/// null → NULL.
fn to_av(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_av).collect()),
        Value::Object(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), to_av(v))).collect()),
    }
}

/// A DynamoDB number string to JSON: integers stay integers (i64, then u64), anything else becomes an f64.
fn number(n: &str) -> Option<Number> {
    let n = n.trim();
    if !n.contains(['.', 'e', 'E']) {
        if let Ok(i) = n.parse::<i64>() {
            return Some(Number::from(i));
        }
        if let Ok(u) = n.parse::<u64>() {
            return Some(Number::from(u));
        }
    }
    n.parse::<f64>().ok().and_then(Number::from_f64)
}

/// A DynamoDB attribute value to JSON. Types our writer never produces are mapped too (sets → arrays, binary →
/// base64 strings), so items written by other tools still read. `name` is only for the error message.
fn from_av(name: &str, av: &AttributeValue) -> Result<Value, PortError> {
    use base64::Engine as _;
    let bad_number = || PortError::Invalid(format!("dynamodb: attribute {name:?} holds a malformed number"));
    Ok(match av {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => Value::Number(number(n).ok_or_else(bad_number)?),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(l) => Value::Array(l.iter().map(|v| from_av(name, v)).collect::<Result<_, _>>()?),
        AttributeValue::M(m) => {
            Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), from_av(name, v)?))).collect::<Result<_, PortError>>()?)
        }
        AttributeValue::Ss(ss) => Value::Array(ss.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(ns) => Value::Array(
            ns.iter().map(|n| number(n).map(Value::Number).ok_or_else(bad_number)).collect::<Result<_, _>>()?,
        ),
        AttributeValue::B(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref())),
        AttributeValue::Bs(bs) => Value::Array(
            bs.iter().map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))).collect(),
        ),
        _ => return Err(PortError::Invalid(format!("dynamodb: attribute {name:?} has an unknown type"))),
    })
}

fn key_av(key: &ItemKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

/// An [`Item`] as DynamoDB attributes. Attribute names that collide with the stored key, version or expiry
/// attributes are refused, and so are index attributes that do not hold a non-empty string: DynamoDB itself refuses
/// those with a `ValidationException` (type mismatch for an index key), but moto stores them and lists them in the
/// index, so the adapter refuses them before sending, alike on both.
fn item_to_av(item: &Item) -> Result<HashMap<String, AttributeValue>, PortError> {
    check_index_values(&item.attrs)?;
    let mut out = key_av(&item.key);
    for (name, value) in &item.attrs {
        if matches!(name.as_str(), PK | SK | VERSION | TTL) {
            return Err(PortError::Invalid(format!("attribute name {name:?} is reserved")));
        }
        out.insert(name.clone(), to_av(value));
    }
    out.insert(VERSION.to_owned(), AttributeValue::N(item.version.to_string()));
    if let Some(t) = item.expires_at {
        out.insert(TTL.to_owned(), AttributeValue::N(t.to_string()));
    }
    Ok(out)
}

/// DynamoDB attributes back to an [`Item`]. A missing `v` reads as version 0.
fn item_from_av(mut av: HashMap<String, AttributeValue>) -> Result<Item, PortError> {
    let string = |v: Option<AttributeValue>, name: &str| match v {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(PortError::Invalid(format!("dynamodb: item without a string {name:?}"))),
    };
    let pk = string(av.remove(PK), PK)?;
    let sk = string(av.remove(SK), SK)?;
    let version = match av.remove(VERSION) {
        None => 0,
        Some(AttributeValue::N(n)) => {
            n.trim().parse::<u64>().map_err(|_| PortError::Invalid("dynamodb: item with a malformed version".into()))?
        }
        Some(_) => return Err(PortError::Invalid("dynamodb: item with a malformed version".into())),
    };
    let expires_at = match av.remove(TTL) {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::N(n)) => Some(epoch_seconds(&n)?),
        Some(_) => return Err(PortError::Invalid("dynamodb: item with a malformed ttl".into())),
    };
    let mut attrs = Map::new();
    for (name, value) in &av {
        let v = from_av(name, value)?;
        attrs.insert(name.clone(), v);
    }
    Ok(Item { key: ItemKey { pk, sk }, attrs, version, expires_at })
}

fn epoch_seconds(n: &str) -> Result<i64, PortError> {
    let n = n.trim();
    n.parse::<i64>()
        .ok()
        .or_else(|| n.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
        .ok_or_else(|| PortError::Invalid("dynamodb: item with a malformed ttl".into()))
}

fn now_epoch_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn is_expired(item: &Item, now: i64) -> bool {
    matches!(item.expires_at, Some(t) if t <= now)
}

/// One entry of a sparse index scan (the keys, the index attribute and `ttl`, as the index projects them): the
/// item's key and index value, or `None` when the item has expired (or, which DynamoDB rules out, its index value
/// is not a string).
fn index_entry(
    av: &HashMap<String, AttributeValue>,
    index: &SparseIndex,
    now: i64,
) -> Result<Option<(ItemKey, String)>, PortError> {
    let string = |name: &str| match av.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(PortError::Invalid(format!("dynamodb: index entry without a string {name:?}"))),
    };
    let expired = match av.get(TTL) {
        None | Some(AttributeValue::Null(_)) => false,
        Some(AttributeValue::N(n)) => epoch_seconds(n)? <= now,
        Some(_) => return Err(PortError::Invalid("dynamodb: index entry with a malformed ttl".into())),
    };
    let Some(AttributeValue::S(value)) = av.get(index.attribute) else { return Ok(None) };
    if expired {
        return Ok(None);
    }
    Ok(Some((ItemKey { pk: string(PK)?, sk: string(SK)? }, value.clone())))
}

/// The `ExclusiveStartKey` of a scan of `index` that resumes after `cursor`: an index's keys are the index
/// attribute and the table's key.
fn scan_start_key(cursor: ScanCursor, index: &SparseIndex) -> Result<HashMap<String, AttributeValue>, PortError> {
    let value = cursor
        .value
        .ok_or_else(|| PortError::Invalid("scan cursor is not one this store produced (no index value)".into()))?;
    let mut key = key_av(&cursor.after);
    key.insert(index.attribute.to_owned(), AttributeValue::S(value));
    Ok(key)
}

// ---------------------------------------------------------------------------------------------------------------
// Conditions.
// ---------------------------------------------------------------------------------------------------------------

/// A condition as a DynamoDB ConditionExpression with only the names and values it uses (DynamoDB refuses
/// unused ones). Expired items count as absent.
#[derive(Debug, Default, PartialEq)]
struct Expr {
    expression: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

const NOT_EXPIRED: &str = "(attribute_not_exists(#ttl) OR #ttl > :now)";

fn condition_expr(condition: &Condition, now: i64, for_check: bool) -> Expr {
    let ttl_name = || HashMap::from([("#ttl".to_owned(), TTL.to_owned())]);
    let now_value = || HashMap::from([(":now".to_owned(), AttributeValue::N(now.to_string()))]);
    match condition {
        // A ConditionCheck needs an expression; this one is always true.
        Condition::None if for_check => {
            Expr { expression: Some("attribute_exists(pk) OR attribute_not_exists(pk)".to_owned()), ..Expr::default() }
        }
        Condition::None => Expr::default(),
        Condition::NotExists => Expr {
            expression: Some("attribute_not_exists(pk) OR #ttl <= :now".to_owned()),
            names: ttl_name(),
            values: now_value(),
        },
        Condition::Exists => Expr {
            expression: Some(format!("attribute_exists(pk) AND {NOT_EXPIRED}")),
            names: ttl_name(),
            values: now_value(),
        },
        Condition::VersionIs(v) => {
            let mut names = ttl_name();
            names.insert("#v".to_owned(), VERSION.to_owned());
            let mut values = now_value();
            values.insert(":v".to_owned(), AttributeValue::N(v.to_string()));
            Expr { expression: Some(format!("#v = :v AND {NOT_EXPIRED}")), names, values }
        }
    }
}

fn non_empty<K, V>(m: HashMap<K, V>) -> Option<HashMap<K, V>> {
    if m.is_empty() {
        None
    } else {
        Some(m)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Counter updates (`add`).
// ---------------------------------------------------------------------------------------------------------------

/// An UpdateItem's expressions, with only the names and values they use. Every attribute goes through a
/// placeholder, so reserved words (`name`, `count`, …) need no special care.
#[derive(Debug, Default, PartialEq)]
struct UpdateExpr {
    update: String,
    condition: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// Holds for a missing item and for a live one; fails only on an expired item still stored.
const LIVE_OR_MISSING: &str = "attribute_not_exists(#pk) OR attribute_not_exists(#ttl) OR #ttl > :now";

/// The `SET` assignments of the attributes to set and of the expiry, and their names and values.
fn set_clauses(
    set: &Map<String, Value>,
    expires_at: Option<i64>,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) -> Vec<String> {
    let mut clauses = Vec::with_capacity(set.len() + 1);
    for (i, (name, value)) in set.iter().enumerate() {
        names.insert(format!("#s{i}"), name.clone());
        values.insert(format!(":s{i}"), to_av(value));
        clauses.push(format!("#s{i} = :s{i}"));
    }
    if let Some(t) = expires_at {
        names.insert("#ttl".to_owned(), TTL.to_owned());
        values.insert(":ttl".to_owned(), AttributeValue::N(t.to_string()));
        clauses.push("#ttl = :ttl".to_owned());
    }
    clauses
}

/// `ADD` the deltas, `SET` the attributes and the expiry, on a missing or live item.
fn add_expr(deltas: &[(String, i64)], set: &Map<String, Value>, expires_at: Option<i64>, now: i64) -> UpdateExpr {
    let mut names = HashMap::from([("#pk".to_owned(), PK.to_owned()), ("#ttl".to_owned(), TTL.to_owned())]);
    let mut values = HashMap::from([(":now".to_owned(), AttributeValue::N(now.to_string()))]);
    let mut adds = Vec::with_capacity(deltas.len());
    for (i, (name, delta)) in deltas.iter().enumerate() {
        names.insert(format!("#a{i}"), name.clone());
        values.insert(format!(":a{i}"), AttributeValue::N(delta.to_string()));
        adds.push(format!("#a{i} :a{i}"));
    }
    let sets = set_clauses(set, expires_at, &mut names, &mut values);
    let mut update = Vec::new();
    if !adds.is_empty() {
        update.push(format!("ADD {}", adds.join(", ")));
    }
    if !sets.is_empty() {
        update.push(format!("SET {}", sets.join(", ")));
    }
    UpdateExpr { update: update.join(" "), condition: LIVE_OR_MISSING.to_owned(), names, values }
}

/// Replaces the expired item `old` by what an add on a missing item makes: the deltas as values, the attributes
/// to set, the expiry, and every other attribute of `old` (its version included) removed. Conditional on `old`'s
/// expiry being still in place, so a concurrent replacement is not replaced again. `None` when `old` has no
/// expiry to check (it is then not expired, and the caller retries the plain add).
fn replace_expired_expr(
    deltas: &[(String, i64)],
    set: &Map<String, Value>,
    expires_at: Option<i64>,
    old: &HashMap<String, AttributeValue>,
) -> Option<UpdateExpr> {
    let old_ttl = old.get(TTL)?.clone();
    let mut names = HashMap::from([("#ttl".to_owned(), TTL.to_owned())]);
    let mut values = HashMap::from([(":old_ttl".to_owned(), old_ttl)]);
    let mut sets = Vec::with_capacity(deltas.len() + set.len() + 1);
    for (i, (name, delta)) in deltas.iter().enumerate() {
        names.insert(format!("#a{i}"), name.clone());
        values.insert(format!(":a{i}"), AttributeValue::N(delta.to_string()));
        sets.push(format!("#a{i} = :a{i}"));
    }
    sets.extend(set_clauses(set, expires_at, &mut names, &mut values));
    let kept = |name: &str| {
        matches!(name, PK | SK)
            || (name == TTL && expires_at.is_some())
            || deltas.iter().any(|(d, _)| d == name)
            || set.contains_key(name)
    };
    let mut stale: Vec<&String> = old.keys().filter(|n| !kept(n)).collect();
    stale.sort();
    let mut removes = Vec::with_capacity(stale.len());
    for (i, name) in stale.into_iter().enumerate() {
        if name == TTL {
            removes.push("#ttl".to_owned());
        } else {
            names.insert(format!("#r{i}"), name.clone());
            removes.push(format!("#r{i}"));
        }
    }
    let mut update = format!("SET {}", sets.join(", "));
    if !removes.is_empty() {
        update.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    Some(UpdateExpr { update, condition: "#ttl = :old_ttl".to_owned(), names, values })
}

// ---------------------------------------------------------------------------------------------------------------
// Batch reads (`get_many`).
// ---------------------------------------------------------------------------------------------------------------

/// What one BatchGetItem call answered for the table.
#[derive(Debug, Default)]
struct BatchAnswer {
    items: Vec<HashMap<String, AttributeValue>>,
    /// Keys to ask again.
    unprocessed: Vec<HashMap<String, AttributeValue>>,
}

/// The items of `keys` (distinct, checked by the caller) in the order asked, from BatchGetItem calls made by `send`:
/// the keys a call leaves unprocessed are asked again after `backoff`, doubled each time, for at most `calls` calls
/// in all; keys still unprocessed then make the read [`PortError::Throttled`]. Expired items read as `None`.
async fn batch_get<F, Fut>(
    keys: &[ItemKey],
    calls: u32,
    backoff: Duration,
    mut send: F,
) -> Result<Vec<Option<Item>>, PortError>
where
    F: FnMut(Vec<HashMap<String, AttributeValue>>) -> Fut,
    Fut: Future<Output = Result<BatchAnswer, PortError>>,
{
    let position: HashMap<&ItemKey, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut out: Vec<Option<Item>> = vec![None; keys.len()];
    let mut pending: Vec<HashMap<String, AttributeValue>> = keys.iter().map(key_av).collect();
    let mut wait = backoff;
    for call in 0..calls {
        if call > 0 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        let answer = send(std::mem::take(&mut pending)).await?;
        let now = now_epoch_s();
        for av in answer.items {
            let item = item_from_av(av)?;
            let Some(&at) = position.get(&item.key) else {
                return Err(PortError::Invalid("dynamodb BatchGetItem: answered with an item not asked for".into()));
            };
            if !is_expired(&item, now) {
                out[at] = Some(item);
            }
        }
        if answer.unprocessed.is_empty() {
            return Ok(out);
        }
        pending = answer.unprocessed;
    }
    Err(PortError::Throttled(format!(
        "dynamodb BatchGetItem: {} of {} keys still unprocessed after {calls} calls",
        pending.len(),
        keys.len()
    )))
}

/// How one UpdateItem of an add ended.
enum Updated {
    Done,
    /// The condition failed; the item as stored, when DynamoDB returned it.
    ConditionFailed(Option<HashMap<String, AttributeValue>>),
}

/// Tries of an add that keeps meeting an expired item being replaced concurrently.
const ADD_ATTEMPTS: usize = 4;

const BUILD_FAILED: &str = "dynamodb TransactWriteItems: operation could not be built";

impl DynamoTable {
    pub(crate) fn new(client: aws_sdk_dynamodb::Client, table: String, total: Arc<Meter>) -> Self {
        DynamoTable { client, table, usage: Arc::new(Meter::within(total)) }
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// Requests made and request units billed (estimated, and as DynamoDB reported them) since this table, or
    /// the one it was cloned from, was built or last reset.
    pub fn usage(&self) -> Usage {
        self.usage.usage()
    }

    /// Sets every [`usage`](Self::usage) count back to zero, for this table and its clones.
    pub fn reset_usage(&self) {
        self.usage.reset();
    }

    fn transact_item(&self, op: &WriteOp, now: i64) -> Result<TransactWriteItem, PortError> {
        let build_failed = |_| PortError::Invalid(BUILD_FAILED.to_owned());
        Ok(match op {
            WriteOp::Put { item, condition } => {
                let e = condition_expr(condition, now, false);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item_to_av(item)?))
                    .set_condition_expression(e.expression)
                    .set_expression_attribute_names(non_empty(e.names))
                    .set_expression_attribute_values(non_empty(e.values))
                    .build()
                    .map_err(build_failed)?;
                TransactWriteItem::builder().put(put).build()
            }
            WriteOp::Delete { key, condition } => {
                let e = condition_expr(condition, now, false);
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_av(key)))
                    .set_condition_expression(e.expression)
                    .set_expression_attribute_names(non_empty(e.names))
                    .set_expression_attribute_values(non_empty(e.values))
                    .build()
                    .map_err(build_failed)?;
                TransactWriteItem::builder().delete(delete).build()
            }
            WriteOp::Check { key, condition } => {
                let e = condition_expr(condition, now, true);
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_av(key)))
                    .set_condition_expression(e.expression)
                    .set_expression_attribute_names(non_empty(e.names))
                    .set_expression_attribute_values(non_empty(e.values))
                    .build()
                    .map_err(build_failed)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        })
    }

    async fn put_item(&self, item: &Item, condition: &Condition) -> Result<(), PortError> {
        let e = condition_expr(condition, now_epoch_s(), false);
        let item = item_to_av(item)?;
        // The new item's size: DynamoDB bills the larger of old and new, and the old one is not known here.
        let bytes = billing::item_size(&item);
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(e.expression)
            .set_expression_attribute_names(non_empty(e.names))
            .set_expression_attribute_values(non_empty(e.values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.metered_write(
            bytes,
            sent.as_ref().map(|out| out.consumed_capacity()).map_err(|e| error::dynamodb("PutItem", e)),
        )
    }

    async fn delete_item(&self, key: &ItemKey, condition: &Condition) -> Result<(), PortError> {
        let e = condition_expr(condition, now_epoch_s(), false);
        let sent = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_av(key)))
            .set_condition_expression(e.expression)
            .set_expression_attribute_names(non_empty(e.names))
            .set_expression_attribute_values(non_empty(e.values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        // Billed on the deleted item, which the adapter never sees.
        let bytes = billing::UNKNOWN_ITEM_BYTES;
        self.metered_write(
            bytes,
            sent.as_ref().map(|out| out.consumed_capacity()).map_err(|e| error::dynamodb("DeleteItem", e)),
        )
    }

    /// One UpdateItem of an add, metered: a success on the item as it is afterwards (DynamoDB returns it), a
    /// failed condition on the item as stored (returned with the failure) or, when that is missing, on the update's
    /// own attributes.
    async fn update_item(&self, key: &ItemKey, e: UpdateExpr) -> Result<Updated, PortError> {
        let mut sent_bytes = billing::item_size(&key_av(key));
        sent_bytes += e.values.values().map(billing::value_size).sum::<u64>();
        sent_bytes += e.names.values().map(|n| n.len() as u64).sum::<u64>();
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_av(key)))
            .update_expression(e.update)
            .condition_expression(e.condition)
            .set_expression_attribute_names(non_empty(e.names))
            .set_expression_attribute_values(non_empty(e.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let bytes = out.attributes().map_or(sent_bytes, billing::item_size);
                self.usage.write(bytes, out.consumed_capacity());
                Ok(Updated::Done)
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    let old = c.item().cloned();
                    self.usage.write(old.as_ref().map_or(sent_bytes, billing::item_size), None);
                    Ok(Updated::ConditionFailed(old))
                }
                _ => Err(error::dynamodb("UpdateItem", &err)),
            },
        }
    }

    /// One BatchGetItem call on this table, metered: every key it processed is billed as a GetItem of its own (the
    /// item's size, or the minimum for a key that found nothing); the keys it left unprocessed are not.
    async fn batch_get_call(&self, keys: Vec<HashMap<String, AttributeValue>>) -> Result<BatchAnswer, PortError> {
        let asked = keys.len();
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(CONSISTENT_READ)
            .build()
            .map_err(|_| PortError::Invalid("dynamodb BatchGetItem: request could not be built".into()))?;
        let mut out = self
            .client
            .batch_get_item()
            .request_items(&self.table, request)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| error::dynamodb("BatchGetItem", &e))?;
        let items = out.responses.as_mut().and_then(|r| r.remove(&self.table)).unwrap_or_default();
        let unprocessed =
            out.unprocessed_keys.as_mut().and_then(|u| u.remove(&self.table)).map_or_else(Vec::new, |k| k.keys);
        let missed = asked.saturating_sub(unprocessed.len()).saturating_sub(items.len());
        let bytes: Vec<u64> = items.iter().map(billing::item_size).chain(std::iter::repeat_n(0, missed)).collect();
        self.usage.batch_read(&bytes, Consistency::of(CONSISTENT_READ), out.consumed_capacity());
        Ok(BatchAnswer { items, unprocessed })
    }

    /// Meters one PutItem or DeleteItem and turns its outcome into the port's: a success or a failed condition
    /// is billed, any other error is not.
    fn metered_write(
        &self,
        bytes: u64,
        outcome: Result<Option<&ConsumedCapacity>, PortError>,
    ) -> Result<(), PortError> {
        match outcome {
            Ok(reported) => {
                self.usage.write(bytes, reported);
                Ok(())
            }
            Err(e) => {
                if matches!(e, PortError::ConditionFailed(_)) {
                    self.usage.write(bytes, None);
                }
                Err(e)
            }
        }
    }
}

/// Decides a cancelled transaction from its per-operation reasons: the first failed condition wins; otherwise a
/// conflict or throttling is retryable; anything else is a bad request.
fn cancelled(reasons: &[Option<&str>]) -> TransactError {
    if let Some(index) =
        reasons.iter().position(|c| matches!(c.map(error::dynamodb_reason_kind), Some(Kind::ConditionFailed)))
    {
        return TransactError::ConditionFailed { index };
    }
    let codes: Vec<&str> = reasons.iter().filter_map(|c| *c).filter(|c| *c != "None").collect();
    let what = format!("dynamodb TransactWriteItems: cancelled ({})", codes.join(", "));
    let has = |kind: Kind| codes.iter().any(|c| error::dynamodb_reason_kind(c) == kind);
    TransactError::Port(if has(Kind::Throttled) {
        PortError::Throttled(what)
    } else if has(Kind::Unavailable) {
        PortError::Unavailable(what)
    } else {
        PortError::Invalid(what)
    })
}

impl TableStore for DynamoTable {
    #[tracing::instrument(skip_all, fields(table = %self.table))]
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_av(key)))
            .consistent_read(CONSISTENT_READ)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| error::dynamodb("GetItem", &e))?;
        let bytes = out.item.as_ref().map_or(0, billing::item_size);
        self.usage.read(bytes, Consistency::of(CONSISTENT_READ), out.consumed_capacity());
        let Some(av) = out.item else { return Ok(None) };
        let item = item_from_av(av)?;
        Ok(if is_expired(&item, now_epoch_s()) { None } else { Some(item) })
    }

    /// BatchGetItem on this table (see [`batch_get`]), strongly consistent like `get`.
    #[tracing::instrument(skip_all, fields(table = %self.table, keys = keys.len()))]
    async fn get_many(&self, keys: &[ItemKey]) -> Result<Vec<Option<Item>>, PortError> {
        check_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        batch_get(keys, BATCH_GET_CALLS, BATCH_GET_BACKOFF, |keys| self.batch_get_call(keys)).await
    }

    #[tracing::instrument(skip_all, fields(table = %self.table, limit = limit, calls, returned))]
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
        // DynamoDB refuses a start key outside the key condition, so place `start_after` against the prefix range
        // first: before it, it changes nothing; after it, nothing is left.
        let mut start_key = match start_after {
            Some(after) if after.starts_with(sk_prefix) => Some(key_av(&ItemKey::new(pk, after))),
            Some(after) if after < sk_prefix => None,
            Some(_) => return Ok(QueryPage { items: Vec::new(), next: None }),
            None => None,
        };
        let (condition, mut values) = if sk_prefix.is_empty() {
            ("#pk = :pk", HashMap::new())
        } else {
            (
                "#pk = :pk AND begins_with(#sk, :prefix)",
                HashMap::from([(":prefix".to_owned(), AttributeValue::S(sk_prefix.to_owned()))]),
            )
        };
        values.insert(":pk".to_owned(), AttributeValue::S(pk.to_owned()));
        let mut names = HashMap::from([("#pk".to_owned(), PK.to_owned())]);
        if !sk_prefix.is_empty() {
            names.insert("#sk".to_owned(), SK.to_owned());
        }
        let now = now_epoch_s();
        let mut items: Vec<Item> = Vec::new();
        let mut calls = 0u32;
        // One item past `limit` tells whether there is more, so `next` is `None` on the last page.
        let next = loop {
            let want = (limit - items.len()).saturating_add(1).min(QUERY_BATCH);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start_key.take())
                .consistent_read(CONSISTENT_READ)
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| error::dynamodb("Query", &e))?;
            calls += 1;
            // Every returned item is billed, expired ones and the look-ahead one included.
            let bytes = out.items().iter().map(billing::item_size).sum();
            self.usage.read(bytes, Consistency::of(CONSISTENT_READ), out.consumed_capacity());
            for av in out.items() {
                let item = item_from_av(av.clone())?;
                if !is_expired(&item, now) {
                    items.push(item);
                }
            }
            if items.len() > limit {
                items.truncate(limit);
                break items.last().map(|i| i.key.sk.clone());
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start_key = Some(k.clone()),
                _ => break None,
            }
        };
        let span = tracing::Span::current();
        span.record("calls", calls);
        span.record("returned", items.len());
        Ok(QueryPage { items, next })
    }

    #[tracing::instrument(skip_all, fields(table = %self.table, ops = ops.len()))]
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), TransactError> {
        check_transaction(&ops)?;
        let now = now_epoch_s();
        let items = ops.iter().map(|op| self.transact_item(op, now)).collect::<Result<Vec<_>, _>>()?;
        // Puts by the item written; deletes and checks by the item as stored, which the adapter does not see.
        let bytes: Vec<u64> = items
            .iter()
            .map(|t| t.put().map_or(billing::UNKNOWN_ITEM_BYTES, |p| billing::item_size(p.item())))
            .collect();
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.usage.transact(&bytes, out.consumed_capacity());
                Ok(())
            }
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let reasons: Vec<Option<&str>> = c.cancellation_reasons().iter().map(|r| r.code()).collect();
                    let err = cancelled(&reasons);
                    // A failed condition is billed (how much AWS does not say; counted as if committed).
                    if matches!(err, TransactError::ConditionFailed { .. }) {
                        self.usage.transact(&bytes, &[]);
                    }
                    tracing::debug!(error = %err, "Transaction cancelled.");
                    Err(err)
                }
                _ => Err(error::dynamodb("TransactWriteItems", &e).into()),
            },
        }
    }

    #[tracing::instrument(skip_all, fields(table = %self.table))]
    async fn write(&self, op: WriteOp) -> Result<(), PortError> {
        match &op {
            WriteOp::Put { item, condition } => self.put_item(item, condition).await,
            WriteOp::Delete { key, condition } => self.delete_item(key, condition).await,
            // DynamoDB has no single-item condition check outside a transaction.
            WriteOp::Check { .. } => match self.transact(vec![op]).await {
                Ok(()) => Ok(()),
                Err(TransactError::ConditionFailed { .. }) => {
                    Err(PortError::ConditionFailed("dynamodb ConditionCheck: ConditionalCheckFailed".into()))
                }
                Err(TransactError::Port(e)) => Err(e),
            },
        }
    }

    /// One UpdateItem (`ADD`, `SET`) on a missing or live item. An expired item still stored fails the condition
    /// and is replaced by a second, conditional UpdateItem, so that nothing of it survives into the new item.
    #[tracing::instrument(skip_all, fields(table = %self.table, deltas = deltas.len()))]
    async fn add(
        &self,
        key: &ItemKey,
        deltas: &[(String, i64)],
        set: Map<String, Value>,
        expires_at: Option<i64>,
    ) -> Result<(), PortError> {
        check_add(deltas, &set)?;
        for _ in 0..ADD_ATTEMPTS {
            let old = match self.update_item(key, add_expr(deltas, &set, expires_at, now_epoch_s())).await? {
                Updated::Done => return Ok(()),
                Updated::ConditionFailed(old) => old,
            };
            let Some(replace) = old.as_ref().and_then(|old| replace_expired_expr(deltas, &set, expires_at, old)) else {
                continue;
            };
            if let Updated::Done = self.update_item(key, replace).await? {
                return Ok(());
            }
        }
        Err(PortError::Unavailable("dynamodb UpdateItem: an expired item kept changing under the add".into()))
    }

    /// Scan calls on the global secondary index `index.name` with DynamoDB's own `Segment` and `TotalSegments`,
    /// until the page is full: expired entries are dropped here (the index projects `ttl`), and one entry past
    /// `limit` tells whether there is more, so `next` is `None` on the last page. The cursor is the last key
    /// returned with its index value, which is the `ExclusiveStartKey` DynamoDB would have given had it stopped
    /// there. Index reads are eventually consistent (DynamoDB refuses `ConsistentRead` on a global secondary index)
    /// and billed as such, on the entries returned.
    ///
    /// moto (5.2) honours `Segment` and `TotalSegments` on an index scan: it places an item by the first byte of
    /// the MD5 of its table partition key, modulo the count, so with more than 256 segments the segments above 255
    /// are empty there. DynamoDB splits by its own hash of the index key; which segment an item falls in differs,
    /// the partition does not.
    #[tracing::instrument(skip_all, fields(table = %self.table, index = index.name, segment = segment, total = total_segments, limit = limit, calls, returned))]
    async fn scan_index(
        &self,
        index: &SparseIndex,
        segment: u32,
        total_segments: u32,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, PortError> {
        check_scan(index, segment, total_segments, limit)?;
        let mut start_key = match cursor {
            Some(c) => Some(scan_start_key(ScanCursor::decode(c, index, segment, total_segments)?, index)?),
            None => None,
        };
        // Both at most MAX_SCAN_SEGMENTS (checked above).
        let (segment_i32, total_i32) = (segment as i32, total_segments as i32);
        let now = now_epoch_s();
        let mut found: Vec<(ItemKey, String)> = Vec::new();
        let mut calls = 0u32;
        let next = loop {
            let want = (limit - found.len()).saturating_add(1).min(SCAN_BATCH);
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .index_name(index.name)
                .segment(segment_i32)
                .total_segments(total_i32)
                .set_exclusive_start_key(start_key.take())
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| error::dynamodb("Scan", &e))?;
            calls += 1;
            // Every returned entry is billed, expired ones and the look-ahead one included.
            let bytes = out.items().iter().map(billing::item_size).sum();
            self.usage.read(bytes, Consistency::Eventual, out.consumed_capacity());
            for av in out.items() {
                if let Some(entry) = index_entry(av, index, now)? {
                    found.push(entry);
                }
            }
            if found.len() > limit {
                found.truncate(limit);
                break found.last().map(|(key, value)| {
                    ScanCursor { segment, total_segments, after: key.clone(), value: Some(value.clone()) }.encode(index)
                });
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start_key = Some(k.clone()),
                _ => break None,
            }
        };
        let span = tracing::Span::current();
        span.record("calls", calls);
        span.record("returned", found.len());
        Ok(KeyPage { keys: found.into_iter().map(|(key, _)| key).collect(), next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_attribute_values() {
        let v = json!({
            "s": "Grüße", "empty": "", "i": -17, "u": u64::MAX, "min": i64::MIN, "f": 12.5, "tiny": 1.7275580049601788e-9,
            "big": 6.02214076e23, "t": true, "n": null, "o": {}, "a": [], "nested": {"l": [1, 2.5, "x", false, null, {"d": [[]]}]},
        });
        let back = from_av("x", &to_av(&v)).expect("converts back");
        assert_eq!(back, v);
    }

    #[test]
    fn items_round_trip_and_reserved_names_are_refused() {
        let mut attrs = Map::new();
        attrs.insert("name".into(), json!("Ann"));
        let item = Item { key: ItemKey::new("p", "s"), attrs, version: 1 << 40, expires_at: Some(1_700_000_000) };
        let av = item_to_av(&item).expect("converts");
        assert_eq!(av.get("v"), Some(&AttributeValue::N("1099511627776".into())));
        assert_eq!(av.get("ttl"), Some(&AttributeValue::N("1700000000".into())));
        assert_eq!(item_from_av(av).expect("reads"), item);

        let mut bad = item.clone();
        bad.attrs.insert("ttl".into(), json!(1));
        assert!(matches!(item_to_av(&bad), Err(PortError::Invalid(_))));
    }

    #[test]
    fn billed_size_counts_the_stored_key_version_and_ttl_attributes() {
        let mut attrs = Map::new();
        attrs.insert("name".into(), json!("Ann"));
        let mut item = Item { key: ItemKey::new("p", "s#1"), attrs, version: 1, expires_at: None };
        // pk 2+1, sk 2+3, v 1+2 (one digit: 2 bytes), name 4+3
        assert_eq!(billing::item_size(&item_to_av(&item).expect("converts")), 3 + 5 + 3 + 7);
        item.expires_at = Some(1_700_000_000);
        // ttl 3+2 (significant digits "17")
        assert_eq!(billing::item_size(&item_to_av(&item).expect("converts")), 3 + 5 + 3 + 7 + 5);
    }

    #[test]
    fn numbers_from_dynamodb() {
        assert_eq!(number("42"), Some(Number::from(42)));
        assert_eq!(number("18446744073709551615"), Some(Number::from(u64::MAX)));
        assert_eq!(number("1E+2"), Number::from_f64(100.0));
        assert_eq!(number("602214076000000000000000"), Number::from_f64(6.02214076e23));
        assert_eq!(number("abc"), None);
    }

    #[test]
    fn conditions_use_only_their_names_and_values() {
        let e = condition_expr(&Condition::VersionIs(3), 100, false);
        assert_eq!(e.expression.as_deref(), Some("#v = :v AND (attribute_not_exists(#ttl) OR #ttl > :now)"));
        assert_eq!(e.names.len(), 2);
        assert_eq!(e.values.get(":v"), Some(&AttributeValue::N("3".into())));
        assert_eq!(condition_expr(&Condition::None, 100, false), Expr::default());
        assert!(condition_expr(&Condition::None, 100, true).expression.is_some());
        let e = condition_expr(&Condition::NotExists, 100, false);
        assert_eq!(e.expression.as_deref(), Some("attribute_not_exists(pk) OR #ttl <= :now"));
    }

    #[test]
    fn adds_use_placeholders_for_every_attribute() {
        let mut set = Map::new();
        set.insert("name".into(), json!("Order Completed"));
        let deltas = vec![("accepted".to_owned(), 3), ("count".to_owned(), -1)];
        let e = add_expr(&deltas, &set, Some(1_700_000_000), 100);
        assert_eq!(e.update, "ADD #a0 :a0, #a1 :a1 SET #s0 = :s0, #ttl = :ttl");
        assert_eq!(e.condition, LIVE_OR_MISSING);
        assert_eq!(e.names.get("#a1").map(String::as_str), Some("count"));
        assert_eq!(e.names.get("#s0").map(String::as_str), Some("name"));
        assert_eq!(e.values.get(":a1"), Some(&AttributeValue::N("-1".into())));
        assert_eq!(e.values.get(":ttl"), Some(&AttributeValue::N("1700000000".into())));
        assert_eq!(e.values.get(":now"), Some(&AttributeValue::N("100".into())));
        // Nothing to set and no expiry: no SET clause, but the condition still names the expiry.
        let e = add_expr(&deltas[..1], &Map::new(), None, 100);
        assert_eq!(e.update, "ADD #a0 :a0");
        assert_eq!(e.names.len(), 3);
        assert_eq!(e.values.len(), 2);
    }

    #[test]
    fn an_expired_item_is_replaced_not_added_to() {
        let old = HashMap::from([
            (PK.to_owned(), AttributeValue::S("p".into())),
            (SK.to_owned(), AttributeValue::S("s".into())),
            (VERSION.to_owned(), AttributeValue::N("7".into())),
            (TTL.to_owned(), AttributeValue::N("50".into())),
            ("accepted".to_owned(), AttributeValue::N("10".into())),
            ("stale".to_owned(), AttributeValue::N("4".into())),
        ]);
        let deltas = vec![("accepted".to_owned(), 1)];
        let e = replace_expired_expr(&deltas, &Map::new(), None, &old).expect("old has an expiry");
        assert_eq!(e.update, "SET #a0 = :a0 REMOVE #r0, #ttl, #r2");
        assert_eq!(e.condition, "#ttl = :old_ttl");
        assert_eq!(e.names.get("#r0").map(String::as_str), Some("stale"));
        assert_eq!(e.names.get("#r2").map(String::as_str), Some("v"));
        assert_eq!(e.values.get(":old_ttl"), Some(&AttributeValue::N("50".into())));
        let e = replace_expired_expr(&deltas, &Map::new(), Some(500), &old).expect("old has an expiry");
        assert_eq!(e.update, "SET #a0 = :a0, #ttl = :ttl REMOVE #r0, #r1");
        let mut live = old.clone();
        live.remove(TTL);
        assert_eq!(replace_expired_expr(&deltas, &Map::new(), None, &live), None);
    }

    #[test]
    fn index_entries_drop_expired_items_and_resume_after_the_last_key() {
        use tributary_core::ports::ROOT_PROFILES;
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let mut av =
            HashMap::from([("pk".to_owned(), s("p#1")), ("sk".to_owned(), s("profile")), ("root".to_owned(), s("1"))]);
        assert_eq!(index_entry(&av, &ROOT_PROFILES, 100), Ok(Some((ItemKey::new("p#1", "profile"), "1".to_owned()))));
        av.insert(TTL.to_owned(), AttributeValue::N("101".into()));
        assert!(index_entry(&av, &ROOT_PROFILES, 100).expect("reads").is_some());
        av.insert(TTL.to_owned(), AttributeValue::N("100".into()));
        assert_eq!(index_entry(&av, &ROOT_PROFILES, 100), Ok(None));
        av.remove(TTL);
        av.insert("root".to_owned(), AttributeValue::N("1".into()));
        assert_eq!(index_entry(&av, &ROOT_PROFILES, 100), Ok(None));
        av.insert("root".to_owned(), s("1"));
        av.remove("sk");
        assert!(matches!(index_entry(&av, &ROOT_PROFILES, 100), Err(PortError::Invalid(_))));

        let cursor = ScanCursor {
            segment: 0,
            total_segments: 1,
            after: ItemKey::new("p#1", "profile"),
            value: Some("1".into()),
        };
        let key = scan_start_key(cursor.clone(), &ROOT_PROFILES).expect("a key");
        assert_eq!(
            key,
            HashMap::from([("pk".to_owned(), s("p#1")), ("sk".to_owned(), s("profile")), ("root".to_owned(), s("1"))])
        );
        let bare = ScanCursor { value: None, ..cursor };
        assert!(matches!(scan_start_key(bare, &ROOT_PROFILES), Err(PortError::Invalid(_))));
    }

    #[test]
    fn suppression_index_entries_are_tombstones_keyed_by_their_request() {
        use tributary_core::ports::{ROOT_PROFILES, SUPPRESSED_IDENTITIES};
        let s = |v: &str| AttributeValue::S(v.to_owned());
        // What the keys-only (plus ttl) index projects of a tombstone: the table key and `sup`.
        let av =
            HashMap::from([("pk".to_owned(), s("id#ab")), ("sk".to_owned(), s("id")), ("sup".to_owned(), s("r1"))]);
        let entry = Some((ItemKey::new("id#ab", "id"), "r1".to_owned()));
        assert_eq!(index_entry(&av, &SUPPRESSED_IDENTITIES, 100), Ok(entry));
        assert_eq!(index_entry(&av, &ROOT_PROFILES, 100), Ok(None), "a tombstone is no root profile");
        let cursor =
            ScanCursor { segment: 1, total_segments: 4, after: ItemKey::new("id#ab", "id"), value: Some("r1".into()) };
        assert_eq!(scan_start_key(cursor, &SUPPRESSED_IDENTITIES).expect("a key"), av);
        let mut tomb = Map::new();
        tomb.insert("t".into(), json!("email"));
        tomb.insert("sup".into(), json!(""));
        let item = Item { key: ItemKey::new("id#ab", "id"), attrs: tomb, version: 2, expires_at: None };
        assert!(matches!(item_to_av(&item), Err(PortError::Invalid(_))), "an empty request id keys no index entry");
    }

    #[test]
    fn index_attributes_must_hold_strings() {
        let mut attrs = Map::new();
        attrs.insert("root".into(), json!(5));
        let item = Item { key: ItemKey::new("p", "s"), attrs, version: 1, expires_at: None };
        assert!(matches!(item_to_av(&item), Err(PortError::Invalid(_))));
    }

    fn stored(item: &Item) -> HashMap<String, AttributeValue> {
        item_to_av(item).expect("converts")
    }

    fn key_of(av: &HashMap<String, AttributeValue>) -> ItemKey {
        match (av.get(PK), av.get(SK)) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => ItemKey::new(pk.clone(), sk.clone()),
            _ => panic!("a key"),
        }
    }

    #[tokio::test]
    async fn batch_gets_retry_unprocessed_keys_and_answer_in_the_order_asked() {
        let now = now_epoch_s();
        let item = |pk: &str, sk: &str, expires_at: Option<i64>| Item {
            key: ItemKey::new(pk, sk),
            attrs: Map::from_iter([("name".to_owned(), json!(sk))]),
            version: 1,
            expires_at,
        };
        let (a, b, c) = (item("p#1", "a", None), item("p#2", "b", Some(now + 60)), item("p#1", "c", None));
        let expired = item("p#3", "gone", Some(now - 60));
        let keys =
            vec![c.key.clone(), ItemKey::new("p#9", "missing"), expired.key.clone(), a.key.clone(), b.key.clone()];
        let table: HashMap<ItemKey, Item> =
            [&a, &b, &c, &expired].into_iter().map(|i| (i.key.clone(), i.clone())).collect();
        // Answers in no particular order, and processes at most two keys a call (the first asked, the rest left).
        let mut asked: Vec<Vec<ItemKey>> = Vec::new();
        let got = batch_get(&keys, 6, Duration::from_millis(1), |sent| {
            asked.push(sent.iter().map(key_of).collect());
            let (now_keys, later) = sent.split_at(sent.len().min(2));
            let mut items: Vec<_> = now_keys.iter().filter_map(|k| table.get(&key_of(k))).map(stored).collect();
            items.reverse();
            let answer = BatchAnswer { items, unprocessed: later.to_vec() };
            async move { Ok(answer) }
        })
        .await;
        assert_eq!(got, Ok(vec![Some(c), None, None, Some(a), Some(b)]));
        assert_eq!(asked, vec![keys.clone(), keys[2..].to_vec(), keys[4..].to_vec()], "only unprocessed keys again");

        // Keys that are never processed: throttled after the allowed calls, with the count and not the keys.
        let mut calls = 0;
        let r = batch_get(&keys, 3, Duration::from_millis(1), |sent| {
            calls += 1;
            async move { Ok(BatchAnswer { items: Vec::new(), unprocessed: sent }) }
        })
        .await;
        assert_eq!(calls, 3);
        let Err(PortError::Throttled(why)) = r else { panic!("throttled, got {r:?}") };
        assert!(why.contains("5 of 5 keys") && !why.contains("p#"), "{why}");

        // An error of a call ends the read; an item never asked for is a bad answer.
        let r = batch_get(&keys, 3, Duration::ZERO, |_| async { Err(PortError::Unavailable("down".into())) }).await;
        assert_eq!(r, Err(PortError::Unavailable("down".into())));
        let stranger = stored(&item("p#7", "x", None));
        let r = batch_get(&keys, 3, Duration::ZERO, |_| {
            let items = vec![stranger.clone()];
            async move { Ok(BatchAnswer { items, unprocessed: Vec::new() }) }
        })
        .await;
        assert!(matches!(r, Err(PortError::Invalid(_))), "{r:?}");
    }

    #[test]
    fn cancellation_reasons() {
        assert_eq!(
            cancelled(&[Some("None"), Some("ConditionalCheckFailed")]),
            TransactError::ConditionFailed { index: 1 }
        );
        assert!(matches!(
            cancelled(&[Some("TransactionConflict"), Some("None")]),
            TransactError::Port(PortError::Unavailable(_))
        ));
        assert!(matches!(cancelled(&[Some("ValidationError")]), TransactError::Port(PortError::Invalid(_))));
        assert!(matches!(cancelled(&[]), TransactError::Port(PortError::Invalid(_))));
    }
}

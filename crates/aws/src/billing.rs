//! What DynamoDB bills, estimated from the requests the adapter sends and the items it gets back, so that a
//! benchmark can put a price on an event without a real AWS account. Pure functions plus one counter ([`Meter`]);
//! [`DynamoTable`](crate::DynamoTable) feeds it and hands out [`Usage`] snapshots.
//!
//! # Item size (AWS, "DynamoDB item sizes and formats", `CapacityUnitCalculations.html`)
//!
//! An item's size is the sum over its attributes of the UTF-8 length of the name plus the size of the value. The
//! adapter stores `pk`, `sk`, `v` and (when set) `ttl` as ordinary attributes, so they count like any other.
//!
//! | type | size of the value |
//! |---|---|
//! | S | UTF-8 bytes |
//! | N | see below |
//! | B | raw bytes (not the base64 on the wire) |
//! | BOOL, NULL | 1 |
//! | L | 3 + Σ (element + 1) |
//! | M | 3 + Σ (UTF-8 length of the key + value + 1) |
//! | SS, NS, BS | Σ element sizes (AWS documents no overhead; the adapter never writes sets) |
//!
//! Numbers: AWS only says "up to 38 significant digits … approximately 1 byte per two significant digits, plus 1
//! byte". The exact rule implemented here is the one measured against DynamoDB by Zac Charles's calculator
//! (github.com/zaccharles/dynamodb-calculator), which matches a base-100 encoding: the significant digits are
//! grouped in pairs aligned on the decimal point (`12.5` is `12|50`, two pairs; `120` is `1|20`, two pairs; `1500`
//! is `15|00`, one pair once trailing zero pairs go), and the size is pairs + 1 (exponent byte) + 1 more for a
//! negative number, at most 21; zero is 1 byte. For integers with an even number of significant digits, and for
//! every number in the adapter's own `v` and `ttl`, this is exactly AWS's "digits / 2 + 1".
//!
//! # Units (AWS, "DynamoDB read and write operations", and the transactions guide)
//!
//! - Write: ceil(size / 1 KB) write request units per item, at least 1. PutItem on an existing item is billed on
//!   the larger of the old and new item; the adapter does not know the old size without reading it, so it counts
//!   the new one (an underestimate for writes that shrink an item). DeleteItem is billed on the deleted item,
//!   which the adapter does not see either: it counts [`UNKNOWN_ITEM_BYTES`] (1 KB, the 1-unit minimum).
//! - UpdateItem (the port's `add`) is billed like a write of the larger of the old and the new item; the adapter
//!   asks for the item as it is afterwards (`ReturnValues: ALL_NEW`, which costs nothing extra) and counts its size
//!   (exact for counters, which only grow). A failed condition is counted on the stored item, which DynamoDB
//!   returns with the failure.
//! - A failed conditional write still costs: the new item's size when an item exists, 1 unit when none does. The
//!   adapter counts the new item's size (exact when the item existed, high by the difference when it did not).
//! - TransactWriteItems: 2 × the write units of every item in it (prepare + commit), ConditionCheck items
//!   included. Checks and deletes are sized at [`UNKNOWN_ITEM_BYTES`] for the reason above. AWS does not document
//!   what a transaction cancelled by a condition costs; the adapter counts it like a committed one (an upper
//!   bound). Cancellations for other reasons and every other error (throttling, validation, network) are not
//!   counted: DynamoDB does not bill requests it rejects.
//! - Reads: ceil(bytes / 4 KB) read request units, halved for eventually consistent reads, at least 1 (0.5); a
//!   GetItem that finds nothing still costs the minimum. Query sums the sizes of the items one call returns
//!   before rounding (items the adapter then drops as expired are read, hence billed, too).
//! - BatchGetItem (the port's `get_many`): AWS processes each key "as an individual GetItem request", rounding each
//!   item up to 4 KB before adding them up, so every key one call processed is counted as a GetItem of its own; a
//!   key that finds nothing at the GetItem minimum (AWS does not say what a miss in a batch costs: an upper bound,
//!   the same as `get`'s). Keys DynamoDB leaves unprocessed are not counted in that call, only in the call that
//!   reads them.
//!
//! When DynamoDB answers with `ConsumedCapacity` (the adapter always asks for `TOTAL`), that figure is kept
//! beside the estimate, in [`Usage::reported_rcu`] and [`Usage::reported_wcu`], so the two can be compared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};

/// One write request unit covers this much of an item.
pub(crate) const WRITE_UNIT_BYTES: u64 = 1024;
/// One (strongly consistent) read request unit covers this much.
pub(crate) const READ_UNIT_BYTES: u64 = 4096;
/// Size assumed for an item the adapter never sees (deleted or condition-checked): the 1-unit minimum.
pub(crate) const UNKNOWN_ITEM_BYTES: u64 = 1024;
/// Overhead of a List or Map, whatever it holds.
const DOCUMENT_BYTES: u64 = 3;
/// Overhead of each element of a List or Map.
const ELEMENT_BYTES: u64 = 1;
/// The largest number DynamoDB stores (38 significant digits, misaligned, negative) takes this much.
const MAX_NUMBER_BYTES: u64 = 21;

fn len(s: &str) -> u64 {
    s.len() as u64
}

/// The billed size of an item, in bytes.
pub(crate) fn item_size(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter().map(|(name, value)| len(name) + value_size(value)).sum()
}

/// The billed size of one attribute value, without its name.
pub(crate) fn value_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => len(s),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => DOCUMENT_BYTES + l.iter().map(|v| value_size(v) + ELEMENT_BYTES).sum::<u64>(),
        AttributeValue::M(m) => {
            DOCUMENT_BYTES + m.iter().map(|(k, v)| len(k) + value_size(v) + ELEMENT_BYTES).sum::<u64>()
        }
        AttributeValue::Ss(ss) => ss.iter().map(|s| len(s)).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len() as u64).sum(),
        // A type newer than this SDK: nothing to measure it by.
        _ => 0,
    }
}

/// The billed size of a DynamoDB number (`-12.50E+3` and the like): see the module documentation. A string that
/// is not a number (DynamoDB refuses those) counts as the largest number, so that nothing is undercounted.
pub(crate) fn number_size(n: &str) -> u64 {
    let n = n.trim();
    let (negative, n) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n.strip_prefix('+').unwrap_or(n)),
    };
    let (mantissa, exponent) = match n.split_once(['e', 'E']) {
        Some((m, e)) => match e.parse::<i64>() {
            Ok(e) => (m, e),
            Err(_) => return MAX_NUMBER_BYTES,
        },
        None => (n, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return MAX_NUMBER_BYTES;
    }
    // value = digits × 10^power, with `digits` free of leading and trailing zeros.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return 1; // zero, signed or not
    }
    let power = exponent.saturating_sub(len(frac) as i64).saturating_add((digits.len() - significant.len()) as i64);
    let lowest = power;
    let highest = power.saturating_add(significant.len() as i64 - 1);
    // Base-100 digits: decimal positions 2k and 2k+1 share a byte.
    let pairs = (highest.div_euclid(2) - lowest.div_euclid(2) + 1) as u64;
    (pairs + 1 + u64::from(negative)).min(MAX_NUMBER_BYTES)
}

/// Write request units for one non-transactional write of an item of `item_bytes`.
pub(crate) fn write_units(item_bytes: u64) -> u64 {
    item_bytes.div_ceil(WRITE_UNIT_BYTES).max(1)
}

/// Write request units for one item of a TransactWriteItems call (prepare and commit).
pub(crate) fn transact_write_units(item_bytes: u64) -> u64 {
    2 * write_units(item_bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    Strong,
    Eventual,
}

impl Consistency {
    /// The mode a request's `ConsistentRead` flag asks for (DynamoDB's default is eventual).
    pub(crate) fn of(consistent_read: bool) -> Self {
        if consistent_read {
            Consistency::Strong
        } else {
            Consistency::Eventual
        }
    }
}

/// Read request units, in halves (so that they add up exactly), for one GetItem or Query call that read
/// `total_bytes` (the sum over the items it returned).
pub(crate) fn read_half_units(total_bytes: u64, consistency: Consistency) -> u64 {
    let units = total_bytes.div_ceil(READ_UNIT_BYTES).max(1);
    match consistency {
        Consistency::Strong => 2 * units,
        Consistency::Eventual => units,
    }
}

/// What a [`DynamoTable`](crate::DynamoTable) and its clones have asked of DynamoDB since it was built or last
/// reset: request counts, the estimated request units (module documentation of `billing.rs` for the rules) and
/// what DynamoDB itself reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// GetItem, BatchGetItem and Query calls (one `query` may make several Query calls, one `get_many` several
    /// BatchGetItem calls).
    pub requests_read: u64,
    /// PutItem, UpdateItem and DeleteItem calls, failed conditional ones included.
    pub requests_write: u64,
    /// TransactWriteItems calls, committed or cancelled by a condition.
    pub requests_transact: u64,
    /// Estimated read request units (a multiple of 0.5).
    pub rru: f64,
    /// Estimated write request units, transactional ones included (each counted twice, as DynamoDB does).
    pub wru: u64,
    /// Operations in those transactions, condition checks included.
    pub transact_items: u64,
    /// Read units DynamoDB reported in `ConsumedCapacity`, over the responses that carried one.
    pub reported_rcu: f64,
    /// Write units DynamoDB reported in `ConsumedCapacity`, over the responses that carried one.
    pub reported_wcu: f64,
    /// Responses that carried a `ConsumedCapacity`; the reported figures only cover these.
    pub requests_reported: u64,
}

impl Usage {
    /// DynamoDB on-demand list price per million write request units, us-east-1, after the November 2024 cut
    /// (../shared/reference/perf-anchors.md row 11, source S26). Re-check the AWS pricing page before budgeting.
    pub const USD_PER_MILLION_WRU: f64 = 0.625;
    /// DynamoDB on-demand list price per million read request units (same source as the write price).
    pub const USD_PER_MILLION_RRU: f64 = 0.125;

    /// The estimated on-demand cost in US dollars (request units only: no storage, streams or indexes).
    pub fn dollars(&self) -> f64 {
        (self.wru as f64 * Self::USD_PER_MILLION_WRU + self.rru * Self::USD_PER_MILLION_RRU) / 1_000_000.0
    }
}

/// The running totals; read units in halves so that they add up exactly.
#[derive(Debug, Default)]
struct Tally {
    requests_read: u64,
    requests_write: u64,
    requests_transact: u64,
    rru_halves: u64,
    wru: u64,
    transact_items: u64,
    reported_rcu: f64,
    reported_wcu: f64,
    requests_reported: u64,
}

/// The shared counter behind [`Usage`]. A mutex rather than atomics: one update touches several fields, and a
/// snapshot must not see half of it. A table's meter also adds into the meter of the [`AwsClients`] it was made
/// from (its `total`), so that a benchmark can read what every table of a function asked for.
///
/// [`AwsClients`]: crate::AwsClients
#[derive(Debug, Default)]
pub(crate) struct Meter {
    tally: Mutex<Tally>,
    total: Option<Arc<Meter>>,
}

impl Meter {
    /// A meter that also counts into `total`.
    pub(crate) fn within(total: Arc<Meter>) -> Meter {
        Meter { tally: Mutex::default(), total: Some(total) }
    }

    fn update(&self, f: impl Fn(&mut Tally)) {
        // A panic elsewhere while holding the lock leaves plain numbers behind, still worth counting on.
        f(&mut self.tally.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(total) = &self.total {
            total.update(f);
        }
    }

    /// One GetItem or Query call that returned items totalling `bytes`.
    pub(crate) fn read(&self, bytes: u64, consistency: Consistency, reported: Option<&ConsumedCapacity>) {
        let reported = reported.and_then(|c| c.read_capacity_units().or(c.capacity_units()));
        self.update(|t| {
            t.requests_read += 1;
            t.rru_halves += read_half_units(bytes, consistency);
            if let Some(units) = reported {
                t.reported_rcu += units;
                t.requests_reported += 1;
            }
        });
    }

    /// One BatchGetItem call that processed one key per entry of `item_bytes` (the item's size, 0 for a key that
    /// found nothing): each is billed as a GetItem of its own.
    pub(crate) fn batch_read(&self, item_bytes: &[u64], consistency: Consistency, reported: &[ConsumedCapacity]) {
        let halves: u64 = item_bytes.iter().map(|&b| read_half_units(b, consistency)).sum();
        let reported: Option<f64> = reported
            .iter()
            .filter_map(|c| c.read_capacity_units().or(c.capacity_units()))
            .fold(None, |sum, u| Some(sum.unwrap_or(0.0) + u));
        self.update(|t| {
            t.requests_read += 1;
            t.rru_halves += halves;
            if let Some(units) = reported {
                t.reported_rcu += units;
                t.requests_reported += 1;
            }
        });
    }

    /// One PutItem, UpdateItem or DeleteItem call on an item of `item_bytes`.
    pub(crate) fn write(&self, item_bytes: u64, reported: Option<&ConsumedCapacity>) {
        let reported = reported.and_then(|c| c.write_capacity_units().or(c.capacity_units()));
        self.update(|t| {
            t.requests_write += 1;
            t.wru += write_units(item_bytes);
            if let Some(units) = reported {
                t.reported_wcu += units;
                t.requests_reported += 1;
            }
        });
    }

    /// One TransactWriteItems call whose items are `item_bytes` (one entry per operation).
    pub(crate) fn transact(&self, item_bytes: &[u64], reported: &[ConsumedCapacity]) {
        let units: u64 = item_bytes.iter().map(|&b| transact_write_units(b)).sum();
        let reported: Option<f64> = reported
            .iter()
            .filter_map(|c| c.write_capacity_units().or(c.capacity_units()))
            .fold(None, |sum, u| Some(sum.unwrap_or(0.0) + u));
        self.update(|t| {
            t.requests_transact += 1;
            t.transact_items += item_bytes.len() as u64;
            t.wru += units;
            if let Some(units) = reported {
                t.reported_wcu += units;
                t.requests_reported += 1;
            }
        });
    }

    pub(crate) fn usage(&self) -> Usage {
        let t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        Usage {
            requests_read: t.requests_read,
            requests_write: t.requests_write,
            requests_transact: t.requests_transact,
            rru: t.rru_halves as f64 / 2.0,
            wru: t.wru,
            transact_items: t.transact_items,
            reported_rcu: t.reported_rcu,
            reported_wcu: t.reported_wcu,
            requests_reported: t.requests_reported,
        }
    }

    /// Zero for this meter only (not its total's).
    pub(crate) fn reset(&self) {
        *self.tally.lock().unwrap_or_else(PoisonError::into_inner) = Tally::default();
    }
}

/// SQS bills a request per started 64 KiB of its payload (a 256 KiB batch is 4 requests), at least one per call,
/// empty receives included (AWS SQS pricing page; ../shared/reference/perf-anchors.md §3.1).
pub(crate) const SQS_CHUNK_BYTES: u64 = 64 * 1024;

/// The billed requests of one SQS call carrying `payload` bytes of message bodies (sent or received).
pub(crate) fn sqs_billed_requests(payload: u64) -> u64 {
    payload.div_ceil(SQS_CHUNK_BYTES).max(1)
}

/// What the [`SqsQueue`](crate::SqsQueue)s made from one [`AwsClients`](crate::AwsClients) asked of SQS: calls SQS
/// answered (a failed call is not billed and not counted), their billed requests, and the message bodies moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqsUsage {
    /// SendMessageBatch, ReceiveMessage, DeleteMessage, ChangeMessageVisibility and GetQueueAttributes calls.
    pub calls: u64,
    /// Billed requests: each call once per started 64 KiB of the message bodies it sent or received, at least once.
    pub billed_requests: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl SqsUsage {
    /// SQS standard queues, per million requests, us-east-1, beyond the free tier (perf-anchors §3.1, source S25).
    pub const USD_PER_MILLION_REQUESTS: f64 = 0.40;

    /// The billed requests of one call carrying `payload` bytes of message bodies: for callers that model calls
    /// made outside the adapter (Lambda's pollers).
    pub fn billed_requests_for(payload: u64) -> u64 {
        sqs_billed_requests(payload)
    }

    pub fn dollars(&self) -> f64 {
        self.billed_requests as f64 * Self::USD_PER_MILLION_REQUESTS / 1_000_000.0
    }
}

/// How S3 prices a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum S3Class {
    /// PUT, COPY, POST and LIST requests.
    Write,
    /// GET, HEAD and the rest.
    Read,
    /// DELETE requests (free).
    Delete,
}

/// What the [`S3Store`](crate::S3Store)s made from one [`AwsClients`](crate::AwsClients) asked of S3: every call
/// sent, whatever its answer (S3 bills error responses too), by price class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct S3Usage {
    /// PutObject, PutBucketVersioning, ListObjectsV2, ListObjectVersions and DeleteObjects (a POST: AWS says
    /// DELETE requests are free but not whether a multi-object delete is one, so it is priced as a POST, an upper
    /// bound).
    pub write_requests: u64,
    /// GetObject (ranged and by version), HeadObject and HeadBucket.
    pub read_requests: u64,
    /// DeleteObject.
    pub delete_requests: u64,
    pub bytes_put: u64,
}

impl S3Usage {
    /// S3 Standard, per thousand PUT, COPY, POST or LIST requests, us-east-1 (perf-anchors §3.1, source S27).
    pub const USD_PER_THOUSAND_WRITES: f64 = 0.005;
    /// S3 Standard, per thousand GET, HEAD and other requests.
    pub const USD_PER_THOUSAND_READS: f64 = 0.0004;

    pub fn dollars(&self) -> f64 {
        (self.write_requests as f64 * Self::USD_PER_THOUSAND_WRITES
            + self.read_requests as f64 * Self::USD_PER_THOUSAND_READS)
            / 1000.0
    }
}

/// Everything the adapters made from one [`AwsClients`](crate::AwsClients) asked of AWS since it was built or
/// last reset (the SDK calls `AwsClients` makes itself to warm connections are not counted: they happen once per
/// container, not per event).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AwsUsage {
    pub dynamodb: Usage,
    pub sqs: SqsUsage,
    pub s3: S3Usage,
}

impl AwsUsage {
    pub fn dollars(&self) -> f64 {
        self.dynamodb.dollars() + self.sqs.dollars() + self.s3.dollars()
    }
}

/// The counters behind [`AwsUsage`], shared by every adapter one `AwsClients` makes.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    pub(crate) dynamodb: Arc<Meter>,
    sqs: Mutex<SqsUsage>,
    s3: Mutex<S3Usage>,
}

/// How many message bodies one SQS call carried, and their bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bodies {
    pub count: u64,
    pub bytes: u64,
}

impl Bodies {
    pub const NONE: Bodies = Bodies { count: 0, bytes: 0 };

    /// The bodies of these lengths.
    pub fn of(lengths: impl IntoIterator<Item = usize>) -> Bodies {
        lengths.into_iter().fold(Bodies::NONE, |b, len| Bodies { count: b.count + 1, bytes: b.bytes + len as u64 })
    }
}

impl Meters {
    /// One SQS call SQS answered, with the bodies it sent and received.
    pub(crate) fn sqs_call(&self, sent: Bodies, received: Bodies) {
        let mut u = self.sqs.lock().unwrap_or_else(PoisonError::into_inner);
        u.calls += 1;
        u.billed_requests += sqs_billed_requests(sent.bytes.max(received.bytes));
        u.messages_sent += sent.count;
        u.messages_received += received.count;
        u.bytes_sent += sent.bytes;
        u.bytes_received += received.bytes;
    }

    /// One S3 call of this class, putting `bytes_put` bytes.
    pub(crate) fn s3_call(&self, class: S3Class, bytes_put: usize) {
        let mut u = self.s3.lock().unwrap_or_else(PoisonError::into_inner);
        match class {
            S3Class::Write => u.write_requests += 1,
            S3Class::Read => u.read_requests += 1,
            S3Class::Delete => u.delete_requests += 1,
        }
        u.bytes_put += bytes_put as u64;
    }

    pub(crate) fn usage(&self) -> AwsUsage {
        AwsUsage {
            dynamodb: self.dynamodb.usage(),
            sqs: *self.sqs.lock().unwrap_or_else(PoisonError::into_inner),
            s3: *self.s3.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    pub(crate) fn reset(&self) {
        self.dynamodb.reset();
        *self.sqs.lock().unwrap_or_else(PoisonError::into_inner) = SqsUsage::default();
        *self.s3.lock().unwrap_or_else(PoisonError::into_inner) = S3Usage::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_owned())
    }

    fn item(attrs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn strings_count_utf8_bytes_of_name_and_value() {
        assert_eq!(value_size(&s("")), 0);
        assert_eq!(value_size(&s("Ann")), 3);
        assert_eq!(value_size(&s("Grüße")), 7);
        assert_eq!(item_size(&item(&[("name", s("Ann"))])), 7);
        assert_eq!(item_size(&item(&[("größe", s("x"))])), 8);
    }

    #[test]
    fn numbers_take_a_byte_per_base_100_digit_plus_one() {
        for (number, bytes) in [
            ("0", 1),
            ("-0", 1),
            ("0.000", 1),
            ("1", 2),
            ("7", 2),
            ("12", 2),
            ("99", 2),
            ("100", 2),
            ("1E+2", 2),
            ("1500", 2),
            ("1.5e3", 2),
            ("101", 3),
            ("120", 3),  // 1|20
            ("12.5", 3), // 12|50
            ("0.5", 2),
            ("0.05", 2),
            ("0.005", 2), // 00|50 → one pair after the leading zero pair
            ("00012", 2),
            ("12.50", 3),
            ("1700000000", 2), // a ttl: 17|00|00|00|00
            ("1099511627776", 8),
            ("18446744073709551615", 11),
            ("-1", 3),
            ("-12.5", 4),
            ("-1E-130", 3),
            ("+42", 2),
            ("12345678901234567890123456789012345678", 20),
            ("-12345678901234567890123456789012345678", 21),
            ("-1.2345678901234567890123456789012345678", 21), // 22 by the rule, capped
            ("abc", MAX_NUMBER_BYTES),
            ("1e", MAX_NUMBER_BYTES),
            ("", MAX_NUMBER_BYTES),
        ] {
            assert_eq!(number_size(number), bytes, "{number}");
        }
        // AWS's approximation, digits / 2 + 1, agrees wherever pairs and digits line up.
        assert_eq!(item_size(&item(&[("v", n("1"))])), 3);
        assert_eq!(item_size(&item(&[("ttl", n("1700000000"))])), 5);
    }

    #[test]
    fn binary_counts_raw_bytes_and_scalars_one_byte() {
        assert_eq!(value_size(&AttributeValue::B(Blob::new(vec![0u8; 10]))), 10);
        assert_eq!(item_size(&item(&[("b", AttributeValue::B(Blob::new(b"abc".to_vec())))])), 4);
        assert_eq!(item_size(&item(&[("ok", AttributeValue::Bool(true))])), 3);
        assert_eq!(item_size(&item(&[("gone", AttributeValue::Null(true))])), 5);
    }

    #[test]
    fn lists_and_maps_cost_three_bytes_plus_one_per_element() {
        assert_eq!(value_size(&AttributeValue::L(vec![])), 3);
        assert_eq!(value_size(&AttributeValue::M(HashMap::new())), 3);
        // 3 + ("a" 1 + 1) + ("b" 1 + 1)
        assert_eq!(value_size(&AttributeValue::L(vec![s("a"), s("b")])), 7);
        // 3 + (key "k" 1 + null 1 + 1)
        assert_eq!(value_size(&AttributeValue::M(item(&[("k", AttributeValue::Null(true))]))), 6);
        // 3 + (key "l" 1 + [3 + (7 (2 bytes) + 1)] + 1)
        let nested = AttributeValue::M(item(&[("l", AttributeValue::L(vec![n("7")]))]));
        assert_eq!(value_size(&nested), 3 + 1 + (3 + 2 + 1) + 1);
        assert_eq!(item_size(&item(&[("tags", AttributeValue::L(vec![s("a"), s("b")]))])), 4 + 7);
    }

    #[test]
    fn sets_sum_their_elements() {
        assert_eq!(value_size(&AttributeValue::Ss(vec!["ab".into(), "c".into()])), 3);
        assert_eq!(value_size(&AttributeValue::Ns(vec!["1".into(), "123".into()])), 2 + 3);
        assert_eq!(value_size(&AttributeValue::Bs(vec![Blob::new(vec![1, 2]), Blob::new(vec![3])])), 3);
    }

    #[test]
    fn writes_round_up_to_1_kb_and_transactions_double() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(write_units(400 * 1024), 400);
        assert_eq!(transact_write_units(1025), 4);
        assert_eq!(transact_write_units(UNKNOWN_ITEM_BYTES), 2);
        assert_eq!(transact_write_units(10), 2);
    }

    #[test]
    fn reads_round_up_to_4_kb_and_eventual_reads_halve() {
        let rru = |bytes, c| read_half_units(bytes, c) as f64 / 2.0;
        assert_eq!(rru(4096, Consistency::Eventual), 0.5);
        assert_eq!(rru(4096, Consistency::Strong), 1.0);
        assert_eq!(rru(4097, Consistency::Eventual), 1.0);
        assert_eq!(rru(4097, Consistency::Strong), 2.0);
        assert_eq!(rru(10 * 1024, Consistency::Strong), 3.0);
        // Nothing found still costs the minimum.
        assert_eq!(rru(0, Consistency::Strong), 1.0);
        assert_eq!(rru(0, Consistency::Eventual), 0.5);
        // A Query sums before rounding: three 1,500-byte items are 4,500 bytes, 2 units (not 3).
        assert_eq!(rru(3 * 1500, Consistency::Strong), 2.0);
        assert_eq!(Consistency::of(true), Consistency::Strong);
        assert_eq!(Consistency::of(false), Consistency::Eventual);
    }

    #[test]
    fn meter_counts_estimates_and_reports_apart() {
        let m = Meter::default();
        let reported = |read: Option<f64>, write: Option<f64>, total: f64| {
            ConsumedCapacity::builder()
                .set_read_capacity_units(read)
                .set_write_capacity_units(write)
                .capacity_units(total)
                .build()
        };
        m.read(1025, Consistency::Strong, Some(&reported(Some(1.0), None, 1.0)));
        m.read(4097, Consistency::Eventual, None);
        m.write(1025, Some(&reported(None, None, 2.0)));
        m.transact(&[1025, 10, UNKNOWN_ITEM_BYTES], &[]);
        m.transact(&[10], &[reported(None, Some(2.0), 2.0)]);
        let u = m.usage();
        assert_eq!(
            u,
            Usage {
                requests_read: 2,
                requests_write: 1,
                requests_transact: 2,
                rru: 2.0,
                wru: 2 + (4 + 2 + 2) + 2,
                transact_items: 4,
                reported_rcu: 1.0,
                reported_wcu: 4.0,
                requests_reported: 3,
            }
        );
        m.reset();
        assert_eq!(m.usage(), Usage::default());
    }

    #[test]
    fn batch_reads_round_each_item_on_its_own() {
        let m = Meter::default();
        // AWS's example: a 1.5 KB and a 6.5 KB item are 4 KB + 8 KB, 3 units, not the 2 their sum would be; a key
        // that found nothing costs the GetItem minimum.
        m.batch_read(&[1536, 6656, 0], Consistency::Strong, &[]);
        assert_eq!(m.usage(), Usage { requests_read: 1, rru: 4.0, ..Usage::default() });
        let reported = ConsumedCapacity::builder().table_name("t").capacity_units(3.0).build();
        m.batch_read(&[10, 10], Consistency::Eventual, std::slice::from_ref(&reported));
        let u = m.usage();
        assert_eq!((u.requests_read, u.rru, u.reported_rcu, u.requests_reported), (2, 5.0, 3.0, 1));
        // A call that processed nothing (every key left for later) costs nothing but the request.
        m.batch_read(&[], Consistency::Strong, &[]);
        assert_eq!((m.usage().requests_read, m.usage().rru), (3, 5.0));
    }

    #[test]
    fn dollars_use_on_demand_list_prices() {
        let million_each = Usage { wru: 1_000_000, rru: 1_000_000.0, ..Usage::default() };
        assert!((million_each.dollars() - 0.75).abs() < 1e-12);
        let u = Usage { wru: 2, rru: 0.5, ..Usage::default() };
        assert!((u.dollars() - (2.0 * 0.625 + 0.5 * 0.125) / 1e6).abs() < 1e-18);
        assert_eq!(Usage::default().dollars(), 0.0);
    }

    #[test]
    fn sqs_bills_each_started_64_kib_of_payload_at_least_once() {
        assert_eq!(sqs_billed_requests(0), 1);
        assert_eq!(sqs_billed_requests(1), 1);
        assert_eq!(sqs_billed_requests(64 * 1024), 1);
        assert_eq!(sqs_billed_requests(64 * 1024 + 1), 2);
        assert_eq!(sqs_billed_requests(256 * 1024), 4);
        let m = Meters::default();
        m.sqs_call(Bodies::of([40_000, 40_000]), Bodies::NONE);
        m.sqs_call(Bodies::NONE, Bodies::NONE);
        m.sqs_call(Bodies::NONE, Bodies::of([10, 20]));
        let u = m.usage().sqs;
        assert_eq!((u.calls, u.billed_requests, u.messages_sent, u.messages_received), (3, 4, 2, 2));
        assert_eq!((u.bytes_sent, u.bytes_received), (80_000, 30));
        assert!((m.usage().dollars() - 4.0 * 0.40 / 1e6).abs() < 1e-15);
    }

    #[test]
    fn s3_prices_writes_and_reads_apart_and_deletes_free() {
        let m = Meters::default();
        m.s3_call(S3Class::Write, 1000);
        m.s3_call(S3Class::Read, 0);
        m.s3_call(S3Class::Read, 0);
        m.s3_call(S3Class::Delete, 0);
        let u = m.usage().s3;
        assert_eq!((u.write_requests, u.read_requests, u.delete_requests, u.bytes_put), (1, 2, 1, 1000));
        assert!((u.dollars() - (0.005 + 2.0 * 0.0004) / 1000.0).abs() < 1e-15);
        m.reset();
        assert_eq!(m.usage(), AwsUsage::default());
    }

    #[test]
    fn a_table_meter_adds_into_its_clients_total_and_resets_alone() {
        let total = Arc::new(Meter::default());
        let (a, b) = (Meter::within(total.clone()), Meter::within(total.clone()));
        a.write(100, None);
        b.write(3000, None);
        assert_eq!((a.usage().wru, b.usage().wru, total.usage().wru), (1, 3, 4));
        a.reset();
        assert_eq!((a.usage().wru, total.usage().wru), (0, 4));
    }
}

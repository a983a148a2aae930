//! Governance reporting: per source, event name and UTC hour, how many events governance accepted, stripped of
//! properties, quarantined, acted on for PII or dropped. Ingest adds to the counters after a request's events are
//! queued ([`RequestStats`] → [`CounterUpdate`]s, one per distinct event name, applied with
//! [`TableStore::add`]); the management API and `tributary sources stats` read them back over a time window
//! ([`read`] → [`Report`]).
//!
//! Layout, in the profile table:
//! - pk `stats#<source id>`;
//! - sk `<YYYY-MM-DDTHH>#<first 16 hex digits of SHA-256(event name)>`: the UTC hour the request was received in
//!   (the server's clock, not the event's timestamp, which the client controls), then the name's hash, so a sort key
//!   has a bounded length and a window is one contiguous range of a partition;
//! - attributes `name` (the event name of a track event, `(identify)`, `(page)` and so on for the other types), the
//!   counters of [`STORED_COUNTERS`] and an expiry [`TTL_DAYS`] after the hour.
//!
//! The [`SUPPRESSED`] counter (events of erased subjects, dropped before governance: see
//! [`crate::dsr::suppression`]) came later than the others: an item without it reads as 0, and a report shows it
//! only when it is not 0, so reports of sources with no suppressed events read exactly as they always did.
//!
//! Counters are approximate in one direction only: a request the SDK retries after a lost 200 is counted twice, as
//! its events are queued twice. Event names are part of the tracking plan, not event data, so they may be stored
//! and shown; no other event value is.
//!
//! Everything here is pure except [`read`], which only goes through the [`TableStore`] port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

use super::policy::{Governed, Outcome};
use crate::ports::{Item, ItemKey, PortError, TableStore};

/// First part of every stats partition key.
pub const PK_PREFIX: &str = "stats#";
/// Attribute holding the readable event name.
pub const NAME_ATTR: &str = "name";
/// The counters every report shows, in report order (the columns of `tributary sources stats`).
pub const COUNTERS: [&str; 5] = ["accepted", "dropped_properties", "quarantined", "pii_actioned", "dropped"];
/// The counter of events dropped because an identifier of theirs is suppressed (its subject erased). Shown in a
/// report only when not 0.
pub const SUPPRESSED: &str = "suppressed";
/// Every counter attribute a stats item may hold: [`COUNTERS`], then [`SUPPRESSED`].
pub const STORED_COUNTERS: [&str; 6] =
    ["accepted", "dropped_properties", "quarantined", "pii_actioned", "dropped", SUPPRESSED];
/// How long an hour's counters are kept (DynamoDB TTL, the same locally).
pub const TTL_DAYS: i64 = 400;
/// The window of a report when no `since` is given: the 24 hours before `until`.
pub const DEFAULT_WINDOW: Duration = Duration::DAY;
/// Most distinct event names one request writes counters for; the others are counted under [`OTHER_NAME`], so a
/// batch of made-up names costs a bounded number of writes.
pub const MAX_NAMES_PER_REQUEST: usize = 100;
/// The name the names past [`MAX_NAMES_PER_REQUEST`] are counted under.
pub const OTHER_NAME: &str = "(other)";
/// Longest stored event name (bytes, cut at a character boundary). The hash in the sort key covers the whole name.
pub const MAX_NAME_BYTES: usize = 512;
/// Items read per query page.
const PAGE: usize = 1000;
/// Hex digits of the name hash in a sort key.
const NAME_HASH_HEX: usize = 16;

/// What governance did to events: each event adds 1 to exactly one of `accepted`, `quarantined`, `dropped` and
/// `suppressed`, and 1 to `dropped_properties` and to `pii_actioned` when that applies to it too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Queued (possibly minimized or with PII hashed or redacted).
    pub accepted: u64,
    /// Lost at least one property or trait (allow-list minimization or the plan's `drop_properties`).
    pub dropped_properties: u64,
    /// Held back by the tracking plan.
    pub quarantined: u64,
    /// Had at least one PII finding (whatever the action).
    pub pii_actioned: u64,
    /// Dropped (the `drop_event` PII action).
    pub dropped: u64,
    /// Dropped before governance because an identifier of the event is suppressed (its subject erased). Left out
    /// of the JSON form when 0 (and read as 0 when absent), so that reports stay as they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Counts {
    /// The counts of one governed event.
    pub fn of(governed: &Governed) -> Counts {
        let mut c = Counts::default();
        match governed.outcome {
            Outcome::Accept => c.accepted = 1,
            Outcome::Quarantine { .. } => c.quarantined = 1,
            Outcome::Drop { .. } => c.dropped = 1,
        }
        c.dropped_properties = u64::from(governed.dropped_properties > 0);
        c.pii_actioned = u64::from(governed.pii.findings_by_kind.values().any(|n| *n > 0));
        c
    }

    /// The counts of one event dropped as suppressed.
    pub fn suppressed() -> Counts {
        Counts { suppressed: 1, ..Counts::default() }
    }

    /// Adds `other` in place (saturating).
    pub fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(other.stored_values()) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The counters in [`COUNTERS`] order (the report's columns; `suppressed` is apart).
    pub fn values(&self) -> [u64; 5] {
        [self.accepted, self.dropped_properties, self.quarantined, self.pii_actioned, self.dropped]
    }

    /// Every counter, in [`STORED_COUNTERS`] order.
    pub fn stored_values(&self) -> [u64; 6] {
        [self.accepted, self.dropped_properties, self.quarantined, self.pii_actioned, self.dropped, self.suppressed]
    }

    fn fields_mut(&mut self) -> [&mut u64; 6] {
        [
            &mut self.accepted,
            &mut self.dropped_properties,
            &mut self.quarantined,
            &mut self.pii_actioned,
            &mut self.dropped,
            &mut self.suppressed,
        ]
    }

    pub fn is_zero(&self) -> bool {
        self.stored_values().iter().all(|v| *v == 0)
    }

    /// The non-zero counters as [`TableStore::add`] deltas.
    pub fn deltas(&self) -> Vec<(String, i64)> {
        STORED_COUNTERS
            .iter()
            .zip(self.stored_values())
            .filter(|(_, v)| *v > 0)
            .map(|(name, v)| ((*name).to_owned(), i64::try_from(v).unwrap_or(i64::MAX)))
            .collect()
    }

    /// The counters of a stored item; a missing, negative or non-numeric counter reads as 0.
    pub fn from_attrs(attrs: &Map<String, Value>) -> Counts {
        let get = |name: &str| {
            match attrs.get(name) {
                Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64)),
                _ => None,
            }
            .unwrap_or(0)
        };
        Counts {
            accepted: get("accepted"),
            dropped_properties: get("dropped_properties"),
            quarantined: get("quarantined"),
            pii_actioned: get("pii_actioned"),
            dropped: get("dropped"),
            suppressed: get(SUPPRESSED),
        }
    }
}

/// The name an event is counted under: a track event's `event` (cut to [`MAX_NAME_BYTES`]), `(track)` when it has
/// none, and `(identify)`, `(page)`, `(screen)`, `(group)`, `(alias)` for the other types.
pub fn event_name(event: &Map<String, Value>) -> String {
    match event.get("type").and_then(Value::as_str) {
        Some("track") => match event.get("event").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            Some(name) => truncate(name, MAX_NAME_BYTES).to_owned(),
            None => "(track)".to_owned(),
        },
        Some(t @ ("identify" | "page" | "screen" | "group" | "alias")) => format!("({t})"),
        _ => "(unknown)".to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `stats#<source>`.
pub fn partition(source_id: &str) -> String {
    format!("{PK_PREFIX}{source_id}")
}

/// The UTC hour of `t` as `YYYY-MM-DDTHH` (sorts as it reads).
pub fn hour_of(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}T{:02}", t.year(), u8::from(t.month()), t.day(), t.hour())
}

/// `<hour>#<sha256(name)[..16]>`.
pub fn sort_key(hour: &str, name: &str) -> String {
    let hash = crate::sha256_hex(name.as_bytes());
    format!("{hour}#{}", &hash[..NAME_HASH_HEX])
}

/// The key of the counters of `name` at `t`'s hour.
pub fn key(source_id: &str, t: OffsetDateTime, name: &str) -> ItemKey {
    ItemKey::new(partition(source_id), sort_key(&hour_of(t), name))
}

/// The expiry of the counters of `t`'s hour: [`TTL_DAYS`] after the start of the hour (epoch seconds).
pub fn expires_at(t: OffsetDateTime) -> i64 {
    let ts = t.unix_timestamp();
    ts - ts.rem_euclid(3600) + TTL_DAYS * 86_400
}

/// One [`TableStore::add`] to make.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterUpdate {
    pub key: ItemKey,
    pub deltas: Vec<(String, i64)>,
    /// The readable name ([`NAME_ATTR`]).
    pub set: Map<String, Value>,
    pub expires_at: i64,
}

/// The counts of one request's governed events, by event name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStats {
    by_name: BTreeMap<String, Counts>,
}

impl RequestStats {
    /// Counts one governed event under its name ([`event_name`], read before governance changes the event).
    pub fn record(&mut self, name: String, counts: Counts) {
        let name = if self.by_name.len() >= MAX_NAMES_PER_REQUEST && !self.by_name.contains_key(&name) {
            OTHER_NAME.to_owned()
        } else {
            name
        };
        self.by_name.entry(name).or_default().add(&counts);
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Distinct names counted.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The counts of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Counts> {
        self.by_name.get(name)
    }

    /// One update per distinct name, at the hour of `received_at`.
    pub fn updates(&self, source_id: &str, received_at: OffsetDateTime) -> Vec<CounterUpdate> {
        let expiry = expires_at(received_at);
        self.by_name
            .iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|(name, counts)| {
                let mut set = Map::new();
                set.insert(NAME_ATTR.to_owned(), Value::String(name.clone()));
                CounterUpdate {
                    key: key(source_id, received_at, name),
                    deltas: counts.deltas(),
                    set,
                    expires_at: expiry,
                }
            })
            .collect()
    }
}

/// Why a report window was refused. Messages never quote the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("since must be an RFC 3339 time, e.g. 2025-03-10T12:00:00Z")]
    Since,
    #[error("until must be an RFC 3339 time, e.g. 2025-03-10T12:00:00Z")]
    Until,
    #[error("since must be before until")]
    Empty,
}

/// A report window `[since, until)`. Counters are kept per hour, so an hour counts when it overlaps the window: the
/// report covers whole hours, from the one holding `since` to the one holding the last instant before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
}

impl Window {
    /// The window of optional RFC 3339 bounds: `until` defaults to `now`, `since` to [`DEFAULT_WINDOW`] before
    /// `until`.
    pub fn parse(since: Option<&str>, until: Option<&str>, now: OffsetDateTime) -> Result<Window, WindowError> {
        let until = match until {
            Some(s) => parse_time(s).ok_or(WindowError::Until)?,
            None => now,
        };
        let since = match since {
            Some(s) => parse_time(s).ok_or(WindowError::Since)?,
            None => until.checked_sub(DEFAULT_WINDOW).ok_or(WindowError::Empty)?,
        };
        if since >= until {
            return Err(WindowError::Empty);
        }
        // Both bounds are within years 1..=9999 in UTC (`parse_time`), but the default `since` may fall before.
        if since.year() < 1 {
            return Err(WindowError::Since);
        }
        Ok(Window { since, until })
    }

    /// The first hour in the window.
    pub fn first_hour(&self) -> String {
        hour_of(self.since)
    }

    /// The last hour in the window (the one holding the last instant before `until`).
    pub fn last_hour(&self) -> String {
        hour_of(self.until.checked_sub(Duration::NANOSECOND).unwrap_or(self.until))
    }

    /// Whether the hour `YYYY-MM-DDTHH` overlaps the window.
    pub fn contains_hour(&self, hour: &str) -> bool {
        hour >= self.first_hour().as_str() && hour <= self.last_hour().as_str()
    }
}

/// An RFC 3339 time, in UTC; a `+` offset that a query string turned into a space is taken back. `None` also for
/// a time that is outside years 1..=9999 once in UTC (`9999-12-31T23:00:00-01:00`), which RFC 3339 cannot print.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&s.replace(' ', "+"), &Rfc3339).ok())?;
    t.checked_to_offset(UtcOffset::UTC).filter(|t| (1..=9999).contains(&t.year()))
}

/// RFC 3339 in UTC.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap_or_default()
}

/// The counters of one event name over a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStats {
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A source's counters over a window: the body of `GET /v1/sources/{id}/stats` and of `tributary sources stats
/// --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub source: String,
    /// RFC 3339, UTC.
    pub since: String,
    /// RFC 3339, UTC.
    pub until: String,
    /// Sorted by name.
    pub events: Vec<EventStats>,
    pub totals: Counts,
}

/// The hour of a stats sort key, if it has the layout's shape.
fn hour_of_sort_key(sk: &str) -> Option<&str> {
    sk.split_once('#').map(|(hour, _)| hour).filter(|h| h.len() == 13)
}

/// Sums the stats items of one source over `window`, by name (sorted), with the totals. Items outside the window
/// or not shaped like stats items are skipped.
pub fn aggregate<'a>(items: impl IntoIterator<Item = &'a Item>, window: &Window) -> (Vec<EventStats>, Counts) {
    let (first, last) = (window.first_hour(), window.last_hour());
    let mut by_name: BTreeMap<String, Counts> = BTreeMap::new();
    for item in items {
        let Some(hour) = hour_of_sort_key(&item.key.sk) else { continue };
        if hour < first.as_str() || hour > last.as_str() {
            continue;
        }
        let name = match item.attrs.get(NAME_ATTR).and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => "(unknown)".to_owned(),
        };
        by_name.entry(name).or_default().add(&Counts::from_attrs(&item.attrs));
    }
    let mut totals = Counts::default();
    let events = by_name
        .into_iter()
        .map(|(name, counts)| {
            totals.add(&counts);
            EventStats { name, counts }
        })
        .collect();
    (events, totals)
}

/// The longest common prefix of two ASCII hour strings.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    &a[..n]
}

/// Reads `source_id`'s counters over `window` from `table`: one query over the window's hours (pages of 1,000),
/// stopping at its last hour.
pub async fn read<T: TableStore>(table: &T, source_id: &str, window: &Window) -> Result<Report, PortError> {
    read_pages(table, source_id, window, PAGE).await
}

async fn read_pages<T: TableStore>(
    table: &T,
    source_id: &str,
    window: &Window,
    page_size: usize,
) -> Result<Report, PortError> {
    let pk = partition(source_id);
    let (first, last) = (window.first_hour(), window.last_hour());
    // Sort keys of the window share at least this prefix; `first` sorts just before every key of its own hour.
    let prefix = common_prefix(&first, &last);
    let mut items = Vec::new();
    let mut after = Some(first.clone());
    while let Some(start) = after.take() {
        let page = table.query(&pk, prefix, Some(&start), page_size).await?;
        let past_end =
            page.items.last().and_then(|i| hour_of_sort_key(&i.key.sk)).is_some_and(|hour| hour > last.as_str());
        items.extend(page.items);
        if !past_end {
            after = page.next;
        }
    }
    let (events, totals) = aggregate(&items, window);
    Ok(Report {
        source: source_id.to_owned(),
        since: format_time(window.since),
        until: format_time(window.until),
        events,
        totals,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::governance::pii::PiiOutcome;
    use crate::governance::PiiKind;

    fn governed(outcome: Outcome, dropped_properties: usize, pii: usize) -> Governed {
        let mut p = PiiOutcome::default();
        if pii > 0 {
            p.findings_by_kind.insert(PiiKind::Email, pii);
        }
        Governed { outcome, violations: Vec::new(), dropped_properties, pii: p }
    }

    fn event(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn each_event_counts_once_by_outcome_plus_its_side_effects() {
        assert_eq!(Counts::of(&governed(Outcome::Accept, 0, 0)), Counts { accepted: 1, ..Counts::default() });
        assert_eq!(
            Counts::of(&governed(Outcome::Accept, 2, 3)),
            Counts { accepted: 1, dropped_properties: 1, pii_actioned: 1, ..Counts::default() }
        );
        assert_eq!(
            Counts::of(&governed(Outcome::Quarantine { plan_version: "1".into() }, 0, 0)),
            Counts { quarantined: 1, ..Counts::default() }
        );
        assert_eq!(
            Counts::of(&governed(Outcome::Drop { reason: "pii" }, 0, 1)),
            Counts { dropped: 1, pii_actioned: 1, ..Counts::default() }
        );
    }

    #[test]
    fn names_of_events() {
        assert_eq!(event_name(&event(json!({"type": "track", "event": "Order Completed"}))), "Order Completed");
        assert_eq!(event_name(&event(json!({"type": "track", "event": ""}))), "(track)");
        assert_eq!(event_name(&event(json!({"type": "track"}))), "(track)");
        assert_eq!(event_name(&event(json!({"type": "identify", "event": "x"}))), "(identify)");
        assert_eq!(event_name(&event(json!({"type": "page", "name": "Home"}))), "(page)");
        assert_eq!(event_name(&event(json!({"type": "nonsense"}))), "(unknown)");
        assert_eq!(event_name(&event(json!({}))), "(unknown)");
        let long = "é".repeat(MAX_NAME_BYTES);
        let cut = event_name(&event(json!({"type": "track", "event": long})));
        assert!(cut.len() <= MAX_NAME_BYTES && cut.len() >= MAX_NAME_BYTES - 1, "{}", cut.len());
    }

    #[test]
    fn keys_are_hour_then_name_hash() {
        let t = datetime!(2025-03-10 12:34:56 +02:00);
        assert_eq!(hour_of(t), "2025-03-10T10");
        let k = key("web", t, "Order Completed");
        assert_eq!(k.pk, "stats#web");
        let hash = crate::sha256_hex(b"Order Completed");
        assert_eq!(k.sk, format!("2025-03-10T10#{}", &hash[..16]));
        assert_eq!(expires_at(t), datetime!(2025-03-10 10:00 UTC).unix_timestamp() + 400 * 86_400);
    }

    #[test]
    fn a_request_makes_one_update_per_name() {
        let t = datetime!(2025-03-10 12:00:01 UTC);
        let mut s = RequestStats::default();
        s.record("Order Completed".into(), Counts::of(&governed(Outcome::Accept, 1, 0)));
        s.record("Order Completed".into(), Counts::of(&governed(Outcome::Accept, 0, 0)));
        s.record("(identify)".into(), Counts::of(&governed(Outcome::Drop { reason: "pii" }, 0, 2)));
        let updates = s.updates("web", t);
        assert_eq!(updates.len(), 2);
        // Sorted by name: "(identify)" first.
        assert_eq!(updates[0].deltas, vec![("pii_actioned".to_owned(), 1), ("dropped".to_owned(), 1)]);
        assert_eq!(updates[0].set.get(NAME_ATTR), Some(&json!("(identify)")));
        assert_eq!(updates[1].deltas, vec![("accepted".to_owned(), 2), ("dropped_properties".to_owned(), 1)]);
        assert_eq!(updates[1].key, key("web", t, "Order Completed"));
        assert_eq!(updates[1].expires_at, expires_at(t));
    }

    #[test]
    fn names_past_the_cap_count_as_other() {
        let mut s = RequestStats::default();
        for i in 0..MAX_NAMES_PER_REQUEST + 5 {
            s.record(format!("e{i}"), Counts { accepted: 1, ..Counts::default() });
        }
        s.record("e0".into(), Counts { accepted: 1, ..Counts::default() });
        assert_eq!(s.len(), MAX_NAMES_PER_REQUEST + 1);
        assert_eq!(s.get(OTHER_NAME).map(|c| c.accepted), Some(5));
        assert_eq!(s.get("e0").map(|c| c.accepted), Some(2));
    }

    #[test]
    fn windows() {
        let now = datetime!(2025-03-10 12:30 UTC);
        let w = Window::parse(None, None, now).expect("default window");
        assert_eq!((w.since, w.until), (datetime!(2025-03-09 12:30 UTC), now));
        assert_eq!((w.first_hour().as_str(), w.last_hour().as_str()), ("2025-03-09T12", "2025-03-10T12"));
        let w = Window::parse(Some("2025-03-10T10:00:00Z"), Some("2025-03-10T12:00:00+00:00"), now).expect("window");
        assert_eq!((w.first_hour().as_str(), w.last_hour().as_str()), ("2025-03-10T10", "2025-03-10T11"));
        assert!(
            w.contains_hour("2025-03-10T11") && !w.contains_hour("2025-03-10T12") && !w.contains_hour("2025-03-10T09")
        );
        // A `+` offset that form decoding turned into a space.
        let w = Window::parse(Some("2025-03-10T12:00:00 02:00"), None, now).expect("space for plus");
        assert_eq!(w.since, datetime!(2025-03-10 10:00 UTC));
        assert_eq!(Window::parse(Some("yesterday"), None, now), Err(WindowError::Since));
        assert_eq!(Window::parse(None, Some("2025-13-01T00:00:00Z"), now), Err(WindowError::Until));
        assert_eq!(
            Window::parse(Some("2025-03-10T12:00:00Z"), Some("2025-03-10T12:00:00Z"), now),
            Err(WindowError::Empty)
        );
        assert_eq!(Window::parse(Some("2025-03-11T00:00:00Z"), None, now), Err(WindowError::Empty));
        // Found by schemathesis: a bound past year 9999 once in UTC used to panic converting it to UTC, and one
        // before year 1 made a report whose `since` was "".
        assert_eq!(Window::parse(None, Some("9999-12-31T23:00:00-01:00"), now), Err(WindowError::Until));
        assert_eq!(Window::parse(Some("0001-01-01T00:00:00+01:00"), None, now), Err(WindowError::Since));
        assert_eq!(Window::parse(None, Some("0001-01-01T05:00:00Z"), now), Err(WindowError::Since));
        let w = Window::parse(Some("0001-01-01T00:00:00Z"), Some("9999-12-31T23:59:59Z"), now).expect("widest");
        assert_eq!((format_time(w.since).as_str(), &format_time(w.until)[..4]), ("0001-01-01T00:00:00Z", "9999"));
    }

    fn stat_item(source: &str, hour: &str, name: &str, counts: Value) -> Item {
        let mut attrs = event(counts);
        attrs.insert(NAME_ATTR.into(), json!(name));
        Item { key: ItemKey::new(partition(source), sort_key(hour, name)), attrs, version: 0, expires_at: None }
    }

    #[test]
    fn aggregation_sums_by_name_within_the_window() {
        let items = [
            stat_item("web", "2025-03-10T09", "A", json!({"accepted": 100})),
            stat_item("web", "2025-03-10T10", "B", json!({"accepted": 1, "quarantined": 2})),
            stat_item("web", "2025-03-10T10", "A", json!({"accepted": 3, "pii_actioned": 1})),
            stat_item("web", "2025-03-10T11", "A", json!({"accepted": 4, "dropped_properties": 2, "dropped": 1})),
            stat_item("web", "2025-03-10T12", "C", json!({"accepted": 100})),
        ];
        let w =
            Window::parse(Some("2025-03-10T10:15:00Z"), Some("2025-03-10T12:00:00Z"), datetime!(2025-03-11 0:00 UTC))
                .expect("window");
        let (events, totals) = aggregate(&items, &w);
        assert_eq!(
            events,
            vec![
                EventStats {
                    name: "A".into(),
                    counts: Counts {
                        accepted: 7,
                        dropped_properties: 2,
                        quarantined: 0,
                        pii_actioned: 1,
                        dropped: 1,
                        suppressed: 0
                    }
                },
                EventStats { name: "B".into(), counts: Counts { accepted: 1, quarantined: 2, ..Counts::default() } },
            ]
        );
        assert_eq!(
            totals,
            Counts { accepted: 8, dropped_properties: 2, quarantined: 2, pii_actioned: 1, dropped: 1, suppressed: 0 }
        );
        let body = serde_json::to_value(&events[1]).expect("serializes");
        assert_eq!(
            body,
            json!({"name": "B", "accepted": 1, "dropped_properties": 0, "quarantined": 2, "pii_actioned": 0, "dropped": 0})
        );
    }

    #[test]
    fn suppressed_events_are_counted_apart_and_reports_without_them_read_as_before() {
        let t = datetime!(2025-03-10 12:00:01 UTC);
        let mut s = RequestStats::default();
        s.record("Order Completed".into(), Counts::suppressed());
        s.record("Order Completed".into(), Counts::suppressed());
        s.record("Order Completed".into(), Counts::of(&governed(Outcome::Accept, 0, 0)));
        s.record("(identify)".into(), Counts::suppressed());
        let updates = s.updates("web", t);
        assert_eq!(updates[0].deltas, vec![("suppressed".to_owned(), 1)]);
        assert_eq!(updates[1].deltas, vec![("accepted".to_owned(), 1), ("suppressed".to_owned(), 2)]);
        assert_eq!(STORED_COUNTERS[..COUNTERS.len()], COUNTERS);
        assert_eq!(STORED_COUNTERS.last(), Some(&SUPPRESSED));

        // Stored and read back: the counter survives; an older item without it reads as 0.
        let item = stat_item("web", "2025-03-10T12", "A", json!({"accepted": 3, "suppressed": 4}));
        assert_eq!(Counts::from_attrs(&item.attrs), Counts { accepted: 3, suppressed: 4, ..Counts::default() });
        let old = stat_item("web", "2025-03-10T12", "B", json!({"accepted": 3}));
        assert_eq!(Counts::from_attrs(&old.attrs).suppressed, 0);
        let w = Window::parse(Some("2025-03-10T00:00:00Z"), Some("2025-03-11T00:00:00Z"), t).expect("window");
        let (events, totals) = aggregate(&[item, old], &w);
        assert_eq!(totals, Counts { accepted: 6, suppressed: 4, ..Counts::default() });
        // JSON: the key only when there is something to say, and reports written before it still parse.
        let a = serde_json::to_value(&events[0]).expect("serializes");
        assert_eq!(a["suppressed"], json!(4));
        let b = serde_json::to_value(&events[1]).expect("serializes");
        assert_eq!(
            b,
            json!({"name": "B", "accepted": 3, "dropped_properties": 0, "quarantined": 0, "pii_actioned": 0, "dropped": 0})
        );
        let parsed: EventStats = serde_json::from_value(b).expect("an older report parses");
        assert_eq!(parsed.counts.suppressed, 0);
        assert!(!Counts::suppressed().is_zero());
    }

    #[test]
    fn counters_read_defensively() {
        let c =
            Counts::from_attrs(&event(json!({"accepted": -3, "dropped": "7", "quarantined": 2.0, "pii_actioned": 5})));
        assert_eq!(c, Counts { quarantined: 2, pii_actioned: 5, ..Counts::default() });
    }

    use crate::testing::MemoryTable as MemTable;

    #[tokio::test]
    async fn read_covers_the_window_and_nothing_else() {
        let table = MemTable::default();
        let base = datetime!(2025-03-10 00:00 UTC);
        // Three days of hourly counters for two names, plus another source.
        for h in 0..72 {
            let at = base + Duration::hours(h);
            for (source, name) in [("web", "A"), ("web", "B"), ("app", "A")] {
                let mut s = RequestStats::default();
                s.record(name.into(), Counts { accepted: 1, quarantined: u64::from(name == "B"), ..Counts::default() });
                for u in s.updates(source, at) {
                    // No expiry: the fixed 2025 dates would already be past their 400-day TTL by the wall clock.
                    table.add(&u.key, &u.deltas, u.set, None).await.expect("add");
                }
            }
        }
        let w = Window::parse(Some("2025-03-11T00:00:00Z"), Some("2025-03-12T00:00:00Z"), base).expect("window");
        let report = read(&table, "web", &w).await.expect("read");
        assert_eq!(report.source, "web");
        assert_eq!((report.since.as_str(), report.until.as_str()), ("2025-03-11T00:00:00Z", "2025-03-12T00:00:00Z"));
        assert_eq!(report.events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(report.events[0].counts, Counts { accepted: 24, ..Counts::default() });
        assert_eq!(report.events[1].counts, Counts { accepted: 24, quarantined: 24, ..Counts::default() });
        assert_eq!(report.totals, Counts { accepted: 48, quarantined: 24, ..Counts::default() });

        // Small pages: the same answer over several queries, and no query past the window's last hour although the
        // window crosses a day (its sort keys share only `2025-03-1`).
        let w = Window::parse(Some("2025-03-10T12:00:00Z"), Some("2025-03-11T12:00:00Z"), base).expect("window");
        let queries = |t: &MemTable| t.queries();
        let before = queries(&table);
        let paged = read_pages(&table, "web", &w, 7).await.expect("read");
        assert_eq!(paged.totals, Counts { accepted: 48, quarantined: 24, ..Counts::default() });
        assert_eq!(queries(&table) - before, 7, "48 items in pages of 7, stopping at the first page past the end");
        let all = Window::parse(Some("2025-03-01T00:00:00Z"), None, base + Duration::days(5)).expect("window");
        let report_all = read_pages(&table, "web", &all, 5).await.expect("read");
        assert_eq!(report_all.totals, Counts { accepted: 144, quarantined: 72, ..Counts::default() });
        let report = read(&table, "nobody", &w).await.expect("read");
        assert!(report.events.is_empty());
        assert_eq!(report.totals, Counts::default());
    }
}

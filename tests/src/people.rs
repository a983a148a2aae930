//! Synthetic people as normalized Segment events, with the truth of who is who.
//!
//! [`generate`] lays out each person's life: 1–3 devices with anonymous browsing before a login (identify, or an
//! alias call), logged-in browsing, later identifies that change traits, optionally a data broker's records keyed
//! by the hashed email, consent signals in Segment's and RudderStack's shapes, blocked junk ids, and families that
//! share a device. Every event is what ingest emits ([`tributary_core::ingest::process`]), so the stream can be fed
//! to the profile pipeline as it is, and [`Stream::truth`] says which identifiers belong together.
//!
//! Guarantees the tests rely on:
//! - no identity limit of the default rules is ever hit by one person (one user id, one email, at most one phone,
//!   at most three devices plus one broker anonymous id): without `shared_devices` the partition does not depend on
//!   the order events are applied in and equals the truth;
//! - a family's borrower uses the owner's first device only a day after the owner logged in on it, so in arrival
//!   order the device stays with its owner and the borrower gets a profile of their own;
//! - every device of a person gets logged in on (identify or alias), and the first login's identify carries the
//!   email, so the broker's hashed email always has something to join.
//!
//! Randomness comes from a small SplitMix64 rather than `rand`, so a seed printed by a failing test reproduces the
//! same stream whatever `rand` version the workspace moves to.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tributary_core::config::DataPartyClass;
use tributary_core::identity::{IdType, Identifier};
use tributary_core::ingest::timestamp::format_timestamp;
use tributary_core::profile::{ConsentPurpose, ConsentSettings};
use uuid::Uuid;

/// Source id of browser devices.
pub const WEB: &str = "web";
/// Source id of mobile app devices.
pub const APP: &str = "app";
/// Source id of the data broker's hashed-email records.
pub const BROKER: &str = "broker";
/// Blocked values the generator puts in id fields with `junk_ids` (`""` only in `context.device.id`: ingest drops
/// an empty `userId`/`anonymousId`).
pub const JUNK_VALUES: [&str; 6] = ["null", "undefined", "0", "anonymous", "-1", ""];
/// A trait every identify sends with a varying value; make it `set_once` to test that rule.
pub const SET_ONCE_TRAIT: &str = "acquisition_channel";

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2026-01-05T00:00:00Z: people start within a week after it.
const EPOCH_MS: i64 = 1_767_571_200_000;

const FIRST_NAMES: [&str; 10] = ["Ann", "Bob", "Chloé", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivo", "Jun"];
const LAST_NAMES: [&str; 8] = ["Lee", "Okafor", "Smith", "Müller", "Rossi", "Tanaka", "Novak", "Diaz"];
const DOMAINS: [&str; 4] = ["example.com", "Example.COM", "mail.example.org", "corp.example.net"];
const PLANS: [&str; 4] = ["free", "starter", "pro", "team"];
const CHANNELS: [&str; 4] = ["ad", "organic", "referral", "newsletter"];
const PAGES: [(&str, &str); 4] = [("Home", "/"), ("Pricing", "/pricing"), ("Docs", "/docs"), ("Blog", "/blog")];
const SCREENS: [&str; 4] = ["Feed", "Settings", "Search", "Cart"];
const TRACKS: [&str; 5] = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Video Played"];
/// The consent update event Segment's consent manager sends.
const CONSENT_EVENT: &str = "Segment Consent Preference Updated";

/// What to generate. The default is the order-independent mix: everything but shared devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeopleSpec {
    pub people: usize,
    pub seed: u64,
    /// Pairs of people (a family) where the second also logs in on the first one's first device.
    pub shared_devices: bool,
    /// Blocked values (`"null"`, `"0"`, …) in id fields next to real ids, and a few junk-only events.
    pub junk_ids: bool,
    /// Broker identifies without a user id, keyed by `context.externalIds` sha256 emails.
    pub hashed_broker: bool,
    /// Some devices log in with an alias call instead of an identify.
    pub aliases: bool,
    /// Consent signals (`context.consent.categoryPreferences`, `context.consentManagement`) changing over time.
    pub consent: bool,
}

impl Default for PeopleSpec {
    fn default() -> Self {
        PeopleSpec {
            people: 20,
            seed: 1,
            shared_devices: false,
            junk_ids: true,
            hashed_broker: true,
            aliases: true,
            consent: true,
        }
    }
}

/// One normalized event and the source it arrives from.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    /// [`WEB`], [`APP`] or [`BROKER`].
    pub source: String,
    pub event: Map<String, Value>,
}

/// A device a person used but another person (the owner, a family member) logged in on first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Borrowed {
    /// Index of the owner in [`Stream::truth`].
    pub owner: usize,
    pub anonymous_id: String,
    pub device_id: String,
}

/// The truth about one person: the identifiers their profile must hold (values as normalized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub user_ids: Vec<String>,
    /// One per own device, then the broker's ([`Person::broker_anonymous_ids`]).
    pub anonymous_ids: Vec<String>,
    pub device_ids: Vec<String>,
    /// Trimmed, lowercased.
    pub emails: Vec<String>,
    /// E.164.
    pub phones: Vec<String>,
    /// The broker's anonymous ids for this person (also in `anonymous_ids`): they join only through the hashed email.
    pub broker_anonymous_ids: Vec<String>,
    /// The family device this person also logged in on; its ids belong to the owner's profile, not this one.
    pub borrowed: Option<Borrowed>,
}

impl Person {
    /// Every identifier the person's profile holds, hashed email/phone forms included.
    pub fn identifiers(&self) -> BTreeSet<Identifier> {
        let id = |kind: IdType, value: &String| Identifier { kind, value: value.clone() };
        let mut out = BTreeSet::new();
        out.extend(self.user_ids.iter().map(|v| id(IdType::UserId, v)));
        out.extend(self.anonymous_ids.iter().map(|v| id(IdType::AnonymousId, v)));
        out.extend(self.device_ids.iter().map(|v| id(IdType::DeviceId, v)));
        for v in &self.emails {
            let email = id(IdType::Email, v);
            out.insert(email.hashed());
            out.insert(email);
        }
        for v in &self.phones {
            let phone = id(IdType::Phone, v);
            out.insert(phone.hashed());
            out.insert(phone);
        }
        out
    }
}

/// A generated stream: events in arrival order (by `receivedAt`) and the people behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub events: Vec<GenEvent>,
    pub truth: Vec<Person>,
}

impl Stream {
    /// The expected partition (each person's [`Person::identifiers`]), sorted like
    /// [`tributary_core::identity::ReferenceGraph::partition`].
    pub fn truth_partition(&self) -> Vec<BTreeSet<Identifier>> {
        let mut out: Vec<BTreeSet<Identifier>> = self.truth.iter().map(Person::identifiers).collect();
        out.sort();
        out
    }
}

/// The data-party class of a generated source: the broker is third party.
pub fn class_of(source: &str) -> DataPartyClass {
    if source == BROKER {
        DataPartyClass::ThirdParty
    } else {
        DataPartyClass::FirstParty
    }
}

/// Consent purposes matching the generator's signals: Segment categories and OneTrust-style ids map onto
/// `advertising` and `analytics`; `Functional Cookies` is left unmapped (→ `functional_cookies`).
pub fn consent_settings() -> ConsentSettings {
    let purpose = |id: &str, aliases: &[&str]| ConsentPurpose {
        id: id.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    ConsentSettings {
        purposes: vec![
            purpose("advertising", &["Advertising", "C0004"]),
            purpose("analytics", &["Analytics", "C0002"]),
        ],
        ..ConsentSettings::default()
    }
}

/// Generates the people of `spec` and their events.
pub fn generate(spec: &PeopleSpec) -> Stream {
    let mut gen = Gen { spec, rng: Rng::new(spec.seed), messages: 0, drafts: Vec::new() };
    let mut lives: Vec<Life> = (0..spec.people).map(|i| gen.live(i)).collect();
    let mut borrowed: Vec<Option<Borrowed>> = vec![None; spec.people];
    if spec.shared_devices {
        for owner in (0..spec.people.saturating_sub(1)).step_by(2) {
            if gen.rng.chance(0.5) {
                let (left, right) = lives.split_at_mut(owner + 1);
                borrowed[owner + 1] = Some(gen.borrow(&left[owner], owner, &mut right[0]));
            }
        }
    }
    let truth = lives.iter().zip(borrowed).map(|(life, borrowed)| life.person(borrowed)).collect();

    // Arrival order; generation order breaks ties so the stream is deterministic.
    let mut drafts = std::mem::take(&mut gen.drafts);
    drafts.sort_by_key(|d| (d.received, d.order));
    let events = drafts.into_iter().map(Draft::finish).collect();
    Stream { events, truth }
}

/// A uniform random permutation of the stream's events.
pub fn shuffled(stream: &Stream, seed: u64) -> Vec<GenEvent> {
    let mut events = stream.events.clone();
    Rng::new(seed).shuffle(&mut events);
    events
}

/// `events` with about `fraction` of them delivered again (same `messageId`, same content) at a random later
/// position, as an at-least-once queue does.
pub fn with_redeliveries(events: &[GenEvent], fraction: f64, seed: u64) -> Vec<GenEvent> {
    let mut rng = Rng::new(seed);
    // after[k]: copies delivered right after the original at position k.
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    for i in 0..events.len() {
        if rng.chance(fraction) {
            let at = rng.range(i as i64, events.len() as i64 - 1) as usize;
            after[at].push(i);
        }
    }
    let mut out = Vec::with_capacity(events.len() * 2);
    for (k, event) in events.iter().enumerate() {
        out.push(event.clone());
        out.extend(after[k].iter().map(|&i| events[i].clone()));
    }
    out
}

/// SplitMix64: tiny, fast and stable forever.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as i64 - 1) as usize]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as i64) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Debug, Clone)]
struct Device {
    source: &'static str,
    anonymous_id: String,
    device_id: String,
    /// How far the device's clock is off, ms: `originalTimestamp` and `sentAt` are client times.
    skew: i64,
}

/// A person while their events are being written.
#[derive(Debug, Clone)]
struct Life {
    user_id: String,
    /// Normalized; identifies send case/whitespace variants of it.
    email: String,
    /// (as sent, E.164)
    phone: Option<(String, String)>,
    name: String,
    plan: usize,
    logins: u64,
    ltv_cents: i64,
    age: i64,
    devices: Vec<Device>,
    broker_ids: Vec<String>,
    /// Time of the person's latest event, ms.
    clock: i64,
    /// (timestamp, receivedAt) of the latest event, for deliberate collisions.
    last: Option<(i64, i64)>,
    /// When the person first logged in (on `devices[0]`).
    first_login: i64,
    advertising: bool,
    analytics: bool,
}

impl Life {
    fn person(&self, borrowed: Option<Borrowed>) -> Person {
        let mut anonymous_ids: Vec<String> = self.devices.iter().map(|d| d.anonymous_id.clone()).collect();
        anonymous_ids.extend(self.broker_ids.iter().cloned());
        Person {
            user_ids: vec![self.user_id.clone()],
            anonymous_ids,
            device_ids: self.devices.iter().map(|d| d.device_id.clone()).collect(),
            emails: vec![self.email.clone()],
            phones: self.phone.iter().map(|(_, e164)| e164.clone()).collect(),
            broker_anonymous_ids: self.broker_ids.clone(),
            borrowed,
        }
    }
}

/// An event before its times are written.
struct Draft {
    order: usize,
    source: &'static str,
    ts: i64,
    received: i64,
    skew: i64,
    event: Map<String, Value>,
}

impl Draft {
    fn finish(self) -> GenEvent {
        let Draft { source, ts, received, skew, mut event, .. } = self;
        // Consistent with ingest's skew correction: timestamp = receivedAt - (sentAt - originalTimestamp).
        let original = ts + skew;
        event.insert("timestamp".into(), Value::String(rfc3339(ts)));
        event.insert("originalTimestamp".into(), Value::String(rfc3339(original)));
        event.insert("sentAt".into(), Value::String(rfc3339(original + (received - ts))));
        event.insert("receivedAt".into(), Value::String(rfc3339(received)));
        GenEvent { source: source.to_string(), event }
    }
}

fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("generated times are sane");
    format_timestamp(t)
}

/// Who sends an event: user id (when logged in) and the device.
#[derive(Clone, Copy)]
struct As<'a> {
    user_id: Option<&'a str>,
    device: &'a Device,
}

struct Gen<'s> {
    spec: &'s PeopleSpec,
    rng: Rng,
    messages: u64,
    drafts: Vec<Draft>,
}

impl Gen<'_> {
    fn uuid(&self, name: &str) -> Uuid {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("tributary-people/{}/{name}", self.spec.seed).as_bytes())
    }

    fn hex(&mut self, digits: usize) -> String {
        let hex = format!("{:016x}", self.rng.next_u64());
        hex[..digits.min(16)].to_string()
    }

    /// One person's whole life on their own devices, plus the broker's records about them.
    fn live(&mut self, i: usize) -> Life {
        let first = *self.rng.pick(&FIRST_NAMES);
        let last = *self.rng.pick(&LAST_NAMES);
        let domain = self.rng.pick(&DOMAINS).to_lowercase();
        let email = format!("{}.{}{i}@{domain}", ascii_lower(first), ascii_lower(last));
        let phone = self.rng.chance(0.6).then(|| self.phone(i));
        let start = EPOCH_MS + self.rng.range(0, 7 * DAY);
        let mut life = Life {
            user_id: format!("usr_{i:05}_{}", self.hex(8)),
            email,
            phone,
            name: format!("{first} {last}"),
            plan: 0,
            logins: 0,
            ltv_cents: 0,
            age: self.rng.range(18, 80),
            devices: Vec::new(),
            broker_ids: Vec::new(),
            clock: start,
            last: None,
            first_login: start,
            advertising: self.rng.chance(0.5),
            analytics: self.rng.chance(0.7),
        };
        let devices = self.rng.range(1, 3) as usize;
        for k in 0..devices {
            let source = if self.rng.chance(0.5) { WEB } else { APP };
            let anonymous_id = self.uuid(&format!("anonymous/{i}/{k}")).to_string();
            let device_id = match source {
                WEB => format!("web-{}", self.hex(16)),
                _ => self.uuid(&format!("device/{i}/{k}")).to_string().to_uppercase(),
            };
            let skew = self.rng.range(-90 * SECOND, 90 * SECOND);
            life.devices.push(Device { source, anonymous_id, device_id, skew });
        }
        for k in 0..devices {
            if k > 0 {
                life.clock += self.rng.range(2 * HOUR, 3 * DAY);
            }
            self.use_device(&mut life, k);
        }
        if self.spec.hashed_broker && self.rng.chance(0.6) {
            self.broker(&mut life, start);
        }
        if self.spec.junk_ids && self.rng.chance(0.25) {
            self.junk_only(&mut life);
        }
        life
    }

    /// A phone as a person types it (international form, with separators) and its E.164 form.
    fn phone(&mut self, i: usize) -> (String, String) {
        let sub = i % 10_000;
        let block = i / 10_000;
        match self.rng.range(0, 2) {
            0 => {
                let block = 7946 + block;
                let prefix = if self.rng.chance(0.5) { "+44" } else { "0044" };
                (format!("{prefix} 20 {block} {sub:04}"), format!("+4420{block}{sub:04}"))
            }
            1 => {
                let area = 415 + block;
                (format!("+1 ({area}) 555-{sub:04}"), format!("+1{area}555{sub:04}"))
            }
            _ => {
                let number = 10_000_000 + i;
                (format!("0049 30 {number}"), format!("+4930{number}"))
            }
        }
    }

    /// Anonymous browsing, the login, then logged-in browsing on `life.devices[k]`.
    fn use_device(&mut self, life: &mut Life, k: usize) {
        let device = life.devices[k].clone();
        let anonymous = As { user_id: None, device: &device };
        for _ in 0..self.rng.range(1, 4) {
            self.browse(life, anonymous);
        }
        if self.rng.chance(0.15) {
            // A newsletter signup before login: the email links the device before any user id does.
            let mut traits = Map::new();
            traits.insert("email".into(), Value::String(self.email_variant(&life.email)));
            traits.insert("newsletter".into(), Value::Bool(true));
            let mut event = self.base("identify", anonymous);
            event.insert("traits".into(), Value::Object(traits));
            self.emit(life, anonymous, event, (5 * SECOND, 10 * MINUTE), true);
        }

        let user_id = life.user_id.clone();
        let logged_in = As { user_id: Some(&user_id), device: &device };
        if k > 0 && self.spec.aliases && self.rng.chance(0.4) {
            let mut event = self.base("alias", logged_in);
            event.insert("previousId".into(), Value::String(device.anonymous_id.clone()));
            self.emit(life, logged_in, event, (5 * SECOND, 10 * MINUTE), false);
            if self.rng.chance(0.5) {
                self.identify(life, logged_in, false);
            }
        } else {
            self.identify(life, logged_in, k == 0);
            if k == 0 {
                life.first_login = life.clock;
            }
        }
        for _ in 0..self.rng.range(1, 5) {
            self.browse(life, logged_in);
            if self.rng.chance(0.2) {
                self.identify(life, logged_in, false);
            }
        }
    }

    /// `borrower` logs in on `owner`'s first device a day or more after the owner did.
    fn borrow(&mut self, owner: &Life, owner_index: usize, borrower: &mut Life) -> Borrowed {
        let device = owner.devices[0].clone();
        borrower.clock = borrower.clock.max(owner.first_login + DAY) + self.rng.range(HOUR, DAY);
        borrower.last = None;
        let user_id = borrower.user_id.clone();
        let who = As { user_id: Some(&user_id), device: &device };
        self.identify(borrower, who, false);
        for _ in 0..self.rng.range(1, 3) {
            self.browse(borrower, who);
        }
        Borrowed { owner: owner_index, anonymous_id: device.anonymous_id, device_id: device.device_id }
    }

    /// Identifies without a user id from the broker: a broker-only anonymous id, the sha256 email, some traits.
    fn broker(&mut self, life: &mut Life, start: i64) {
        let anonymous_id = format!("brk-{}", self.hex(16));
        life.broker_ids.push(anonymous_id.clone());
        let hashed = tributary_core::sha256_hex(life.email.as_bytes());
        for _ in 0..self.rng.range(1, 2) {
            let mut traits = Map::new();
            let band = *self.rng.pick(&["<25k", "25-50k", "50-100k", ">100k"]);
            traits.insert("income_band".into(), json!(band));
            traits.insert("interests".into(), json!([self.rng.pick(&["travel", "cooking", "cycling", "chess"])]));
            if self.rng.chance(0.3) {
                // Competes with the first-party name: only the stamps decide.
                traits.insert("name".into(), Value::String(life.name.to_uppercase()));
            }
            let mut event = Map::new();
            event.insert("type".into(), json!("identify"));
            event.insert("messageId".into(), Value::String(self.message_id()));
            event.insert("anonymousId".into(), Value::String(anonymous_id.clone()));
            event.insert("traits".into(), Value::Object(traits));
            event.insert(
                "context".into(),
                json!({
                    "library": {"name": "broker-import", "version": "2.1.0"},
                    "externalIds": [{"id": hashed, "type": "email", "encoding": "sha256", "collection": "users"}],
                }),
            );
            // A broker file describes the past and is uploaded much later.
            let ts = start + self.rng.range(-DAY, 6 * DAY);
            let received = ts + self.rng.range(HOUR, 2 * DAY);
            self.push(BROKER, ts, received, 0, event);
        }
    }

    /// An event whose every id is a blocked value: it identifies nobody.
    fn junk_only(&mut self, life: &mut Life) {
        let device = Device {
            source: WEB,
            anonymous_id: self.rng.pick(&JUNK_VALUES[..5]).to_string(),
            device_id: self.rng.pick(&JUNK_VALUES).to_string(),
            skew: 0,
        };
        let user_id = self.rng.pick(&JUNK_VALUES[..5]).to_string();
        let who = As { user_id: Some(&user_id), device: &device };
        let mut event = self.base("page", who);
        event.insert("name".into(), json!("Home"));
        event.insert("properties".into(), json!({"path": "/"}));
        self.emit(life, who, event, (SECOND, MINUTE), false);
    }

    /// An identify with the person's traits; `full` (the first login) sends all of them, including the email.
    fn identify(&mut self, life: &mut Life, who: As, full: bool) {
        life.logins += 1;
        let mut traits = Map::new();
        if full || self.rng.chance(0.5) {
            traits.insert("email".into(), Value::String(self.email_variant(&life.email)));
        }
        if full {
            traits.insert("name".into(), Value::String(life.name.clone()));
            traits.insert("age".into(), json!(life.age));
        }
        if let Some((raw, _)) = &life.phone {
            if full || self.rng.chance(0.3) {
                traits.insert("phone".into(), Value::String(raw.clone()));
            }
        }
        if self.rng.chance(0.4) {
            life.plan = (life.plan + 1) % PLANS.len();
        }
        traits.insert("plan".into(), json!(PLANS[life.plan]));
        traits.insert("logins".into(), json!(life.logins));
        if self.rng.chance(0.5) {
            life.ltv_cents += self.rng.range(0, 50_000);
            traits.insert("ltv".into(), json!(life.ltv_cents as f64 / 100.0));
        }
        traits.insert(SET_ONCE_TRAIT.into(), json!(self.rng.pick(&CHANNELS)));
        if self.rng.chance(0.2) {
            let city = *self.rng.pick(&["London", "Lagos", "Osaka", "Lima"]);
            traits.insert("address".into(), json!({"city": city, "verified": self.rng.chance(0.5)}));
        }
        let mut event = self.base("identify", who);
        event.insert("traits".into(), Value::Object(traits));
        self.emit(life, who, event, (5 * SECOND, 10 * MINUTE), true);
    }

    /// A page (web), screen (app) or track event.
    fn browse(&mut self, life: &mut Life, who: As) {
        let mut event;
        if self.rng.chance(0.6) {
            if who.device.source == WEB {
                let (name, path) = *self.rng.pick(&PAGES);
                event = self.base("page", who);
                event.insert("name".into(), json!(name));
                event.insert(
                    "properties".into(),
                    json!({"path": path, "url": format!("https://shop.example.com{path}"), "title": name}),
                );
            } else {
                let name = *self.rng.pick(&SCREENS);
                event = self.base("screen", who);
                event.insert("name".into(), json!(name));
                event.insert("properties".into(), json!({"name": name}));
            }
        } else if self.spec.consent && self.rng.chance(0.1) {
            // The consent manager's own event: always carries the (changed) preferences.
            event = self.base("track", who);
            event.insert("event".into(), json!(CONSENT_EVENT));
            event.insert("properties".into(), json!({}));
            self.add_consent(life, who.device.source, &mut event);
            self.emit(life, who, event, (5 * SECOND, 20 * MINUTE), false);
            return;
        } else {
            let name = *self.rng.pick(&TRACKS);
            event = self.base("track", who);
            event.insert("event".into(), json!(name));
            let price = self.rng.range(100, 20_000) as f64 / 100.0;
            event.insert("properties".into(), json!({"sku": format!("SKU-{}", self.hex(4)), "price": price}));
            if who.user_id.is_some() && self.rng.chance(0.1) {
                // Some SDKs repeat the user's traits in every event's context: the email links from a track too.
                let email = self.email_variant(&life.email);
                context_of(&mut event).insert("traits".into(), json!({"email": email}));
            }
        }
        if self.spec.junk_ids && self.rng.chance(0.1) {
            self.add_junk(&mut event);
        }
        self.emit(life, who, event, (5 * SECOND, 20 * MINUTE), true);
    }

    /// Puts a blocked value next to the real ids, never in place of the only real one.
    fn add_junk(&mut self, event: &mut Map<String, Value>) {
        let junk = self.rng.pick(&JUNK_VALUES[..5]).to_string();
        if !event.contains_key("userId") {
            event.insert("userId".into(), Value::String(junk));
        } else if self.rng.chance(0.5) {
            // Logged in: the user id keeps the event on the person.
            event.insert("anonymousId".into(), Value::String(junk));
        } else {
            let junk = self.rng.pick(&JUNK_VALUES).to_string();
            context_of(event).insert("device".into(), json!({"id": junk}));
        }
    }

    /// `type`, `messageId`, ids and the device's context.
    fn base(&mut self, kind: &str, who: As) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("type".into(), json!(kind));
        event.insert("messageId".into(), Value::String(self.message_id()));
        if let Some(user_id) = who.user_id {
            event.insert("userId".into(), json!(user_id));
        }
        event.insert("anonymousId".into(), json!(who.device.anonymous_id));
        let library = match who.device.source {
            WEB => json!({"name": "analytics.js", "version": "5.2.0"}),
            _ => json!({"name": "analytics-ios", "version": "1.7.3"}),
        };
        let mut device = Map::new();
        device.insert("id".into(), json!(who.device.device_id));
        if who.device.source == APP {
            device.insert("type".into(), json!("ios"));
        }
        let mut context = Map::new();
        context.insert("library".into(), library);
        context.insert("device".into(), Value::Object(device));
        event.insert("context".into(), Value::Object(context));
        event
    }

    fn message_id(&mut self) -> String {
        self.messages += 1;
        self.uuid(&format!("message/{}", self.messages)).to_string()
    }

    /// Random case and surrounding whitespace, as people type it: `" Ann.Lee7@Example.COM"`.
    fn email_variant(&mut self, email: &str) -> String {
        let cased: String = match self.rng.range(0, 3) {
            0 => email.to_string(),
            1 => email.to_uppercase(),
            _ => email.chars().map(|c| if self.rng.chance(0.3) { c.to_ascii_uppercase() } else { c }).collect(),
        };
        let lead = if self.rng.chance(0.3) { " " } else { "" };
        let trail = if self.rng.chance(0.2) { "  " } else { "" };
        format!("{lead}{cased}{trail}")
    }

    /// Times `event` on `life`'s clock (a `step` range later, or now and then the very same millisecond as the
    /// previous event, to exercise stamp tie-breaks), adds consent signals when `consent`, and keeps it.
    fn emit(&mut self, life: &mut Life, who: As, mut event: Map<String, Value>, step: (i64, i64), consent: bool) {
        let (ts, received) = match life.last {
            Some((ts, received)) if self.rng.chance(0.1) => {
                // Same timestamp; half the time the same receivedAt too, so only source/messageId can decide.
                let received = if self.rng.chance(0.5) { received } else { ts + self.rng.range(20, 4_000) };
                (ts, received)
            }
            _ => {
                life.clock += self.rng.range(step.0, step.1);
                (life.clock, life.clock + self.rng.range(20, 4_000))
            }
        };
        life.last = Some((ts, received));
        if consent && self.spec.consent && self.rng.chance(0.2) {
            self.add_consent(life, who.device.source, &mut event);
        }
        self.push(who.device.source, ts, received, who.device.skew, event);
    }

    /// The person's current consent, sometimes just changed, in the shape of the device's SDK; now and then with
    /// contradicting values for advertising in one event.
    fn add_consent(&mut self, life: &mut Life, source: &str, event: &mut Map<String, Value>) {
        if self.rng.chance(0.4) {
            life.advertising = !life.advertising;
        }
        if self.rng.chance(0.2) {
            life.analytics = !life.analytics;
        }
        let conflict = self.rng.chance(0.08);
        let context = context_of(event);
        if source == WEB {
            let mut prefs = Map::new();
            prefs.insert("Advertising".into(), json!(life.advertising));
            prefs.insert("Analytics".into(), json!(life.analytics));
            context.insert("consent".into(), json!({"categoryPreferences": prefs}));
            if conflict {
                let (allowed, denied) =
                    if life.advertising { (vec![], vec!["C0004"]) } else { (vec!["C0004"], vec![]) };
                context.insert(
                    "consentManagement".into(),
                    json!({"provider": "oneTrust", "allowedConsentIds": allowed, "deniedConsentIds": denied}),
                );
            }
        } else {
            let mut allowed = vec!["Functional Cookies"];
            let mut denied = Vec::new();
            for (granted, id) in [(life.advertising, "C0004"), (life.analytics, "C0002")] {
                if granted {
                    allowed.push(id)
                } else {
                    denied.push(id)
                }
            }
            if conflict {
                // The same id on both lists.
                if life.advertising {
                    denied.push("C0004")
                } else {
                    allowed.push("C0004")
                }
            }
            context.insert(
                "consentManagement".into(),
                json!({"provider": "oneTrust", "allowedConsentIds": allowed, "deniedConsentIds": denied}),
            );
        }
        if conflict {
            life.advertising = false;
        }
    }

    fn push(&mut self, source: &'static str, ts: i64, received: i64, skew: i64, event: Map<String, Value>) {
        let order = self.drafts.len();
        self.drafts.push(Draft { order, source, ts, received, skew, event });
    }
}

/// `Chloé` → `chloe`: accents stay in names, not in emails.
fn ascii_lower(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'é' => 'e',
            'ü' => 'u',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn context_of(event: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let context = event.entry("context").or_insert_with(|| Value::Object(Map::new()));
    if !context.is_object() {
        *context = Value::Object(Map::new());
    }
    context.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        for _ in 0..1_000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let seen: BTreeSet<i64> = (0..1_000).map(|_| a.range(-3, 3)).collect();
        assert_eq!(seen, (-3..=3).collect());
        assert!(a.chance(1.0) && !a.chance(0.0));
        assert_eq!(a.range(5, 5), 5);
    }

    #[test]
    fn redeliveries_follow_their_original() {
        let stream = generate(&PeopleSpec { people: 3, ..PeopleSpec::default() });
        let out = with_redeliveries(&stream.events, 0.5, 7);
        assert!(out.len() > stream.events.len());
        let mut seen = BTreeSet::new();
        for e in &out {
            let id = e.event["messageId"].as_str().unwrap().to_string();
            let original = stream.events.iter().position(|o| o.event["messageId"] == e.event["messageId"]).unwrap();
            if !seen.insert(id) {
                assert_eq!(&stream.events[original], e);
            }
        }
        assert_eq!(seen.len(), stream.events.len());
    }
}

//! The event of one imported row in typed form: it borrows its text from the row and the mapping and is written
//! straight to JSON, so the import's hot path builds no `serde_json::Map`.
//!
//! It is written two ways, which tests hold to the same bytes: [`ImportEvent::write_json`], by hand for speed
//! (the keys are constant), and `Serialize`, for [`ImportEvent::to_map`].

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Number, Value};
use time::{Date, OffsetDateTime};

use super::mapping::LIBRARY_NAME;
use super::MessageId;
use crate::ingest::timestamp::format_timestamp;

/// A row's event, from [`super::FileMapping::event`]. Both [`ImportEvent::write_json`] and `Serialize` write
/// exactly the JSON of [`ImportEvent::to_map`]: keys in sorted order, the order in which a `serde_json::Map`
/// keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportEvent<'a> {
    pub(super) message_id: MessageId,
    /// A track's event name; `None` for an identify.
    pub(super) name: Option<&'a str>,
    pub(super) user_id: Option<String>,
    pub(super) external_ids: Vec<ExternalId<'a>>,
    /// Indices into `external_ids` of the first email and the first phone, which are traits too.
    pub(super) email: Option<usize>,
    pub(super) phone: Option<usize>,
    /// The mapping's trait names, sorted, and the row's values by the same index (`None`: left empty).
    pub(super) trait_names: &'a [TraitName],
    pub(super) values: Vec<Option<TraitValue<'a>>>,
    /// `None`: the import time.
    pub(super) timestamp: Option<OffsetDateTime>,
    /// The import time, formatted once per file.
    pub(super) received_at: &'a str,
}

/// The allocations of an event's lists, kept from one row's event to the next ([`super::FileMapping::event_in`],
/// [`ImportEvent::recycle`]). Always empty between rows.
#[derive(Debug, Default)]
pub struct EventBuffers {
    external_ids: Vec<ExternalId<'static>>,
    values: Vec<Option<TraitValue<'static>>>,
}

impl EventBuffers {
    /// The (empty) lists for the next event.
    #[allow(clippy::type_complexity)]
    pub(super) fn take<'a>(&mut self) -> (Vec<ExternalId<'a>>, Vec<Option<TraitValue<'a>>>) {
        (recycled(std::mem::take(&mut self.external_ids)), recycled(std::mem::take(&mut self.values)))
    }

    /// Keeps the allocations of an event's lists, dropping what they hold.
    pub(super) fn keep(&mut self, external_ids: Vec<ExternalId<'_>>, values: Vec<Option<TraitValue<'_>>>) {
        self.external_ids = recycled(external_ids);
        self.values = recycled(values);
    }
}

/// `list` emptied, as a list of another type. For types of the same size and alignment (here the same type with
/// another lifetime) the standard library collects in place, so the allocation is kept.
fn recycled<A, B>(list: Vec<A>) -> Vec<B> {
    list.into_iter().filter_map(|_| None).collect()
}

/// A typed trait's name, also as a JSON string, written once for all events.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TraitName {
    pub(super) name: String,
    json: String,
}

impl TraitName {
    pub(super) fn new(name: String) -> TraitName {
        let json = Value::from(name.as_str()).to_string();
        TraitName { name, json }
    }
}

/// An entry of `context.externalIds`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExternalId<'a> {
    pub(super) id: String,
    /// The raw type (`email` for an `email_sha256` column).
    pub(super) kind: &'a str,
    /// A SHA-256 hash of the raw type's value.
    pub(super) hashed: bool,
}

/// A typed trait's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TraitValue<'a> {
    /// Text as written in the file.
    Text(&'a str),
    /// A JSON number or bool of a `string` trait, written as text.
    JsonText(&'a Value),
    Number(Number),
    Bool(bool),
    /// A date alone, written `YYYY-MM-DD`; years 1 to 9999.
    Date(Date),
    /// A date and time, written as a UTC timestamp.
    Instant(OffsetDateTime),
}

impl ImportEvent<'_> {
    /// The event as a JSON object, for what works on events in that form (a source's governance).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // Cannot happen: the event is an object with string keys and finite numbers.
            _ => Map::new(),
        }
    }

    /// Gives the allocations of the event's lists back for the next event ([`super::FileMapping::event_in`]).
    pub fn recycle(self, buffers: &mut EventBuffers) {
        buffers.keep(self.external_ids, self.values);
    }

    /// Appends the event's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let track = self.is_track();
        out.extend_from_slice(b"{\"context\":{");
        if !self.external_ids.is_empty() {
            out.extend_from_slice(b"\"externalIds\":[");
            for (i, external) in self.external_ids.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"collection\":\"users\",");
                if external.hashed {
                    out.extend_from_slice(b"\"encoding\":\"sha256\",");
                }
                out.extend_from_slice(b"\"id\":");
                write_str(out, &external.id)?;
                out.extend_from_slice(b",\"type\":");
                write_str(out, external.kind)?;
                out.push(b'}');
            }
            out.extend_from_slice(b"],");
        }
        out.extend_from_slice(b"\"library\":{\"name\":");
        write_plain(out, LIBRARY_NAME);
        out.push(b'}');
        if track && self.has_person() {
            out.extend_from_slice(b",\"traits\":");
            self.write_traits(out, true, false)?;
        }
        out.extend_from_slice(b"},");
        if let Some(name) = self.name {
            out.extend_from_slice(b"\"event\":");
            write_str(out, name)?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"messageId\":");
        write_plain(out, self.message_id.as_str());
        if track && self.has_values() {
            out.extend_from_slice(b",\"properties\":");
            self.write_traits(out, false, true)?;
        }
        out.extend_from_slice(b",\"receivedAt\":");
        write_plain(out, self.received_at);
        out.extend_from_slice(b",\"timestamp\":");
        match self.timestamp {
            Some(at) => write_plain(out, &format_timestamp(at)),
            None => write_plain(out, self.received_at),
        }
        if !track && (self.has_person() || self.has_values()) {
            out.extend_from_slice(b",\"traits\":");
            self.write_traits(out, true, true)?;
        }
        out.extend_from_slice(if track { b",\"type\":\"track\"" } else { b",\"type\":\"identify\"" });
        if let Some(id) = &self.user_id {
            out.extend_from_slice(b",\"userId\":");
            write_str(out, id)?;
        }
        out.push(b'}');
        Ok(())
    }

    fn write_traits(&self, out: &mut Vec<u8>, person: bool, values: bool) -> serde_json::Result<()> {
        out.push(b'{');
        let mut first = true;
        self.each_trait(person, values, |_, key, value| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            value.write_json(out)
        })?;
        out.push(b'}');
        Ok(())
    }

    /// Calls `entry` with the name, the name as a JSON string and the value of each trait, in name order: the
    /// identifier traits (`email`, `phone`) when `person`, merged with the typed values when `values`.
    fn each_trait<E>(
        &self,
        person: bool,
        values: bool,
        mut entry: impl FnMut(&str, &str, TraitEntry<'_, '_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let person_id = |index: Option<usize>| index.filter(|_| person).and_then(|i| self.external_ids.get(i));
        let mut person = [("email", "\"email\"", person_id(self.email)), ("phone", "\"phone\"", person_id(self.phone))]
            .into_iter()
            .filter_map(|(name, key, id)| Some((name, key, id?.id.as_str())))
            .peekable();
        let values: &[Option<TraitValue<'_>>] = if values { &self.values } else { &[] };
        let values = self.trait_names.iter().zip(values).filter_map(|(name, value)| Some((name, value.as_ref()?)));
        for (name, value) in values {
            // `check` keeps `email` and `phone` out of the trait names, so no name comes twice.
            while let Some((person_name, key, id)) =
                person.next_if(|&(person_name, ..)| person_name < name.name.as_str())
            {
                entry(person_name, key, TraitEntry::Id(id))?;
            }
            entry(&name.name, &name.json, TraitEntry::Value(value))?;
        }
        for (person_name, key, id) in person {
            entry(person_name, key, TraitEntry::Id(id))?;
        }
        Ok(())
    }

    fn is_track(&self) -> bool {
        self.name.is_some()
    }

    fn has_values(&self) -> bool {
        self.values.iter().any(Option::is_some)
    }

    fn has_person(&self) -> bool {
        self.email.is_some() || self.phone.is_some()
    }
}

impl Serialize for ImportEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let track = self.is_track();
        let mut map = serializer.serialize_map(None)?;
        // Identifier traits go where identity resolution looks: `traits` of an identify, `context.traits` of a
        // track.
        map.serialize_entry("context", &Context { event: self, traits: track && self.has_person() })?;
        if let Some(name) = self.name {
            map.serialize_entry("event", name)?;
        }
        map.serialize_entry("messageId", &self.message_id)?;
        if track && self.has_values() {
            map.serialize_entry("properties", &Traits { event: self, person: false, values: true })?;
        }
        map.serialize_entry("receivedAt", self.received_at)?;
        match self.timestamp {
            Some(at) => map.serialize_entry("timestamp", &format_timestamp(at))?,
            None => map.serialize_entry("timestamp", self.received_at)?,
        }
        if !track && (self.has_person() || self.has_values()) {
            map.serialize_entry("traits", &Traits { event: self, person: true, values: true })?;
        }
        map.serialize_entry("type", if track { "track" } else { "identify" })?;
        if let Some(id) = &self.user_id {
            map.serialize_entry("userId", id)?;
        }
        map.end()
    }
}

struct Context<'e, 'a> {
    event: &'e ImportEvent<'a>,
    traits: bool,
}

impl Serialize for Context<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if !self.event.external_ids.is_empty() {
            map.serialize_entry("externalIds", &self.event.external_ids)?;
        }
        map.serialize_entry("library", &Library)?;
        if self.traits {
            map.serialize_entry("traits", &Traits { event: self.event, person: true, values: false })?;
        }
        map.end()
    }
}

struct Library;

impl Serialize for Library {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("name", LIBRARY_NAME)?;
        map.end()
    }
}

impl Serialize for ExternalId<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("collection", "users")?;
        if self.hashed {
            map.serialize_entry("encoding", "sha256")?;
        }
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("type", self.kind)?;
        map.end()
    }
}

/// A traits object: the identifier traits, the typed values, or both ([`ImportEvent::each_trait`]).
struct Traits<'e, 'a> {
    event: &'e ImportEvent<'a>,
    person: bool,
    values: bool,
}

impl Serialize for Traits<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.event.each_trait(self.person, self.values, |name, _, value| map.serialize_entry(name, &value))?;
        map.end()
    }
}

/// One trait of a traits object.
enum TraitEntry<'v, 'a> {
    /// A raw email or phone.
    Id(&'v str),
    Value(&'v TraitValue<'a>),
}

impl TraitEntry<'_, '_> {
    /// Appends the JSON of the entry, the bytes `Serialize` gives, without going through a serializer.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            TraitEntry::Id(id) => write_str(out, id),
            TraitEntry::Value(TraitValue::Text(s)) => write_str(out, s),
            TraitEntry::Value(TraitValue::Bool(b)) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" });
                Ok(())
            }
            TraitEntry::Value(TraitValue::Date(date)) => {
                out.push(b'"');
                out.extend_from_slice(&date_text(*date));
                out.push(b'"');
                Ok(())
            }
            TraitEntry::Value(TraitValue::Instant(at)) => {
                write_plain(out, &format_timestamp(*at));
                Ok(())
            }
            TraitEntry::Value(value @ (TraitValue::Number(_) | TraitValue::JsonText(_))) => {
                serde_json::to_writer(out, value)
            }
        }
    }
}

impl Serialize for TraitEntry<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TraitEntry::Id(id) => serializer.serialize_str(id),
            TraitEntry::Value(value) => value.serialize(serializer),
        }
    }
}

impl Serialize for TraitValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TraitValue::Text(s) => serializer.serialize_str(s),
            TraitValue::JsonText(v) => serializer.collect_str(v),
            TraitValue::Number(n) => n.serialize(serializer),
            TraitValue::Bool(b) => serializer.serialize_bool(*b),
            TraitValue::Date(date) => {
                let text = date_text(*date);
                // Only ever ASCII digits and dashes.
                serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
            }
            TraitValue::Instant(at) => serializer.serialize_str(&format_timestamp(*at)),
        }
    }
}

/// A date as `YYYY-MM-DD` (years 1 to 9999).
fn date_text(date: Date) -> [u8; 10] {
    let mut text = *b"0000-00-00";
    write_digits(&mut text[..4], date.year().unsigned_abs());
    write_digits(&mut text[5..7], u8::from(date.month()).into());
    write_digits(&mut text[8..], date.day().into());
    text
}

/// Writes the low decimal digits of `n` into `out`, zero-padded.
fn write_digits(out: &mut [u8], mut n: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Writes `s` as a JSON string, escaped as `serde_json` escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // `serde_json` escapes `"`, `\\` and the control characters below a space, and nothing else: text without them
    // is written as it is.
    if s.bytes().any(|b| b < b' ' || b == b'"' || b == b'\\') {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Writes `s` as a JSON string without looking for what to escape: for our own text that never needs it (hex
/// ids, timestamps, constants).
fn write_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-:.".contains(&b)), "{s:?} needs escaping");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

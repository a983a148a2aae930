//! An event as the deliver function holds it: the JSON text stitch wrote, the few fields routing reads, and the
//! whole object parsed only when something needs it (a destination that changes the event, an ad platform, an
//! export, a dead letter). A webhook that takes the event as it is gets the text itself, with `context.profile`
//! set — most of the cost of a delivery used to be building and serializing a `Value` tree nobody changed.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Top-level fields routing, consent, receipts and consent updates read (see [`Event::fields`]).
const HEAD: [&str; 8] = ["type", "event", "name", "messageId", "userId", "anonymousId", "timestamp", "receivedAt"];
/// Within `context`: consent signals, and the identifiers a consent update carries.
const HEAD_CONTEXT: [&str; 2] = ["consent", "consentManagement"];
const HEAD_TRAITS: [&str; 2] = ["email", "phone"];
/// Within `properties`: the consent signals of a consent update event.
const HEAD_PROPERTIES: [&str; 2] = ["categoryPreferences", "consentManagement"];

pub struct Event {
    /// The text as received, with where its members are; `None` for an event built here (a consent update, a
    /// prepared copy).
    text: Option<Text>,
    /// With `text`: the fields listed above, parsed; without: unused (the whole object is at hand).
    head: Map<String, Value>,
    whole: OnceLock<Map<String, Value>>,
}

/// An event's text and the spans of its members, found once so writing it needs no second scan.
struct Text {
    raw: Box<RawValue>,
    top: Vec<Span>,
    /// The members of `context`, when it is an object.
    context: Option<Vec<Span>>,
}

/// One member of an object: its key and the byte range of its value in the text.
struct Span {
    key: SpanKey,
    value: Range<usize>,
}

enum SpanKey {
    /// The key's bytes in the text (a key without escapes, so it is its own JSON string content).
    At(Range<usize>),
    /// A key that had escapes, unescaped.
    Owned(Box<str>),
}

impl Span {
    fn key<'a>(&'a self, text: &'a str) -> &'a str {
        match &self.key {
            SpanKey::At(r) => text.get(r.clone()).unwrap_or(""),
            SpanKey::Owned(k) => k,
        }
    }

    fn value<'a>(&self, text: &'a str) -> &'a str {
        text.get(self.value.clone()).unwrap_or("null")
    }

    fn write_key(&self, text: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match &self.key {
            SpanKey::At(r) => {
                out.push(b'"');
                out.extend_from_slice(text.get(r.clone()).unwrap_or("").as_bytes());
                out.push(b'"');
                Ok(())
            }
            SpanKey::Owned(k) => serde_json::to_writer(&mut *out, &**k),
        }
    }
}

impl Event {
    /// Reads an event from its text; `None` unless it is a JSON object.
    pub fn from_raw(raw: Box<RawValue>) -> Option<Event> {
        let text = raw.get();
        let top = spans(text, text)?;
        let mut head = Map::new();
        let mut context = None;
        for span in &top {
            let key = span.key(text);
            let value = span.value(text);
            match key {
                "context" => {
                    context = spans(text, value);
                    let members = context.as_deref().unwrap_or_default();
                    let mut picked = pick(text, members, &HEAD_CONTEXT);
                    if let Some(traits) = members.iter().find(|m| m.key(text) == "traits") {
                        let traits = spans(text, traits.value(text)).unwrap_or_default();
                        let traits = pick(text, &traits, &HEAD_TRAITS);
                        if !traits.is_empty() {
                            picked.insert("traits".into(), Value::Object(traits));
                        }
                    }
                    head.insert("context".into(), Value::Object(picked));
                }
                "properties" => {
                    let members = spans(text, value).unwrap_or_default();
                    head.insert("properties".into(), Value::Object(pick(text, &members, &HEAD_PROPERTIES)));
                }
                key if HEAD.contains(&key) => {
                    head.insert(key.to_string(), serde_json::from_str(value).unwrap_or(Value::Null));
                }
                _ => {}
            }
        }
        Some(Event { text: Some(Text { raw, top, context }), head, whole: OnceLock::new() })
    }

    /// An event built as an object.
    pub fn from_map(map: Map<String, Value>) -> Event {
        Event { text: None, head: Map::new(), whole: OnceLock::from(map) }
    }

    /// The fields routing and consent read: `type`, `event`, `name`, `messageId`, `userId`, `anonymousId`,
    /// `timestamp`, `receivedAt`, `context.consent`, `context.consentManagement`, `context.traits.email|phone`,
    /// `properties.categoryPreferences|consentManagement`. Anything else must come from [`Event::map`].
    pub fn fields(&self) -> &Map<String, Value> {
        if self.text.is_some() {
            &self.head
        } else {
            self.map()
        }
    }

    /// The whole event, parsed on first use.
    pub fn map(&self) -> &Map<String, Value> {
        self.whole.get_or_init(|| {
            // The text was read as an object when the event was made, so it parses; stay panic-free anyway.
            self.text.as_ref().and_then(|t| serde_json::from_str(t.raw.get()).ok()).unwrap_or_default()
        })
    }

    /// A copy of the whole event, to change.
    pub fn to_map(&self) -> Map<String, Value> {
        self.map().clone()
    }

    /// Writes the event with `context.profile` set to `profile` (unchanged when `None`).
    pub fn write_with_profile(&self, profile: Option<&Value>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match (&self.text, profile) {
            (Some(t), None) => {
                out.extend_from_slice(t.raw.get().as_bytes());
                Ok(())
            }
            (Some(t), Some(p)) => t.write_with_profile(p, out),
            (None, p) => serde_json::to_writer(out, &WithProfile(self.map(), p)),
        }
    }
}

impl Text {
    /// The members copied as text, `context` with `profile` replaced (a context that is not an object becomes
    /// `{"profile": …}`).
    fn write_with_profile(&self, profile: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let text = self.raw.get();
        out.push(b'{');
        let mut has_context = false;
        for (i, span) in self.top.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            span.write_key(text, out)?;
            out.push(b':');
            if span.key(text) == "context" {
                has_context = true;
                self.write_context(profile, out)?;
            } else {
                out.extend_from_slice(span.value(text).as_bytes());
            }
        }
        if !has_context {
            if !self.top.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"context\":");
            self.write_context(profile, out)?;
        }
        out.push(b'}');
        Ok(())
    }

    fn write_context(&self, profile: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let text = self.raw.get();
        out.push(b'{');
        for span in self.context.iter().flatten().filter(|s| s.key(text) != "profile") {
            span.write_key(text, out)?;
            out.push(b':');
            out.extend_from_slice(span.value(text).as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"profile\":");
        serde_json::to_writer(&mut *out, profile)?;
        out.push(b'}');
        Ok(())
    }
}

impl fmt::Debug for Event {
    // The event holds personal data: its shape only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("fields", &self.fields().len()).field("text", &self.text.is_some()).finish()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

/// The members of a JSON object in order, values left as text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    out.push((key.0, map.next_value::<&RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An object key, borrowed unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of `object` (a slice of `text`), as spans of `text`; `None` unless it is an object.
fn spans(text: &str, object: &str) -> Option<Vec<Span>> {
    let base = text.as_ptr() as usize;
    let at = |s: &str| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        start..start + s.len()
    };
    let members = serde_json::from_str::<Members>(object).ok()?.0;
    Some(
        members
            .into_iter()
            .map(|(k, v)| Span {
                key: match k {
                    Cow::Borrowed(k) => SpanKey::At(at(k)),
                    Cow::Owned(k) => SpanKey::Owned(k.into()),
                },
                value: at(v.get()),
            })
            .collect(),
    )
}

/// The named members, parsed.
fn pick(text: &str, members: &[Span], names: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for m in members {
        let key = m.key(text);
        if names.contains(&key) {
            if let Ok(v) = serde_json::from_str(m.value(text)) {
                out.insert(key.to_string(), v);
            }
        }
    }
    out
}

/// Serializes an event with `context.profile` set, without copying the event.
struct WithProfile<'a>(&'a Map<String, Value>, Option<&'a Value>);

impl Serialize for WithProfile<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let event = self.0;
        let Some(profile) = self.1 else { return event.serialize(s) };
        let has_context = event.contains_key("context");
        let mut m = s.serialize_map(Some(event.len() + usize::from(!has_context)))?;
        for (k, v) in event {
            if k == "context" {
                m.serialize_entry(k, &ContextWith(v, profile))?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        if !has_context {
            m.serialize_entry("context", &ContextWith(&Value::Null, profile))?;
        }
        m.end()
    }
}

/// A context object with `profile` replaced; a context that is not an object is replaced by `{profile}`.
struct ContextWith<'a>(&'a Value, &'a Value);

impl Serialize for ContextWith<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let empty = Map::new();
        let context = self.0.as_object().unwrap_or(&empty);
        let mut m = s.serialize_map(None)?;
        for (k, v) in context.iter().filter(|(k, _)| *k != "profile") {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("profile", self.1)?;
        m.end()
    }
}

impl From<Map<String, Value>> for Event {
    fn from(map: Map<String, Value>) -> Event {
        Event::from_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: &Value) -> Event {
        let text = RawValue::from_string(v.to_string()).expect("raw");
        Event::from_raw(text).expect("object")
    }

    fn written(e: &Event, profile: Option<&Value>) -> Value {
        let mut out = Vec::new();
        e.write_with_profile(profile, &mut out).expect("write");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn the_text_and_the_object_write_the_same_event() {
        let profile = json!({"id": "p1", "traits": {"plan": "pro"}});
        let cases = [
            json!({"type": "track", "event": "A", "context": {"ip": "1.2.3.4", "profile": {"id": "old"}}}),
            json!({"type": "identify", "userId": "u"}),
            json!({"context": "not an object", "messageId": "m"}),
            json!({"context": {}, "k\"ey": "v\u{e9}", "n": [1, 2, {"x": null}]}),
            json!({}),
        ];
        for case in cases {
            let Value::Object(map) = case.clone() else { unreachable!() };
            let (text, built) = (raw(&case), Event::from_map(map.clone()));
            for p in [None, Some(&profile)] {
                assert_eq!(written(&text, p), written(&built, p), "{case}");
            }
            let mut expected = map.clone();
            let ctx = expected.entry("context").or_insert(json!({}));
            if !ctx.is_object() {
                *ctx = json!({});
            }
            ctx["profile"] = profile.clone();
            assert_eq!(written(&text, Some(&profile)), Value::Object(expected));
            assert_eq!(written(&text, None), case);
            assert_eq!(text.map(), &map);
            assert_eq!(text, built);
        }
    }

    #[test]
    fn fields_hold_what_routing_reads_and_nothing_else() {
        let e = raw(&json!({
            "type": "track", "event": "Consent Updated", "messageId": "m1", "userId": "u", "anonymousId": "a",
            "timestamp": "t", "receivedAt": "r",
            "properties": {"categoryPreferences": {"ads": true}, "revenue": 10},
            "context": {"consent": {"categoryPreferences": {"ads": false}}, "ip": "1.2.3.4",
                        "traits": {"email": "x@example.com", "name": "X"}, "consentManagement": {"x": 1}},
            "traits": {"secret": 1}
        }));
        assert_eq!(
            Value::Object(e.fields().clone()),
            json!({
                "type": "track", "event": "Consent Updated", "messageId": "m1", "userId": "u", "anonymousId": "a",
                "timestamp": "t", "receivedAt": "r",
                "properties": {"categoryPreferences": {"ads": true}},
                "context": {"consent": {"categoryPreferences": {"ads": false}}, "traits": {"email": "x@example.com"},
                            "consentManagement": {"x": 1}}
            })
        );
    }

    #[test]
    fn only_objects_are_events() {
        for text in ["[1]", "\"s\"", "null", "3"] {
            assert!(Event::from_raw(RawValue::from_string(text.into()).expect("raw")).is_none(), "{text}");
        }
    }
}

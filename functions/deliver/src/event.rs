//! An event as the deliver function holds it: the JSON text stitch wrote, the few fields routing reads, and the
//! whole object parsed only when something needs it (a destination that changes the event, an ad platform, an
//! export, a dead letter). A webhook that takes the event as it is gets the text itself, with `context.profile`
//! set — most of the cost of a delivery used to be building and serializing a `Value` tree nobody changed.

use std::borrow::Cow;
use std::fmt;
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
    /// The text as received; `None` for an event built here (a consent update, a prepared copy).
    text: Option<Box<RawValue>>,
    /// With `text`: the fields listed above, parsed; without: unused (the whole object is at hand).
    head: Map<String, Value>,
    whole: OnceLock<Map<String, Value>>,
}

impl Event {
    /// Reads an event from its text; `None` unless it is a JSON object.
    pub fn from_raw(text: Box<RawValue>) -> Option<Event> {
        let head = head_of(text.get())?;
        Some(Event { text: Some(text), head, whole: OnceLock::new() })
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
            self.text.as_ref().and_then(|t| serde_json::from_str(t.get()).ok()).unwrap_or_default()
        })
    }

    /// A copy of the whole event, to change.
    pub fn to_map(&self) -> Map<String, Value> {
        self.map().clone()
    }

    /// Writes the event with `context.profile` set to `profile` (unchanged when `None`).
    pub fn write_with_profile(&self, profile: Option<&Value>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match &self.text {
            Some(text) => match profile {
                None => {
                    out.extend_from_slice(text.get().as_bytes());
                    Ok(())
                }
                Some(p) => splice_profile(text.get(), p, out),
            },
            None => serde_json::to_writer(out, &WithProfile(self.map(), profile)),
        }
    }
}

impl fmt::Debug for Event {
    // The event holds personal data: its shape only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("fields", &self.fields().len()).field("raw", &self.text.is_some()).finish()
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

fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// The routing fields of an event's text; `None` unless the text is an object.
fn head_of(text: &str) -> Option<Map<String, Value>> {
    let mut head = Map::new();
    for (k, v) in members(text)? {
        match k.as_ref() {
            "context" => {
                let mut context = pick(v, &HEAD_CONTEXT);
                if let Some(traits) = members(v.get()).and_then(|m| m.into_iter().find(|(k, _)| k == "traits")) {
                    let traits = pick(traits.1, &HEAD_TRAITS);
                    if !traits.is_empty() {
                        context.insert("traits".into(), Value::Object(traits));
                    }
                }
                head.insert("context".into(), Value::Object(context));
            }
            "properties" => {
                head.insert("properties".into(), Value::Object(pick(v, &HEAD_PROPERTIES)));
            }
            key if HEAD.contains(&key) => {
                head.insert(k.into_owned(), serde_json::from_str(v.get()).unwrap_or(Value::Null));
            }
            _ => {}
        }
    }
    Some(head)
}

/// The named members of an object's text, parsed (nothing when it is not an object).
fn pick(object: &RawValue, names: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in members(object.get()).unwrap_or_default() {
        if names.contains(&k.as_ref()) {
            if let Ok(v) = serde_json::from_str(v.get()) {
                out.insert(k.into_owned(), v);
            }
        }
    }
    out
}

/// `text` (an object) with `context.profile` replaced by `profile`, written member by member; values are copied
/// as text.
fn splice_profile(text: &str, profile: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let top = serde_json::from_str::<Members>(text)?.0;
    out.push(b'{');
    let mut has_context = false;
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k.as_ref())?;
        out.push(b':');
        if k == "context" {
            has_context = true;
            write_context(v, profile, out)?;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !has_context {
        if !top.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"context\":");
        write_context(RawValue::NULL, profile, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// A context with `profile` replaced; a context that is not an object becomes `{"profile": …}`.
fn write_context(context: &RawValue, profile: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    out.push(b'{');
    for (k, v) in members(context.get()).unwrap_or_default().iter().filter(|(k, _)| k != "profile") {
        serde_json::to_writer(&mut *out, k.as_ref())?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"profile\":");
    serde_json::to_writer(&mut *out, profile)?;
    out.push(b'}');
    Ok(())
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

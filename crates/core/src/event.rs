//! A typed view of a normalized Segment message, for consumers downstream of ingest.
//!
//! Ingest keeps events as JSON objects so that unknown keys survive untouched; [`Message::from_normalized`]
//! reads the fields every consumer needs out of what [`crate::ingest::process`] produces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::ingest::timestamp::parse_timestamp;

/// The six Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::Track,
        MessageType::Identify,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];

    /// The wire name (`"track"`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Identify => "identify",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    /// The type for an exact wire name; names are case-sensitive, as in the Segment spec.
    pub fn from_name(name: &str) -> Option<MessageType> {
        Some(match name {
            "track" => MessageType::Track,
            "identify" => MessageType::Identify,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "group" => MessageType::Group,
            "alias" => MessageType::Alias,
            _ => return None,
        })
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageType::from_name(s)
            .ok_or_else(|| "message type must be one of track, identify, page, screen, group, alias".to_string())
    }
}

/// One normalized message. `timestamp` is the skew-corrected event time, `received_at` the arrival time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default)]
    pub traits: Map<String, Value>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default)]
    pub integrations: Map<String, Value>,
}

impl Message {
    /// Reads a normalized event (the output of [`crate::ingest::process`]). Errors name the field, never its value.
    pub fn from_normalized(m: &Map<String, Value>) -> Result<Message, String> {
        let message_id = opt_string(m, "messageId")?.ok_or("`messageId` is missing")?;
        let kind = match m.get("type") {
            Some(Value::String(s)) => s.parse::<MessageType>()?,
            Some(_) => return Err("`type` must be a string".into()),
            None => return Err("`type` is missing".into()),
        };
        let user_id = opt_string(m, "userId")?;
        let anonymous_id = opt_string(m, "anonymousId")?;
        if user_id.is_none() && anonymous_id.is_none() {
            return Err("message has neither `userId` nor `anonymousId`".into());
        }
        let timestamp = required_time(m, "timestamp")?;
        let received_at = required_time(m, "receivedAt")?;
        // Type-specific fields: on other types they are just unknown keys, so a non-string is not an error there;
        // the type's own required field is checked below.
        let event = lenient_string(m, "event");
        let name = lenient_string(m, "name");
        let previous_id = lenient_string(m, "previousId");
        let group_id = lenient_string(m, "groupId");
        match kind {
            MessageType::Track if event.is_none() => return Err("track message has no `event`".into()),
            MessageType::Alias if previous_id.is_none() => return Err("alias message has no `previousId`".into()),
            MessageType::Alias if user_id.is_none() => return Err("alias message has no `userId`".into()),
            MessageType::Group if group_id.is_none() => return Err("group message has no `groupId`".into()),
            _ => {}
        }
        Ok(Message {
            message_id,
            kind,
            user_id,
            anonymous_id,
            timestamp,
            received_at,
            event,
            name,
            previous_id,
            group_id,
            traits: opt_object(m, "traits")?,
            properties: opt_object(m, "properties")?,
            context: opt_object(m, "context")?,
            integrations: opt_object(m, "integrations")?,
        })
    }
}

/// A non-empty string, absent, or an error; `null` and `""` count as absent.
fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

/// A non-empty string, or `None` for anything else.
fn lenient_string(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn opt_object(m: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(format!("`{key}` must be an object")),
    }
}

fn required_time(m: &Map<String, Value>, key: &str) -> Result<OffsetDateTime, String> {
    match m.get(key) {
        Some(Value::String(s)) => parse_timestamp(s).ok_or_else(|| format!("`{key}` is not a valid timestamp")),
        Some(_) => Err(format!("`{key}` must be a timestamp string")),
        None => Err(format!("`{key}` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{process, Limits, RequestContext, Route};
    use serde_json::json;
    use time::macros::datetime;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn normalized(route: Route, body: Value) -> Map<String, Value> {
        let ctx = RequestContext {
            received_at: datetime!(2025-01-01 12:00:10 UTC),
            source_ip: Some("198.51.100.7".into()),
            user_agent: Some("analytics-python/2.3.4".into()),
        };
        let mut p = process(route, body, &ctx, &Limits::default()).unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        p.accepted.remove(0)
    }

    #[test]
    fn message_type_names_roundtrip() {
        for t in MessageType::ALL {
            assert_eq!(t.as_str().parse::<MessageType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
            assert_eq!(serde_json::from_value::<MessageType>(json!(t.as_str())).unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
        }
        assert!("Track".parse::<MessageType>().is_err());
        assert!("".parse::<MessageType>().is_err());
    }

    #[test]
    fn reads_a_normalized_track() {
        let m = normalized(
            Route::Track,
            json!({"userId": 42, "anonymousId": null, "event": "Order Completed",
                   "properties": {"revenue": 9.5}, "timestamp": "2025-01-01T12:00:00.000+00:00",
                   "sentAt": "2025-01-01T12:00:05.000+00:00", "messageId": "m-1", "integrations": {"All": true}}),
        );
        let msg = Message::from_normalized(&m).unwrap();
        assert_eq!(msg.message_id, "m-1");
        assert_eq!(msg.kind, MessageType::Track);
        assert_eq!(msg.user_id.as_deref(), Some("42"));
        assert_eq!(msg.anonymous_id, None);
        assert_eq!(msg.event.as_deref(), Some("Order Completed"));
        assert_eq!(msg.timestamp, datetime!(2025-01-01 12:00:05 UTC));
        assert_eq!(msg.received_at, datetime!(2025-01-01 12:00:10 UTC));
        assert_eq!(msg.properties, obj(json!({"revenue": 9.5})));
        assert_eq!(msg.integrations, obj(json!({"All": true})));
        assert_eq!(msg.context["ip"], json!("198.51.100.7"));
        assert!(msg.traits.is_empty());
    }

    #[test]
    fn reads_every_type() {
        let cases = [
            (Route::Identify, json!({"userId": "u", "traits": {"email": "a@b.c"}}), MessageType::Identify),
            (Route::Page, json!({"anonymousId": "a", "name": "Home"}), MessageType::Page),
            (Route::Screen, json!({"anonymousId": "a", "name": "Main"}), MessageType::Screen),
            (Route::Group, json!({"userId": "u", "groupId": 7, "traits": {"plan": "pro"}}), MessageType::Group),
            (Route::Alias, json!({"userId": "u", "previousId": "old"}), MessageType::Alias),
        ];
        for (route, body, kind) in cases {
            let msg = Message::from_normalized(&normalized(route, body)).unwrap();
            assert_eq!(msg.kind, kind);
            assert!(!msg.message_id.is_empty());
            assert_eq!(msg.timestamp, msg.received_at, "no client time: timestamp = receivedAt");
            match kind {
                MessageType::Identify => assert_eq!(msg.traits["email"], json!("a@b.c")),
                MessageType::Page | MessageType::Screen => assert!(msg.name.is_some()),
                MessageType::Group => {
                    assert_eq!(msg.group_id.as_deref(), Some("7"));
                    assert_eq!(msg.traits["plan"], json!("pro"));
                }
                MessageType::Alias => assert_eq!(msg.previous_id.as_deref(), Some("old")),
                MessageType::Track => unreachable!(),
            }
        }
    }

    #[test]
    fn serde_roundtrip() {
        let m = normalized(Route::Track, json!({"userId": "u", "event": "E", "messageId": "m"}));
        let msg = Message::from_normalized(&m).unwrap();
        let text = serde_json::to_string(&msg).unwrap();
        assert!(text.contains("\"type\":\"track\""));
        assert!(text.contains("\"messageId\":\"m\""));
        let back: Message = serde_json::from_str(&text).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn refuses_what_process_never_produces() {
        let good = json!({"messageId": "m", "type": "track", "userId": "u", "event": "E",
                          "timestamp": "2025-01-01T00:00:00.000Z", "receivedAt": "2025-01-01T00:00:00.000Z"});
        assert!(Message::from_normalized(&obj(good.clone())).is_ok());
        let broken: &[(&str, Value, &str)] = &[
            ("messageId", Value::Null, "messageId"),
            ("messageId", json!(5), "messageId"),
            ("type", json!("Track"), "message type"),
            ("type", json!(1), "type"),
            ("userId", json!({"secret": "x@y.z"}), "userId"),
            ("userId", Value::Null, "neither"),
            ("timestamp", json!("yesterday-secret"), "timestamp"),
            ("receivedAt", json!(17), "receivedAt"),
            ("event", Value::Null, "event"),
            ("event", json!(["secret"]), "event"),
            ("traits", json!("secret"), "traits"),
            ("context", json!([1]), "context"),
        ];
        for (key, value, needle) in broken {
            let mut m = obj(good.clone());
            m.insert((*key).to_string(), value.clone());
            let err = Message::from_normalized(&m).unwrap_err();
            assert!(err.contains(needle), "{key}: {err}");
            assert!(!err.contains("secret"), "{key}: {err}");
        }
        let mut m = obj(good.clone());
        m.remove("receivedAt");
        assert!(Message::from_normalized(&m).unwrap_err().contains("receivedAt"));
        let mut alias = obj(good.clone());
        alias.insert("type".into(), json!("alias"));
        assert!(Message::from_normalized(&alias).unwrap_err().contains("previousId"));
        alias.insert("previousId".into(), json!("p"));
        alias.remove("userId");
        alias.insert("anonymousId".into(), json!("a"));
        assert!(Message::from_normalized(&alias).unwrap_err().contains("userId"));
        let mut group = obj(good);
        group.insert("type".into(), json!("group"));
        assert!(Message::from_normalized(&group).unwrap_err().contains("groupId"));
    }
}

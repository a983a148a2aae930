//! Request bodies for the HTTP destinations, plus the webhook's idempotency key and signature. Pure functions.
//!
//! Meta event names: a track's `event` (Segment e-commerce spec names mapped to Meta standard events), `PageView`
//! for pages and screens (`action_source` tells them apart), and the capitalized type (`Identify`, `Group`,
//! `Alias`) as a custom event for the rest: calling an identify a `Lead` would count conversions nobody made, and
//! whether identifies go at all is the destination's `event_types` filter.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::types::Outbound;

/// The webhook body: the event itself (with `context.profile` when the event has one), or `{"batch":[…]}` for
/// several.
pub fn webhook_body(batch: &[Outbound]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 * batch.len());
    let written = match batch {
        [one] => one.event.write_with_profile(one.profile.as_ref(), &mut out),
        many => {
            out.extend_from_slice(b"{\"batch\":[");
            let mut r = Ok(());
            for (i, o) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                r = r.and_then(|()| o.event.write_with_profile(o.profile.as_ref(), &mut out));
            }
            out.extend_from_slice(b"]}");
            r
        }
    };
    // Events are objects read from JSON or built here, so writing them cannot fail; never panic regardless.
    match written {
        Ok(()) => out,
        Err(_) => b"{}".to_vec(),
    }
}

/// The webhook's `Idempotency-Key`: the event's messageId, or for a batch (or a messageId that cannot be a header
/// value) `b-`/`m-` and the SHA-256 of the messageIds joined by newlines.
pub fn idempotency_key(batch: &[Outbound]) -> String {
    match batch {
        [one] if header_safe(&one.message_id) => one.message_id.clone(),
        [one] => format!("m-{}", hex::encode(Sha256::digest(one.message_id.as_bytes()))),
        many => {
            let mut h = Sha256::new();
            for (i, o) in many.iter().enumerate() {
                if i > 0 {
                    h.update(b"\n");
                }
                h.update(o.message_id.as_bytes());
            }
            format!("b-{}", hex::encode(h.finalize()))
        }
    }
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The `X-Tributary-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
/// A receiver recomputes it and rejects old timestamps to stop replays.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; stay panic-free anyway.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Meta Conversions API body (`POST /{pixel_id}/events`). The access token is not in it.
pub fn meta_body(batch: &[Outbound], test_event_code: Option<&str>) -> Value {
    meta_body_at(batch, test_event_code, OffsetDateTime::now_utc())
}

/// [`meta_body`] with the time used for events whose own time cannot be read.
fn meta_body_at(batch: &[Outbound], test_event_code: Option<&str>, now: OffsetDateTime) -> Value {
    let data: Vec<Value> = batch.iter().map(|o| meta_event(o, now)).collect();
    let mut body = Map::new();
    body.insert("data".into(), Value::Array(data));
    if let Some(code) = test_event_code.filter(|c| !c.is_empty()) {
        body.insert("test_event_code".into(), code.into());
    }
    Value::Object(body)
}

fn meta_event(o: &Outbound, now: OffsetDateTime) -> Value {
    let e = o.event.map();
    let context = e.get("context").and_then(Value::as_object);
    let kind = str_at(e, "type").unwrap_or("");
    let mut out = Map::new();
    out.insert("event_name".into(), meta_event_name(e).into());
    out.insert("event_time".into(), event_time(e, now).unix_timestamp().into());
    out.insert("event_id".into(), o.message_id.clone().into());
    let app = kind == "screen" || context.is_some_and(|c| c.contains_key("app"));
    out.insert("action_source".into(), if app { "app" } else { "website" }.into());
    if let Some(url) = context.and_then(|c| c.get("page")).and_then(Value::as_object).and_then(|p| str_at(p, "url")) {
        out.insert("event_source_url".into(), url.into());
    }
    let mut user = o.user_data.as_ref().and_then(Value::as_object).cloned().unwrap_or_default();
    // Meta wants these two in clear (they are not hashed).
    if let Some(ip) = context.and_then(|c| str_at(c, "ip")) {
        user.entry("client_ip_address").or_insert_with(|| ip.into());
    }
    if let Some(ua) = context.and_then(|c| str_at(c, "userAgent")) {
        user.entry("client_user_agent").or_insert_with(|| ua.into());
    }
    out.insert("user_data".into(), Value::Object(user));
    if let Some(props) = e.get("properties").and_then(Value::as_object) {
        let custom = meta_custom_data(props);
        if !custom.is_empty() {
            out.insert("custom_data".into(), Value::Object(custom));
        }
    }
    Value::Object(out)
}

fn meta_event_name(e: &Map<String, Value>) -> String {
    match str_at(e, "type").unwrap_or("") {
        "track" => match str_at(e, "event").unwrap_or("") {
            "Order Completed" => "Purchase".into(),
            "Product Added" => "AddToCart".into(),
            "Checkout Started" => "InitiateCheckout".into(),
            "Product Viewed" => "ViewContent".into(),
            "Products Searched" => "Search".into(),
            "Signed Up" => "CompleteRegistration".into(),
            "Product Added to Wishlist" => "AddToWishlist".into(),
            "Payment Info Entered" => "AddPaymentInfo".into(),
            "" => "Track".into(),
            other => other.into(),
        },
        "page" | "screen" => "PageView".into(),
        "" => "Event".into(),
        other => capitalize(other),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Properties that [`meta_custom_data`] maps itself rather than passing on.
const META_MAPPED: [&str; 11] = [
    "revenue",
    "value",
    "total",
    "currency",
    "order_id",
    "products",
    "product_id",
    "sku",
    "price",
    "quantity",
    "query",
];

/// Meta's standard `custom_data` keys from Segment's e-commerce properties, plus the other scalar properties as
/// they are (objects and arrays are left out).
fn meta_custom_data(props: &Map<String, Value>) -> Map<String, Value> {
    let mut out: Map<String, Value> = props
        .iter()
        .filter(|(k, v)| !META_MAPPED.contains(&k.as_str()) && (v.is_string() || v.is_number() || v.is_boolean()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(v) = value_of(props).or_else(|| props.get("price").and_then(number)) {
        out.insert("value".into(), v);
    }
    if let Some(c) = str_at(props, "currency") {
        out.insert("currency".into(), c.into());
    }
    if let Some(id) = props.get("order_id").and_then(id_string) {
        out.insert("order_id".into(), id.into());
    }
    if let Some(q) = str_at(props, "query") {
        out.insert("search_string".into(), q.into());
    }
    let (contents, several) = match props.get("products").and_then(Value::as_array) {
        Some(products) => (products.iter().filter_map(|p| p.as_object().and_then(content)).collect(), true),
        None => (content(props).into_iter().collect::<Vec<_>>(), false),
    };
    if !contents.is_empty() {
        let ids: Vec<Value> = contents.iter().map(|c| c["id"].clone()).collect();
        if several {
            let items = contents.iter().fold(0u64, |n, c| n.saturating_add(c["quantity"].as_u64().unwrap_or(1)));
            out.insert("num_items".into(), items.into());
        }
        out.insert("content_ids".into(), Value::Array(ids));
        out.insert("contents".into(), Value::Array(contents));
        out.entry("content_type").or_insert_with(|| "product".into());
    }
    out
}

/// One `contents` entry from a Segment product: `{id, quantity, item_price?}`.
fn content(p: &Map<String, Value>) -> Option<Value> {
    let id = ["product_id", "sku", "id"].iter().find_map(|k| p.get(*k).and_then(id_string))?;
    let quantity = p.get("quantity").and_then(quantity).unwrap_or(1);
    let mut c = Map::new();
    c.insert("id".into(), id.into());
    c.insert("quantity".into(), quantity.into());
    if let Some(price) = p.get("price").and_then(number) {
        c.insert("item_price".into(), price);
    }
    Some(Value::Object(c))
}

/// The Google Ads `uploadClickConversions` body.
pub fn google_body(batch: &[Outbound], conversion_action: &str) -> Value {
    google_body_at(batch, conversion_action, OffsetDateTime::now_utc())
}

fn google_body_at(batch: &[Outbound], conversion_action: &str, now: OffsetDateTime) -> Value {
    let conversions: Vec<Value> = batch.iter().map(|o| google_conversion(o, conversion_action, now)).collect();
    json!({ "conversions": conversions, "partialFailure": true })
}

fn google_conversion(o: &Outbound, conversion_action: &str, now: OffsetDateTime) -> Value {
    let e = o.event.map();
    let empty = Map::new();
    let props = e.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let campaign = e
        .get("context")
        .and_then(Value::as_object)
        .and_then(|c| c.get("campaign"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Map::new();
    out.insert("conversionAction".into(), conversion_action.into());
    out.insert("conversionDateTime".into(), google_time(event_time(e, now)).into());
    if let Some(v) = value_of(props) {
        out.insert("conversionValue".into(), v);
        if let Some(c) = str_at(props, "currency") {
            out.insert("currencyCode".into(), c.into());
        }
    }
    let order = props.get("order_id").and_then(id_string).unwrap_or_else(|| o.message_id.clone());
    out.insert("orderId".into(), order.into());
    if let Some(ids) = o.user_data.as_ref().and_then(Value::as_array).filter(|a| !a.is_empty()) {
        out.insert("userIdentifiers".into(), Value::Array(ids.clone()));
    }
    // Google takes one click id; gclid first.
    let click = ["gclid", "gbraid", "wbraid"]
        .iter()
        .find_map(|k| str_at(props, k).or_else(|| str_at(campaign, k)).map(|v| (*k, v)));
    if let Some((k, v)) = click {
        out.insert((*k).into(), v.into());
    }
    Value::Object(out)
}

/// `yyyy-mm-dd hh:mm:ss+00:00`, the form Google Ads wants.
fn google_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The event's `timestamp`, else its `receivedAt`, else `now`.
fn event_time(e: &Map<String, Value>, now: OffsetDateTime) -> OffsetDateTime {
    ["timestamp", "receivedAt"]
        .iter()
        .find_map(|k| str_at(e, k).and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok()))
        .unwrap_or(now)
}

/// The order's value: `revenue`, else `value`, else `total`.
fn value_of(props: &Map<String, Value>) -> Option<Value> {
    ["revenue", "value", "total"].iter().find_map(|k| props.get(*k).and_then(number))
}

/// A finite number, or a string holding one (kept as the number it was when it was one).
fn number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        _ => None,
    }
}

fn quantity(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-empty string, or a number written out.
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_at<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(id: &str, event: Value) -> Outbound {
        let Value::Object(event) = event else { panic!("not an object") };
        Outbound {
            message_id: id.into(),
            source_id: "web".into(),
            event: std::sync::Arc::new(event.into()),
            user_data: None,
            profile: None,
        }
    }

    fn parsed(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).unwrap()
    }

    #[test]
    fn webhook_body_is_the_event_or_a_batch_with_the_profile_in_context() {
        let plain = out("m1", json!({ "type": "track", "event": "A", "context": { "ip": "1.2.3.4" } }));
        assert_eq!(
            parsed(&webhook_body(std::slice::from_ref(&plain))),
            json!({ "type": "track", "event": "A", "context": { "ip": "1.2.3.4" } })
        );

        let mut with = plain.clone();
        with.profile = Some(json!({ "id": "p1", "traits": { "plan": "pro" } }));
        assert_eq!(
            parsed(&webhook_body(std::slice::from_ref(&with))),
            json!({
                "type": "track", "event": "A",
                "context": { "ip": "1.2.3.4", "profile": { "id": "p1", "traits": { "plan": "pro" } } }
            })
        );
        // No context: created. A stale context.profile is replaced, a context that is not an object too.
        let mut bare = out("m2", json!({ "type": "identify" }));
        bare.profile = Some(json!({ "id": "p2" }));
        assert_eq!(
            parsed(&webhook_body(std::slice::from_ref(&bare))),
            json!({ "type": "identify", "context": { "profile": { "id": "p2" } } })
        );
        let mut stale = out("m3", json!({ "context": { "profile": "old", "locale": "en" } }));
        stale.profile = Some(json!({ "id": "p3" }));
        assert_eq!(
            parsed(&webhook_body(&[stale])),
            json!({ "context": { "locale": "en", "profile": { "id": "p3" } } })
        );
        let mut odd = out("m4", json!({ "context": "x" }));
        odd.profile = Some(json!({ "id": "p4" }));
        assert_eq!(parsed(&webhook_body(&[odd])), json!({ "context": { "profile": { "id": "p4" } } }));

        assert_eq!(
            parsed(&webhook_body(&[plain, with, bare])),
            json!({ "batch": [
                { "type": "track", "event": "A", "context": { "ip": "1.2.3.4" } },
                { "type": "track", "event": "A",
                  "context": { "ip": "1.2.3.4", "profile": { "id": "p1", "traits": { "plan": "pro" } } } },
                { "type": "identify", "context": { "profile": { "id": "p2" } } },
            ] })
        );
        assert_eq!(parsed(&webhook_body(&[])), json!({ "batch": [] }));
    }

    #[test]
    fn idempotency_keys() {
        let a = out("msg-a", json!({}));
        let b = out("msg-b", json!({}));
        assert_eq!(idempotency_key(std::slice::from_ref(&a)), "msg-a");
        let expected = format!("b-{}", hex::encode(Sha256::digest(b"msg-a\nmsg-b")));
        assert_eq!(idempotency_key(&[a.clone(), b.clone()]), expected);
        assert_ne!(idempotency_key(&[b.clone(), a.clone()]), expected, "order matters");
        // A messageId that cannot be a header value is hashed.
        let odd = out("a b\n", json!({}));
        assert_eq!(idempotency_key(&[odd]), format!("m-{}", hex::encode(Sha256::digest(b"a b\n"))));
    }

    #[test]
    fn signatures_are_stripe_style() {
        let sig = signature("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        assert_eq!(sig, format!("t=1700000000,v1={}", hex::encode(mac.finalize().into_bytes())));
        // Known answer, computed independently (Python's hmac).
        assert_eq!(
            signature("key", 0, b"The quick brown fox jumps over the lazy dog"),
            "t=0,v1=8511f28f7a1949f0c42772b447d68b2daf760f5f0439a20a17e3b4e7cd395763"
        );
        assert_ne!(signature("other", 1_700_000_000, br#"{"a":1}"#), sig);
    }

    #[test]
    fn meta_purchase_with_products() {
        let mut o = out(
            "m-1",
            json!({
                "type": "track", "event": "Order Completed",
                "timestamp": "2025-01-02T03:04:05.678+01:00", "receivedAt": "2025-01-02T09:00:00Z",
                "context": {
                    "ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "page": { "url": "https://shop.example/thanks" }
                },
                "properties": {
                    "order_id": 5001, "revenue": 25.5, "total": 30, "currency": "EUR", "coupon": "WINTER",
                    "shipping": 4.5, "gift": false, "notes": { "x": 1 }, "tags": ["a"],
                    "products": [
                        { "product_id": "p-1", "price": 10, "quantity": 2 },
                        { "sku": "SKU-2", "price": "5.5" },
                        { "name": "no id" },
                        "junk"
                    ]
                }
            }),
        );
        o.user_data = Some(json!({ "em": ["hash"], "external_id": ["xh"] }));
        assert_eq!(
            meta_body_at(&[o], Some("TEST42"), now()),
            json!({
                "data": [{
                    "event_name": "Purchase",
                    "event_time": 1_735_783_445,
                    "event_id": "m-1",
                    "action_source": "website",
                    "event_source_url": "https://shop.example/thanks",
                    "user_data": {
                        "em": ["hash"], "external_id": ["xh"],
                        "client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0"
                    },
                    "custom_data": {
                        "value": 25.5, "currency": "EUR", "order_id": "5001",
                        "coupon": "WINTER", "shipping": 4.5, "gift": false,
                        "content_ids": ["p-1", "SKU-2"],
                        "contents": [
                            { "id": "p-1", "quantity": 2, "item_price": 10 },
                            { "id": "SKU-2", "quantity": 1, "item_price": 5.5 }
                        ],
                        "num_items": 3,
                        "content_type": "product"
                    }
                }],
                "test_event_code": "TEST42"
            })
        );
    }

    #[test]
    fn meta_names_sources_and_times() {
        let batch = [
            out("a", json!({ "type": "page", "name": "Home", "receivedAt": "2025-01-01T00:00:00Z", "context": {} })),
            out(
                "b",
                json!({ "type": "screen", "name": "Home",
                        "timestamp": "not a time", "receivedAt": "2025-01-01T00:00:10Z" }),
            ),
            out(
                "c",
                json!({ "type": "track", "event": "Product Viewed", "context": { "app": { "name": "x" } },
                             "properties": { "product_id": 7, "price": 3, "name": "Mug" } }),
            ),
            out("d", json!({ "type": "track", "event": "Products Searched", "properties": { "query": "mugs" } })),
            out("e", json!({ "type": "identify", "traits": { "email": "x" } })),
            out(
                "f",
                json!({ "type": "track", "event": "Newsletter Opened", "properties": { "value": "2.5", "total": 9 } }),
            ),
            out("g", json!({ "type": "track", "event": "Signed Up" })),
        ];
        let body = meta_body_at(&batch, None, now());
        assert_eq!(
            body,
            json!({ "data": [
                { "event_name": "PageView", "event_time": 1_735_689_600, "event_id": "a",
                  "action_source": "website", "user_data": {} },
                { "event_name": "PageView", "event_time": 1_735_689_610, "event_id": "b",
                  "action_source": "app", "user_data": {} },
                { "event_name": "ViewContent", "event_time": NOW, "event_id": "c", "action_source": "app",
                  "user_data": {},
                  "custom_data": { "name": "Mug", "value": 3, "content_ids": ["7"],
                                   "contents": [{ "id": "7", "quantity": 1, "item_price": 3 }],
                                   "content_type": "product" } },
                { "event_name": "Search", "event_time": NOW, "event_id": "d", "action_source": "website",
                  "user_data": {}, "custom_data": { "search_string": "mugs" } },
                { "event_name": "Identify", "event_time": NOW, "event_id": "e", "action_source": "website",
                  "user_data": {} },
                { "event_name": "Newsletter Opened", "event_time": NOW, "event_id": "f", "action_source": "website",
                  "user_data": {}, "custom_data": { "value": 2.5 } },
                { "event_name": "CompleteRegistration", "event_time": NOW, "event_id": "g", "action_source": "website",
                  "user_data": {} },
            ] })
        );
        assert!(body.get("test_event_code").is_none());
        assert_eq!(meta_body(&[], Some("")), json!({ "data": [] }));
        for (segment, meta) in [
            ("Product Added", "AddToCart"),
            ("Checkout Started", "InitiateCheckout"),
            ("Product Added to Wishlist", "AddToWishlist"),
            ("Payment Info Entered", "AddPaymentInfo"),
        ] {
            let Value::Object(e) = json!({ "type": "track", "event": segment }) else { unreachable!() };
            assert_eq!(meta_event_name(&e), meta);
        }
        let Value::Object(g) = json!({ "type": "group" }) else { unreachable!() };
        assert_eq!(meta_event_name(&g), "Group");
    }

    #[test]
    fn meta_keeps_user_data_given_and_never_carries_a_token() {
        let mut o = out("m", json!({ "type": "track", "event": "X", "context": { "ip": "1.1.1.1" } }));
        o.user_data = Some(json!({ "client_ip_address": "2.2.2.2" }));
        let body = meta_body_at(&[o], None, now());
        assert_eq!(body["data"][0]["user_data"], json!({ "client_ip_address": "2.2.2.2" }));
        assert!(!body.to_string().contains("access_token"));
    }

    #[test]
    fn google_conversions() {
        let mut purchase = out(
            "m-1",
            json!({ "type": "track", "event": "Order Completed", "timestamp": "2025-03-04T23:30:00-02:00",
                    "properties": { "order_id": "o-9", "revenue": 42, "currency": "USD", "gclid": "Cj0K" } }),
        );
        purchase.user_data = Some(json!([{ "hashed_email": "h1" }, { "hashed_phone_number": "h2" }]));
        let lead = out(
            "m-2",
            json!({ "type": "track", "event": "Lead", "receivedAt": "2025-03-05T01:02:03Z",
                    "context": { "campaign": { "source": "google", "gbraid": "GB" } },
                    "properties": { "value": "7.5" } }),
        );
        let mut nothing = out("m-3", json!({ "type": "track", "event": "X" }));
        nothing.user_data = Some(json!([]));
        let action = "customers/1/conversionActions/2";
        assert_eq!(
            google_body_at(&[purchase, lead, nothing], action, now()),
            json!({
                "conversions": [
                    { "conversionAction": action, "conversionDateTime": "2025-03-05 01:30:00+00:00",
                      "conversionValue": 42, "currencyCode": "USD", "orderId": "o-9",
                      "userIdentifiers": [{ "hashed_email": "h1" }, { "hashed_phone_number": "h2" }], "gclid": "Cj0K" },
                    { "conversionAction": action, "conversionDateTime": "2025-03-05 01:02:03+00:00",
                      "conversionValue": 7.5, "orderId": "m-2", "gbraid": "GB" },
                    { "conversionAction": action, "conversionDateTime": "2027-01-15 08:00:00+00:00", "orderId": "m-3" },
                ],
                "partialFailure": true
            })
        );
        assert_eq!(google_body(&[], action), json!({ "conversions": [], "partialFailure": true }));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let odd = [
            out("", json!({})),
            out("x", json!({ "type": 5, "event": null, "properties": [], "context": "c", "timestamp": 7 })),
            out(
                "y",
                json!({ "type": "track", "properties": { "products": "no", "revenue": "NaN", "quantity": -1,
                                                         "product_id": {}, "price": "inf" } }),
            ),
            out(
                "z",
                json!({ "type": "track", "properties": {
                    "products": [{ "id": 1, "quantity": 1e300 }, { "id": 2, "quantity": 1e300 }] } }),
            ),
        ];
        let _ = webhook_body(&odd);
        let _ = idempotency_key(&odd);
        let meta = meta_body(&odd, None);
        assert_eq!(meta["data"].as_array().map(Vec::len), Some(4));
        assert!(meta["data"][2].get("custom_data").is_none(), "{meta}");
        assert_eq!(meta["data"][3]["custom_data"]["num_items"], json!(u64::MAX));
        let _ = google_body(&odd, "a");
    }
}

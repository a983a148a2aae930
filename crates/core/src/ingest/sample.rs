//! Deterministic, realistic request bodies for benchmarks and tests.

use std::io;

use serde::Serialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

/// A `/v1/batch` body shaped like what segment-analytics-python 2.x sends: `{"batch": [...], "sentAt", "writeKey"}`,
/// Python's `json.dumps` spacing (`", "`, `": "`) and `\uXXXX` escapes for non-ASCII, `userId`/`anonymousId` keys
/// present with `null` when unset, `timestamp` with milliseconds and `sentAt` with microseconds, both `+00:00`,
/// and a mix of track (60%), page (25%) and identify (15%) with a typical `context`.
///
/// The same `n` always gives the same bytes.
pub fn realistic_batch(n: usize) -> Vec<u8> {
    let base = OffsetDateTime::from_unix_timestamp(1_735_732_800).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let batch = realistic_events(n);
    let sent_at = base + Duration::milliseconds(n as i64 * 1234 + 500) + Duration::microseconds(321);
    let body = json!({
        "batch": batch,
        "sentAt": python_iso(sent_at, true),
        "writeKey": "wk_3f9a1c7e5b2d4f60a8c1e9b7d5f3a1c2",
    });
    let mut out = Vec::with_capacity(n * 1100 + 128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing a `Value` into memory cannot fail.
    let _ = body.serialize(&mut ser);
    out
}

/// `n` events of the same mix as [`realistic_batch`] (the same content for the same `i`), as JSON values, for
/// workloads that reassign who sends them.
pub fn realistic_events(n: usize) -> Vec<Value> {
    let base = OffsetDateTime::from_unix_timestamp(1_735_732_800).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (0..n).map(|i| sample_event(i, base)).collect()
}

const PAGES: [(&str, &str, &str); 5] = [
    ("/", "Home", "Acme Outfitters"),
    ("/products/trail-runner-2", "Product", "Trail Runner 2 – Acme Outfitters"),
    ("/collections/winter", "Collection", "Winter Collection | Acme"),
    ("/cart", "Cart", "Your Cart"),
    ("/checkout/shipping", "Checkout", "Checkout · Shipping"),
];

const EVENTS: [&str; 6] =
    ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed In", "Newsletter Subscribed"];

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

const NAMES: [&str; 6] = ["Ann Lee", "José Álvarez", "Mia Müller", "Noah Smith", "Zoë Dupont", "Kenji Sato"];

fn sample_event(i: usize, base: OffsetDateTime) -> Value {
    let r = splitmix64(i as u64 + 1);
    let user = (r % 5_000) as usize;
    let known = !r.is_multiple_of(4); // a quarter of the traffic is anonymous
    let user_id = if known { json!(format!("user_{user:05}")) } else { Value::Null };
    let anonymous_id = if known && r.is_multiple_of(3) { Value::Null } else { json!(uuid_from(r ^ 0xa5a5)) };
    let (path, page_name, title) = PAGES[i % PAGES.len()];
    let search =
        if i.is_multiple_of(3) { "?utm_source=newsletter&utm_medium=email&utm_campaign=winter_sale" } else { "" };
    let timestamp = base + Duration::milliseconds(i as i64 * 1234 + (r % 1000) as i64);
    let context = json!({
        "library": {"name": "analytics-python", "version": "2.3.4"},
        "ip": format!("203.0.113.{}", r % 254 + 1),
        "userAgent": USER_AGENTS[(r >> 8) as usize % USER_AGENTS.len()],
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "page": {
            "path": path,
            "referrer": "https://www.google.com/",
            "search": search,
            "title": title,
            "url": format!("https://shop.example.com{path}{search}"),
        },
        "campaign": if search.is_empty() { Value::Null } else {
            json!({"source": "newsletter", "medium": "email", "name": "winter_sale"})
        },
    });

    let mut event = json!({
        "integrations": {},
        "anonymousId": anonymous_id,
        "userId": user_id,
        "timestamp": python_iso(timestamp, false),
        "context": context,
        "messageId": uuid_from(r),
    });
    let kind = i % 20;
    let fields = if kind < 12 {
        let price = ((r >> 16) % 20_000) as f64 / 100.0 + 0.99;
        let quantity = (r >> 24) % 3 + 1;
        json!({
            "type": "track",
            "event": EVENTS[(r >> 12) as usize % EVENTS.len()],
            "properties": {
                "order_id": format!("ord_{:08x}", r >> 32),
                "revenue": price * quantity as f64,
                "currency": "USD",
                "coupon": Value::Null,
                "products": [
                    {"sku": format!("SKU-{:04}", r % 10_000), "name": "Trail Runner 2", "price": price,
                     "quantity": quantity, "category": "Shoes"},
                    {"sku": "SKU-0042", "name": "Merino Socks", "price": 12.5, "quantity": 1, "category": "Accessories"},
                ],
                "shipping": {"method": "ground", "address": {"city": "Berlin", "country": "DE"}},
                "first_purchase": r.is_multiple_of(2),
            },
        })
    } else if kind < 17 {
        json!({
            "type": "page",
            "name": page_name,
            "category": "Shop",
            "properties": {
                "path": path,
                "referrer": "https://www.google.com/",
                "title": title,
                "url": format!("https://shop.example.com{path}"),
            },
        })
    } else {
        let name = NAMES[(r >> 20) as usize % NAMES.len()];
        json!({
            "type": "identify",
            "traits": {
                "email": format!("user{user}@example.com"),
                "name": name,
                "plan": if r.is_multiple_of(2) { "pro" } else { "free" },
                "logins": (r >> 40) % 500,
                "address": {"city": "Berlin", "postal_code": "10115", "country": "DE"},
                "created_at": "2024-03-14T09:26:53.589+00:00",
            },
        })
    };
    if let (Value::Object(e), Value::Object(f)) = (&mut event, fields) {
        e.extend(f);
    }
    event
}

/// Python's `datetime.isoformat()` for an aware UTC datetime: `+00:00`, milliseconds or microseconds.
fn python_iso(t: OffsetDateTime, micros: bool) -> String {
    let frac = if micros { format!("{:06}", t.microsecond()) } else { format!("{:03}", t.millisecond()) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{frac}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A v4-shaped UUID from a seed (what `uuid4()` looks like, without randomness).
fn uuid_from(seed: u64) -> String {
    let hi = splitmix64(seed);
    let lo = splitmix64(hi);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// `json.dumps` defaults: `", "` and `": "` separators, `ensure_ascii=True`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{pack, parse_body, process, Limits, RequestContext, Route};

    #[test]
    fn deterministic_and_python_shaped() {
        let a = realistic_batch(100);
        assert_eq!(a, realistic_batch(100));
        assert_ne!(a, realistic_batch(99));
        let text = std::str::from_utf8(&a).unwrap();
        assert!(text.is_ascii(), "ensure_ascii");
        assert!(text.contains("\"userId\": null"));
        assert!(text.contains("\\u00e9"));
        assert!(text.contains("+00:00\""));
        let v: Value = serde_json::from_slice(&a).unwrap();
        let batch = v["batch"].as_array().unwrap();
        assert_eq!(batch.len(), 100);
        assert!(v["sentAt"].as_str().unwrap().ends_with("+00:00"));
        assert_eq!(v["sentAt"].as_str().unwrap().len(), "2025-01-01T12:00:00.000000+00:00".len());
        assert!(v["writeKey"].is_string());
        let count = |t: &str| batch.iter().filter(|e| e["type"] == t).count();
        assert_eq!((count("track"), count("page"), count("identify")), (60, 25, 15));
        assert_eq!(realistic_batch(0), br#"{"batch": [], "sentAt": "2025-01-01T12:00:00.500321+00:00", "writeKey": "wk_3f9a1c7e5b2d4f60a8c1e9b7d5f3a1c2"}"#);
    }

    #[test]
    fn passes_the_whole_pipeline() {
        let body = realistic_batch(100);
        let limits = Limits::default();
        let ctx = RequestContext {
            received_at: OffsetDateTime::from_unix_timestamp(1_735_733_000).unwrap(),
            source_ip: Some("198.51.100.1".into()),
            user_agent: Some("analytics-python/2.3.4".into()),
        };
        let value = parse_body(&body, &limits).unwrap();
        let processed = process(Route::Batch, value, &ctx, &limits).unwrap();
        assert!(processed.rejected.is_empty(), "{:?}", processed.rejected);
        assert_eq!(processed.accepted.len(), 100);
        let msgs = pack("src", &processed.accepted, 256 * 1024);
        assert!(!msgs.is_empty());
        assert!(msgs.iter().all(|m| m.len() <= 256 * 1024));
    }
}

//! Delivery groundwork, all pure: which destination gets which event, and what is removed or hashed before it
//! leaves. The delivery queue carries the stitch function's hand-offs (`profile_id`, the source's data-party
//! class, the profile's consent per purpose, the event); the senders built later call into this module.
//!
//! - [`routing`]: [`DestinationConfig`] (kind, consent purposes, filters, allowed classes, fields to drop,
//!   hashing) and [`route`], which answers [`Route::Send`] or [`Route::Skip`] with a stable reason code. Consent
//!   fails closed for every destination kind: missing or unknown consent is a "no", and only an essential
//!   destination without purposes (never an ad platform) is exempt.
//! - [`hashing`]: Meta's and Google's normalization rules, SHA-256, the `user_data` / `user_identifiers` builders
//!   and in-place hashing of an event's identifiers.
//! - [`sensitive`]: [`SensitivePolicy`] (restricted industry, sensitive property names) and [`scrub`], which
//!   removes sensitive properties and values holding card numbers, SSNs or IBANs.
//! - [`prepare`] applies a destination's policy to one event, in the order that keeps anything removed from
//!   reaching the hashed identifiers too.

pub mod envelope;
pub mod hashing;
pub mod routing;
pub mod sensitive;
pub mod settings;

use serde_json::{Map, Value};

pub use envelope::{
    backoff_ms, receipt_key, DeadLetter, DeliveryEnvelope, DlqMessage, Handoff, Receipt, ReceiptStatus,
};
pub use hashing::{google_user_identifiers, hash_identifiers, meta_user_data, UserFields};
pub use routing::{route, DestinationConfig, DestinationError, DestinationKind, Route, SkipReason, Transport};
pub use sensitive::{scrub, RestrictedIndustry, Scrubber, SensitiveError, SensitivePolicy};
pub use settings::{interpolate, DeliverySettings};

/// What [`prepare`] did to one event for one destination. Counts only, no values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// `drop_fields` targets removed.
    pub dropped_fields: usize,
    /// Sensitive properties removed (ad platforms only).
    pub scrubbed: usize,
    /// Identifier values hashed in place, or removed because they could not be normalized.
    pub hashed: usize,
    /// Meta CAPI: the `user_data` object; Google Ads: the `user_identifiers` array; `None` for other kinds.
    pub user_data: Option<Value>,
}

/// Applies `dest`'s policy to an event that [`route`] sent to it, in place:
///
/// 1. `drop_fields`, first, so a dropped field feeds nothing below;
/// 2. for ad platforms, [`Scrubber::scrub`] (sensitive names and card/SSN/IBAN values), before the identifiers
///    are read, so a property named sensitive (say `birthday`) cannot come back as a hashed `db`;
/// 3. for ad platforms, the platform's identifiers, each hashed by its own rules, into [`Prepared::user_data`];
/// 4. when the destination hashes (always for ad platforms), the event's own `email` / `phone` values are
///    replaced by their hashes, so the event the sender is handed holds no identifier in clear either.
pub fn prepare(
    dest: &DestinationConfig,
    scrubber: &Scrubber,
    event: &mut Map<String, Value>,
    default_country_code: Option<&str>,
) -> Prepared {
    let dropped_fields = dest.apply_drop_fields(event);
    let scrubbed = if dest.kind.is_ad_platform() { scrubber.scrub(event) } else { 0 };
    let user_data = match dest.kind {
        DestinationKind::MetaCapi => {
            Some(Value::Object(meta_user_data(&UserFields::from_event(event), default_country_code)))
        }
        DestinationKind::GoogleAds => {
            Some(Value::Array(google_user_identifiers(&UserFields::from_event(event), default_country_code)))
        }
        DestinationKind::Webhook | DestinationKind::S3Export => None,
    };
    let hashed = if dest.hashes() { hash_identifiers(event, default_country_code) } else { 0 };
    Prepared { dropped_fields, scrubbed, hashed, user_data }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::delivery::hashing::sha256_hex;

    fn dest(kind: DestinationKind) -> DestinationConfig {
        DestinationConfig {
            id: "d1".into(),
            kind,
            purposes: vec!["advertising".into()],
            essential: false,
            event_types: None,
            event_names: None,
            sources: None,
            allowed_classes: None,
            drop_fields: vec!["/context/ip".into(), "/context/traits/phone".into()],
            hashing: None,
            transport: routing::Transport::minimal(kind),
        }
    }

    fn event() -> Map<String, Value> {
        match json!({
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "properties": { "total": 30, "medication": "x", "note": "card 4111-1111-1111-1111" },
            "context": {
                "ip": "192.0.2.1",
                "traits": { "email": "John_Smith@gmail.com", "phone": "+1 650 555 1212", "birthday": "1990-01-02" }
            }
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn ad_platforms_get_dropped_scrubbed_and_hashed_events() {
        let policy = SensitivePolicy {
            restricted_industry: Some(RestrictedIndustry::Health),
            sensitive_properties: vec!["birthday".into()],
        };
        let scrubber = policy.compile();
        let mut e = event();
        let p = prepare(&dest(DestinationKind::MetaCapi), &scrubber, &mut e, None);
        assert_eq!((p.dropped_fields, p.scrubbed, p.hashed), (2, 3, 1));
        let email_hash = sha256_hex("john_smith@gmail.com");
        // The dropped phone and the scrubbed birthday are not in user_data either.
        assert_eq!(p.user_data, Some(json!({ "em": email_hash, "external_id": sha256_hex("u1") })));
        assert_eq!(
            Value::Object(e),
            json!({
                "type": "track",
                "event": "Order Completed",
                "userId": "u1",
                "properties": { "total": 30 },
                "context": { "traits": { "email": format!("sha256:{email_hash}") } }
            })
        );

        let mut e = event();
        let p = prepare(&dest(DestinationKind::GoogleAds), &SensitivePolicy::default().compile(), &mut e, None);
        // Without an industry only the card goes; the birthday stays but Google takes no birth date.
        assert_eq!(p.scrubbed, 1);
        assert_eq!(p.user_data, Some(json!([{ "hashed_email": sha256_hex("john_smith@gmail.com") }])));
    }

    #[test]
    fn own_destinations_are_not_scrubbed_and_hash_only_when_asked() {
        let scrubber =
            SensitivePolicy { restricted_industry: Some(RestrictedIndustry::Health), ..Default::default() }.compile();
        for kind in [DestinationKind::Webhook, DestinationKind::S3Export] {
            let mut d = dest(kind);
            let mut e = event();
            let p = prepare(&d, &scrubber, &mut e, None);
            assert_eq!((p.dropped_fields, p.scrubbed, p.hashed, p.user_data), (2, 0, 0, None), "{kind}");
            assert_eq!(e["context"]["traits"]["email"], json!("John_Smith@gmail.com"));
            assert_eq!(e["properties"]["medication"], json!("x"));
            d.hashing = Some(true);
            let mut e = event();
            assert_eq!(prepare(&d, &scrubber, &mut e, None).hashed, 1, "{kind}");
            assert_eq!(
                e["context"]["traits"]["email"],
                json!(format!("sha256:{}", sha256_hex("john_smith@gmail.com")))
            );
        }
    }
}

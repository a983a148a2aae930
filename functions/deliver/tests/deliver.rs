//! Acceptance tests of the deliver function: the real handler, on embedded queues and tables, against a scripted
//! local HTTP destination (and a directory as the export bucket).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tributary_core::config::DataPartyClass;
use tributary_core::delivery::{DestinationKind, DlqMessage, ReceiptStatus, RestrictedIndustry, SensitivePolicy};
use tributary_core::profile::layout::{profile_key, Stamp, TraitEntry};
use tributary_core::profile::ProfileDoc;
use tributary_deliver::redrive::{self, Filter};
use tributary_deliver::resolve_destinations;

const SECRET: &str = "whsec_acceptance";

// ---------------------------------------------------------------------------------------------------------------
// 1. Retries, 429, poison, DLQ, redrive
// ---------------------------------------------------------------------------------------------------------------

/// Every event fails twice with 503, then gets a 429 with `Retry-After: 1`, then 200. One poison event gets 400
/// until the endpoint is fixed; it is dead-lettered at once, and a redrive delivers it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_back_off_honour_retry_after_and_the_poison_event_is_redriven_once() {
    const POISON: &str = "evt-07";
    let started = Instant::now();
    let fixed = Arc::new(AtomicBool::new(false));
    let server = {
        let fixed = fixed.clone();
        Server::start(move |req| {
            if req.hit.idempotency_key() == POISON {
                return if fixed.load(Ordering::SeqCst) { Reply::ok() } else { Reply::status(400) };
            }
            match req.previous {
                0 | 1 => Reply::status(503),
                2 => Reply::status(429).header("Retry-After", "1"),
                _ => Reply::ok(),
            }
        })
        .await
    };
    let mut hook = webhook("hook", &server, &["advertising"]);
    hook.transport.secret = Some(SECRET.into());
    hook.transport.batch_size = Some(1);
    let ws = workspace(&[hook], delivery_settings());
    // Fixed jitter (half of the random half): backoffs of 150 ms, 300 ms, then 600 ms raised to the 1 s Retry-After.
    let h = Harness::with(ws, Options { max_receive_count: 50, jitter: Some(0.5) });

    // 20 events of 4 profiles, 3 per message, consent granted by the profiles.
    let ids: Vec<String> = (0..20).map(|i| format!("evt-{i:02}")).collect();
    let items: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let profile = format!("prof-{}", i % 4);
            let event = track(id, &format!("user{}", i % 4), "Order Completed", json!({ "total": i }));
            handoff(Some(&profile), &[("advertising", true)], event)
        })
        .collect();
    let profile_of = |id: &str| items.iter().find(|i| i.message_id() == id).and_then(|i| i.profile_id.clone());
    let envelopes: Vec<_> = items.chunks(3).map(|c| envelope(c.to_vec())).collect();
    assert_eq!(envelopes.len(), 7);
    h.enqueue(&envelopes).await;
    // A visibility timeout far beyond any backoff: a record that came back by it rather than by the handler's
    // backoff would show up as a gap of 10 s.
    let trigger = h.start_trigger(10, Duration::from_secs(10));

    let good: BTreeSet<String> = ids.iter().filter(|id| *id != POISON).cloned().collect();
    let settled = eventually(Duration::from_secs(20), || async {
        let accepted = server.accepted("hook");
        good.iter().all(|id| accepted.contains_key(id)) && h.pending().await == 0
    })
    .await;
    assert!(settled, "not settled: accepted {:?}, pending {}", server.accepted("hook"), h.pending().await);

    // Every good event was accepted exactly once (one 200 per Idempotency-Key), after 503, 503, 429.
    let hits = server.hits_for("hook");
    let accepted = server.accepted("hook");
    assert_eq!(accepted.keys().cloned().collect::<BTreeSet<_>>(), good, "accepted events");
    assert!(accepted.values().all(|n| *n == 1), "an event was accepted twice: {accepted:?}");
    for id in &good {
        let tries: Vec<_> = hits.iter().filter(|h| h.idempotency_key() == id).collect();
        let statuses: Vec<u16> = tries.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [503, 503, 429, 200], "attempts of {id}");
        // The body is the event itself, under its own messageId.
        assert!(tries.iter().all(|h| h.message_ids() == [id.clone()]), "{id}");
        // Exponential backoff: each gap at least the backoff, growing; the 429's Retry-After (1 s) honoured.
        let gaps: Vec<u128> = tries.windows(2).map(|w| (w[1].at - w[0].at).as_millis()).collect();
        assert!(gaps[0] >= 150 && gaps[1] >= 300 && gaps[2] >= 1_000, "{id}: gaps {gaps:?} ms");
        assert!(gaps[0] < gaps[1] && gaps[1] < gaps[2], "{id}: gaps do not grow: {gaps:?} ms");
        // ... and the record came back because of them, not by the queue's 10 s visibility timeout.
        assert!(gaps[0] < 1_500 && gaps[1] < 1_650 && gaps[2] < 2_350, "{id}: gaps {gaps:?} ms");
        let receipt = h.receipt(profile_of(id).as_deref(), "hook", id).await.expect("a receipt");
        assert_eq!((receipt.s, receipt.n), (ReceiptStatus::Delivered, 4), "receipt of {id}");
    }
    // Every request is signed: t=<ts>,v1=HMAC-SHA256(secret, "<ts>." + body).
    for hit in &hits {
        verify_signature(hit, SECRET).unwrap_or_else(|e| panic!("{}: {e}", hit.idempotency_key()));
        assert_eq!(hit.header("content-type"), Some("application/json"));
    }

    // The poison event was refused once and dead-lettered at once, with its reason; its receipt says failed.
    let poison_hits: Vec<u16> = hits.iter().filter(|h| h.idempotency_key() == POISON).map(|h| h.status).collect();
    assert_eq!(poison_hits, [400], "a refused event is not sent again before a redrive");
    let letters = h.dead_letters().await;
    assert_eq!(letters.len(), 1, "one dead letter per (destination, event): {letters:?}");
    let DlqMessage::DeadLetter(letter) = &letters[0] else { panic!("not a dead letter: {:?}", letters[0]) };
    assert_eq!(
        (letter.destination_id.as_str(), letter.reason.as_str(), letter.attempts, letter.item.message_id()),
        ("hook", "http_400", 1, POISON)
    );
    assert_eq!(letter.source_id, SOURCE);
    let receipt = h.receipt(profile_of(POISON).as_deref(), "hook", POISON).await.expect("a poison receipt");
    assert_eq!((receipt.s, receipt.e.as_deref()), (ReceiptStatus::Failed, Some("http_400")));

    // A dry run lists the entry (without event content) and moves nothing.
    let only_hook = Filter { destination: Some("hook".into()), ..Default::default() };
    let report = redrive::run(&h.dlq, &h.queue, &only_hook, true).await.expect("dry run");
    assert_eq!((report.moved, report.kept, report.unreadable), (0, 1, 0), "{report:?}");
    let entry = &report.entries[0];
    assert!(entry.selected);
    assert_eq!(entry.destination.as_deref(), Some("hook"));
    assert_eq!(entry.reason.as_deref(), Some("http_400"));
    assert_eq!(entry.message_ids, [POISON]);
    let other = Filter { destination: Some("elsewhere".into()), ..Default::default() };
    let report = redrive::run(&h.dlq, &h.queue, &other, true).await.expect("dry run");
    assert!(!report.entries[0].selected, "another destination's filter does not take it");
    assert_eq!(h.dead_letters().await.len(), 1, "a dry run leaves the DLQ as it was");

    // Fix the endpoint and redrive: the poison event arrives once, the DLQ empties.
    fixed.store(true, Ordering::SeqCst);
    let report = redrive::run(&h.dlq, &h.queue, &only_hook, false).await.expect("redrive");
    assert_eq!((report.moved, report.kept), (1, 0), "{report:?}");
    let redelivered = eventually(Duration::from_secs(10), || async {
        server.accepted("hook").contains_key(POISON) && h.pending().await == 0
    })
    .await;
    assert!(redelivered, "the redriven event did not arrive");
    assert_eq!(server.accepted("hook").get(POISON), Some(&1));
    let receipt = h.receipt(profile_of(POISON).as_deref(), "hook", POISON).await.expect("a poison receipt");
    assert_eq!(receipt.s, ReceiptStatus::Delivered);
    assert!(h.dead_letters().await.is_empty(), "the DLQ is empty after the redrive");
    let report = redrive::run(&h.dlq, &h.queue, &only_hook, false).await.expect("second redrive");
    assert_eq!((report.moved, report.entries.len()), (0, 0), "{report:?}");

    trigger.stop().await;
    // Nothing but the poison's redrive was sent after the first phase, and every good event still once.
    let accepted = server.accepted("hook");
    assert_eq!(accepted.len(), 20);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Consent matrix
// ---------------------------------------------------------------------------------------------------------------

/// Purpose (or consent category) → granted.
type Prefs = &'static [(&'static str, bool)];

/// Profile consent states.
const PROFILE_STATES: [(&str, Prefs); 4] = [
    ("granted", &[("advertising", true), ("analytics", true)]),
    ("denied", &[("advertising", false), ("analytics", false)]),
    ("missing", &[]),
    ("ads-only", &[("advertising", true)]),
];

/// The event's own consent, by the consent manager's category names (aliases of the purposes).
const EVENT_STATES: [(&str, Option<Prefs>); 4] = [
    ("granted", Some(&[("Advertising", true), ("Analytics", true)])),
    ("denied", Some(&[("Advertising", false), ("Analytics", false)])),
    ("missing", None),
    ("analytics-only", Some(&[("Analytics", true)])),
];

/// The rule, stated independently of the router: with purposes, each needs a grant (profile or event) and no
/// denial anywhere; without, only an essential destination that is not an ad platform gets events.
fn may_receive(
    kind: DestinationKind,
    purposes: &[&str],
    essential: bool,
    profile: &[(&str, bool)],
    event: &[(&str, bool)],
) -> bool {
    if purposes.is_empty() {
        return essential && !kind.is_ad_platform();
    }
    let event: Vec<(String, bool)> = event.iter().map(|(k, v)| (k.to_lowercase(), *v)).collect();
    purposes.iter().all(|p| {
        let stated: Vec<bool> = profile
            .iter()
            .filter(|(k, _)| k == p)
            .map(|(_, v)| *v)
            .chain(event.iter().filter(|(k, _)| k == p).map(|(_, v)| *v))
            .collect();
        !stated.is_empty() && stated.iter().all(|g| *g)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_matrix_nothing_is_sent_without_every_purpose_granted() {
    let server = Server::accepting().await;
    // Per kind: essential without purposes, one purpose, two purposes; and (not valid, handed over unchecked) a
    // destination with no purposes that is not essential.
    let configs: [(&str, &[&str], bool); 4] = [
        ("essential", &[], true),
        ("one", &["advertising"], false),
        ("two", &["advertising", "analytics"], false),
        ("none", &[], false),
    ];
    let mut destinations = Vec::new();
    for kind in DestinationKind::ALL {
        for (label, purposes, is_essential) in configs {
            let id = format!("{}-{label}", kind.as_str().replace('_', "-"));
            let mut d = match kind {
                DestinationKind::Webhook => webhook(&id, &server, purposes),
                DestinationKind::MetaCapi => meta(&id, &server, purposes),
                DestinationKind::GoogleAds => google(&id, &server, purposes),
                DestinationKind::S3Export => export(&id, purposes),
            };
            if is_essential {
                d = essential(d);
            }
            destinations.push((d, purposes, is_essential));
        }
    }
    // An "essential" ad platform and a destination without purposes are refused at start-up...
    let all: Vec<_> = destinations.iter().map(|(d, ..)| d.clone()).collect();
    for (d, purposes, is_essential) in &destinations {
        let refused =
            resolve_destinations(&workspace(std::slice::from_ref(d), delivery_settings()), &|_| None).is_err();
        let invalid = purposes.is_empty() && (!is_essential || d.kind.is_ad_platform());
        assert_eq!(refused, invalid, "start-up check of {}", d.id);
    }
    // ... and still fail closed when handed to the handler unchecked.
    let h = Harness::unchecked(workspace(&[], delivery_settings()), all, Options::default());

    let mut items = Vec::new();
    for (p_name, p_consent) in PROFILE_STATES {
        for (e_name, e_consent) in EVENT_STATES {
            let id = format!("m-profile-{p_name}-event-{e_name}");
            let mut event = track(&id, &format!("u-{p_name}"), "Order Completed", json!({ "total": 10 }));
            if let Some(prefs) = e_consent {
                event = with_event_consent(event, prefs);
            }
            items.push(handoff(Some(&format!("prof-{p_name}")), p_consent, event));
        }
    }
    // Two records, so a batch holds several.
    let (a, b) = items.split_at(8);
    let resp = h.handle(&[body(&envelope(a.to_vec())), body(&envelope(b.to_vec()))]).await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);

    let mut expected_total = 0;
    for (d, purposes, is_essential) in &destinations {
        let received: BTreeMap<String, usize> = match d.kind {
            DestinationKind::S3Export => {
                let (_, events) = h.exported(&d.id).await;
                let mut m = BTreeMap::new();
                for e in events {
                    *m.entry(e["messageId"].as_str().unwrap_or("").to_string()).or_default() += 1;
                }
                m
            }
            _ => {
                let hits = server.hits_for(&d.id);
                assert!(hits.iter().all(|h| !h.message_ids().is_empty()), "{}: a request without events", d.id);
                server.accepted(&d.id)
            }
        };
        let mut want = BTreeSet::new();
        for (p_name, p_consent) in PROFILE_STATES {
            for (e_name, e_consent) in EVENT_STATES {
                if may_receive(d.kind, purposes, *is_essential, p_consent, e_consent.unwrap_or(&[])) {
                    want.insert(format!("m-profile-{p_name}-event-{e_name}"));
                }
            }
        }
        let got: BTreeSet<String> = received.keys().cloned().collect();
        assert_eq!(got, want, "events received by {}", d.id);
        assert!(received.values().all(|n| *n == 1), "{}: {received:?}", d.id);
        if want.is_empty() {
            // Nothing at all: no request, no object.
            assert!(server.hits_for(&d.id).is_empty(), "{} got a request", d.id);
            assert_eq!(h.exported(&d.id).await.0, 0, "{} got an object", d.id);
        }
        expected_total += want.len();
    }
    // Spot checks of the rule itself, so a wrong `may_receive` cannot make the test vacuous.
    let webhook_two = server.accepted("webhook-two");
    assert!(
        webhook_two.contains_key("m-profile-ads-only-event-analytics-only"),
        "grants add up across profile and event"
    );
    assert!(!webhook_two.contains_key("m-profile-ads-only-event-missing"), "a purpose stated nowhere is a no");
    assert!(
        !server.accepted("meta-capi-one").contains_key("m-profile-granted-event-denied"),
        "the event's denial wins"
    );
    assert!(
        !server.accepted("google-ads-one").contains_key("m-profile-denied-event-granted"),
        "the profile's denial wins"
    );
    assert_eq!(server.accepted("webhook-essential").len(), 16, "an essential webhook gets everything");
    assert_eq!(h.exported("s3-export-essential").await.1.len(), 16, "an essential export gets everything");
    assert!(server.hits_for("meta-capi-essential").is_empty() && server.hits_for("google-ads-essential").is_empty());
    assert!(expected_total > 0);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Restricted industry
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restricted_industry_data_never_reaches_ad_platforms_but_reaches_the_webhook() {
    let server = Server::accepting().await;
    let mut delivery = delivery_settings();
    delivery.sensitive = SensitivePolicy {
        restricted_industry: Some(RestrictedIndustry::Health),
        sensitive_properties: vec!["genetic_marker".into()],
    };
    let ads = &["advertising"];
    let ws = workspace(
        &[meta("meta", &server, ads), google("google", &server, ads), webhook("hook", &server, ads)],
        delivery,
    );
    let h = Harness::new(ws);

    const EMAIL: &str = "Jane.Doe@Example.com";
    let sensitive = ["type 2 diabetes", "metformin", "4111 1111 1111 1111", "123-45-6789", "BRCA1-positive"];
    let mut event = track(
        "m-health",
        "jane",
        "Order Completed",
        json!({
            "total": 42.5,
            "currency": "USD",
            "diagnosis": "type 2 diabetes",
            "medication": "metformin",
            "note": "paid with 4111 1111 1111 1111",
            "reference": "SSN 123-45-6789",
            "geneticMarker": "BRCA1-positive",
        }),
    );
    event["context"]["traits"]["email"] = json!(EMAIL);
    let resp = h.handle(&[body(&envelope(vec![handoff(Some("prof-jane"), &[("advertising", true)], event)]))]).await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);

    let email_hash = sha256_hex(&EMAIL.to_lowercase());
    for platform in ["meta", "google"] {
        let hits = server.hits_for(platform);
        assert_eq!(hits.len(), 1, "{platform} requests");
        let text = hits[0].body_text();
        for value in sensitive {
            assert!(!text.contains(value), "{platform} received {value:?}: {text}");
        }
        assert!(!text.to_lowercase().contains(&EMAIL.to_lowercase()), "{platform} received the raw email: {text}");
        assert!(!text.contains("diagnosis") && !text.contains("medication"), "{platform}: {text}");
        assert!(text.contains(&email_hash), "{platform} has the email's SHA-256: {text}");
        assert_eq!(hits[0].message_ids(), ["m-health"], "{platform}");
    }
    // Meta: the hashed email under user_data.em, the order's value kept.
    let meta_body = server.hits_for("meta")[0].json();
    let data = &meta_body["data"][0];
    let em = &data["user_data"]["em"];
    assert!(em == &json!(email_hash) || em == &json!([email_hash]), "user_data.em = {em}");
    assert_eq!(data["custom_data"]["value"], json!(42.5));
    assert_eq!(data["event_name"], "Purchase");

    // The workspace's own webhook keeps everything, the raw email included.
    let hook = server.hits_for("hook");
    assert_eq!(hook.len(), 1);
    let text = hook[0].body_text();
    for value in sensitive.iter().chain([&EMAIL]) {
        assert!(text.contains(value), "the webhook lost {value:?}: {text}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Consent updates
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consent_change_reaches_destinations_that_asked_for_updates_as_a_consent_updated_event() {
    let server = Server::accepting().await;
    let mut updates = webhook("updates", &server, &["advertising"]);
    updates.transport.consent_updates = true;
    let plain = webhook("plain", &server, &["advertising"]);
    let mut analytics = webhook("analytics", &server, &["analytics"]);
    analytics.transport.consent_updates = true;
    let h = Harness::new(workspace(&[updates, plain, analytics], delivery_settings()));

    let event = track("m-change", "ann", "Preferences Saved", json!({ "coupon": "SAVE10" }));
    let mut item = handoff(Some("prof-ann"), &[("advertising", false), ("analytics", true)], event);
    item.consent_changed = true;
    let records = [body(&envelope(vec![item]))];
    let resp = h.handle(&records).await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);

    // Advertising is denied, yet the destination that asked for updates hears of it; never the event itself.
    let hits = server.hits_for("updates");
    assert_eq!(hits.len(), 1, "{:?}", hits.iter().map(Hit::body_text).collect::<Vec<_>>());
    let update = hits[0].json();
    assert_eq!(update["type"], "track");
    assert_eq!(update["event"], "Consent Updated");
    assert_eq!(update["messageId"], "m-change:consent");
    assert_eq!(hits[0].idempotency_key(), "m-change:consent");
    assert_eq!(update["properties"], json!({ "purposes": { "advertising": false, "analytics": true } }));
    assert_eq!(update["userId"], "ann");
    assert!(!hits[0].body_text().contains("SAVE10"), "nothing else of the event: {}", hits[0].body_text());

    // Without consent_updates: nothing (advertising is denied).
    assert!(server.hits_for("plain").is_empty());

    // Analytics is granted: that destination gets the event and the update.
    let mut got: Vec<String> = server.hits_for("analytics").iter().flat_map(Hit::message_ids).collect();
    got.sort();
    assert_eq!(got, ["m-change", "m-change:consent"]);

    // The update has its own receipt, so the same record again sends nothing.
    let receipt = h.receipt(Some("prof-ann"), "updates", "m-change:consent").await.expect("receipt");
    assert_eq!(receipt.s, ReceiptStatus::Delivered);
    assert!(failed_records(&h.handle(&records).await).is_empty());
    assert_eq!(server.hits().len(), 3, "nothing sent twice");
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Idempotency
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_envelope_twice_reaches_each_destination_once() {
    let server = Server::accepting().await;
    let h = Harness::new(workspace(
        &[webhook("hook", &server, &["analytics"]), export("archive", &["analytics"])],
        delivery_settings(),
    ));
    let item = |id: &str| handoff(Some("prof-1"), &[("analytics", true)], track(id, "u1", "Page Read", json!({})));
    let first = envelope(vec![item("m-1"), item("m-2"), item("m-3")]);
    for round in 0..2 {
        let resp = h.handle(&[body(&first)]).await;
        assert!(failed_records(&resp).is_empty(), "round {round}: {:?}", resp.batch_item_failures);
    }
    let accepted = server.accepted("hook");
    assert_eq!(accepted, BTreeMap::from([("m-1".into(), 1), ("m-2".into(), 1), ("m-3".into(), 1)]));
    let (objects, events) = h.exported("archive").await;
    assert_eq!((objects, events.len()), (1, 3));

    // A duplicate in the same batch (SQS delivers at least once) and a new event next to old ones.
    let second = envelope(vec![item("m-3"), item("m-4")]);
    let resp = h.handle(&[body(&first), body(&second)]).await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);
    let accepted = server.accepted("hook");
    assert_eq!(accepted.len(), 4);
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    let (_, events) = h.exported("archive").await;
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["messageId"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["m-1", "m-2", "m-3", "m-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_source_reaches_only_destinations_its_permitted_purposes_cover() {
    let server = Server::accepting().await;
    let mut ws = workspace(
        &[
            webhook("analytics-hook", &server, &["analytics"]),
            webhook("ads-hook", &server, &["advertising"]),
            essential(webhook("ops-hook", &server, &[])),
        ],
        delivery_settings(),
    );
    ws.sources.push(
        serde_json::from_value(json!({
            "id": SOURCE, "write_key_sha256": [], "class": "3P",
            "consent_basis": "consent", "permitted_purposes": ["analytics"]
        }))
        .expect("source"),
    );
    let h = Harness::new(ws);
    // The person granted both purposes; the broker may only be used for analytics.
    let granted = [("analytics", true), ("advertising", true)];
    let item = handoff(Some("prof-1"), &granted, track("m-1", "u1", "Bought", json!({})));
    let resp = h.handle(&[body(&envelope(vec![item]))]).await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);
    assert_eq!(server.accepted("analytics-hook").len(), 1);
    assert_eq!(server.accepted("ops-hook").len(), 1, "essential destinations need no purpose");
    assert!(server.accepted("ads-hook").is_empty(), "advertising is not a permitted purpose of the broker");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Bad records
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_that_is_not_an_envelope_fails_alone() {
    let server = Server::accepting().await;
    let h = Harness::new(workspace(&[webhook("hook", &server, &["analytics"])], delivery_settings()));
    let item = |id: &str| handoff(Some("prof-1"), &[("analytics", true)], track(id, "u1", "Signed Up", json!({})));
    let bodies = [
        body(&envelope(vec![item("m-a")])),
        "this is not json".to_string(),
        json!({ "v": 1, "sourceId": SOURCE }).to_string(),
        body(&envelope(vec![item("m-b")])),
    ];
    let resp = h.handle(&bodies).await;
    assert_eq!(failed_records(&resp), ["rec-1", "rec-2"]);
    let accepted = server.accepted("hook");
    assert_eq!(accepted, BTreeMap::from([("m-a".into(), 1), ("m-b".into(), 1)]));
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Profile traits
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_traits_are_limited_to_the_destinations_classes() {
    let server = Server::accepting().await;
    let stamp = Stamp { ts: 1, received: 1, source: SOURCE.into(), message_id: "m-0".into() };
    let entry = |value: Value, class| TraitEntry { value, at: stamp.clone(), class, set_once: false };
    let doc = ProfileDoc {
        created_at: 1,
        traits: BTreeMap::from([
            ("plan".to_string(), entry(json!("pro"), DataPartyClass::ZeroParty)),
            ("city".to_string(), entry(json!("Lyon"), DataPartyClass::FirstParty)),
            ("partner_tier".to_string(), entry(json!("gold"), DataPartyClass::SecondParty)),
            ("credit_band".to_string(), entry(json!("subprime"), DataPartyClass::ThirdParty)),
        ]),
        ..Default::default()
    };

    let mut own = webhook("own", &server, &["analytics"]);
    own.transport.profile_traits = true;
    own.allowed_classes =
        Some(vec![DataPartyClass::ZeroParty, DataPartyClass::FirstParty, DataPartyClass::SecondParty]);
    let mut all = webhook("all", &server, &["analytics"]);
    all.transport.profile_traits = true;
    let bare = webhook("bare", &server, &["analytics"]);
    let mut archive = export("archive", &["analytics"]);
    archive.transport.profile_traits = true;
    archive.allowed_classes = Some(vec![DataPartyClass::FirstParty]);
    let h = Harness::new(workspace(&[own, all, bare, archive], delivery_settings()));
    h.table.put(profile_key("prof-7"), doc.to_attrs());

    let resp = h
        .handle(&[body(&envelope(vec![handoff(
            Some("prof-7"),
            &[("analytics", true)],
            track("m-7", "u7", "Order Completed", json!({})),
        )]))])
        .await;
    assert!(failed_records(&resp).is_empty(), "{:?}", resp.batch_item_failures);

    let profile_of = |dest: &str| {
        let hits = server.hits_for(dest);
        assert_eq!(hits.len(), 1, "{dest}");
        hits[0].json()["context"]["profile"].clone()
    };
    assert_eq!(
        profile_of("own"),
        json!({ "id": "prof-7", "traits": { "plan": "pro", "city": "Lyon", "partner_tier": "gold" } }),
        "3P traits are left out"
    );
    assert_eq!(
        profile_of("all"),
        json!({ "id": "prof-7", "traits": { "plan": "pro", "city": "Lyon", "partner_tier": "gold", "credit_band": "subprime" } })
    );
    assert_eq!(profile_of("bare"), json!({ "id": "prof-7" }), "no traits unless asked for");
    let (_, exported) = h.exported("archive").await;
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["context"]["profile"], json!({ "id": "prof-7", "traits": { "city": "Lyon" } }));
    // The event's own context is kept next to the profile.
    assert_eq!(server.hits_for("own")[0].json()["context"]["traits"]["email"], "u7@example.com");
}

//! The tracking API's body: bounded JSON parsing, then validation and normalization on the route the first byte
//! picks. Checks that refusals are 4xx with a code, and that a request never yields more events than it may hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_core::ingest::{parse_body, process, Limits, RequestContext, Route};

const ROUTES: [Route; 8] = [
    Route::Track,
    Route::Identify,
    Route::Page,
    Route::Screen,
    Route::Group,
    Route::Alias,
    Route::Batch,
    Route::Import,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let route = ROUTES[usize::from(selector) % ROUTES.len()];
    let limits = Limits::default();
    let value = match parse_body(body, &limits) {
        Ok(value) => value,
        Err(e) => {
            assert!((400..500).contains(&e.status) && !e.code.is_empty(), "{e}");
            return;
        }
    };
    assert!(value.is_object(), "parse_body answers objects only");
    let ctx = RequestContext {
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        source_ip: Some("192.0.2.1".into()),
        user_agent: None,
    };
    match process(route, value, &ctx, &limits) {
        Ok(out) => {
            let n = out.accepted.len() + out.rejected.len();
            assert!(n <= limits.max_batch_events.max(1), "{n} events from one request");
            if !route.is_batch() {
                assert_eq!(n, 1, "a single-event route answers for exactly one event");
            }
            for event in &out.accepted {
                assert!(event.get("type").and_then(|t| t.as_str()).is_some(), "accepted events have a type");
            }
        }
        Err(e) => assert!((400..500).contains(&e.status) && !e.code.is_empty(), "{e}"),
    }
});

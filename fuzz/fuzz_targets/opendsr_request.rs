//! OpenDSR create requests (v2 and the legacy v1 API). Checks that refusals carry field errors with codes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_core::dsr::{parse_create, Api};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let api = if selector & 1 == 0 { Api::V2 } else { Api::LegacyV1 };
    let country = if selector & 2 == 0 { Some("US") } else { None };
    if let Err(errors) = parse_create(body, api, country) {
        assert!(!errors.is_empty(), "a refused request has at least one field error");
        for e in &errors {
            assert!(!e.reason.is_empty() && !e.location.is_empty() && !e.message.is_empty(), "{e:?}");
        }
    }
});

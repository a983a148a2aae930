//! The workspace configuration loader (YAML or JSON). Checks that every refusal names what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = tributary_core::config::load(text) {
        assert!(!errors.is_empty(), "a refused configuration has at least one error");
        for e in &errors {
            assert!(!e.message.is_empty(), "{e:?}");
        }
    }
});

//! PLACEHOLDER (helper replaces): bounded JSON parsing.
use super::{Limits, RequestError};

pub fn parse_body(bytes: &[u8], _limits: &Limits) -> Result<serde_json::Value, RequestError> {
    serde_json::from_slice(bytes).map_err(|e| RequestError::bad_request("invalid_json", e.to_string()))
}

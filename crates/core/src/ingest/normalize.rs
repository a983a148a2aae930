//! PLACEHOLDER (helper replaces): validation and normalization.
use super::{Limits, Processed, RequestContext, RequestError, Route};

pub fn process(
    _route: Route,
    body: serde_json::Value,
    _ctx: &RequestContext,
    _limits: &Limits,
) -> Result<Processed, RequestError> {
    let items = match body {
        serde_json::Value::Object(mut m) => match m.remove("batch") {
            Some(serde_json::Value::Array(a)) => a,
            _ => vec![serde_json::Value::Object(m)],
        },
        _ => return Err(RequestError::bad_request("invalid_body", "expected a JSON object")),
    };
    Ok(Processed {
        accepted: items.into_iter().filter_map(|v| if let serde_json::Value::Object(m) = v { Some(m) } else { None }).collect(),
        rejected: vec![],
    })
}

//! Workspace-wide delivery settings (`delivery:` in the workspace file) and `${NAME}` interpolation of destination
//! strings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sensitive::SensitivePolicy;

/// Most hosts in `allow_private_hosts`.
pub const MAX_ALLOWED_HOSTS: usize = 64;
/// The longest backoff: SQS's longest visibility timeout (12 h, counted from the receive) less the minutes an
/// invocation may already have used.
pub const MAX_BACKOFF_MS: u64 = (12 * 3600 - 600) * 1000;

/// How the deliver function sends, retries and guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Host names or IP literals a destination may reach although they resolve to a loopback, private,
    /// link-local or otherwise internal address. Everything else that does is refused (SSRF guard).
    pub allow_private_hosts: Vec<String>,
    /// Restricted industry and sensitive property names, scrubbed before anything reaches an ad platform.
    pub sensitive: SensitivePolicy,
    /// Attempts per (destination, event) before it goes to the DLQ (a redrive starts a new round).
    pub max_attempts: u32,
    /// First backoff, doubled per failed attempt (with jitter), in milliseconds.
    pub backoff_base_ms: u64,
    /// Longest backoff, in milliseconds (at most 11 h 50 min: SQS's longest visibility timeout is 12 hours).
    pub backoff_max_ms: u64,
    /// Requests in flight per invocation, over all destinations.
    pub max_in_flight: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            allow_private_hosts: Vec::new(),
            sensitive: SensitivePolicy::default(),
            // 10 s doubling to 1 h: about 7 hours of attempts before a person has to look.
            max_attempts: 12,
            backoff_base_ms: 10_000,
            backoff_max_ms: 3_600_000,
            max_in_flight: 32,
        }
    }
}

impl DeliverySettings {
    pub fn check(&self) -> Result<(), String> {
        if self.allow_private_hosts.len() > MAX_ALLOWED_HOSTS {
            return Err(format!("allow_private_hosts lists more than {MAX_ALLOWED_HOSTS} hosts"));
        }
        if let Some(i) =
            self.allow_private_hosts.iter().position(|h| h.is_empty() || h.len() > 253 || h.contains(['/', ' ']))
        {
            return Err(format!("allow_private_hosts[{i}] must be a host name or IP address"));
        }
        self.sensitive.check().map_err(|e| format!("sensitive: {e}"))?;
        if !(1..=100).contains(&self.max_attempts) {
            return Err("max_attempts must be 1..=100".into());
        }
        if self.backoff_base_ms == 0
            || self.backoff_base_ms > self.backoff_max_ms
            || self.backoff_max_ms > MAX_BACKOFF_MS
        {
            return Err("backoff_base_ms must be ≥ 1 and ≤ backoff_max_ms ≤ 42600000 (11 h 50 min)".into());
        }
        if !(1..=512).contains(&self.max_in_flight) {
            return Err("max_in_flight must be 1..=512".into());
        }
        Ok(())
    }

    /// Whether `host` (a name or an IP literal, without port or brackets) is allow-listed.
    pub fn allows_private(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_private_hosts
            .iter()
            .any(|h| h.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host))
    }
}

/// Replaces every `${NAME}` in `s` by `lookup(NAME)`. A name that is not set is an error naming it (never the
/// value); `$` not followed by `{` stays as it is.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { return Err("unterminated ${…}".into()) };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid variable name in ${{{name}}}"));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_reads_names_and_reports_missing_ones() {
        let env = |n: &str| (n == "TOKEN").then(|| "s3cr3t".to_string());
        assert_eq!(interpolate("Bearer ${TOKEN}!", &env).unwrap(), "Bearer s3cr3t!");
        assert_eq!(interpolate("a$b", &env).unwrap(), "a$b");
        assert_eq!(interpolate("${NOPE}", &env).unwrap_err(), "environment variable NOPE is not set");
        assert!(interpolate("${TOKEN", &env).is_err());
        assert!(interpolate("${A-B}", &env).is_err());
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(DeliverySettings::default().check(), Ok(()));
        let bad = DeliverySettings { max_attempts: 0, ..Default::default() };
        assert!(bad.check().is_err());
        let bad = DeliverySettings { backoff_base_ms: 10, backoff_max_ms: 5, ..Default::default() };
        assert!(bad.check().is_err());
        let bad = DeliverySettings { allow_private_hosts: vec!["http://x".into()], ..Default::default() };
        assert!(bad.check().is_err());
        let ok = DeliverySettings { allow_private_hosts: vec!["127.0.0.1".into(), "::1".into()], ..Default::default() };
        assert!(ok.allows_private("127.0.0.1") && ok.allows_private("[::1]") && !ok.allows_private("10.0.0.1"));
    }
}

//! PII detectors over free text and the per-source minimization action.
//!
//! Each detector finds candidates with a simple regular expression and then validates them with the rule that makes
//! the kind what it is (Luhn for cards, mod-97 for IBANs, the SSA ranges for SSNs, `std::net` parsing for IPs), so
//! near misses (a 16-digit number failing Luhn, `2024-01-01`, a time `12:30:45`) are not reported.
//!
//! Scope and deliberate limits:
//! - **Email**: `local@domain.tld`, the domain must contain at least one dot and end in a 2+ letter label. So
//!   `name@localhost` (or `root@server`) is *not* an email here: such addresses are not deliverable on the public
//!   internet and treating them as emails would flag log lines and user handles.
//! - **Phone**: international form only (`+CC …`), 8–15 digits in total (E.164), digits separated by at most two of
//!   space, dash, dot or parentheses. National formats without `+` are not detected (too close to other numbers).
//! - **Card**: 13–19 digits, optionally grouped with single spaces or dashes, passing the Luhn check.
//! - **IBAN**: two uppercase letters, two check digits, 11–30 alphanumerics (optionally in space-separated groups),
//!   passing the ISO 7064 mod-97 check.
//! - **NationalId**: US SSN `AAA-GG-SSSS` excluding area 000, 666 and 900–999, group 00 and serial 0000.
//! - **IpAddress**: IPv4 dotted quads and IPv6 addresses, validated by `std::net` parsing.
//!
//! Nothing in this module logs, and no error or outcome carries a raw value.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A kind of personal data the detectors recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
    /// National identifiers; currently the US Social Security Number.
    NationalId,
    IpAddress,
}

impl PiiKind {
    /// Every kind, in declaration order.
    pub const ALL: [PiiKind; 6] =
        [PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Iban, PiiKind::NationalId, PiiKind::IpAddress];

    /// The snake_case name used in config, metrics and redaction markers.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
            PiiKind::NationalId => "national_id",
            PiiKind::IpAddress => "ip_address",
        }
    }

    /// The normalized form that [`PiiAction::Hash`] hashes: email trimmed and lowercased; phone `+` and digits; card
    /// and SSN digits only; IBAN uppercase alphanumerics; IP address in its canonical `std::net` form.
    pub fn normalize(self, raw: &str) -> String {
        match self {
            PiiKind::Email => raw.trim().to_lowercase(),
            PiiKind::Phone => {
                // A national trunk prefix written as `(0)` (`+44 (0)20 …`) is not part of the E.164 number.
                let raw = raw.replacen("(0)", "", 1);
                let mut s = String::with_capacity(raw.len());
                s.push('+');
                s.extend(raw.chars().filter(char::is_ascii_digit));
                s
            }
            PiiKind::Card | PiiKind::NationalId => raw.chars().filter(char::is_ascii_digit).collect(),
            PiiKind::Iban => raw.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect(),
            PiiKind::IpAddress => match raw.trim().parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => raw.trim().to_ascii_lowercase(),
            },
        }
    }
}

impl std::fmt::Display for PiiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detected value: its kind and byte range in the scanned text (`text[start..end]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}")
        .expect("email pattern")
});
// `+`, a non-zero first digit, then 7–14 more digits each preceded by up to two separators.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+[1-9](?:[ .\-()]{0,2}[0-9]){7,14}").expect("phone pattern"));
// A run of digits with single space/dash separators; the length is checked afterwards.
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9](?:[ \-]?[0-9])*").expect("digit pattern"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}").expect("iban pattern"));
static SSN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]{3}-[0-9]{2}-[0-9]{4}").expect("ssn pattern"));
static IPV4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}").expect("ipv4 pattern"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|[0-9A-Fa-f]{0,4})")
        .expect("ipv6 pattern")
});

/// Finds the requested kinds of PII in `text`. Findings are sorted by start and never overlap: where two candidates
/// overlap, the one starting first wins, then the longer one.
pub fn detect(text: &str, kinds: &[PiiKind]) -> Vec<Finding> {
    let mut all = Vec::new();
    let shape = Shape::of(text);
    for &kind in PiiKind::ALL.iter().filter(|k| kinds.contains(k) && shape.may_hold(**k)) {
        match kind {
            PiiKind::Email => detect_email(text, &mut all),
            PiiKind::Phone => detect_phone(text, &mut all),
            PiiKind::Card => detect_card(text, &mut all),
            PiiKind::Iban => detect_iban(text, &mut all),
            PiiKind::NationalId => detect_ssn(text, &mut all),
            PiiKind::IpAddress => detect_ip(text, &mut all),
        }
    }
    all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(all.len());
    for f in all {
        if out.last().is_none_or(|last| f.start >= last.end) {
            out.push(f);
        }
    }
    out
}

/// Character counts of a string, from one pass over its bytes. Each detector's pattern needs some of these
/// (an `@`, so many digits, …); most strings in events (names, titles, SKUs) lack them, and skipping the regexes
/// for those keeps governance cheap. Every test is a necessary condition of the pattern, so nothing is missed.
struct Shape {
    len: usize,
    digits: usize,
    uppercase: usize,
    dots: usize,
    colons: usize,
    dashes: usize,
    at: bool,
    plus: bool,
}

impl Shape {
    fn of(text: &str) -> Shape {
        let mut s =
            Shape { len: text.len(), digits: 0, uppercase: 0, dots: 0, colons: 0, dashes: 0, at: false, plus: false };
        for b in text.bytes() {
            match b {
                b'0'..=b'9' => s.digits += 1,
                b'A'..=b'Z' => s.uppercase += 1,
                b'.' => s.dots += 1,
                b':' => s.colons += 1,
                b'-' => s.dashes += 1,
                b'@' => s.at = true,
                b'+' => s.plus = true,
                _ => {}
            }
        }
        s
    }

    fn may_hold(&self, kind: PiiKind) -> bool {
        match kind {
            PiiKind::Email => self.at,
            // `+`, then 8–15 digits.
            PiiKind::Phone => self.plus && self.digits >= 8,
            // 13–19 digits.
            PiiKind::Card => self.digits >= 13,
            // Two capitals, two check digits, at least 11 more characters.
            PiiKind::Iban => self.uppercase >= 2 && self.digits >= 2 && self.len >= 15,
            // `ddd-dd-dddd`.
            PiiKind::NationalId => self.digits >= 9 && self.dashes >= 2,
            // Four dotted numbers, or at least two colons.
            PiiKind::IpAddress => (self.digits >= 4 && self.dots >= 3) || self.colons >= 2,
        }
    }
}

fn byte_before(text: &str, i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| text.as_bytes()[j])
}

fn byte_at(text: &str, i: usize) -> Option<u8> {
    text.as_bytes().get(i).copied()
}

fn detect_email(text: &str, out: &mut Vec<Finding>) {
    for m in EMAIL.find_iter(text) {
        // The TLD must not run on into more domain characters (e.g. `a@b.c_d` or a trailing `-`).
        let after_ok = byte_at(text, m.end()).is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let s = m.as_str();
        // A local part cannot start or end with a dot.
        let local = &s[..s.find('@').unwrap_or(0)];
        if after_ok && !local.starts_with('.') && !local.ends_with('.') {
            out.push(Finding { kind: PiiKind::Email, start: m.start(), end: m.end() });
        }
    }
}

fn detect_phone(text: &str, out: &mut Vec<Finding>) {
    for m in PHONE.find_iter(text) {
        let before_ok = byte_before(text, m.start()).is_none_or(|b| !b.is_ascii_alphanumeric());
        // More digits right after (directly or after one separator) mean the number is longer than E.164 allows.
        let rest = &text.as_bytes()[m.end()..];
        let runs_on = matches!(rest.first(), Some(b) if b.is_ascii_digit())
            || matches!((rest.first(), rest.get(1)), (Some(b' ' | b'-' | b'.'), Some(d)) if d.is_ascii_digit());
        let s = m.as_str();
        let opens = s.bytes().filter(|&b| b == b'(').count();
        let closes = s.bytes().filter(|&b| b == b')').count();
        if before_ok && !runs_on && opens == closes && !s.contains("()") {
            out.push(Finding { kind: PiiKind::Phone, start: m.start(), end: m.end() });
        }
    }
}

/// The Luhn checksum over ASCII digits.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn detect_card(text: &str, out: &mut Vec<Finding>) {
    for m in DIGIT_RUN.find_iter(text) {
        // Not part of a longer token such as `A1234…` or `1234.5678…` (a decimal or an IP).
        let before = byte_before(text, m.start());
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'+') {
            continue;
        }
        if byte_at(text, m.end())
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' && next_is_digit(text, m.end()))
        {
            continue;
        }
        // Split into groups at separators; try windows of whole groups, longest first, leftmost first, so a card
        // followed by another number in the same run (`4111 1111 1111 1111 2024`) is still found.
        let s = m.as_str();
        let mut groups: Vec<(usize, usize)> = Vec::new(); // byte ranges within `s`
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            if b == b' ' || b == b'-' {
                groups.push((start, i));
                start = i + 1;
            }
        }
        groups.push((start, s.len()));
        // digits_before[i] = number of digits in groups[..i]; a window is only Luhn-checked when it holds 13–19
        // digits, and at most 19 groups fit in one, so long runs of short groups stay linear.
        let mut digits_before = Vec::with_capacity(groups.len() + 1);
        digits_before.push(0usize);
        for (a, b) in &groups {
            digits_before.push(digits_before.last().copied().unwrap_or(0) + (b - a));
        }
        let mut pos = 0;
        while pos < groups.len() {
            let mut found = None;
            for end in (pos..groups.len().min(pos + 19)).rev() {
                let count = digits_before[end + 1] - digits_before[pos];
                if !(13..=19).contains(&count) {
                    continue;
                }
                let (a, b) = (groups[pos].0, groups[end].1);
                let digits: Vec<u8> = s[a..b].bytes().filter(u8::is_ascii_digit).collect();
                if luhn_valid(&digits) {
                    found = Some((end, a, b));
                    break;
                }
            }
            match found {
                Some((end, a, b)) => {
                    out.push(Finding { kind: PiiKind::Card, start: m.start() + a, end: m.start() + b });
                    pos = end + 1;
                }
                None => pos += 1,
            }
        }
    }
}

fn next_is_digit(text: &str, dot: usize) -> bool {
    byte_at(text, dot + 1).is_some_and(|b| b.is_ascii_digit())
}

/// ISO 13616 / ISO 7064 mod-97-10 check of a compact (no spaces) uppercase IBAN.
pub(crate) fn iban_valid(compact: &[u8]) -> bool {
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn detect_iban(text: &str, out: &mut Vec<Finding>) {
    for m in IBAN.find_iter(text) {
        if byte_before(text, m.start()).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        // The candidate may have swallowed a following uppercase word or number: try the full match, then shorter
        // prefixes ending at a group boundary.
        let s = m.as_str();
        let mut ends: Vec<usize> = s.match_indices(' ').map(|(i, _)| i).collect();
        ends.push(s.len());
        for &end in ends.iter().rev() {
            if byte_at(text, m.start() + end).is_some_and(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            let compact: Vec<u8> = s[..end].bytes().filter(|b| *b != b' ').collect();
            if iban_valid(&compact) {
                out.push(Finding { kind: PiiKind::Iban, start: m.start(), end: m.start() + end });
                break;
            }
        }
    }
}

fn ssn_valid(s: &str) -> bool {
    let area: u32 = s[0..3].parse().unwrap_or(0);
    let group = &s[4..6];
    let serial = &s[7..11];
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

fn detect_ssn(text: &str, out: &mut Vec<Finding>) {
    for m in SSN.find_iter(text) {
        let edge = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
        if byte_before(text, m.start()).is_some_and(edge) || byte_at(text, m.end()).is_some_and(edge) {
            continue;
        }
        if ssn_valid(m.as_str()) {
            out.push(Finding { kind: PiiKind::NationalId, start: m.start(), end: m.end() });
        }
    }
}

fn detect_ip(text: &str, out: &mut Vec<Finding>) {
    for m in IPV4.find_iter(text) {
        let edge = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b':';
        if byte_before(text, m.start()).is_some_and(edge) {
            continue;
        }
        let after = byte_at(text, m.end());
        if after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b':')
            || after == Some(b'.') && next_is_digit(text, m.end())
        {
            continue;
        }
        if m.as_str().parse::<Ipv4Addr>().is_ok() {
            out.push(Finding { kind: PiiKind::IpAddress, start: m.start(), end: m.end() });
        }
    }
    for m in IPV6.find_iter(text) {
        let edge = |b: u8| b.is_ascii_alphanumeric() || b == b':' || b == b'.';
        if byte_before(text, m.start()).is_some_and(edge) || byte_at(text, m.end()).is_some_and(edge) {
            continue;
        }
        let s = m.as_str();
        // At least two non-empty hex groups, so `::` or `a::` in prose (or Rust paths) are not addresses.
        let groups = s.split(':').filter(|g| !g.is_empty()).count();
        if groups >= 2 && s.parse::<Ipv6Addr>().is_ok() {
            out.push(Finding { kind: PiiKind::IpAddress, start: m.start(), end: m.end() });
        }
    }
}

/// What to do with PII found in a source's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Keep the value; the findings are still counted.
    #[default]
    Allow,
    /// Replace each finding with `sha256:` + hex SHA-256 of its normalized form ([`PiiKind::normalize`]).
    Hash,
    /// Replace each finding with `[REDACTED:<kind>]`.
    Redact,
    /// Change nothing, but report that the whole event must be dropped if anything was found.
    DropEvent,
}

/// The result of [`apply`]: how many findings of each kind, and whether the event must be dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PiiOutcome {
    pub findings_by_kind: BTreeMap<PiiKind, usize>,
    pub drop: bool,
}

impl PiiOutcome {
    /// Total number of findings across kinds.
    pub fn total(&self) -> usize {
        self.findings_by_kind.values().sum()
    }
}

/// Scans every string inside `value` (object values and array items, at any depth; object keys are not scanned) for
/// the given kinds and applies `action` in place.
pub fn apply(value: &mut Value, kinds: &[PiiKind], action: PiiAction) -> PiiOutcome {
    let mut outcome = PiiOutcome::default();
    if kinds.is_empty() {
        return outcome;
    }
    // Iterative walk: no recursion depth to worry about whatever the nesting.
    let mut stack: Vec<&mut Value> = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                let findings = detect(s, kinds);
                if findings.is_empty() {
                    continue;
                }
                for f in &findings {
                    *outcome.findings_by_kind.entry(f.kind).or_insert(0) += 1;
                }
                match action {
                    PiiAction::Allow => {}
                    PiiAction::DropEvent => outcome.drop = true,
                    PiiAction::Hash | PiiAction::Redact => *s = rewrite(s, &findings, action),
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    outcome
}

fn rewrite(s: &str, findings: &[Finding], action: PiiAction) -> String {
    let mut out = String::with_capacity(s.len() + findings.len() * 16);
    let mut last = 0;
    for f in findings {
        out.push_str(&s[last..f.start]);
        if action == PiiAction::Hash {
            out.push_str("sha256:");
            out.push_str(&crate::sha256_hex(f.kind.normalize(&s[f.start..f.end]).as_bytes()));
        } else {
            out.push_str("[REDACTED:");
            out.push_str(f.kind.as_str());
            out.push(']');
        }
        last = f.end;
    }
    out.push_str(&s[last..]);
    out
}

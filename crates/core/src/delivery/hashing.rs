//! Identifier normalization and SHA-256 hashing for ad platforms, each by its own documented rules
//! (`wire-protocols.md` §5), and the `user_data` / `user_identifiers` builders.
//!
//! - **Meta** (Conversions API "Customer Information Parameters" and the official SDK's `normalize.py`): email
//!   trimmed and lowercased; phone digits only, with country code, no `+`, no leading zeros; names lowercased
//!   without punctuation (UTF-8 kept); birth date `YYYYMMDD`; gender `f`/`m`; city and state lowercase letters only;
//!   zip lowercase without spaces or `-suffix`; country ISO alpha-2 lowercase. `external_id` is hashed too.
//! - **Google Ads** (enhanced conversions, Customer Match, google-ads-python): trim and lowercase; email with the
//!   dots of the local part removed for `gmail.com` / `googlemail.com` (a `+tag` is kept, as the Google Ads API
//!   examples do; only the Data Manager API strips it); phone in E.164 *with* `+`; first name lowercase without
//!   extra spaces; last name lowercase without punctuation; country and postal code are sent unhashed.
//!
//! Emails are validated and phones brought to E.164 with the identity rules
//! ([`crate::identity::Identifier::new`]), so a national number needs the workspace's default country calling
//! code, exactly as identity resolution does. Values that cannot be normalized are left out rather than sent in a
//! form that could match somebody else.
//!
//! Already-hashed input: a value that is 64 hex characters is taken as hashed by the sender (the Meta SDK's
//! `is_already_hashed`) and passed on lowercased. `sha256:<hex>` is what a source's PII `hash` action wrote: our
//! hash of the trimmed, lowercased email or of the E.164 phone *with* `+`. That is Meta's email rule and Google's
//! email and phone rules, so it is passed on there, but not as a Meta phone (Meta hashes the digits without `+`).
//! Values holding a `[REDACTED:…]` marker are left out.

use serde_json::{Map, Value};

use crate::identity::{IdType, Identifier};

/// Longest value read from an event for hashing, in bytes; anything longer is not an identifier.
pub const MAX_FIELD_BYTES: usize = 1024;

const REDACTION_MARKER: &str = "[REDACTED:";

/// SHA-256 of an already normalized value, as lowercase hex (the form both platforms expect).
pub fn sha256_hex(normalized: &str) -> String {
    crate::sha256_hex(normalized.as_bytes())
}

/// A value that is already a hash, and who hashed it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prehashed {
    /// Bare 64 hex characters: hashed by the sender for the platform.
    Sender(String),
    /// `sha256:<hex>`, written by our PII `hash` action (identity normalization).
    Ours(String),
}

fn prehashed(raw: &str) -> Option<Prehashed> {
    let raw = raw.trim();
    let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex(raw) {
        return Some(Prehashed::Sender(raw.to_ascii_lowercase()));
    }
    let hex = raw.get(..7).filter(|p| p.eq_ignore_ascii_case("sha256:")).and(raw.get(7..))?;
    is_hex(hex).then(|| Prehashed::Ours(hex.to_ascii_lowercase()))
}

/// Meta `em`: trimmed, lowercased, and a plausible address (one `@`, a dotted domain).
pub fn meta_normalize_email(raw: &str) -> Option<String> {
    Identifier::new(IdType::Email, raw, None).ok().map(|id| id.value)
}

/// Meta `ph`: digits only, country code included, no `+` and no leading zeros (`(650)555-1212` with default
/// country code `1` → `16505551212`). Letters and symbols are dropped, as Meta says; a number written without
/// `+`/`00` gets `default_country_code` (after one trunk `0`), and without one it is left out.
pub fn meta_normalize_phone(raw: &str, default_country_code: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    if raw.len() > MAX_FIELD_BYTES {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    // International when a `+` comes before any digit (`tel: +44 …`). After it, zeros are never part of the
    // number (`+0044…` is a mistyped `+44…`; the SDK strips `^\+?0{0,2}`).
    let international = raw.chars().find(|c| c.is_ascii_digit() || *c == '+') == Some('+');
    let candidate = if international { format!("+{}", digits.trim_start_matches('0')) } else { digits };
    let e164 = Identifier::new(IdType::Phone, &candidate, default_country_code).ok()?;
    Some(e164.value.trim_start_matches('+').to_string())
}

/// Meta `fn` / `ln`: lowercase, punctuation removed, non-Roman letters kept (`Valéry` → `valéry`).
pub fn meta_normalize_name(raw: &str) -> Option<String> {
    let s: String = raw.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
    non_empty(s.trim())
}

/// Meta `db`: `YYYYMMDD`, from `YYYY-MM-DD` (optionally followed by a time, as ISO 8601 birthdays often are),
/// `YYYY/MM/DD` or `YYYYMMDD`; the date must exist.
pub fn meta_normalize_date_of_birth(raw: &str) -> Option<String> {
    let t = raw.trim();
    let b = t.as_bytes();
    let (year, month, day) = if b.len() >= 10
        && matches!(b[4], b'-' | b'/')
        && b[7] == b[4]
        && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' '))
    {
        (t.get(0..4)?, t.get(5..7)?, t.get(8..10)?)
    } else if b.len() == 8 {
        (t.get(0..4)?, t.get(4..6)?, t.get(6..8)?)
    } else {
        return None;
    };
    if ![year, month, day].iter().all(|p| p.bytes().all(|c| c.is_ascii_digit())) {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(format!("{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day()))
}

/// Meta `ge`: `f` or `m` (from `f`, `female`, `m`, `male` in any case); anything else is left out.
pub fn meta_normalize_gender(raw: &str) -> Option<String> {
    match raw.trim().to_lowercase().as_str() {
        "f" | "female" => Some("f".to_string()),
        "m" | "male" => Some("m".to_string()),
        _ => None,
    }
}

/// Meta `ct` and `st`: lowercase letters only (no digits, spaces or punctuation; UTF-8 letters kept).
pub fn meta_normalize_place(raw: &str) -> Option<String> {
    non_empty(&raw.to_lowercase().chars().filter(|c| c.is_alphabetic()).collect::<String>())
}

/// Meta `zp`: lowercase, no whitespace, nothing from the first `-` on; for the US (`country` `us`) the first five
/// digits.
pub fn meta_normalize_zip(raw: &str, country: Option<&str>) -> Option<String> {
    let s: String = raw.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.split('-').next().unwrap_or_default();
    if country == Some("us") && s.len() > 5 && s.bytes().take(5).all(|b| b.is_ascii_digit()) {
        return s.get(..5).map(str::to_string);
    }
    non_empty(s)
}

/// Meta `country`: ISO 3166-1 alpha-2, lowercase (`US` → `us`); anything that is not two letters is left out.
pub fn meta_normalize_country(raw: &str) -> Option<String> {
    let s = raw.trim().to_ascii_lowercase();
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_lowercase())).then_some(s)
}

/// Meta `external_id`: trimmed only, since ids are case-sensitive; hashed like everything else so the id never
/// leaves in clear.
pub fn meta_normalize_external_id(raw: &str) -> Option<String> {
    non_empty(raw.trim())
}

/// Google email: trimmed, lowercased, validated; for `gmail.com` and `googlemail.com` every `.` before the `@`
/// is removed (`Jane.Doe@GMail.com` → `janedoe@gmail.com`).
pub fn google_normalize_email(raw: &str) -> Option<String> {
    let email = Identifier::new(IdType::Email, raw, None).ok()?.value;
    match email.split_once('@') {
        Some((local, domain @ ("gmail.com" | "googlemail.com"))) => {
            Some(format!("{}@{domain}", local.replace('.', "")))
        }
        _ => Some(email),
    }
}

/// Google phone: E.164 with the `+` (`(800)555-0100` with default country code `1` → `+18005550100`).
pub fn google_normalize_phone(raw: &str, default_country_code: Option<&str>) -> Option<String> {
    Identifier::new(IdType::Phone, raw, default_country_code).ok().map(|id| id.value)
}

/// Google `hashed_first_name`: lowercase, no extra spaces.
pub fn google_normalize_first_name(raw: &str) -> Option<String> {
    non_empty(&collapse_spaces(&raw.to_lowercase()))
}

/// Google `hashed_last_name`: lowercase, no punctuation, no extra spaces.
pub fn google_normalize_last_name(raw: &str) -> Option<String> {
    let s: String = raw.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
    non_empty(&collapse_spaces(&s))
}

/// Google `hashed_street_address`: trimmed and lowercased.
pub fn google_normalize_street(raw: &str) -> Option<String> {
    non_empty(&raw.trim().to_lowercase())
}

/// Google `country_code`: ISO 3166-1 alpha-2, uppercase, sent unhashed.
pub fn google_normalize_country(raw: &str) -> Option<String> {
    meta_normalize_country(raw).map(|c| c.to_ascii_uppercase())
}

/// Google `postal_code`: trimmed, sent unhashed.
pub fn google_normalize_postal_code(raw: &str) -> Option<String> {
    non_empty(raw.trim())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The person-describing fields of an event or profile, raw, before any platform's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFields {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `YYYY-MM-DD` or an ISO 8601 date-time.
    pub birthday: Option<String>,
    pub gender: Option<String>,
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    /// The `userId`.
    pub external_id: Option<String>,
}

impl UserFields {
    /// Reads Segment's reserved traits (`email`, `phone`, `firstName`/`first_name`, `lastName`/`last_name`,
    /// `birthday`, `gender`, `address.{street, city, state, postalCode/postal_code/zip, country}`) and `userId`.
    ///
    /// Like identity extraction: for identify, `traits` first and `context.traits` per key as fallback; for every
    /// other type only `context.traits`, since a group's `traits` describe the group and not the person.
    pub fn from_event(event: &Map<String, Value>) -> UserFields {
        let context_traits = event.get("context").and_then(|c| c.get("traits")).and_then(Value::as_object);
        let own = if event.get("type").and_then(Value::as_str) == Some("identify") {
            event.get("traits").and_then(Value::as_object)
        } else {
            None
        };
        let pick = |keys: &[&str]| {
            [own, context_traits].into_iter().flatten().find_map(|t| keys.iter().find_map(|k| text(t.get(*k))))
        };
        let address = [own, context_traits].into_iter().flatten().find_map(|t| t.get("address")?.as_object());
        let addr = |keys: &[&str]| address.and_then(|a| keys.iter().find_map(|k| text(a.get(*k))));
        UserFields {
            email: pick(&["email"]),
            phone: pick(&["phone"]),
            first_name: pick(&["firstName", "first_name"]),
            last_name: pick(&["lastName", "last_name"]),
            birthday: pick(&["birthday"]),
            gender: pick(&["gender"]),
            street: addr(&["street"]),
            city: addr(&["city"]),
            state: addr(&["state"]),
            postal_code: addr(&["postalCode", "postal_code", "zip"]),
            country: addr(&["country"]),
            external_id: text(event.get("userId")),
        }
    }

    /// The same fields from a flat trait map (a profile's resolved traits) and a user id.
    pub fn from_traits(traits: &Map<String, Value>, user_id: Option<&str>) -> UserFields {
        let mut event = Map::new();
        event.insert("type".into(), Value::from("identify"));
        event.insert("traits".into(), Value::Object(traits.clone()));
        if let Some(id) = user_id {
            event.insert("userId".into(), Value::from(id));
        }
        UserFields::from_event(&event)
    }
}

/// A string (or an integer written as one: phones and ids arrive as numbers), bounded, and not a redaction marker.
fn text(value: Option<&Value>) -> Option<String> {
    let s = match value? {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    (!s.trim().is_empty() && s.len() <= MAX_FIELD_BYTES && !s.contains(REDACTION_MARKER)).then_some(s)
}

/// Hash of `raw` under `normalize`, or the hash it already is. `ours_ok`: whether our `sha256:` form was made
/// with this platform's rule for this field.
fn hashed(raw: &str, ours_ok: bool, normalize: impl FnOnce(&str) -> Option<String>) -> Option<String> {
    match prehashed(raw) {
        Some(Prehashed::Sender(hex)) => Some(hex),
        Some(Prehashed::Ours(hex)) => ours_ok.then_some(hex),
        None => normalize(raw).map(|n| sha256_hex(&n)),
    }
}

/// Meta CAPI `user_data`: every present field normalized and hashed (`em`, `ph`, `fn`, `ln`, `db`, `ge`, `ct`,
/// `st`, `zp`, `country`, `external_id`). Fields that are missing or cannot be normalized are left out. Fields
/// Meta wants raw (`client_ip_address`, `client_user_agent`, `fbc`, `fbp`) are the adapter's business.
pub fn meta_user_data(fields: &UserFields, default_country_code: Option<&str>) -> Map<String, Value> {
    let country = fields.country.as_deref().and_then(meta_normalize_country);
    let entries: [(&str, Option<String>); 11] = [
        ("em", fields.email.as_deref().and_then(|v| hashed(v, true, meta_normalize_email))),
        (
            "ph",
            fields.phone.as_deref().and_then(|v| hashed(v, false, |r| meta_normalize_phone(r, default_country_code))),
        ),
        ("fn", fields.first_name.as_deref().and_then(|v| hashed(v, false, meta_normalize_name))),
        ("ln", fields.last_name.as_deref().and_then(|v| hashed(v, false, meta_normalize_name))),
        ("db", fields.birthday.as_deref().and_then(|v| hashed(v, false, meta_normalize_date_of_birth))),
        ("ge", fields.gender.as_deref().and_then(|v| hashed(v, false, meta_normalize_gender))),
        ("ct", fields.city.as_deref().and_then(|v| hashed(v, false, meta_normalize_place))),
        ("st", fields.state.as_deref().and_then(|v| hashed(v, false, meta_normalize_place))),
        (
            "zp",
            fields.postal_code.as_deref().and_then(|v| hashed(v, false, |r| meta_normalize_zip(r, country.as_deref()))),
        ),
        ("country", country.as_deref().map(sha256_hex)),
        ("external_id", fields.external_id.as_deref().and_then(|v| hashed(v, false, meta_normalize_external_id))),
    ];
    entries.into_iter().filter_map(|(k, v)| Some((k.to_string(), Value::String(v?)))).collect()
}

/// Google Ads `user_identifiers`: `{hashed_email}`, `{hashed_phone_number}` and, when first name, last name,
/// country and postal code are all present (Google refuses an address without them), `{address_info:
/// {hashed_first_name, hashed_last_name, country_code, postal_code[, hashed_street_address]}}`.
pub fn google_user_identifiers(fields: &UserFields, default_country_code: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(h) = fields.email.as_deref().and_then(|v| hashed(v, true, google_normalize_email)) {
        out.push(single("hashed_email", Value::String(h)));
    }
    let phone =
        fields.phone.as_deref().and_then(|v| hashed(v, true, |r| google_normalize_phone(r, default_country_code)));
    if let Some(h) = phone {
        out.push(single("hashed_phone_number", Value::String(h)));
    }
    let first = fields.first_name.as_deref().and_then(|v| hashed(v, false, google_normalize_first_name));
    let last = fields.last_name.as_deref().and_then(|v| hashed(v, false, google_normalize_last_name));
    let country = fields.country.as_deref().and_then(google_normalize_country);
    let postal = fields.postal_code.as_deref().and_then(google_normalize_postal_code);
    if let (Some(first), Some(last), Some(country), Some(postal)) = (first, last, country, postal) {
        let mut address = Map::new();
        address.insert("hashed_first_name".into(), first.into());
        address.insert("hashed_last_name".into(), last.into());
        address.insert("country_code".into(), country.into());
        address.insert("postal_code".into(), postal.into());
        if let Some(street) = fields.street.as_deref().and_then(|v| hashed(v, false, google_normalize_street)) {
            address.insert("hashed_street_address".into(), street.into());
        }
        out.push(single("address_info", Value::Object(address)));
    }
    out
}

fn single(key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), value);
    Value::Object(m)
}

/// Hashes the identifiers of an event in place for destinations that take whole events (webhook, S3 export with
/// `hashing` on, and ad platforms once their `user_data` is built): `email` and `phone` in `traits` and
/// `context.traits` become `sha256:<hex>` of the identity normalization (the form the PII `hash` action writes,
/// so identity extraction still reads them as `email_sha256` / `phone_sha256`), and `context.externalIds[]`
/// email/phone entries get the hex as `id` and `encoding: "sha256"`.
///
/// Already-hashed values and redaction markers stay. A value that cannot be normalized (an invalid email, a
/// national phone without a default country code, a non-string) is removed: it cannot be hashed consistently and
/// must not leave in clear. Returns how many values were hashed or removed.
pub fn hash_identifiers(event: &mut Map<String, Value>, default_country_code: Option<&str>) -> usize {
    let mut changed = 0;
    for (key, value) in event.iter_mut() {
        match (key.as_str(), value) {
            ("traits", Value::Object(traits)) => changed += hash_trait_identifiers(traits, default_country_code),
            ("context", Value::Object(context)) => {
                for (ckey, cvalue) in context.iter_mut() {
                    match (ckey.as_str(), cvalue) {
                        ("traits", Value::Object(traits)) => {
                            changed += hash_trait_identifiers(traits, default_country_code)
                        }
                        ("externalIds", Value::Array(ids)) => changed += hash_external_ids(ids, default_country_code),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    changed
}

/// What to do with one identifier value.
enum Hashing {
    Keep,
    Replace(String),
    Remove,
}

fn hash_one(kind: IdType, value: &Value, cc: Option<&str>) -> Hashing {
    let raw = match value {
        Value::Null => return Hashing::Keep,
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return Hashing::Remove,
    };
    if raw.contains(REDACTION_MARKER) || prehashed(&raw).is_some() {
        return Hashing::Keep;
    }
    match Identifier::new(kind, &raw, cc) {
        Ok(id) => Hashing::Replace(id.hashed().value),
        Err(_) => Hashing::Remove,
    }
}

fn hash_trait_identifiers(traits: &mut Map<String, Value>, cc: Option<&str>) -> usize {
    let mut changed = 0;
    for (key, kind) in [("email", IdType::Email), ("phone", IdType::Phone)] {
        let Some(value) = traits.get(key) else { continue };
        match hash_one(kind, value, cc) {
            Hashing::Keep => {}
            Hashing::Replace(hex) => {
                traits.insert(key.to_string(), Value::String(format!("sha256:{hex}")));
                changed += 1;
            }
            Hashing::Remove => {
                traits.remove(key);
                changed += 1;
            }
        }
    }
    changed
}

fn hash_external_ids(ids: &mut Vec<Value>, cc: Option<&str>) -> usize {
    let mut changed = 0;
    ids.retain_mut(|entry| {
        let Some(entry) = entry.as_object_mut() else { return true };
        let kind = match entry.get("type").and_then(Value::as_str).map(|t| t.trim().to_ascii_lowercase()) {
            Some(t) if t == "email" => IdType::Email,
            Some(t) if t == "phone" => IdType::Phone,
            _ => return true,
        };
        let encoded = entry.get("encoding").and_then(Value::as_str).is_some_and(|e| e.eq_ignore_ascii_case("sha256"));
        if encoded {
            return true;
        }
        match hash_one(kind, entry.get("id").unwrap_or(&Value::Null), cc) {
            Hashing::Keep => true,
            Hashing::Replace(hex) => {
                entry.insert("id".into(), Value::String(hex));
                entry.insert("encoding".into(), Value::String("sha256".into()));
                changed += 1;
                true
            }
            Hashing::Remove => {
                changed += 1;
                false
            }
        }
    });
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    // Vectors from wire-protocols.md §5.1, quoting Meta's "Customer Information Parameters" page.
    const META_EMAIL_HASH: &str = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f";

    #[test]
    fn meta_email_vector() {
        assert_eq!(meta_normalize_email("John_Smith@gmail.com").as_deref(), Some("john_smith@gmail.com"));
        assert_eq!(meta_normalize_email("  John_Smith@gmail.com \n").as_deref(), Some("john_smith@gmail.com"));
        assert_eq!(sha256_hex("john_smith@gmail.com"), META_EMAIL_HASH);
        // Meta keeps gmail dots; only Google removes them.
        assert_eq!(meta_normalize_email("J.Smith@gmail.com").as_deref(), Some("j.smith@gmail.com"));
        for bad in ["", "john", "john@localhost", "a b@example.com", "[REDACTED:email]"] {
            assert_eq!(meta_normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn meta_phone_vector() {
        // §5.1: `(650)555-1212` → `16505551212` → `e323ec62…3176` (the country code 1 must be present).
        assert_eq!(meta_normalize_phone("(650)555-1212", Some("1")).as_deref(), Some("16505551212"));
        let h = sha256_hex("16505551212");
        assert!(h.starts_with("e323ec62") && h.ends_with("3176"), "{h}");
        assert_eq!(h, "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176");
        // Written with a country code, the default is not needed; `+`, `00` and leading zeros go.
        for raw in ["+1 (650) 555-1212", "001 650 555 1212", "+001-650-555-1212", "1-650-555-1212 "] {
            let cc = if raw.starts_with('1') { Some("1") } else { None };
            assert_eq!(meta_normalize_phone(raw, cc).as_deref(), Some("16505551212"), "{raw}");
        }
        // Letters and symbols are removed, a trunk 0 is dropped before the country code.
        assert_eq!(meta_normalize_phone("tel: +44 (20) 7946-0018", None).as_deref(), Some("442079460018"));
        assert_eq!(meta_normalize_phone("020 7946 0018", Some("44")).as_deref(), Some("442079460018"));
        // No country code known: left out rather than guessed.
        assert_eq!(meta_normalize_phone("(650)555-1212", None), None);
        assert_eq!(meta_normalize_phone("[REDACTED:phone]", Some("1")), None);
        assert_eq!(meta_normalize_phone("+1 555", None), None);
    }

    #[test]
    fn meta_other_fields() {
        // §5.1: `Valéry` → `valéry` (UTF-8 kept, lowercase).
        assert_eq!(meta_normalize_name("Valéry").as_deref(), Some("valéry"));
        assert_eq!(meta_normalize_name(" O'Brien-Smith. ").as_deref(), Some("obriensmith"));
        assert_eq!(meta_normalize_name("..."), None);
        assert_eq!(meta_normalize_date_of_birth("1997-02-14").as_deref(), Some("19970214"));
        assert_eq!(meta_normalize_date_of_birth("1997-02-14T00:00:00.000Z").as_deref(), Some("19970214"));
        assert_eq!(meta_normalize_date_of_birth("1997/02/14").as_deref(), Some("19970214"));
        assert_eq!(meta_normalize_date_of_birth("19970214").as_deref(), Some("19970214"));
        for bad in ["1997-02-30", "1997-13-01", "97-02-14", "1997-02-14x", "é997-02-14", "", "1997-2-14"] {
            assert_eq!(meta_normalize_date_of_birth(bad), None, "{bad}");
        }
        assert_eq!(meta_normalize_gender(" Female ").as_deref(), Some("f"));
        assert_eq!(meta_normalize_gender("M").as_deref(), Some("m"));
        assert_eq!(meta_normalize_gender("nonbinary"), None);
        assert_eq!(meta_normalize_place("Menlo Park").as_deref(), Some("menlopark"));
        assert_eq!(meta_normalize_place("St. Louis (MO) 2").as_deref(), Some("stlouismo"));
        assert_eq!(meta_normalize_place("CA").as_deref(), Some("ca"));
        assert_eq!(meta_normalize_zip("94025-1234", Some("us")).as_deref(), Some("94025"));
        assert_eq!(meta_normalize_zip("940251234", Some("us")).as_deref(), Some("94025"));
        assert_eq!(meta_normalize_zip("SW1A 1AA", Some("gb")).as_deref(), Some("sw1a1aa"));
        assert_eq!(meta_normalize_country(" US ").as_deref(), Some("us"));
        assert_eq!(meta_normalize_country("USA"), None);
        assert_eq!(meta_normalize_external_id(" User-42 ").as_deref(), Some("User-42"));
    }

    #[test]
    fn google_vectors() {
        // §5.2: phone in E.164 with the `+`: `(800)555-0100` → `+18005550100`.
        assert_eq!(google_normalize_phone("(800)555-0100", Some("1")).as_deref(), Some("+18005550100"));
        assert_eq!(google_normalize_phone("+1 800 555 0100", None).as_deref(), Some("+18005550100"));
        assert_eq!(google_normalize_phone("(800)555-0100", None), None);
        // The Meta and Google forms of one number hash differently: the `+` is the difference.
        assert_ne!(
            sha256_hex(&google_normalize_phone("(800)555-0100", Some("1")).unwrap_or_default()),
            sha256_hex(&meta_normalize_phone("(800)555-0100", Some("1")).unwrap_or_default())
        );
        // gmail / googlemail: dots of the local part removed (google-ads-python), `+tag` kept; other domains kept.
        assert_eq!(google_normalize_email(" Jane.Doe@GMail.com ").as_deref(), Some("janedoe@gmail.com"));
        assert_eq!(google_normalize_email("j.a.n.e+ads@googlemail.com").as_deref(), Some("jane+ads@googlemail.com"));
        assert_eq!(google_normalize_email("Jane.Doe@example.com").as_deref(), Some("jane.doe@example.com"));
        assert_eq!(google_normalize_email("jane.doe@mail.gmail.com").as_deref(), Some("jane.doe@mail.gmail.com"));
        assert_eq!(google_normalize_email("not an email"), None);
        assert_eq!(google_normalize_first_name("  Mary   Ann ").as_deref(), Some("mary ann"));
        assert_eq!(google_normalize_last_name(" O'Brien  Jr. ").as_deref(), Some("obrien jr"));
        assert_eq!(google_normalize_street(" 1600 Amphitheatre Pkwy ").as_deref(), Some("1600 amphitheatre pkwy"));
        assert_eq!(google_normalize_country("us").as_deref(), Some("US"));
    }

    fn identify(traits: Value) -> Map<String, Value> {
        obj(json!({ "type": "identify", "userId": "user-42", "traits": traits }))
    }

    #[test]
    fn meta_user_data_hashes_every_present_field() {
        let event = identify(json!({
            "email": "John_Smith@gmail.com",
            "phone": "(650)555-1212",
            "firstName": "Valéry",
            "lastName": "Smith",
            "birthday": "1997-02-14",
            "gender": "female",
            "address": { "city": "Menlo Park", "state": "CA", "postalCode": "94025-1234", "country": "US" },
            "plan": "pro"
        }));
        let ud = meta_user_data(&UserFields::from_event(&event), Some("1"));
        let expect =
            |k: &str, normalized: &str| assert_eq!(ud.get(k), Some(&Value::from(sha256_hex(normalized))), "{k}");
        assert_eq!(ud.get("em").and_then(Value::as_str), Some(META_EMAIL_HASH));
        expect("ph", "16505551212");
        expect("fn", "valéry");
        expect("ln", "smith");
        expect("db", "19970214");
        expect("ge", "f");
        expect("ct", "menlopark");
        expect("st", "ca");
        expect("zp", "94025");
        expect("country", "us");
        expect("external_id", "user-42");
        assert_eq!(ud.len(), 11);
        // Nothing in clear.
        let text = Value::Object(ud).to_string();
        for raw in ["gmail", "Smith", "smith", "Menlo", "user-42"] {
            assert!(!text.contains(raw), "{raw} leaked");
        }
    }

    #[test]
    fn builders_leave_out_what_cannot_be_normalized_and_pass_hashes_on() {
        let ours = format!("sha256:{}", sha256_hex("+16505551212"));
        let sender = sha256_hex("16505551212").to_ascii_uppercase();
        let event = identify(json!({ "email": "[REDACTED:email]", "phone": ours, "firstName": "..." }));
        let fields = UserFields::from_event(&event);
        let ud = meta_user_data(&fields, Some("1"));
        // Our `sha256:` phone was hashed with `+`, which Meta's rule does not have: not sent to Meta.
        assert_eq!(ud.keys().collect::<Vec<_>>(), ["external_id"]);
        // Google's rule has the `+`: passed on as is.
        assert_eq!(
            google_user_identifiers(&fields, None),
            vec![json!({ "hashed_phone_number": sha256_hex("+16505551212") })]
        );
        // A bare hex hash is the sender's: passed on, lowercased.
        let event = identify(json!({ "phone": sender, "email": format!("sha256:{META_EMAIL_HASH}") }));
        let ud = meta_user_data(&UserFields::from_event(&event), None);
        assert_eq!(ud.get("ph"), Some(&Value::from(sha256_hex("16505551212"))));
        assert_eq!(ud.get("em").and_then(Value::as_str), Some(META_EMAIL_HASH));
    }

    #[test]
    fn google_user_identifiers_builder() {
        let event = identify(json!({
            "email": "Jane.Doe@gmail.com",
            "phone": 18005550100u64,
            "first_name": " Jane ",
            "last_name": "Doe",
            "address": { "street": "1600 Amphitheatre Pkwy", "postal_code": "94043", "country": "us" }
        }));
        let fields = UserFields::from_event(&event);
        assert_eq!(fields.phone.as_deref(), Some("18005550100"));
        let ids = google_user_identifiers(&fields, Some("1"));
        assert_eq!(
            ids,
            vec![
                json!({ "hashed_email": sha256_hex("janedoe@gmail.com") }),
                json!({ "hashed_phone_number": sha256_hex("+18005550100") }),
                json!({ "address_info": {
                    "hashed_first_name": sha256_hex("jane"),
                    "hashed_last_name": sha256_hex("doe"),
                    "country_code": "US",
                    "postal_code": "94043",
                    "hashed_street_address": sha256_hex("1600 amphitheatre pkwy"),
                } }),
            ]
        );
        // No address_info without all of first, last, country and postal code.
        let partial = identify(json!({ "firstName": "Jane", "lastName": "Doe", "address": { "country": "US" } }));
        assert!(google_user_identifiers(&UserFields::from_event(&partial), None).is_empty());
    }

    #[test]
    fn fields_come_from_context_traits_except_for_identify() {
        let track = obj(json!({
            "type": "track",
            "userId": 42,
            "traits": { "email": "wrong@example.com" },
            "context": { "traits": { "email": "a@example.com", "address": { "zip": "10001" } } }
        }));
        let f = UserFields::from_event(&track);
        assert_eq!(f.email.as_deref(), Some("a@example.com"));
        assert_eq!(f.postal_code.as_deref(), Some("10001"));
        assert_eq!(f.external_id.as_deref(), Some("42"));
        let group = obj(json!({ "type": "group", "traits": { "email": "billing@company.example" } }));
        assert_eq!(UserFields::from_event(&group).email, None);
        let id = obj(json!({
            "type": "identify",
            "traits": { "email": "own@example.com" },
            "context": { "traits": { "email": "ctx@example.com", "phone": "+15550100000" } }
        }));
        let f = UserFields::from_event(&id);
        assert_eq!((f.email.as_deref(), f.phone.as_deref()), (Some("own@example.com"), Some("+15550100000")));
        // Odd shapes yield nothing rather than failing.
        let odd = obj(json!({ "type": "identify", "traits": { "email": ["x"], "address": "nowhere" }, "userId": {} }));
        assert_eq!(UserFields::from_event(&odd), UserFields::default());
        let profile = obj(json!({ "email": "p@example.com" }));
        assert_eq!(UserFields::from_traits(&profile, Some("u1")).external_id.as_deref(), Some("u1"));
    }

    #[test]
    fn hash_identifiers_in_place() {
        let already = format!("sha256:{}", sha256_hex("x@example.com"));
        let mut event = obj(json!({
            "type": "identify",
            "traits": { "email": " A@Example.com ", "phone": "0555 0100 00", "name": "Ada" },
            "context": {
                "traits": { "email": already, "phone": "+1 650 555 1212" },
                "externalIds": [
                    { "id": "b@example.com", "type": "email", "collection": "users" },
                    { "id": "not-an-email", "type": "email" },
                    { "id": "crm-1", "type": "crm_id" },
                    { "id": "ab", "type": "email", "encoding": "sha256" }
                ]
            }
        }));
        // email hashed, national phone without a default country code removed, the context phone hashed, one
        // external id hashed and one removed.
        assert_eq!(hash_identifiers(&mut event, None), 5);
        assert_eq!(
            Value::Object(event),
            json!({
                "type": "identify",
                "traits": { "email": format!("sha256:{}", sha256_hex("a@example.com")), "name": "Ada" },
                "context": {
                    "traits": { "email": already, "phone": format!("sha256:{}", sha256_hex("+16505551212")) },
                    "externalIds": [
                        {
                            "id": sha256_hex("b@example.com"),
                            "type": "email",
                            "collection": "users",
                            "encoding": "sha256"
                        },
                        { "id": "crm-1", "type": "crm_id" },
                        { "id": "ab", "type": "email", "encoding": "sha256" }
                    ]
                }
            })
        );
    }
}

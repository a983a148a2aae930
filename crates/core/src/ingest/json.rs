//! Bounded JSON parsing in one pass.
//!
//! A [`DeserializeSeed`] drives `serde_json`'s parser and builds the [`Value`] itself, so that depth, string
//! sizes and duplicate keys are checked while the tree is built: nothing is parsed twice, and a hostile body is
//! refused as soon as it crosses a bound (a 10,000-deep `[[[[…` stops at `max_depth`, long before the stack or
//! `serde_json`'s own recursion limit).
//!
//! Error messages name bounds, sizes and positions, never values from the body.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{Limits, RequestError, CEILING};

/// Parses a request body into a JSON object, enforcing `limits`.
///
/// Codes: `request_too_large`, `empty_body`, `invalid_utf8`, `invalid_json`, `nesting_too_deep`,
/// `string_too_long`, `duplicate_key`, `invalid_body` (top level is not an object). All are 400.
pub fn parse_body(bytes: &[u8], limits: &Limits) -> Result<Value, RequestError> {
    if bytes.len() > limits.max_request_bytes {
        return Err(RequestError::bad_request(
            "request_too_large",
            format!("request body is {} bytes; the limit is {}", bytes.len(), limits.max_request_bytes),
        ));
    }
    // A UTF-8 byte order mark is not JSON, but some HTTP clients write one; it carries no meaning.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.trim_ascii().is_empty() {
        return Err(RequestError::bad_request("empty_body", "request body is empty"));
    }
    // Validating UTF-8 up front lets the parser run on `&str`, which then skips its own per-string check.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        RequestError::bad_request(
            "invalid_utf8",
            format!("request body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;

    let mut state = State {
        depth: 0,
        // Our bound must bite before serde_json's recursion limit (128), whatever the configuration says.
        max_depth: limits.max_depth.clamp(1, CEILING.max_depth),
        max_string_bytes: limits.max_string_bytes,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed { state: &mut state }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    let value = match parsed {
        Ok(v) => v,
        Err(e) => return Err(state.failure.take().unwrap_or_else(|| json_error(&e))),
    };
    if !value.is_object() {
        return Err(RequestError::bad_request(
            "invalid_body",
            format!("request body must be a JSON object, got {}", kind_of(&value)),
        ));
    }
    Ok(value)
}

/// The JSON type name of a value, for messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Maps a parser error to a request error. Syntax messages from serde_json describe the grammar and position
/// only; anything else gets a generic message so that no value can leak.
fn json_error(e: &serde_json::Error) -> RequestError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax if e.to_string().starts_with("recursion limit exceeded") => RequestError::bad_request(
            "nesting_too_deep",
            format!("JSON nesting is too deep at line {} column {}", e.line(), e.column()),
        ),
        Category::Syntax | Category::Eof => {
            RequestError::bad_request("invalid_json", format!("request body is not valid JSON: {e}"))
        }
        Category::Data | Category::Io => RequestError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON at line {} column {}", e.line(), e.column()),
        ),
    }
}

struct State {
    /// Containers currently open.
    depth: usize,
    max_depth: usize,
    max_string_bytes: usize,
    /// The bound that stopped the parse; the serde error that carried us out is then discarded.
    failure: Option<RequestError>,
}

impl State {
    fn fail<E: de::Error>(&mut self, code: &'static str, message: String) -> E {
        self.failure = Some(RequestError::bad_request(code, message));
        E::custom(code)
    }

    fn check_string<E: de::Error>(&mut self, what: &str, len: usize) -> Result<(), E> {
        if len > self.max_string_bytes {
            Err(self.fail(
                "string_too_long",
                format!("a JSON {what} is {len} bytes; the limit is {}", self.max_string_bytes),
            ))
        } else {
            Ok(())
        }
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth >= self.max_depth {
            return Err(self.fail("nesting_too_deep", format!("JSON nesting is deeper than {} levels", self.max_depth)));
        }
        self.depth += 1;
        Ok(())
    }
}

struct ValueSeed<'s> {
    state: &'s mut State,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self.state.fail("invalid_json", "a JSON number is out of range".to_string())),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.state.check_string("string", v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value, E> {
        self.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.state.check_string("string", v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let state = self.state;
        state.enter()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed { state: &mut *state })? {
            items.push(v);
        }
        state.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        use serde_json::map::Entry;
        let state = self.state;
        state.enter()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(KeySeed { state: &mut *state })? {
            let value = access.next_value_seed(ValueSeed { state: &mut *state })?;
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    let message = if is_short_identifier(slot.key()) {
                        format!("duplicate key `{}` in a JSON object", slot.key())
                    } else {
                        "duplicate key in a JSON object".to_string()
                    };
                    return Err(state.fail("duplicate_key", message));
                }
            }
        }
        state.depth -= 1;
        Ok(Value::Object(map))
    }
}

/// A key is quoted in an error message only when it looks like a field name, not like data.
fn is_short_identifier(key: &str) -> bool {
    let starts_like_a_name =
        matches!(key.as_bytes().first(), Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'$');
    starts_like_a_name && key.len() <= 32 && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
}

struct KeySeed<'s> {
    state: &'s mut State,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.state.check_string("key", v.len())?;
        Ok(v.to_owned())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<String, E> {
        self.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.state.check_string("key", v.len())?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits::default()
    }

    fn code(bytes: &[u8]) -> &'static str {
        match parse_body(bytes, &limits()) {
            Ok(_) => "ok",
            Err(e) => {
                assert_eq!(e.status, 400);
                e.code
            }
        }
    }

    #[test]
    fn error_codes_table() {
        let long_key = format!("{{\"{}\":1}}", "k".repeat(16 * 1024 + 1));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("plain object", br#"{"a":1}"#.to_vec(), "ok"),
            ("whitespace around", b" \n\t{\"a\":[1,2,{}]}\r\n ".to_vec(), "ok"),
            ("bom", b"\xEF\xBB\xBF{\"a\":1}".to_vec(), "ok"),
            ("empty", b"".to_vec(), "empty_body"),
            ("whitespace only", b" \n\t\r ".to_vec(), "empty_body"),
            ("invalid utf8 in string", b"{\"a\":\"\xff\xfe\"}".to_vec(), "invalid_utf8"),
            ("invalid utf8 outside", b"{\"a\":1}\xc3".to_vec(), "invalid_utf8"),
            ("malformed", br#"{"a":}"#.to_vec(), "invalid_json"),
            ("unterminated", br#"{"a":1"#.to_vec(), "invalid_json"),
            ("trailing garbage", br#"{"a":1} x"#.to_vec(), "invalid_json"),
            ("two objects", br#"{"a":1}{"b":2}"#.to_vec(), "invalid_json"),
            ("trailing comma", br#"{"a":1,}"#.to_vec(), "invalid_json"),
            ("1e400", br#"{"a":1e400}"#.to_vec(), "invalid_json"),
            ("-1e400", br#"{"a":-1e400}"#.to_vec(), "invalid_json"),
            ("NaN", br#"{"a":NaN}"#.to_vec(), "invalid_json"),
            ("400-digit integer", format!("{{\"a\":1{}}}", "0".repeat(400)).into_bytes(), "invalid_json"),
            ("u64 max + 1", br#"{"a":18446744073709551616}"#.to_vec(), "ok"),
            ("lone surrogate", br#"{"a":"\ud800"}"#.to_vec(), "invalid_json"),
            ("control char", b"{\"a\":\"\x01\"}".to_vec(), "invalid_json"),
            ("array top", b"[1,2]".to_vec(), "invalid_body"),
            ("string top", br#""hello""#.to_vec(), "invalid_body"),
            ("number top", b"42".to_vec(), "invalid_body"),
            ("null top", b"null".to_vec(), "invalid_body"),
            ("duplicate top", br#"{"a":1,"a":2}"#.to_vec(), "duplicate_key"),
            ("duplicate nested", br#"{"batch":[{"x":{"k":1,"k":1}}]}"#.to_vec(), "duplicate_key"),
            ("duplicate via escape", br#"{"a":1,"\u0061":2}"#.to_vec(), "duplicate_key"),
            ("long key", long_key.into_bytes(), "string_too_long"),
        ];
        for (name, body, want) in cases {
            assert_eq!(code(&body), want, "case {name}");
        }
    }

    #[test]
    fn values_are_built_faithfully() {
        let body = br#"{"s":"caf\u00e9 \"q\"","n":-3,"u":18446744073709551615,"f":1.5,"b":true,"z":null,
            "a":[1,"x",[],{}],"o":{"k":{"k":[null]}}}"#;
        let v = parse_body(body, &limits()).unwrap();
        let expected: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v, expected);
        assert_eq!(v["s"], json!("café \"q\""));
    }

    #[test]
    fn ten_thousand_deep_nesting_is_refused_without_overflow() {
        let mut deep = b"{\"a\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 10_000));
        deep.extend(std::iter::repeat_n(b']', 10_000));
        deep.push(b'}');
        let limits = Limits { max_request_bytes: 1 << 20, ..Limits::default() };
        let err = parse_body(&deep, &limits).unwrap_err();
        assert_eq!(err.code, "nesting_too_deep");
        // Unbalanced too (the parse must stop at the bound, not at the end).
        let open: Vec<u8> = std::iter::repeat_n(b'[', 10_000).collect();
        assert_eq!(parse_body(&open, &limits).unwrap_err().code, "nesting_too_deep");
        let objects = "{\"a\":".repeat(10_000);
        assert_eq!(parse_body(objects.as_bytes(), &limits).unwrap_err().code, "nesting_too_deep");
    }

    #[test]
    fn depth_bound_is_exact() {
        fn nested(levels: usize) -> String {
            // levels = number of containers including the top-level object
            let mut s = String::from("{\"a\":");
            s.push_str(&"[".repeat(levels - 1));
            s.push_str(&"]".repeat(levels - 1));
            s.push('}');
            s
        }
        let limits = Limits { max_depth: 5, ..Limits::default() };
        assert!(parse_body(nested(5).as_bytes(), &limits).is_ok());
        assert_eq!(parse_body(nested(6).as_bytes(), &limits).unwrap_err().code, "nesting_too_deep");
        // A configured depth above the ceiling is clamped, so serde_json's 128 limit never decides.
        let wide = Limits { max_depth: 1000, max_request_bytes: 1 << 20, ..Limits::default() };
        let e = parse_body(nested(127).as_bytes(), &wide).unwrap_err();
        assert_eq!(e.code, "nesting_too_deep");
        assert!(parse_body(nested(100).as_bytes(), &wide).is_ok());
    }

    #[test]
    fn string_bound_is_exact_and_counts_bytes() {
        let limits = Limits { max_string_bytes: 4, ..Limits::default() };
        assert!(parse_body(br#"{"abcd":"wxyz"}"#, &limits).is_ok());
        assert_eq!(parse_body(br#"{"a":"wxyzw"}"#, &limits).unwrap_err().code, "string_too_long");
        assert_eq!(parse_body(br#"{"abcde":1}"#, &limits).unwrap_err().code, "string_too_long");
        // "é" is two bytes: three of them are 6 bytes.
        assert_eq!(parse_body("{\"a\":\"ééé\"}".as_bytes(), &limits).unwrap_err().code, "string_too_long");
        // Escapes count once decoded: \u0041 is one byte.
        assert!(parse_body(br#"{"a":"\u0041\u0041\u0041\u0041"}"#, &limits).is_ok());
    }

    #[test]
    fn one_megabyte_string_is_refused() {
        let mut body = b"{\"userId\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        body.extend(b"\"}");
        let limits = Limits { max_request_bytes: 4 << 20, ..Limits::default() };
        let e = parse_body(&body, &limits).unwrap_err();
        assert_eq!(e.code, "string_too_long");
        assert!(!e.message.contains("xxxx"));
        // With a limit big enough, the same body parses.
        let limits = Limits { max_string_bytes: 1024 * 1024, ..limits };
        assert!(parse_body(&body, &limits).is_ok());
    }

    #[test]
    fn request_size_bound_exact() {
        let body = br#"{"a":1234}"#; // 10 bytes
        assert_eq!(body.len(), 10);
        assert!(parse_body(body, &Limits { max_request_bytes: 10, ..Limits::default() }).is_ok());
        let e = parse_body(body, &Limits { max_request_bytes: 9, ..Limits::default() }).unwrap_err();
        assert_eq!(e.code, "request_too_large");
        assert_eq!(e.status, 400);
    }

    #[test]
    fn duplicate_key_messages_never_quote_data() {
        let e = parse_body(br#"{"userId":1,"userId":2}"#, &limits()).unwrap_err();
        assert_eq!(e.code, "duplicate_key");
        assert!(e.message.contains("`userId`"), "{}", e.message);
        let e = parse_body(br#"{"ann@example.com":1,"ann@example.com":2}"#, &limits()).unwrap_err();
        assert_eq!(e.code, "duplicate_key");
        assert!(!e.message.contains("ann"), "{}", e.message);
        let long = format!("{{\"{0}\":1,\"{0}\":2}}", "a".repeat(40));
        let e = parse_body(long.as_bytes(), &limits()).unwrap_err();
        assert!(!e.message.contains("aaaa"), "{}", e.message);
    }

    #[test]
    fn messages_never_quote_values() {
        let bodies: [&[u8]; 4] = [
            br#"{"email":"secret@example.com" "x"}"#,
            br#"{"email":"secret@example.com"} trailing"#,
            br#"{"email":"secret@example.com","n":1e999}"#,
            br#"["secret@example.com"]"#,
        ];
        for body in bodies {
            let e = parse_body(body, &limits()).unwrap_err();
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
    }
}

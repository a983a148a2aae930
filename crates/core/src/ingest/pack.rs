//! Packing normalized events into queue messages, and bounded gunzip of request bodies.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RequestError;

pub const ENVELOPE_VERSION: u32 = 1;

/// The body of one events-queue message: a source and up to a few hundred normalized events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub v: u32,
    pub source_id: String,
    pub events: Vec<serde_json::Value>,
}

/// Packs `events` greedily, in order, into [`Envelope`] JSON strings of at most `max_message_bytes` each.
///
/// An event that alone does not fit still gets an envelope of its own (larger than the bound): it is never
/// dropped. Each event is serialized exactly once, straight into the envelope being built; the envelope's
/// frame is written by hand around them, so the result is exactly what serializing an [`Envelope`] gives.
pub fn pack(source_id: &str, events: &[Map<String, Value>], max_message_bytes: usize) -> Vec<String> {
    Envelope::pack_with(source_id, events, max_message_bytes, |buf, event| serde_json::to_writer(buf, event))
}

impl Envelope {
    /// [`pack`] for events in any form: `write` appends one event to the envelope being built, as one JSON
    /// value (an already serialized event is copied in as it is). Should `write` fail, `{}` takes the event's
    /// place, so the envelope stays valid JSON.
    pub fn pack_with<T>(
        source_id: &str,
        events: impl IntoIterator<Item = T>,
        max_message_bytes: usize,
        mut write: impl FnMut(&mut Vec<u8>, T) -> serde_json::Result<()>,
    ) -> Vec<String> {
        let mut header = Vec::with_capacity(source_id.len() + 32);
        header.extend_from_slice(b"{\"v\":");
        header.extend_from_slice(ENVELOPE_VERSION.to_string().as_bytes());
        header.extend_from_slice(b",\"sourceId\":");
        write_json(&mut header, source_id);
        header.extend_from_slice(b",\"events\":[");
        const FOOTER: &[u8] = b"]}";

        let mut out = Vec::new();
        let mut current = new_buffer(&header, max_message_bytes);
        let mut count = 0usize; // events in `current`
        for event in events {
            let start = current.len();
            if count > 0 {
                current.push(b',');
            }
            let event_start = current.len();
            if write(&mut current, event).is_err() {
                current.truncate(event_start);
                current.extend_from_slice(b"{}");
            }
            if count > 0 && current.len() + FOOTER.len() > max_message_bytes {
                // Does not fit: close the envelope without it and start the next one with it.
                let mut next = new_buffer(&header, max_message_bytes);
                next.extend_from_slice(&current[event_start..]);
                current.truncate(start);
                out.push(finish(current, FOOTER));
                current = next;
                count = 0;
            }
            count += 1;
        }
        if count > 0 {
            out.push(finish(current, FOOTER));
        }
        out
    }
}

fn new_buffer(header: &[u8], max_message_bytes: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(max_message_bytes.min(64 * 1024).max(header.len() + 2));
    buf.extend_from_slice(header);
    buf
}

fn finish(mut buf: Vec<u8>, footer: &[u8]) -> String {
    buf.extend_from_slice(footer);
    // Events are written as JSON, which is UTF-8, so this never takes the lossy branch.
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_json(buf: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"\"\"");
    }
}

/// Decompresses a gzip body (one or several members) without ever holding more than `max` bytes of output.
///
/// Codes: `request_too_large` when the output would exceed `max` (a gzip bomb is stopped at `max + 1` bytes),
/// `invalid_gzip` for a corrupt, truncated or non-gzip body. Both are 400.
pub fn gunzip_bounded(bytes: &[u8], max: usize) -> Result<Vec<u8>, RequestError> {
    let limit = max.saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes).take(limit as u64);
    // Grow by hand so capacity never exceeds `limit`, whatever Vec's doubling would do.
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len().saturating_mul(4).max(1024).min(limit));
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                return Err(RequestError::bad_request(
                    "invalid_gzip",
                    "request body is not valid gzip (corrupt or truncated)",
                ))
            }
        };
        let data = chunk.get(..n).unwrap_or(&[]);
        if out.len() + data.len() > max {
            return Err(too_large(max));
        }
        if out.capacity() - out.len() < data.len() {
            let want = out.capacity().saturating_mul(2).max(out.len() + data.len()).min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(data);
    }
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out)
}

fn too_large(max: usize) -> RequestError {
    RequestError::bad_request("request_too_large", format!("decompressed request body is larger than {max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use serde_json::json;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn event(i: usize, pad: usize) -> Map<String, Value> {
        let v = json!({"messageId": format!("m{i}"), "type": "track", "event": "E", "properties": {"pad": "x".repeat(pad)}});
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn unpack(msgs: &[String]) -> Vec<Value> {
        let mut all = Vec::new();
        for m in msgs {
            let env: Envelope = serde_json::from_str(m).expect("envelope is valid JSON");
            assert_eq!(env.v, ENVELOPE_VERSION);
            assert_eq!(env.source_id, "src-\"1\"");
            assert!(!env.events.is_empty());
            all.extend(env.events);
        }
        all
    }

    #[test]
    fn packs_within_bounds_in_order() {
        let events: Vec<_> = (0..300).map(|i| event(i, (i * 37) % 900)).collect();
        for max in [200usize, 1024, 4096, 256 * 1024] {
            let msgs = pack("src-\"1\"", &events, max);
            let all = unpack(&msgs);
            assert_eq!(all.len(), events.len(), "max {max}");
            for (got, want) in all.iter().zip(&events) {
                assert_eq!(got, &Value::Object(want.clone()));
            }
            for m in &msgs {
                let env: Envelope = serde_json::from_str(m).unwrap();
                // Over the bound only when a single event alone does not fit.
                assert!(m.len() <= max || env.events.len() == 1, "max {max}: {} bytes", m.len());
            }
            // Greedy: the first event of each envelope would not have fit into the previous one.
            for pair in msgs.windows(2) {
                let next: Envelope = serde_json::from_str(&pair[1]).unwrap();
                let first = serde_json::to_string(&next.events[0]).unwrap();
                assert!(pair[0].len() + 1 + first.len() > max);
            }
        }
        // 256 KiB holds all 300 small events in one envelope, byte-identical to serde's own output.
        let msgs = pack("src-\"1\"", &events, 256 * 1024);
        assert_eq!(msgs.len(), 1);
        let env = Envelope {
            v: ENVELOPE_VERSION,
            source_id: "src-\"1\"".into(),
            events: events.iter().cloned().map(Value::Object).collect(),
        };
        assert_eq!(msgs[0], serde_json::to_string(&env).unwrap());
    }

    #[test]
    fn oversized_event_gets_its_own_envelope() {
        let events = vec![event(0, 10), event(1, 5000), event(2, 10), event(3, 10)];
        let msgs = pack("src-\"1\"", &events, 1000);
        assert_eq!(msgs.len(), 3);
        let sizes: Vec<usize> =
            msgs.iter().map(|m| serde_json::from_str::<Envelope>(m).unwrap().events.len()).collect();
        assert_eq!(sizes, vec![1, 1, 2]);
        assert!(msgs[1].len() > 1000);
        assert_eq!(unpack(&msgs).len(), 4);
        // Even a zero bound packs everything, one per envelope.
        assert_eq!(unpack(&pack("src-\"1\"", &events, 0)).len(), 4);
    }

    #[test]
    fn packing_serialized_events_gives_the_same_envelopes() {
        let events: Vec<_> = (0..120).map(|i| event(i, (i * 53) % 700)).collect();
        let serialized: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        for max in [0usize, 300, 2048, 256 * 1024] {
            let copied = Envelope::pack_with("src-\"1\"", &serialized, max, |buf, event| {
                buf.extend_from_slice(event);
                Ok(())
            });
            assert_eq!(copied, pack("src-\"1\"", &events, max), "max {max}");
        }
        // A failed write leaves `{}` in the event's place.
        let failing = Envelope::pack_with("src-\"1\"", [1, 2], 1024, |buf, i| {
            buf.extend_from_slice(b"{\"partial");
            if i == 1 {
                Err(serde::ser::Error::custom("no"))
            } else {
                buf.extend_from_slice(b"\":1}");
                Ok(())
            }
        });
        assert_eq!(unpack(&failing), vec![json!({}), json!({"partial": 1})]);
    }

    #[test]
    fn no_events_no_envelopes() {
        assert!(pack("s", &[], 1000).is_empty());
    }

    #[test]
    fn gunzip_roundtrip_and_multi_member() {
        let data = br#"{"batch":[]}"#;
        assert_eq!(gunzip_bounded(&gzip(data), 1000).unwrap(), data);
        let mut two = gzip(b"{\"a\":");
        two.extend(gzip(b"1}"));
        assert_eq!(gunzip_bounded(&two, 1000).unwrap(), b"{\"a\":1}");
        assert_eq!(gunzip_bounded(&gzip(b""), 1000).unwrap(), b"");
        // Exactly at the bound is fine; one over is not.
        assert_eq!(gunzip_bounded(&gzip(&[b'a'; 100]), 100).unwrap().len(), 100);
        assert_eq!(gunzip_bounded(&gzip(&[b'a'; 101]), 100).unwrap_err().code, "request_too_large");
    }

    #[test]
    fn gunzip_refuses_corrupt_and_truncated() {
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip(&body);
        for cut in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, gz.len() / 2, gz.len() - 8, gz.len() - 4, gz.len() - 1] {
            let e = gunzip_bounded(&gz[..cut], 1 << 20).unwrap_err();
            assert_eq!(e.code, "invalid_gzip", "cut at {cut}");
            assert_eq!(e.status, 400);
        }
        // Second member truncated: must not silently return the first member only.
        let mut two = gzip(b"first");
        let second = gzip(&body);
        two.extend_from_slice(&second[..second.len() / 2]);
        assert_eq!(gunzip_bounded(&two, 1 << 20).unwrap_err().code, "invalid_gzip");
        // Corrupt CRC.
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 6] ^= 0xff;
        assert_eq!(gunzip_bounded(&bad, 1 << 20).unwrap_err().code, "invalid_gzip");
        // Empty input is not a gzip stream either.
        assert_eq!(gunzip_bounded(b"", 1 << 20).unwrap_err().code, "invalid_gzip");
        // Not gzip at all.
        assert_eq!(gunzip_bounded(br#"{"batch":[]}"#, 1 << 20).unwrap_err().code, "invalid_gzip");
        // Trailing garbage after a member.
        let mut trailing = gzip(b"{}");
        trailing.extend_from_slice(b"garbage!");
        assert_eq!(gunzip_bounded(&trailing, 1 << 20).unwrap_err().code, "invalid_gzip");
    }

    #[test]
    fn gunzip_bomb_is_stopped_at_the_bound() {
        // 100 MB of zeros compresses to ~100 KB; it must be refused after reading at most max + 1 bytes.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 200 * 1024);
        let e = gunzip_bounded(&bomb, 500 * 1024).unwrap_err();
        assert_eq!(e.code, "request_too_large");
        assert_eq!(e.status, 400);
    }
}

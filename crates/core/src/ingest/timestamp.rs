//! Lenient ISO-8601 / RFC 3339 timestamp parsing and the one output form Tributary writes.
//!
//! Accepted input (SDKs in the field send all of these):
//! - `2025-01-01T12:00:00Z`, `...+00:00`, `...+0530`, `...-08`, or no offset at all (taken as UTC);
//! - any number of fractional-second digits (`.`, or `,` as ISO-8601 allows); digits past nanoseconds are ignored;
//! - non-padded month/day/hour (`2015-2-02T00:30:08.276Z`, from Segment's own docs);
//! - `T`, `t` or a space between date and time, or a bare date (`2025-01-01`, midnight UTC);
//! - optional seconds (`2025-01-01T12:00Z`).
//!
//! Output is always UTC with exactly three fractional digits: `2025-01-01T12:00:00.000Z`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Parses a timestamp leniently; `None` when it is not a valid instant between years 1 and 9999 (UTC).
pub fn parse_timestamp(input: &str) -> Option<OffsetDateTime> {
    let mut p = Cursor { b: input.trim().as_bytes(), i: 0 };

    let year = p.digits(4, 4)?;
    p.expect(b'-')?;
    let month = p.digits(1, 2)?;
    p.expect(b'-')?;
    let day = p.digits(1, 2)?;
    let date = Date::from_calendar_date(year as i32, Month::try_from(month as u8).ok()?, day as u8).ok()?;

    let (time, offset) = if p.at_end() {
        (Time::MIDNIGHT, UtcOffset::UTC)
    } else {
        match p.next()? {
            b'T' | b't' | b' ' => {}
            _ => return None,
        }
        let hour = p.digits(1, 2)?;
        p.expect(b':')?;
        let minute = p.digits(2, 2)?;
        let mut second = 0;
        let mut nanos = 0;
        if p.peek() == Some(b':') {
            p.i += 1;
            second = p.digits(2, 2)?;
            if matches!(p.peek(), Some(b'.') | Some(b',')) {
                p.i += 1;
                nanos = p.fraction()?;
            }
        }
        let time = Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos).ok()?;
        (time, p.offset()?)
    };
    if !p.at_end() {
        return None;
    }

    let utc = PrimitiveDateTime::new(date, time).assume_offset(offset).checked_to_offset(UtcOffset::UTC)?;
    if (1..=9999).contains(&utc.year()) {
        Some(utc)
    } else {
        None
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC, truncated to milliseconds. Years outside 0..=9999 (which
/// [`parse_timestamp`] never produces) are clamped into that range so the output always has the same shape.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    let mut s = String::with_capacity(24);
    let year = t.year().clamp(0, 9999) as u32;
    push_digits(&mut s, year, 4);
    s.push('-');
    push_digits(&mut s, u8::from(t.month()) as u32, 2);
    s.push('-');
    push_digits(&mut s, t.day() as u32, 2);
    s.push('T');
    push_digits(&mut s, t.hour() as u32, 2);
    s.push(':');
    push_digits(&mut s, t.minute() as u32, 2);
    s.push(':');
    push_digits(&mut s, t.second() as u32, 2);
    s.push('.');
    push_digits(&mut s, t.millisecond() as u32, 3);
    s.push('Z');
    s
}

fn push_digits(s: &mut String, value: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        let d = (value / div) % 10;
        s.push(char::from(b'0' + d as u8));
        div /= 10;
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// Between `min` and `max` ASCII digits as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let mut n = 0u32;
        let mut count = 0;
        while count < max {
            match self.peek() {
                Some(c @ b'0'..=b'9') => {
                    n = n * 10 + u32::from(c - b'0');
                    self.i += 1;
                    count += 1;
                }
                _ => break,
            }
        }
        (count >= min).then_some(n)
    }

    /// At least one digit of fractional seconds, as nanoseconds (digits beyond the ninth are ignored).
    fn fraction(&mut self) -> Option<u32> {
        let mut nanos = 0u32;
        let mut count = 0usize;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            if count < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            count += 1;
            self.i += 1;
        }
        if count == 0 {
            return None;
        }
        for _ in count..9 {
            nanos *= 10;
        }
        Some(nanos)
    }

    /// `Z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (UTC).
    fn offset(&mut self) -> Option<UtcOffset> {
        let sign: i8 = match self.peek() {
            None => return Some(UtcOffset::UTC),
            Some(b'Z' | b'z') => {
                self.i += 1;
                return Some(UtcOffset::UTC);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.i += 1;
        let hours = self.digits(2, 2)?;
        let minutes = match self.peek() {
            None => 0,
            Some(b':') => {
                self.i += 1;
                self.digits(2, 2)?
            }
            Some(_) => self.digits(2, 2)?,
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        UtcOffset::from_hms(sign * hours as i8, sign * minutes as i8, 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str) -> Option<String> {
        parse_timestamp(s).map(format_timestamp)
    }

    #[test]
    fn accepts_the_shapes_sdks_send() {
        let cases: &[(&str, &str)] = &[
            // segment-analytics-python: isoformat(timespec='milliseconds') and isoformat() with micros
            ("2025-01-01T12:00:00.123+00:00", "2025-01-01T12:00:00.123Z"),
            ("2025-01-01T12:00:00.123456+00:00", "2025-01-01T12:00:00.123Z"),
            // node: Date.toISOString()
            ("2025-01-01T12:00:00.000Z", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01T12:00:00Z", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01t12:00:00z", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01 12:00:00+00:00", "2025-01-01T12:00:00.000Z"),
            // offsets
            ("2025-01-01T17:30:00+0530", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01T17:30:00+05:30", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01T04:00:00-08", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01T00:30:00-01:00", "2025-01-01T01:30:00.000Z"),
            ("2025-01-01T00:30:00+01:00", "2024-12-31T23:30:00.000Z"),
            // fractional digits 0..9 and beyond
            ("2025-01-01T12:00:00.1Z", "2025-01-01T12:00:00.100Z"),
            ("2025-01-01T12:00:00.12Z", "2025-01-01T12:00:00.120Z"),
            ("2025-01-01T12:00:00.999999999Z", "2025-01-01T12:00:00.999Z"),
            ("2025-01-01T12:00:00.9999999999999Z", "2025-01-01T12:00:00.999Z"),
            ("2025-01-01T12:00:00,5Z", "2025-01-01T12:00:00.500Z"),
            // non-padded month/day (Segment docs example), missing seconds, no offset, bare date
            ("2015-2-02T00:30:08.276Z", "2015-02-02T00:30:08.276Z"),
            ("2015-2-2T0:30:08Z", "2015-02-02T00:30:08.000Z"),
            ("2025-01-01T12:00Z", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01T12:00:00", "2025-01-01T12:00:00.000Z"),
            ("2025-01-01", "2025-01-01T00:00:00.000Z"),
            ("  2025-01-01T12:00:00Z ", "2025-01-01T12:00:00.000Z"),
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ];
        for (input, want) in cases {
            assert_eq!(fmt(input).as_deref(), Some(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let cases = [
            "",
            "now",
            "2025",
            "2025-01",
            "2025-13-01T00:00:00Z",
            "2025-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T12:60:00Z",
            "2025-01-01T12:00:61Z",
            "2025-01-01T12:00:00.Z",
            "2025-01-01T12:00:00+24:00",
            "2025-01-01T12:00:00+05:60",
            "2025-01-01T12:00:00+5",
            "2025-01-01T12:00:00ZZ",
            "2025-01-01T12:00:00 Z",
            "2025-01-01X12:00:00Z",
            "20250101T120000Z",
            "-2025-01-01T12:00:00Z",
            "12025-01-01T12:00:00Z",
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:00:00-05:00",
            "2025-01-01T12:00:00\u{e9}",
            "1735732800",
        ];
        for input in cases {
            assert_eq!(parse_timestamp(input), None, "input {input:?}");
        }
    }

    #[test]
    fn formats_exactly_three_fraction_digits() {
        let t = parse_timestamp("2025-03-04T05:06:07.089123Z").unwrap();
        assert_eq!(format_timestamp(t), "2025-03-04T05:06:07.089Z");
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(format_timestamp(t), "1970-01-01T00:00:00.000Z");
    }
}

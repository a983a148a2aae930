//! Partner files: the bounded CSV / JSON Lines row reader. Checks that rows are numbered in order, that offsets stay
//! within the file, and that resuming from a checkpoint yields the same next row.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tributary_core::import::{Format, ParseOptions, Row, Rows};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let format = if selector & 1 == 0 { Format::Csv } else { Format::Jsonl };
    // Small bounds, so that the fuzzer reaches the over-long record and too-many-columns paths.
    let opts =
        ParseOptions { format, delimiter: None, max_record_bytes: 64 + usize::from(selector >> 1), max_columns: 8 };
    let Ok(mut rows) = Rows::new(Cursor::new(file), opts) else { return };
    let header = rows.header().cloned();
    let mut last = 0u64;
    let mut checkpoint = None;
    let mut row = Row::json(0, Default::default());
    for _ in 0..=file.len() {
        match rows.read_into(&mut row) {
            Ok(None) | Err(_) => break,
            Ok(Some(result)) => {
                let (offset, number) = rows.position();
                assert!(number > last, "row numbers increase: {number} after {last}");
                assert!(offset <= file.len() as u64 + 3, "offset {offset} past the end");
                last = number;
                if result.is_ok() {
                    assert_eq!(row.number(), number);
                    if checkpoint.is_none() {
                        checkpoint = Some((offset, number));
                    }
                }
            }
        }
    }
    // Resuming after the first good row gives the row that followed it.
    if let Some((offset, number)) = checkpoint {
        let Ok(start) = usize::try_from(offset) else { return };
        let Some(rest) = file.get(start..) else { return };
        let Ok(mut again) = Rows::resume(Cursor::new(rest), opts, header.clone(), offset, number) else { return };
        let mut first = Rows::new(Cursor::new(file), opts).expect("the file opened before");
        let mut skipped = Row::json(0, Default::default());
        loop {
            match first.read_into(&mut skipped) {
                Ok(Some(_)) if first.position().1 < number => continue,
                _ => break,
            }
        }
        let (mut a, mut b) = (Row::json(0, Default::default()), Row::json(0, Default::default()));
        let next_a = first.read_into(&mut a).map(|r| r.map(|r| r.is_ok()));
        let next_b = again.read_into(&mut b).map(|r| r.map(|r| r.is_ok()));
        if let (Ok(x), Ok(y)) = (&next_a, &next_b) {
            assert_eq!(x, y, "the row after a checkpoint is the same when resumed");
            if x == &Some(true) {
                assert_eq!(a.number(), b.number());
            }
        }
    }
});

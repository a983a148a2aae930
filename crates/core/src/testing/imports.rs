//! Import files for tests and benches: the workspace of `events/imports/workspace.yaml` and rows for its `partner`
//! source (`email,plan,score,vip,signup`), so the embedded tests, the moto tests and the bench read the same data.

use std::io::Write;

/// `events/imports/workspace.yaml`: sources `partner` (2P CSV), `leads` (2P CSV, PII policy) and `feed` (3P JSONL).
pub const IMPORT_WORKSPACE: &str = include_str!("../../../../events/imports/workspace.yaml");

/// The header line of a partner file.
pub const PARTNER_HEADER: &str = "email,plan,score,vip,signup\n";

/// Row `i` of a partner file (every row valid), with its line break.
pub fn partner_row(i: u64) -> String {
    format!(
        "user{i}@example.com,{},{}.5,{},2026-0{}-1{}\n",
        ["free", "pro", "team"][(i % 3) as usize],
        i % 100,
        i.is_multiple_of(2),
        1 + i % 9,
        i % 10
    )
}

/// A partner file of `rows` rows after the header.
pub fn partner_csv(rows: u64) -> Vec<u8> {
    let mut text = String::from(PARTNER_HEADER);
    for i in 0..rows {
        text.push_str(&partner_row(i));
    }
    text.into_bytes()
}

/// `bytes` gzip-compressed (fast level: tests compress large files).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to memory cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

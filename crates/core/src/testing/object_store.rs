//! Contract of [`ObjectStore`]: S3 semantics (whole-object puts, byte ranges, string-prefix listing sorted by key,
//! idempotent delete) plus the shared key rules of [`crate::ports::validate_object_key`].

use super::pseudo_random_bytes;
use crate::ports::{ObjectMeta, ObjectStore, PortError};

async fn put_ok<S: ObjectStore>(s: &S, key: &str, bytes: &[u8], ctx: &str) {
    s.put(key, bytes.to_vec())
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: put {key:?} ({} bytes) failed: {e}", bytes.len()));
}

async fn get_ok<S: ObjectStore>(s: &S, key: &str, ctx: &str) -> Option<Vec<u8>> {
    s.get(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: get {key:?} failed: {e}"))
}

async fn range_ok<S: ObjectStore>(s: &S, key: &str, start: u64, end: Option<u64>, ctx: &str) -> Option<Vec<u8>> {
    s.get_range(key, start, end)
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: get_range {key:?} {start}..{end:?} failed: {e}"))
}

async fn head_ok<S: ObjectStore>(s: &S, key: &str, ctx: &str) -> Option<ObjectMeta> {
    s.head(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: head {key:?} failed: {e}"))
}

async fn list_keys<S: ObjectStore>(s: &S, prefix: &str, ctx: &str) -> Vec<String> {
    let listed =
        s.list(prefix).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: list {prefix:?} failed: {e}"));
    listed.into_iter().map(|m| m.key).collect()
}

fn assert_bytes(actual: Option<Vec<u8>>, expected: &[u8], ctx: &str) {
    match actual {
        None => panic!("object store contract [{ctx}]: expected {} bytes, got None (missing)", expected.len()),
        Some(a) => {
            if a != expected {
                let first_diff =
                    a.iter().zip(expected).position(|(x, y)| x != y).unwrap_or(a.len().min(expected.len()));
                panic!(
                    "object store contract [{ctx}]: got {} bytes, expected {} bytes; first difference at byte {first_diff}",
                    a.len(),
                    expected.len()
                );
            }
        }
    }
}

/// Runs the object store contract on `s`, a fresh empty store. Panics on the first violation.
pub async fn object_store_contract<S: ObjectStore>(s: &S) {
    missing_objects(s).await;
    put_get_overwrite(s).await;
    ranges(s).await;
    listing(s).await;
    delete_is_idempotent(s).await;
    invalid_keys(s).await;
    large_object(s).await;
}

async fn missing_objects<S: ObjectStore>(s: &S) {
    let ctx = "missing object";
    assert_eq!(get_ok(s, "missing/object.json", ctx).await, None, "object store contract [{ctx}]: get");
    assert_eq!(head_ok(s, "missing/object.json", ctx).await, None, "object store contract [{ctx}]: head");
    assert_eq!(
        range_ok(s, "missing/object.json", 0, Some(10), ctx).await,
        None,
        "object store contract [{ctx}]: get_range"
    );
    assert!(list_keys(s, "", ctx).await.is_empty(), "object store contract [{ctx}]: a fresh store lists objects");
}

async fn put_get_overwrite<S: ObjectStore>(s: &S) {
    let ctx = "put/get/overwrite";
    let key = "imports/2024-05-01/partner file ünïcode.csv";
    let v1 = "email,name\nann@example.com,Ann Ünïcode 🎉\n".as_bytes();
    put_ok(s, key, v1, ctx).await;
    assert_bytes(get_ok(s, key, ctx).await, v1, "put/get: first version");
    assert_eq!(
        head_ok(s, key, ctx).await,
        Some(ObjectMeta { key: key.to_string(), size: v1.len() as u64 }),
        "object store contract [{ctx}]: head after put"
    );

    // Overwrite with a shorter object: no tail of the old bytes may survive.
    let v2 = b"short";
    put_ok(s, key, v2, ctx).await;
    assert_bytes(get_ok(s, key, ctx).await, v2, "put/get: overwritten with a shorter object");
    assert_eq!(
        head_ok(s, key, ctx).await.map(|m| m.size),
        Some(v2.len() as u64),
        "object store contract [{ctx}]: head size after overwrite"
    );

    // Empty objects exist and have size 0.
    put_ok(s, "empty/object", b"", ctx).await;
    assert_bytes(get_ok(s, "empty/object", ctx).await, b"", "put/get: empty object");
    assert_eq!(
        head_ok(s, "empty/object", ctx).await.map(|m| m.size),
        Some(0),
        "object store contract [{ctx}]: empty size"
    );

    // Binary content, every byte value.
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    put_ok(s, "bin/all-bytes.bin", &binary, ctx).await;
    assert_bytes(get_ok(s, "bin/all-bytes.bin", ctx).await, &binary, "put/get: binary bytes");

    for k in [key, "empty/object", "bin/all-bytes.bin"] {
        s.delete(k).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete {k:?} failed: {e}"));
    }
}

async fn ranges<S: ObjectStore>(s: &S) {
    let ctx = "get_range";
    let key = "ranges/digits.txt";
    put_ok(s, key, b"0123456789", ctx).await;
    let cases: [(u64, Option<u64>, &[u8]); 7] = [
        (0, Some(10), b"0123456789"),
        (2, Some(5), b"234"),
        (7, None, b"789"),
        (0, None, b"0123456789"),
        (5, Some(100), b"56789"),
        (10, None, b""),
        (25, Some(30), b""),
    ];
    for (start, end, expected) in cases {
        let got = range_ok(s, key, start, end, ctx).await;
        assert_bytes(got, expected, &format!("get_range {start}..{end:?} of a 10-byte object"));
    }
    s.delete(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
}

async fn listing<S: ObjectStore>(s: &S) {
    let ctx = "list";
    // Chosen so that byte order differs from a naive directory walk: '-' (0x2d) sorts before '/' (0x2f), and
    // "10" before "2".
    let keys = [
        "list/a/2.json",
        "list/a/10.json",
        "list/a/1.json",
        "list/a-b.json",
        "list/a/sub/deep.json",
        "list/b/1.json",
        "listx/1.json",
        "other/list/a/1.json",
    ];
    for (i, k) in keys.iter().enumerate() {
        put_ok(s, k, format!("object {i}").as_bytes(), ctx).await;
    }
    let mut all: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    all.sort();
    let expect = |prefix: &str| -> Vec<String> { all.iter().filter(|k| k.starts_with(prefix)).cloned().collect() };

    for prefix in ["", "list/a/", "list/a", "list/", "list", "list/a/sub/", "list/b/1.json", "nothing/", "lis", "o"] {
        let got = list_keys(s, prefix, ctx).await;
        assert_eq!(
            got,
            expect(prefix),
            "object store contract [{ctx}]: list({prefix:?}) must be every key starting with it, sorted"
        );
    }
    let metas = s.list("list/a/").await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: list failed: {e}"));
    for m in &metas {
        let i = keys.iter().position(|k| *k == m.key).unwrap_or(usize::MAX);
        assert_eq!(
            m.size,
            format!("object {i}").len() as u64,
            "object store contract [{ctx}]: listed size of {:?}",
            m.key
        );
    }
    for k in keys {
        s.delete(k).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete {k:?} failed: {e}"));
    }
    assert!(
        list_keys(s, "", ctx).await.is_empty(),
        "object store contract [{ctx}]: store not empty after deleting everything"
    );
}

async fn delete_is_idempotent<S: ObjectStore>(s: &S) {
    let ctx = "delete";
    let key = "del/once.txt";
    put_ok(s, key, b"bye", ctx).await;
    s.delete(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
    assert_eq!(get_ok(s, key, ctx).await, None, "object store contract [{ctx}]: get after delete");
    assert_eq!(head_ok(s, key, ctx).await, None, "object store contract [{ctx}]: head after delete");
    assert!(list_keys(s, "del/", ctx).await.is_empty(), "object store contract [{ctx}]: list after delete");
    s.delete(key)
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: deleting an already deleted object failed: {e}"));
    s.delete("del/never-existed.txt")
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: deleting a missing object failed: {e}"));
}

async fn invalid_keys<S: ObjectStore>(s: &S) {
    let ctx = "invalid keys";
    put_ok(s, "valid/keep.txt", b"keep", ctx).await;
    let before = list_keys(s, "", ctx).await;
    let bad = ["../x", "/abs", "a//b", "", "a/../b", "a/./b", "trailing/", "..", "back\\slash", "ctl\u{1}char"];
    for key in bad {
        let expect_invalid = |what: &str, r: Result<(), PortError>| {
            assert!(
                matches!(r, Err(PortError::Invalid(_))),
                "object store contract [{ctx}]: {what} with key {key:?} must be refused with PortError::Invalid, got {r:?}"
            );
        };
        expect_invalid("put", s.put(key, b"evil".to_vec()).await);
        expect_invalid("get", s.get(key).await.map(|_| ()));
        expect_invalid("get_range", s.get_range(key, 0, None).await.map(|_| ()));
        expect_invalid("head", s.head(key).await.map(|_| ()));
        expect_invalid("delete", s.delete(key).await);
    }
    assert_eq!(
        list_keys(s, "", ctx).await,
        before,
        "object store contract [{ctx}]: refused keys must have no side effect"
    );
    assert_bytes(get_ok(s, "valid/keep.txt", ctx).await, b"keep", "invalid keys: other objects untouched");
    s.delete("valid/keep.txt").await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
}

async fn large_object<S: ObjectStore>(s: &S) {
    let ctx = "5 MB object";
    let key = "large/5mb.bin";
    let bytes = pseudo_random_bytes(5 * 1024 * 1024, 0x5eed_0b1e);
    put_ok(s, key, &bytes, ctx).await;
    assert_bytes(get_ok(s, key, ctx).await, &bytes, ctx);
    assert_eq!(
        head_ok(s, key, ctx).await.map(|m| m.size),
        Some(bytes.len() as u64),
        "object store contract [{ctx}]: head size"
    );
    let (start, end) = (3 * 1024 * 1024 + 17, 3 * 1024 * 1024 + 70_000);
    assert_bytes(
        range_ok(s, key, start as u64, Some(end as u64), ctx).await,
        &bytes[start..end],
        "5 MB object: range in the middle",
    );
    assert_bytes(
        range_ok(s, key, (bytes.len() - 100) as u64, None, ctx).await,
        &bytes[bytes.len() - 100..],
        "5 MB object: open-ended tail",
    );
    s.delete(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
    assert_eq!(head_ok(s, key, ctx).await, None, "object store contract [{ctx}]: head after delete");
}

//! Contract of [`ObjectStore`]: S3 semantics (whole-object puts, byte ranges, string-prefix listing sorted by key,
//! idempotent delete, earlier versions removed key by key) plus the shared key rules of
//! [`crate::ports::validate_object_key`].
//!
//! [`object_store_contract`] holds for every store, with versions or without (its checks of earlier versions
//! accept both). [`object_store_versions_contract`] is for stores that keep versions (an S3 bucket with
//! versioning, [`super::MemoryObjects::versioned`]) and fails on one that does not.

use super::pseudo_random_bytes;
use crate::ports::{EarlierVersion, ObjectMeta, ObjectStore, PortError};

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

async fn earlier_ok<S: ObjectStore>(s: &S, prefix: &str, ctx: &str) -> Vec<EarlierVersion> {
    s.list_earlier_versions(prefix)
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: list_earlier_versions {prefix:?} failed: {e}"))
}

async fn removed_ok<S: ObjectStore>(s: &S, key: &str, ctx: &str) -> usize {
    s.delete_earlier_versions(key)
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete_earlier_versions {key:?} failed: {e}"))
}

async fn version_ok<S: ObjectStore>(s: &S, v: &EarlierVersion, ctx: &str) -> Option<Vec<u8>> {
    s.get_version(&v.key, &v.version_id)
        .await
        .unwrap_or_else(|e| panic!("object store contract [{ctx}]: get_version {:?} failed: {e}", v.key))
}

/// (key, size) of each listed earlier version, in listing order.
fn shapes(versions: &[EarlierVersion]) -> Vec<(String, u64)> {
    versions.iter().map(|v| (v.key.clone(), v.size)).collect()
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
    earlier_versions(s).await;
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
    assert!(
        earlier_ok(s, "", ctx).await.is_empty(),
        "object store contract [{ctx}]: a fresh store lists earlier versions"
    );
    assert_eq!(
        removed_ok(s, "missing/object.json", ctx).await,
        0,
        "object store contract [{ctx}]: removing the earlier versions of a missing key"
    );
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
        expect_invalid("get_version", s.get_version(key, "1").await.map(|_| ()));
        expect_invalid("delete_earlier_versions", s.delete_earlier_versions(key).await.map(|_| ()));
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

/// Earlier versions, as every store must treat them: a store without versions lists none and removes none; one
/// with versions lists what an overwrite or a delete left, and `delete_earlier_versions` removes exactly those of
/// the key it names (never those of a longer key it prefixes), keeping the current object.
async fn earlier_versions<S: ObjectStore>(s: &S) {
    let ctx = "earlier versions";
    // Two keys where one prefixes the other, as a partner file and its gzip twin (a directory store cannot hold
    // `k` and `k/x` at once, so the longer key is a sibling).
    let (k, longer) = ("history/partner.csv", "history/partner.csv.gz");
    let (v1, v2, v3) = (b"email\nann@example.com\n".as_slice(), b"email\n".as_slice(), b"email\nbob\n".as_slice());
    for key in [k, longer] {
        put_ok(s, key, v1, ctx).await;
        put_ok(s, key, v2, ctx).await;
    }
    let earlier = earlier_ok(s, "history/", ctx).await;
    let versioned = !earlier.is_empty();
    if versioned {
        assert_eq!(
            shapes(&earlier),
            vec![(k.to_string(), v1.len() as u64), (longer.to_string(), v1.len() as u64)],
            "object store contract [{ctx}]: an overwrite leaves the earlier version, listed by key"
        );
        assert_bytes(version_ok(s, &earlier[0], ctx).await, v1, "earlier versions: the overwritten bytes");
    }
    assert_eq!(
        removed_ok(s, k, ctx).await,
        usize::from(versioned),
        "object store contract [{ctx}]: removing the earlier versions of an overwritten object"
    );
    assert_bytes(get_ok(s, k, ctx).await, v2, "earlier versions: the current object stays");
    let left = earlier_ok(s, "history/", ctx).await;
    assert!(
        left.iter().all(|v| v.key == longer),
        "object store contract [{ctx}]: earlier versions of {k:?} still listed: {:?}",
        shapes(&left)
    );
    assert_eq!(
        left.len(),
        usize::from(versioned),
        "object store contract [{ctx}]: the earlier version of the longer key {longer:?} must stay (exact key only)"
    );
    if versioned {
        assert_eq!(
            version_ok(s, &earlier[0], ctx).await,
            None,
            "object store contract [{ctx}]: a removed version can still be read"
        );
    }
    assert_eq!(removed_ok(s, k, ctx).await, 0, "object store contract [{ctx}]: a second removal removes nothing");

    // A deleted object: what the delete left (its last bytes, a delete marker) goes too, and the key is free.
    s.delete(k).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
    assert_eq!(get_ok(s, k, ctx).await, None, "object store contract [{ctx}]: get after delete");
    let after_delete: Vec<EarlierVersion> = earlier_ok(s, k, ctx).await.into_iter().filter(|v| v.key == k).collect();
    assert_eq!(
        shapes(&after_delete),
        if versioned { vec![(k.to_string(), v2.len() as u64)] } else { Vec::new() },
        "object store contract [{ctx}]: a delete leaves the deleted bytes as an earlier version (or nothing)"
    );
    assert_eq!(
        removed_ok(s, k, ctx).await,
        if versioned { 2 } else { 0 },
        "object store contract [{ctx}]: removing a deleted object's earlier version and its delete marker"
    );
    assert!(
        earlier_ok(s, "history/", ctx).await.iter().all(|v| v.key == longer),
        "object store contract [{ctx}]: a deleted object's earlier versions are still listed"
    );
    assert_eq!(head_ok(s, k, ctx).await, None, "object store contract [{ctx}]: head after removing every version");
    assert_eq!(
        list_keys(s, "history/", ctx).await,
        vec![longer.to_string()],
        "object store contract [{ctx}]: list after removing every version"
    );
    put_ok(s, k, v3, ctx).await;
    assert_bytes(get_ok(s, k, ctx).await, v3, "earlier versions: a key whose every version went takes a new put");

    for key in [k, longer] {
        s.delete(key).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete {key:?} failed: {e}"));
        removed_ok(s, key, ctx).await;
    }
    assert!(
        earlier_ok(s, "history/", ctx).await.is_empty() && list_keys(s, "history/", ctx).await.is_empty(),
        "object store contract [{ctx}]: deleted and cleared keys leave nothing"
    );
}

/// Runs the contract of earlier versions on `s`, a fresh empty store **that keeps versions** (an S3 bucket with
/// versioning enabled). Panics on the first violation, and at once if `s` keeps no versions.
pub async fn object_store_versions_contract<S: ObjectStore>(s: &S) {
    let ctx = "versions";
    assert!(earlier_ok(s, "", ctx).await.is_empty(), "object store contract [{ctx}]: a fresh store lists versions");

    // Three puts: two earlier versions, newest first, each readable.
    let key = "ver/quarantine/web/one.json";
    let bodies: [&[u8]; 3] = [b"{\"v\":1}", b"{\"v\":22}", b"{\"v\":333}"];
    for b in bodies {
        put_ok(s, key, b, ctx).await;
    }
    let earlier = earlier_ok(s, "ver/", ctx).await;
    assert_eq!(
        shapes(&earlier),
        vec![(key.to_string(), bodies[1].len() as u64), (key.to_string(), bodies[0].len() as u64)],
        "object store contract [{ctx}]: the store keeps no versions, or lists them out of order (newest first)"
    );
    assert_bytes(version_ok(s, &earlier[0], ctx).await, bodies[1], "versions: the newer earlier version");
    assert_bytes(version_ok(s, &earlier[1], ctx).await, bodies[0], "versions: the oldest version");
    assert_ne!(earlier[0].version_id, earlier[1].version_id, "object store contract [{ctx}]: distinct version ids");

    // Exactly the key: longer keys it prefixes (a sibling and a "directory" of it) keep theirs.
    let others = ["ver/quarantine/web/one.json.gz", "ver/quarantine/web/one.json/part-1"];
    for other in others {
        put_ok(s, other, b"a", ctx).await;
        put_ok(s, other, b"b", ctx).await;
    }
    // Many versions of one key: more than a small listing page, so removal goes over several pages.
    let many = "ver/quarantine/web/many.json";
    for i in 0..12u8 {
        put_ok(s, many, &[b'0' + i % 10], ctx).await;
    }
    s.delete(many).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete failed: {e}"));
    assert_eq!(
        earlier_ok(s, many, ctx).await.iter().filter(|v| v.key == many).count(),
        12,
        "object store contract [{ctx}]: the twelve versions of a deleted object"
    );
    assert_eq!(
        removed_ok(s, many, ctx).await,
        13,
        "object store contract [{ctx}]: twelve versions and the delete marker removed"
    );
    assert_eq!(removed_ok(s, key, ctx).await, 2, "object store contract [{ctx}]: two earlier versions removed");
    let left = earlier_ok(s, "ver/", ctx).await;
    assert_eq!(
        shapes(&left),
        others.iter().map(|o| (o.to_string(), 1)).collect::<Vec<_>>(),
        "object store contract [{ctx}]: only the other keys' earlier versions are left"
    );
    assert_bytes(get_ok(s, key, ctx).await, bodies[2], "versions: the current object stays");
    for v in &earlier {
        assert_eq!(version_ok(s, v, ctx).await, None, "object store contract [{ctx}]: a removed version is read");
    }
    assert_eq!(head_ok(s, many, ctx).await, None, "object store contract [{ctx}]: head of a cleared key");
    assert!(
        !list_keys(s, "ver/", ctx).await.contains(&many.to_string()),
        "object store contract [{ctx}]: a cleared key is listed"
    );

    // A prefix that is not a key boundary lists by string prefix, like `list`.
    assert_eq!(
        earlier_ok(s, "ver/quarantine/web/one.json.", ctx).await.len(),
        1,
        "object store contract [{ctx}]: list_earlier_versions by string prefix"
    );

    for k in [key, others[0], others[1]] {
        s.delete(k).await.unwrap_or_else(|e| panic!("object store contract [{ctx}]: delete {k:?} failed: {e}"));
        removed_ok(s, k, ctx).await;
    }
    assert!(earlier_ok(s, "ver/", ctx).await.is_empty(), "object store contract [{ctx}]: versions left at the end");
    assert!(list_keys(s, "ver/", ctx).await.is_empty(), "object store contract [{ctx}]: objects left at the end");
}

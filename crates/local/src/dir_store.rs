//! An object store on a plain directory: key `a/b/c.csv` is the file `<root>/a/b/c.csv`, so operators can drop
//! files in and read exports with ordinary tools.
//!
//! Keys are checked with [`validate_object_key`] before any path is built, so no key reaches outside the root.
//! Puts write a temporary file next to the target, fsync it and rename it over the target: readers see the old or
//! the new bytes, never a mix, and a crash leaves at worst an invisible temporary file. Two differences from S3
//! that a directory cannot hide: a key cannot be both an object and a "directory" of other objects (`a/b` and
//! `a/b/c`), and keys with a segment ending in [`TEMP_SUFFIX`] are refused; both give [`PortError::Invalid`].

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tributary_core::ports::{validate_object_key, EarlierVersion, ObjectMeta, ObjectStore, PortError};

/// Suffix of in-progress puts; files ending with it are never listed or served.
pub const TEMP_SUFFIX: &str = ".tributary-tmp";

/// Attempts of a put whose fresh directory was removed by a concurrent delete's clean-up.
const PUT_ATTEMPTS: usize = 3;

/// An [`ObjectStore`] rooted at a directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: Arc<PathBuf>,
}

impl DirStore {
    /// Opens the store at `root`, creating the directory if needed.
    pub fn open(root: &Path) -> Result<Self, PortError> {
        fs::create_dir_all(root).map_err(|e| io_error("create the store directory", e))?;
        let root = fs::canonicalize(root).map_err(|e| io_error("resolve the store directory", e))?;
        if !root.is_dir() {
            return Err(PortError::Invalid("object store root is not a directory".into()));
        }
        Ok(DirStore { root: Arc::new(root) })
    }

    /// The (canonical) directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key of a file under the root (for tools that watch the directory), or `None` if the path is outside
    /// the root, a temporary file, or not a valid key.
    pub fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&*self.root).ok()?;
        let segments: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        let key = segments?.join("/");
        check_key(&key).ok()?;
        Some(key)
    }

    /// Runs blocking file I/O off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, PortError> + Send + 'static,
    {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| PortError::Unavailable(format!("object store worker task failed: {e}")))?
    }
}

/// Shared rules plus the one this adapter adds (temporary-file names).
fn check_key(key: &str) -> Result<(), PortError> {
    validate_object_key(key)?;
    if key.split('/').any(|seg| seg.ends_with(TEMP_SUFFIX)) {
        return Err(PortError::Invalid(format!("object key segments may not end with {TEMP_SUFFIX}")));
    }
    Ok(())
}

/// Error messages name the operation, never the key: keys may carry identifiers that must not reach logs.
fn io_error(what: &str, e: io::Error) -> PortError {
    PortError::Unavailable(format!("cannot {what}: {e}"))
}

/// "There is no object here": the path, one of its parents, or the path itself is not a file.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory)
}

/// Opens the object's file, or `None` if no object has this key.
fn open_object(path: &Path) -> Result<Option<(File, u64)>, PortError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_error("open an object", e)),
    };
    let meta = file.metadata().map_err(|e| io_error("read object metadata", e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((file, meta.len())))
}

fn put_blocking(root: &Path, key: &str, bytes: &[u8]) -> Result<(), PortError> {
    let path = root.join(key);
    let Some(dir) = path.parent() else {
        return Err(PortError::Invalid("object key has no parent directory".into()));
    };
    let conflict = || PortError::Invalid("an object key cannot also be the directory of other keys".into());
    for attempt in 1..=PUT_ATTEMPTS {
        match fs::create_dir_all(dir) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotADirectory | ErrorKind::AlreadyExists) => return Err(conflict()),
            Err(e) => return Err(io_error("create an object directory", e)),
        }
        let tmp = dir.join(format!(".{}{TEMP_SUFFIX}", uuid::Uuid::new_v4().simple()));
        let mut file = match File::create_new(&tmp) {
            Ok(f) => f,
            // A concurrent delete pruned the directory we just made: make it again.
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < PUT_ATTEMPTS => continue,
            Err(e) => return Err(io_error("create a temporary file", e)),
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write an object", e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            if path.is_dir() {
                return Err(conflict());
            }
            return Err(io_error("move an object into place", e));
        }
        // Persist the rename itself; not every filesystem can sync a directory, and the data is already safe.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        return Ok(());
    }
    Err(PortError::Unavailable("object directory kept disappearing during put".into()))
}

fn range_blocking(path: &Path, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
    let Some((mut file, len)) = open_object(path)? else {
        return Ok(None);
    };
    let end = end.unwrap_or(len).min(len);
    if start >= end {
        return Ok(Some(Vec::new()));
    }
    file.seek(SeekFrom::Start(start)).map_err(|e| io_error("seek in an object", e))?;
    let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
    file.take(end - start).read_to_end(&mut out).map_err(|e| io_error("read an object", e))?;
    Ok(Some(out))
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
    // Start at the deepest directory the prefix names entirely; a prefix whose directory part is not a valid key
    // cannot match any valid key (and must never be joined onto the root).
    let mut stack = match prefix.rsplit_once('/') {
        Some((dir, _)) => {
            if validate_object_key(dir).is_err() {
                return Ok(Vec::new());
            }
            vec![(root.join(dir), format!("{dir}/"))]
        }
        None => vec![(root.to_path_buf(), String::new())],
    };
    let mut found = Vec::new();
    while let Some((dir, key_prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(io_error("list a directory", e)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(io_error("list a directory", e)),
            };
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no key can name it
            };
            let key = format!("{key_prefix}{name}");
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(io_error("list a directory", e)),
            };
            if file_type.is_dir() {
                let sub = format!("{key}/");
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    stack.push((entry.path(), sub));
                }
                continue;
            }
            if !key.starts_with(prefix) || check_key(&key).is_err() {
                continue;
            }
            // Regular files, and symlinks to files (an operator's choice); symlinked directories are not followed.
            let meta = match fs::metadata(entry.path()) {
                Ok(m) => m,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(io_error("read object metadata", e)),
            };
            if meta.is_file() {
                found.push(ObjectMeta { key, size: meta.len() });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

fn delete_blocking(root: &Path, key: &str) -> Result<(), PortError> {
    let path = root.join(key);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(io_error("delete an object", e)),
    }
    // Remove directories the delete left empty, so erased keys do not linger as directory names.
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

impl ObjectStore for DirStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        check_key(key)?;
        let key = key.to_string();
        self.blocking(move |root| put_blocking(root, &key, &bytes)).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.get_range(key, 0, None).await
    }

    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        check_key(key)?;
        if end.is_some_and(|e| e < start) {
            return Err(PortError::Invalid("range end before range start".into()));
        }
        let key = key.to_string();
        self.blocking(move |root| range_blocking(&root.join(&key), start, end)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        check_key(key)?;
        let key = key.to_string();
        self.blocking(move |root| match fs::metadata(root.join(&key)) {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { key, size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(io_error("read object metadata", e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let prefix = prefix.to_string();
        self.blocking(move |root| list_blocking(root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        check_key(key)?;
        let key = key.to_string();
        self.blocking(move |root| delete_blocking(root, &key)).await
    }

    // A directory keeps no versions: a put replaces the file and a delete removes it. These say so with the
    // store's own key rules, so a key `put` refuses is refused here too.

    async fn list_earlier_versions(&self, _prefix: &str) -> Result<Vec<EarlierVersion>, PortError> {
        Ok(Vec::new())
    }

    async fn get_version(&self, key: &str, _version_id: &str) -> Result<Option<Vec<u8>>, PortError> {
        check_key(key)?;
        Ok(None)
    }

    async fn delete_earlier_versions(&self, key: &str) -> Result<usize, PortError> {
        check_key(key)?;
        Ok(0)
    }
}

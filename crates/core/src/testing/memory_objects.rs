//! An in-memory [`ObjectStore`] with S3's semantics, with or without versioning, for handler tests that need to
//! see what a versioned bucket keeps (every version and delete marker) and to crash between object writes.
//!
//! Versioned, it behaves as an S3 bucket with versioning enabled: a put adds a version, a delete adds a delete
//! marker (even for a missing key, as S3 does), and only [`ObjectStore::delete_earlier_versions`] removes
//! anything. Unversioned, a put replaces the object and a delete removes it. Clones share the objects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::ports::{validate_object_key, EarlierVersion, ObjectMeta, ObjectStore, PortError};

/// One stored version: bytes, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub key: String,
    pub version_id: String,
    /// `None` for a delete marker.
    pub bytes: Option<Vec<u8>>,
    /// The newest version of its key.
    pub latest: bool,
}

/// (version id, bytes or `None` for a delete marker).
type Version = (String, Option<Vec<u8>>);

#[derive(Debug, Default)]
struct State {
    versioned: bool,
    /// Per key, its versions oldest first.
    keys: BTreeMap<String, Vec<Version>>,
    next_version: u64,
    /// Writes (puts, deletes, each version removed) still allowed before every write fails; `None`: no limit.
    writes_left: Option<u64>,
}

impl State {
    /// Spends one write of the crash budget, or fails as a crash would (nothing written).
    fn spend_write(&mut self) -> Result<(), PortError> {
        match &mut self.writes_left {
            Some(0) => Err(PortError::Unavailable("injected crash: no object write allowed".into())),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn current(&self, key: &str) -> Option<&Vec<u8>> {
        self.keys.get(key).and_then(|v| v.last()).and_then(|(_, bytes)| bytes.as_ref())
    }

    fn version_id(&mut self) -> String {
        self.next_version += 1;
        format!("v{:06}", self.next_version)
    }
}

/// An in-memory object store (see the module docs). Cheap to clone; clones share the objects and the faults.
#[derive(Debug, Clone, Default)]
pub struct MemoryObjects {
    state: Arc<Mutex<State>>,
}

impl MemoryObjects {
    /// A store that keeps every version, as an S3 bucket with versioning enabled.
    pub fn versioned() -> MemoryObjects {
        let store = MemoryObjects::default();
        store.lock().versioned = true;
        store
    }

    /// A store without versions, as a plain S3 bucket or a directory.
    pub fn unversioned() -> MemoryObjects {
        MemoryObjects::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After `n` more object writes (a put, a delete, or one version removed), every write fails with
    /// [`PortError::Unavailable`] and changes nothing, as if the process had crashed there; `None` lifts it.
    pub fn crash_after_writes(&self, n: Option<u64>) {
        self.lock().writes_left = n;
    }

    /// Every version of every key, delete markers included, sorted by key, oldest first within a key.
    pub fn all_versions(&self) -> Vec<StoredVersion> {
        let state = self.lock();
        let mut out = Vec::new();
        for (key, versions) in &state.keys {
            for (i, (version_id, bytes)) in versions.iter().enumerate() {
                out.push(StoredVersion {
                    key: key.clone(),
                    version_id: version_id.clone(),
                    bytes: bytes.clone(),
                    latest: i + 1 == versions.len(),
                });
            }
        }
        out
    }
}

impl ObjectStore for MemoryObjects {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        validate_object_key(key)?;
        let mut state = self.lock();
        state.spend_write()?;
        let id = if state.versioned { state.version_id() } else { "null".to_string() };
        let versioned = state.versioned;
        let versions = state.keys.entry(key.to_string()).or_default();
        if !versioned {
            versions.clear();
        }
        versions.push((id, Some(bytes)));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        validate_object_key(key)?;
        Ok(self.lock().current(key).cloned())
    }

    async fn get_range(&self, key: &str, start: u64, end: Option<u64>) -> Result<Option<Vec<u8>>, PortError> {
        validate_object_key(key)?;
        let state = self.lock();
        Ok(state.current(key).map(|bytes| {
            let len = bytes.len() as u64;
            let (from, to) = (start.min(len), end.unwrap_or(len).min(len));
            if from >= to {
                Vec::new()
            } else {
                bytes[from as usize..to as usize].to_vec()
            }
        }))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        validate_object_key(key)?;
        Ok(self.lock().current(key).map(|b| ObjectMeta { key: key.to_string(), size: b.len() as u64 }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let state = self.lock();
        Ok(state
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, _)| state.current(k).map(|b| ObjectMeta { key: k.clone(), size: b.len() as u64 }))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        validate_object_key(key)?;
        let mut state = self.lock();
        state.spend_write()?;
        if state.versioned {
            let id = state.version_id();
            state.keys.entry(key.to_string()).or_default().push((id, None));
        } else {
            state.keys.remove(key);
        }
        Ok(())
    }

    async fn list_earlier_versions(&self, prefix: &str) -> Result<Vec<EarlierVersion>, PortError> {
        let state = self.lock();
        let mut out = Vec::new();
        for (key, versions) in state.keys.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)) {
            let earlier = &versions[..versions.len().saturating_sub(1)];
            for (version_id, bytes) in earlier.iter().rev() {
                if let Some(bytes) = bytes {
                    out.push(EarlierVersion {
                        key: key.clone(),
                        version_id: version_id.clone(),
                        size: bytes.len() as u64,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<Vec<u8>>, PortError> {
        validate_object_key(key)?;
        let state = self.lock();
        let versions = state.keys.get(key).map(Vec::as_slice).unwrap_or_default();
        Ok(versions.iter().find(|(id, _)| id == version_id).and_then(|(_, bytes)| bytes.clone()))
    }

    async fn delete_earlier_versions(&self, key: &str) -> Result<usize, PortError> {
        validate_object_key(key)?;
        let mut state = self.lock();
        let mut removed = 0;
        // One version at a time, each a write of the crash budget, so a crash can stop it half-way (as between
        // two S3 DeleteObjects calls). Earlier versions first, delete markers last (as the S3 adapter does), so a
        // removal cut short never makes a deleted object's last bytes current again.
        while let Some(versions) = state.keys.get(key) {
            let last = versions.len().saturating_sub(1);
            let earlier = versions.iter().enumerate().position(|(i, (_, bytes))| i < last && bytes.is_some());
            let marker = versions.iter().position(|(_, bytes)| bytes.is_none());
            let Some(doomed) = earlier.or(marker) else { break };
            state.spend_write()?;
            if let Some(versions) = state.keys.get_mut(key) {
                versions.remove(doomed);
                if versions.is_empty() {
                    state.keys.remove(key);
                }
            }
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{object_store_contract, object_store_versions_contract};

    #[tokio::test]
    async fn the_unversioned_store_passes_the_object_store_contract() {
        object_store_contract(&MemoryObjects::unversioned()).await;
    }

    #[tokio::test]
    async fn the_versioned_store_passes_both_contracts() {
        object_store_contract(&MemoryObjects::versioned()).await;
        object_store_versions_contract(&MemoryObjects::versioned()).await;
    }

    #[tokio::test]
    async fn a_crash_stops_writes_and_can_cut_a_removal_short() {
        let s = MemoryObjects::versioned();
        for v in ["1", "2", "3"] {
            s.put("k", v.into()).await.expect("put");
        }
        s.crash_after_writes(Some(1));
        assert!(s.delete_earlier_versions("k").await.is_err(), "two to remove, one write allowed");
        assert_eq!(s.list_earlier_versions("").await.expect("list").len(), 1, "one of the two went");
        assert!(s.put("k", b"4".to_vec()).await.is_err());
        s.crash_after_writes(None);
        assert_eq!(s.delete_earlier_versions("k").await, Ok(1), "a second call finishes");
        assert_eq!(s.all_versions().len(), 1);
        assert_eq!(s.get("k").await, Ok(Some(b"3".to_vec())));
    }
}

//! Derived files: per-tenant files of index state (large HNSW graphs) kept beside the
//! database, `indexes/<key in hex>/<name>`, so that loading a tenant maps them (or reads them
//! straight into their final buffers) instead of going through redb's pages and a blob copy.
//!
//! **A file never changes once renamed into place**: it is only ever deleted. A loaded graph
//! maps its file (`strata_index::GraphMap`), so a file rewritten or truncated in place would
//! change or fault a running server. Files are made read-only before the rename, so that a
//! tool working on the data directory (or on a backup, which hard-links them) does not write
//! into one by accident.
//!
//! They are derived data: the rows that say which file is current (and its length and
//! checksum) live in the tenant's key range and commit with it; a file itself is never the
//! truth, and one that is missing, short or damaged only makes the engine rebuild.
//!
//! A file is written under a temporary name, synced, renamed into place and its directory
//! synced ([`Store::write_derived`]) before any row names it, so a crash leaves either the
//! old file, or the old and the new (the new one unnamed until its row commits), never a
//! half-written file under a name a row gives. Files no row names any more are deleted by
//! [`Store::retain_derived`] (not while a backup links them); a tenant's directory goes whole with its purge
//! ([`Store::remove_derived`]), and at start ([`Store::remove_orphan_derived`]) when a crash
//! came between the purge and that. The directory does not depend on the tenant's isolation
//! level, so a migration between levels moves only the rows, and the files stay valid.

use crate::placement::tenant_dir_key;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::keys::TenantKey;
use crate::{Store, StoreError};

/// The directory beside the main file that holds each tenant's derived-file directory.
pub const DERIVED_DIR: &str = "indexes";

/// Names of files being written start with this; they are never named by a row.
pub(crate) const TEMP_PREFIX: &str = "tmp-";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a directory's entries (a created, renamed or removed child) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
}

/// A plain file name of this module's own: no separator, no leading dot, not a temporary.
/// Makes a derived file read-only for everyone (see the module documentation). Unix only:
/// elsewhere a read-only file could not be deleted.
fn read_only(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with(TEMP_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("derived file name {name:?}")))
    }
}

impl Store {
    /// The directory of tenant `t`'s derived files (it may not exist).
    pub fn derived_dir(&self, t: TenantKey) -> PathBuf {
        self.placement
            .derived_root()
            .join(format!("{:016x}", t.raw()))
    }

    /// Writes tenant `t`'s derived file `name` with `fill`, durably and atomically: into a
    /// temporary file, synced, renamed to `name` (replacing one of that name) and the
    /// directory synced. Returns the file's length. On any failure the temporary file is
    /// removed and nothing of `name` changed.
    pub fn write_derived(
        &self,
        t: TenantKey,
        name: &str,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        crate::thread_writes::check_write_allowed();
        check_name(name)?;
        let dir = self.derived_dir(t);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            sync_dir(&dir)?;
            let root = self.placement.derived_root();
            sync_dir(&root)?;
            if let Some(parent) = root.parent() {
                sync_dir(parent)?;
            }
        }
        let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
        let written = (|| {
            let file = File::create(&temp)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            fill(&mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            read_only(&file)?;
            file.sync_all()?;
            file.metadata().map(|m| m.len())
        })();
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(io(&temp, e));
            }
        };
        let path = dir.join(name);
        if let Err(e) = std::fs::rename(&temp, &path) {
            let _ = std::fs::remove_file(&temp);
            return Err(io(&path, e));
        }
        sync_dir(&dir)?;
        Ok(len)
    }

    /// Opens tenant `t`'s derived file `name`; `None` if there is none.
    pub fn open_derived(&self, t: TenantKey, name: &str) -> Result<Option<File>, StoreError> {
        check_name(name)?;
        let path = self.derived_dir(t).join(name);
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Deletes every derived file of tenant `t` that `keep` refuses, temporary ones included
    /// (their names start with `tmp-`: a caller that holds the tenant's save order refuses
    /// them, since no write of its own is in progress; others keep them). Returns the count.
    /// Deletes nothing while a backup links the derived files (`Store::derived_gate`): a
    /// file no row names now may be one its snapshot's rows name.
    pub fn retain_derived(
        &self,
        t: TenantKey,
        keep: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        // A backup that panicked while it held the gate left it poisoned, not held: that
        // must not stop deletions for the server's life.
        let _no_backup = match self.derived_gate.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(0),
        };
        let dir = self.derived_dir(t);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name();
            let wanted = name.to_str().is_some_and(&keep);
            if !wanted {
                std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Deletes tenant `t`'s derived files with their directory (after its purge).
    pub fn remove_derived(&self, t: TenantKey) -> Result<(), StoreError> {
        let dir = self.derived_dir(t);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.placement.derived_root()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir, e)),
        }
    }

    /// The keys of the tenants with a directory of derived files.
    pub fn derived_keys(&self) -> Result<Vec<TenantKey>, StoreError> {
        let root = self.placement.derived_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&root, e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|entry| tenant_dir_key(&entry.file_name()))
            .collect())
    }

    /// Deletes the derived files of every tenant not in `keep` (what a crash between a purge
    /// and [`Store::remove_derived`] left). Returns their keys.
    pub fn remove_orphan_derived(
        &self,
        keep: &HashSet<TenantKey>,
    ) -> Result<Vec<TenantKey>, StoreError> {
        let root = self.placement.derived_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&root, e)),
        };
        let mut removed = Vec::new();
        // Derived files only save rebuilds: one that cannot be removed is left for the next
        // start rather than keeping this one from serving.
        for entry in entries.flatten() {
            let name = entry.file_name();
            // A backup's staging links a crash left (`backup`): no backup runs at a start.
            if name
                .to_str()
                .is_some_and(|n| n.starts_with(crate::backup::STAGING_PREFIX))
            {
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            // Only directories this store names; anything else is left alone.
            let Some(key) = tenant_dir_key(&name) else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !keep.contains(&key) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(key);
            }
        }
        if !removed.is_empty() {
            sync_dir(&root)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("strata.redb")).unwrap();
        (dir, store)
    }

    fn read(store: &Store, t: TenantKey, name: &str) -> Option<Vec<u8>> {
        let mut f = store.open_derived(t, name).unwrap()?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).unwrap();
        Some(out)
    }

    #[test]
    fn written_files_are_read_back_and_replaced_whole() {
        let (_dir, store) = store();
        let t = TenantKey::from_raw(7);
        assert_eq!(read(&store, t, "a.hnsw"), None);
        let len = store
            .write_derived(t, "a.hnsw", |w| w.write_all(b"first"))
            .unwrap();
        assert_eq!(len, 5);
        assert_eq!(read(&store, t, "a.hnsw").unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = store.derived_dir(t).join("a.hnsw");
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "written files are read-only");
        }
        // A failing write leaves the old file as it was, and no temporary file.
        let failed = store.write_derived(t, "a.hnsw", |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(read(&store, t, "a.hnsw").unwrap(), b"first");
        let names: Vec<_> = std::fs::read_dir(store.derived_dir(t))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.hnsw"]);
    }

    #[test]
    fn names_outside_the_directory_are_refused() {
        let (_dir, store) = store();
        let t = TenantKey::from_raw(7);
        for bad in ["", "../x", "a/b", ".hidden", "tmp-x"] {
            assert!(store.write_derived(t, bad, |_| Ok(())).is_err(), "{bad}");
            assert!(store.open_derived(t, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retain_remove_and_orphans() {
        let (_dir, store) = store();
        let (a, b) = (TenantKey::from_raw(1), TenantKey::from_raw(2));
        for name in ["keep.hnsw", "old.hnsw"] {
            store.write_derived(a, name, |w| w.write_all(b"x")).unwrap();
        }
        store
            .write_derived(b, "b.hnsw", |w| w.write_all(b"y"))
            .unwrap();
        // A temporary file a crash left behind goes too.
        std::fs::write(store.derived_dir(a).join("tmp-new.hnsw"), b"z").unwrap();
        assert_eq!(store.retain_derived(a, |n| n == "keep.hnsw").unwrap(), 2);
        assert!(read(&store, a, "keep.hnsw").is_some());
        assert!(read(&store, a, "old.hnsw").is_none());
        store.remove_derived(a).unwrap();
        assert!(!store.derived_dir(a).exists());
        store.remove_derived(a).unwrap();
        store
            .write_derived(a, "again.hnsw", |w| w.write_all(b"x"))
            .unwrap();
        let keep = HashSet::from([b]);
        assert_eq!(store.remove_orphan_derived(&keep).unwrap(), vec![a]);
        assert!(!store.derived_dir(a).exists());
        assert!(read(&store, b, "b.hnsw").is_some());
        // A regular file with a tenant directory's name is not ours to remove, and does not
        // make the clean-up fail.
        let stray = store.derived_dir(a);
        std::fs::write(&stray, b"not a directory").unwrap();
        assert_eq!(store.remove_orphan_derived(&keep).unwrap(), Vec::new());
        assert!(stray.is_file());
        // A backup's staging links a crash left go too; they are no tenant's.
        let staging = store
            .derived_dir(b)
            .with_file_name(format!("{}old", crate::backup::STAGING_PREFIX));
        std::fs::create_dir_all(staging.join("0000000000000002")).unwrap();
        std::fs::write(staging.join("0000000000000002").join("b.hnsw"), b"y").unwrap();
        assert_eq!(store.remove_orphan_derived(&keep).unwrap(), Vec::new());
        assert!(!staging.exists());
        assert!(read(&store, b, "b.hnsw").is_some());
    }
}

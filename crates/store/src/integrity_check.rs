//! An offline check of every data file's pages, for `strata check`.
//!
//! The storage engine verifies a file fully only when it was not shut down cleanly; pages
//! damaged later, in a file closed cleanly (a bad disk, a stray write), are met only when a
//! request reads them. This walks every page of the main file and of each dedicated tenant's
//! file, checksums included, with the server stopped (a running server holds the files' locks).

use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::placement::{DEDICATED_FILE, TENANTS_DIR};

/// What the check found in one file.
#[derive(Debug, PartialEq, Eq)]
pub enum FileState {
    /// Every page checked out.
    Sound,
    /// The storage engine found damage it could repair (its allocator state), and did; or the
    /// file was not closed cleanly (a crash) and the check's open repaired it.
    Repaired,
    /// Held open by a running server, so not checked: nothing is known of its pages.
    InUse,
    /// Damaged beyond repair, missing or empty; the text says which.
    Unusable(String),
}

/// One data file and its state.
#[derive(Debug)]
pub struct FileCheck {
    pub path: PathBuf,
    pub state: FileState,
}

/// Checks the main data file at `main` and every dedicated tenant's file beside it.
pub fn check_files(main: &Path) -> Result<Vec<FileCheck>, StoreError> {
    let mut checks = vec![FileCheck {
        path: main.to_owned(),
        state: match crate::main_file_guard::check_before_open(main) {
            Err(e) => FileState::Unusable(e.to_string()),
            Ok(()) if !main.is_file() => FileState::Unusable("missing".into()),
            Ok(()) => check_one(main),
        },
    }];
    let tenants = main.with_file_name(TENANTS_DIR);
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&tenants) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(StoreError::Io {
                path: tenants.display().to_string(),
                source,
            });
        }
    };
    dirs.sort();
    for dir in dirs {
        let path = dir.join(DEDICATED_FILE);
        let state = match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => FileState::Unusable("empty".into()),
            Ok(_) => check_one(&path),
            // A directory without its file is what an interrupted creation or migration
            // leaves; the server's start removes it if no tenant names it.
            Err(_) => continue,
        };
        checks.push(FileCheck { path, state });
    }
    Ok(checks)
}

fn check_one(path: &Path) -> FileState {
    // Some damage makes the storage engine's debug builds panic (at open or during the check)
    // where release builds return `Corrupted`; either way it is damage, reported as such.
    std::panic::catch_unwind(|| {
        // A file not closed cleanly (a crash) is repaired by the storage engine's open, before
        // the check below runs: that repair is what the report must say, not "sound". A full
        // repair calls the callback; a file that recorded its allocator state (see `recovery`)
        // is recovered from it without one, so its header's mark is read first.
        let crashed = closed_uncleanly(path);
        let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(crashed));
        let seen = std::sync::Arc::clone(&repaired);
        let mut db = match redb::Database::builder()
            .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::Relaxed))
            .open(path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return FileState::InUse;
            }
            Err(e) => return FileState::Unusable(e.to_string()),
        };
        match db.check_integrity() {
            Ok(true) if !repaired.load(std::sync::atomic::Ordering::Relaxed) => FileState::Sound,
            Ok(_) => FileState::Repaired,
            Err(e) => FileState::Unusable(e.to_string()),
        }
    })
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the check failed");
        FileState::Unusable(format!("damaged: {why}"))
    })
}

/// Whether the file's header says it was not closed cleanly: redb's god byte, after its
/// 9-byte magic number, has its "recovery required" bit (2) set from an open until a clean
/// close (redb's file format, `docs/design.md` of redb 4; `tree_store/page_store/header.rs`).
/// A file whose first bytes cannot be read, or are not a redb header, is left to the open.
fn closed_uncleanly(path: &Path) -> bool {
    const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
    const RECOVERY_REQUIRED: u8 = 2;
    let mut head = [0u8; 10];
    let read =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    read.is_ok() && head[..9] == MAGIC && head[9] & RECOVERY_REQUIRED != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, TenantKey};

    #[test]
    fn a_sound_file_checks_out_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        let store = Store::open(&path).unwrap();
        let t = TenantKey::from_raw(7);
        for i in 0..2_000 {
            let value = format!("value {i} {}", "x".repeat(200));
            store
                .write(|w| w.put_blob(t, &format!("k{i}"), value.as_bytes()))
                .unwrap();
        }
        let held = check_files(&path).unwrap();
        assert_eq!(held.len(), 1);
        assert!(
            held[0].state == FileState::InUse,
            "a held file is in use, not damaged: {held:?}"
        );
        drop(store);
        let sound = check_files(&path).unwrap();
        assert_eq!(sound[0].state, FileState::Sound, "{sound:?}");
        // Damage the middle half of the file, where the pages of the data are.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 4..3 * n / 4].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
        let damaged = check_files(&path).unwrap();
        assert!(
            matches!(
                damaged[0].state,
                FileState::Unusable(_) | FileState::Repaired
            ),
            "{damaged:?}"
        );
    }

    /// A file as a crash leaves it (copied while its store held it open, after a durable
    /// commit) is repaired by the check's open: reported as repaired, then sound.
    #[test]
    fn a_file_left_by_a_crash_is_reported_repaired_then_sound() {
        for fast_recovery in [false, true] {
            crash_then_check(fast_recovery);
        }
    }

    /// `fast_recovery`: every durable commit records the allocator state, so the open after
    /// the crash recovers from it without a full repair (no repair callback).
    fn crash_then_check(fast_recovery: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        let options = crate::FileOptions {
            fast_recovery_from_bytes: fast_recovery.then_some(0),
            ..crate::FileOptions::with_cache(crate::DEFAULT_CACHE_BYTES)
        };
        let store = Store::open_with(&path, options).unwrap();
        let t = TenantKey::from_raw(7);
        for i in 0..200 {
            store
                .write(|w| w.put_blob(t, &format!("k{i}"), b"value"))
                .unwrap();
        }
        let crashed = dir.path().join("crashed").join("main.redb");
        std::fs::create_dir_all(crashed.parent().unwrap()).unwrap();
        std::fs::copy(&path, &crashed).unwrap();
        drop(store);
        assert!(closed_uncleanly(&crashed) && !closed_uncleanly(&path));
        let first = check_files(&crashed).unwrap();
        assert_eq!(first[0].state, FileState::Repaired, "{first:?}");
        let again = check_files(&crashed).unwrap();
        assert_eq!(again[0].state, FileState::Sound, "{again:?}");
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::test_tenant::{put, tenant};
use crate::{Reads, TenantKey};

fn go_on() -> Result<(), StoreError> {
    Ok(())
}

fn blob(store: &Store, t: TenantKey, name: &str) -> Option<Vec<u8>> {
    store.read().unwrap().blob(t, name).unwrap()
}

/// The backup of a store that two writers keep writing to (one tenant in the main file, one
/// in its own) opens as a data directory holding every write acknowledged before it began,
/// the dedicated tenant's file and the derived files included.
#[test]
fn a_backup_taken_while_writing_holds_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("strata.redb")).unwrap());
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    store.route_dedicated(store.create_dedicated(b).unwrap());
    store
        .write_derived(a, "graph-1", |w| w.write_all(b"graph bytes"))
        .unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 200 {
                for t in [a, b] {
                    put(&store, t, &format!("k{i:06}"), &i.to_le_bytes());
                }
                acknowledged.store(i + 1, Ordering::Release);
                i += 1;
            }
        })
    };
    while acknowledged.load(Ordering::Acquire) < 100 {
        std::thread::yield_now();
    }
    let before = acknowledged.load(Ordering::Acquire);
    let dest = dir.path().join("backups").join("first");
    let progress = BackupProgress::default();
    let done = store.backup(&dest, &progress, &go_on).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    assert_eq!(done.dedicated_files, 1);
    assert_eq!(done.index_files, 1);
    assert_eq!(progress.rows_copied(), progress.rows_total());
    assert_eq!(done.rows, progress.rows_total());
    assert!(done.bytes > 0);
    assert!(!partial_dir_of(&dest).exists());
    assert_eq!(
        std::fs::read(
            dest.join(DERIVED_DIR)
                .join(format!("{:016x}", a.raw()))
                .join("graph-1")
        )
        .unwrap(),
        b"graph bytes"
    );

    let restored = Store::open(&dest.join("strata.redb")).unwrap();
    restored.attach_dedicated(b).unwrap();
    for i in 0..before {
        for t in [a, b] {
            assert_eq!(
                blob(&restored, t, &format!("k{i:06}")),
                Some(i.to_le_bytes().to_vec()),
                "write {i} of tenant {t:?}, acknowledged before the backup began"
            );
        }
    }
    // Nothing of the dedicated tenant in the main file, as in the live directory.
    assert_eq!(restored.main_keys(b).unwrap(), 0);
    // The live store goes on.
    put(&store, a, "after", b"1");
    assert_eq!(blob(&store, a, "after"), Some(b"1".to_vec()));
}

/// A backup never writes over an existing directory, whole or partial, and leaves it as it was.
#[test]
fn a_backup_refuses_a_destination_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    let dest = dir.path().join("taken");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("mine"), b"keep").unwrap();
    let err = store
        .backup(&dest, &BackupProgress::default(), &go_on)
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(dest.join("mine")).unwrap(), b"keep");

    let dest = dir.path().join("cut-short");
    std::fs::create_dir(partial_dir_of(&dest)).unwrap();
    let err = store
        .backup(&dest, &BackupProgress::default(), &go_on)
        .unwrap_err();
    assert!(err.to_string().contains(".partial"), "{err}");
    assert!(partial_dir_of(&dest).exists() && !dest.exists());
}

/// A copy that fails at any of its steps (told to stop there, as a shutdown does: during the
/// index files, the rows or the compaction) ends with that error, removes its partial
/// directory and leaves nothing under the backup's name; the next one succeeds.
#[test]
fn a_backup_failing_at_any_step_leaves_nothing_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    store.route_dedicated(store.create_dedicated(b).unwrap());
    put(&store, b, "x", b"1");
    for name in ["graph-1", "graph-2"] {
        store
            .write_derived(a, name, |w| w.write_all(b"graph bytes"))
            .unwrap();
    }
    let asked = std::cell::Cell::new(0);
    let dest = dir.path().join("counted");
    store
        .backup(&dest, &BackupProgress::default(), &|| {
            asked.set(asked.get() + 1);
            Ok(())
        })
        .unwrap();
    let steps = asked.get();
    assert!(steps >= 4, "{steps}");
    for fail_at in 1..=steps {
        let dest = dir.path().join(format!("fails-at-{fail_at}"));
        let asked = std::cell::Cell::new(0);
        let err = store
            .backup(&dest, &BackupProgress::default(), &|| {
                asked.set(asked.get() + 1);
                if asked.get() == fail_at {
                    Err(StoreError::Engine("stopped here".into()))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("stopped here"), "{fail_at}: {err}");
        assert!(
            !dest.exists() && !partial_dir_of(&dest).exists(),
            "step {fail_at} left a directory"
        );
    }
}

/// The snapshots are taken before anything is copied: a write made during the copy is not in
/// the backup, which is readable by the server's user only.
#[test]
fn a_write_during_the_copy_is_not_in_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    let a = tenant(&store, "a");
    put(&store, a, "before", b"1");
    let dest = dir.path().join("b");
    let wrote = std::cell::Cell::new(false);
    store
        .backup(&dest, &BackupProgress::default(), &|| {
            if !wrote.replace(true) {
                put(&store, a, "during", b"2");
            }
            Ok(())
        })
        .unwrap();
    assert!(wrote.get());
    assert_eq!(blob(&store, a, "during"), Some(b"2".to_vec()));
    let restored = Store::open(&dest.join("strata.redb")).unwrap();
    assert_eq!(blob(&restored, a, "before"), Some(b"1".to_vec()));
    assert_eq!(blob(&restored, a, "during"), None);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }
}

/// A copy told to stop (a server shutting down) ends with that error at its next chunk and
/// leaves nothing under its name.
#[test]
fn a_backup_told_to_stop_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    tenant(&store, "a");
    let dest = dir.path().join("stopped");
    let err = store
        .backup(&dest, &BackupProgress::default(), &|| {
            Err(StoreError::Engine("shutting down".into()))
        })
        .unwrap_err();
    assert!(err.to_string().contains("shutting down"), "{err}");
    assert!(!dest.exists() && !partial_dir_of(&dest).exists());
}

/// Progress moves as rows are copied, not only once per chunk of the copy (which may hold a
/// million small rows), and a stop is heard as often.
#[test]
fn progress_moves_within_a_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    let a = tenant(&store, "a");
    store
        .write(|w| {
            for i in 0..30_000 {
                w.put_blob(a, &format!("k{i:05}"), b"v")?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let progress = BackupProgress::default();
    let seen = std::cell::RefCell::new(Vec::new());
    store
        .backup(&dir.path().join("b"), &progress, &|| {
            seen.borrow_mut()
                .push((progress.phase(), progress.rows_copied()));
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    let total = progress.rows_total();
    assert!(total > 30_000, "{total}");
    let partway = seen
        .iter()
        .filter(|&&(phase, n)| phase == "copying" && 0 < n && n < total)
        .count();
    assert!(partway >= 3, "{seen:?} of {total}");
    assert_eq!(progress.phase(), "syncing");
}

/// A derived file is not deleted while a backup links the derived files beside them: a save
/// that committed new rows after the backup's snapshots deletes the files those rows no
/// longer name, which the snapshots' rows still do. Here the deletion is asked at every step
/// of the backup's taking of the files (the `stop` callback): while the files are linked it
/// deletes nothing; while they are copied from the links into the backup it goes ahead (a
/// long copy holds no save's disk space), and the backup still has every file, its staging
/// links gone at its end.
#[test]
fn no_derived_file_is_deleted_while_a_backup_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("strata.redb")).unwrap();
    let a = tenant(&store, "a");
    for name in ["graph-1", "graph-2"] {
        store
            .write_derived(a, name, |w| w.write_all(b"graph bytes"))
            .unwrap();
    }
    let dest = dir.path().join("b");
    let (gated, gated_deleted) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let (open, open_deleted) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let done = store
        .backup(&dest, &BackupProgress::default(), &|| {
            let held = progress_is_taking_files(&store);
            let deleted = store.retain_derived(a, |_| false).unwrap();
            if held {
                gated.set(gated.get() + 1);
                gated_deleted.set(gated_deleted.get() + deleted);
            } else if progress_is_copying_files(&store) {
                open.set(open.get() + 1);
                open_deleted.set(open_deleted.get() + deleted);
            }
            Ok(())
        })
        .unwrap();
    assert!(gated.get() > 0 && open.get() > 0, "asked in both phases");
    assert_eq!(gated_deleted.get(), 0, "nothing deleted while linked");
    assert_eq!(open_deleted.get(), 2, "deleted while copied from the links");
    assert_eq!(done.index_files, 2);
    let taken = dest.join(DERIVED_DIR).join(format!("{:016x}", a.raw()));
    for name in ["graph-1", "graph-2"] {
        assert_eq!(std::fs::read(taken.join(name)).unwrap(), b"graph bytes");
    }
    let root = store.derived_dir(a).parent().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(STAGING_PREFIX))
        .collect();
    assert!(left.is_empty(), "staging left: {left:?}");
}

/// Whether the backup is copying derived files from its staging links now (one exists).
fn progress_is_copying_files(store: &Store) -> bool {
    let root = store.placement.derived_root();
    std::fs::read_dir(root).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX)))
    })
}

/// Whether a backup holds the derived files' deletion off now (its gate taken).
fn progress_is_taking_files(store: &Store) -> bool {
    store.derived_gate.try_read().is_err()
}

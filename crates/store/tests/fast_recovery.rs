//! The way back from a crash: a file whose last durable commit recorded the allocator state is
//! opened without a full repair, one whose commit did not is repaired by reading all of it, and
//! nothing acknowledged is lost either way.
//!
//! The crash is a copy of the main file and its row log taken while the store still has them
//! open, after its writes were acknowledged and a checkpoint made them durable in the main file
//! (whose durable commits are what record the allocator state): that is what a `SIGKILL` leaves
//! on disk (everything written to the files, no clean close). `crates/engine/tests/crash.rs`
//! does the same with real kills.

use std::path::{Path, PathBuf};

use strata_store::{FileOptions, Reads, Store, StoreError, TenantKey};
use strata_types::TenantId;

fn options(fast_recovery_from_bytes: Option<u64>) -> FileOptions {
    FileOptions {
        cache_bytes: 4 << 20,
        fast_recovery_from_bytes,
    }
}

/// Opens a store at `dir/db` with `fast_recovery_from_bytes`, writes `blobs` blobs of
/// `blob_bytes` each (one durable write each, acknowledged), and returns a copy of its file
/// taken before the store is closed, with the tenant the blobs belong to.
fn crash_image(
    dir: &Path,
    fast_recovery_from_bytes: Option<u64>,
    blobs: usize,
    blob_bytes: usize,
) -> (PathBuf, TenantKey) {
    let path = dir.join("db");
    let store = Store::open_with(&path, options(fast_recovery_from_bytes)).unwrap();
    let key = store
        .write(|w| -> Result<_, StoreError> {
            w.create_tenant(&TenantId::parse("t").unwrap(), 0, Default::default())
        })
        .unwrap()
        .key;
    for i in 0..blobs {
        store
            .write(|w| w.put_blob(key, &format!("b{i}"), &blob(i, blob_bytes)))
            .unwrap();
    }
    store.checkpoint().unwrap();
    let copy = dir.join("crashed");
    std::fs::create_dir(&copy).unwrap();
    // The main file and its row log's files beside it.
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("db") {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    drop(store);
    (copy.join("db"), key)
}

fn blob(i: usize, bytes: usize) -> Vec<u8> {
    (0..bytes).map(|j| (i * 31 + j) as u8).collect()
}

/// Opens the crash image and checks every acknowledged blob; returns whether the open
/// repaired the file in full.
fn reopen(image: &Path, key: TenantKey, blobs: usize, blob_bytes: usize) -> bool {
    let store = Store::open_with(image, options(None)).unwrap();
    let report = store.open_report();
    let r = store.read().unwrap();
    for i in 0..blobs {
        let got = r.blob(key, &format!("b{i}")).unwrap();
        assert!(
            got.as_deref() == Some(&blob(i, blob_bytes)[..]),
            "blob {i} lost or changed after the crash"
        );
    }
    report.full_repair
}

#[test]
fn a_file_whose_commits_record_the_allocator_state_opens_after_a_crash_without_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let (image, key) = crash_image(dir.path(), Some(0), 20, 100);
    assert!(
        !reopen(&image, key, 20, 100),
        "a full repair after a recorded state"
    );
}

#[test]
fn a_file_whose_commits_do_not_record_it_is_repaired_in_full_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (image, key) = crash_image(dir.path(), None, 20, 100);
    assert!(
        reopen(&image, key, 20, 100),
        "no full repair without a recorded state"
    );
}

/// The choice follows the file's length as it grows: below the length commits do not record the
/// state, past it they do.
#[test]
fn commits_record_the_state_once_the_file_reaches_the_length() {
    let from = 2 << 20;
    let small = tempfile::tempdir().unwrap();
    let (image, key) = crash_image(small.path(), Some(from), 4, 1000);
    assert!(std::fs::metadata(&image).unwrap().len() < from);
    assert!(
        reopen(&image, key, 4, 1000),
        "a small file recorded the state"
    );

    let large = tempfile::tempdir().unwrap();
    let (image, key) = crash_image(large.path(), Some(from), 64, 64 << 10);
    assert!(std::fs::metadata(&image).unwrap().len() >= from);
    assert!(
        !reopen(&image, key, 64, 64 << 10),
        "a large file did not record the state"
    );
}

#[test]
fn a_clean_close_needs_no_repair() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Store::open_with(&path, options(None)).unwrap());
    let store = Store::open_with(&path, options(None)).unwrap();
    assert!(!store.open_report().full_repair);
}

/// redb's compaction commits record no allocator state; the store's compaction ends with a
/// commit that does, so a crash right after it needs no full repair.
#[test]
fn a_crash_right_after_a_compaction_needs_no_full_repair() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open_with(&path, options(Some(0))).unwrap();
    let key = store
        .write(|w| -> Result<_, StoreError> {
            w.create_tenant(&TenantId::parse("t").unwrap(), 0, Default::default())
        })
        .unwrap()
        .key;
    for i in 0..40 {
        store
            .write(|w| w.put_blob(key, &format!("b{i}"), &blob(i, 16 << 10)))
            .unwrap();
    }
    // Freed pages at the start of the file, so the compaction has something to move.
    for i in 0..20 {
        store
            .write(|w| w.delete_blob(key, &format!("b{i}")))
            .unwrap();
    }
    assert!(store.compact().unwrap(), "nothing was compacted");
    let copy = dir.path().join("crashed");
    std::fs::copy(&path, &copy).unwrap();
    drop(store);
    let reopened = Store::open_with(&copy, options(None)).unwrap();
    assert!(!reopened.open_report().full_repair);
    let r = reopened.read().unwrap();
    for i in 20..40 {
        assert!(r.blob(key, &format!("b{i}")).unwrap().as_deref() == Some(&blob(i, 16 << 10)[..]));
    }
}

/// The report is the start's: a vacuum, which swaps in a new file, does not replace it.
#[test]
fn the_open_report_is_the_starts_after_a_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = crash_image(dir.path(), None, 5, 100);
    let store = Store::open_with(&image, options(None)).unwrap();
    assert!(store.open_report().full_repair);
    store.vacuum().unwrap();
    assert!(store.open_report().full_repair);
}

use redb::{ReadableDatabase, ReadableTable};

use super::*;
use crate::Reads;
use crate::tables::read_db;

/// One row in each table of the main file, written as the store's own transactions would be.
fn put(store: &Store, n: u32) {
    let _writing = write_path();
    let db = store.db();
    let txn = db.begin_write().unwrap();
    {
        let key = format!("row-{n:05}");
        let value = format!("value of {key} {}", "v".repeat(n as usize % 200));
        txn.open_table(DATA)
            .unwrap()
            .insert(key.as_bytes(), value.as_bytes())
            .unwrap();
        txn.open_table(REGISTRY)
            .unwrap()
            .insert(key.as_str(), value.as_bytes())
            .unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(key.as_str(), u64::from(n))
            .unwrap();
        txn.open_table(CREDENTIALS)
            .unwrap()
            .insert(key.as_str(), value.as_bytes())
            .unwrap();
    }
    txn.commit().unwrap();
}

/// Every row [`put`] wrote for `0..n` is there, in every table, and nothing else of them.
fn all_there(store: &Store, n: u32) {
    let db = store.db();
    let txn = db.begin_read().unwrap();
    let data = txn.open_table(DATA).unwrap();
    let registry = txn.open_table(REGISTRY).unwrap();
    let meta = txn.open_table(META).unwrap();
    let credentials = txn.open_table(CREDENTIALS).unwrap();
    for i in 0..n {
        let key = format!("row-{i:05}");
        let value = format!("value of {key} {}", "v".repeat(i as usize % 200));
        let got = data.get(key.as_bytes()).unwrap().expect("data row");
        assert_eq!(got.value(), value.as_bytes());
        let got = registry.get(key.as_str()).unwrap().expect("registry row");
        assert_eq!(got.value(), value.as_bytes());
        assert_eq!(
            meta.get(key.as_str()).unwrap().expect("meta row").value(),
            u64::from(i)
        );
        let got = credentials
            .get(key.as_str())
            .unwrap()
            .expect("credential row");
        assert_eq!(got.value(), value.as_bytes());
    }
    let rows = data.iter().unwrap().count();
    assert_eq!(rows, n as usize);
}

fn contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle)
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

#[test]
fn a_vacuum_keeps_every_row_and_later_writes_reach_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    for n in 0..500 {
        put(&store, n);
    }
    #[cfg(unix)]
    let before = inode(&path);
    // A group-committed write whose shared fsync has not run yet: the vacuum's copy holds it,
    // and its wait after the swap syncs the new file.
    let id = strata_types::TenantId::parse("late").unwrap();
    let (_, pending) = store
        .write_pending(|w| w.create_tenant(&id, 0, Default::default()))
        .unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert_eq!(store.vacuums(), 1);
    #[cfg(unix)]
    assert_ne!(inode(&path), before, "the main file is a new one");
    assert!(!new_file_of(&path).exists());
    pending.wait_durable().unwrap();
    all_there(&store, 500);
    // Later writes, through the store's own paths, go to the new file and survive a restart.
    put(&store, 500);
    let id2 = strata_types::TenantId::parse("after").unwrap();
    store
        .write(|w| w.create_tenant(&id2, 0, Default::default()))
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    all_there(&store, 501);
    let read = store.read().unwrap();
    assert!(read.tenant(&id).unwrap().is_some());
    assert!(read.tenant(&id2).unwrap().is_some());
}

/// The gap a vacuum closes: bytes in the unused part of a live page (where the storage engine
/// leaves an older row when it builds a page in a reused buffer) survive compaction, never a
/// vacuum.
#[test]
fn stale_bytes_in_a_live_page_leave_with_the_vacuum() {
    const ANCHOR: &[u8] = b"ANCHOR-the-only-row-of-its-page";
    const STALE: &[u8] = b"STALE-an-erased-row-left-in-a-page-tail";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    {
        let _writing = write_path();
        let db = store.db();
        let txn = db.begin_write().unwrap();
        txn.open_table(CREDENTIALS)
            .unwrap()
            .insert("anchor", ANCHOR)
            .unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    // The credentials table's one leaf holds a few dozen bytes of its 4 KiB page: its end is
    // unused, as a reused page's tail is.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(ANCHOR.len())
        .position(|w| w == ANCHOR)
        .expect("anchor row in the file");
    let tail = (at / 4096 + 1) * 4096 - STALE.len() - 8;
    assert!(
        tail > at + ANCHOR.len() + 64,
        "the row sits near its page's end"
    );
    bytes[tail..tail + STALE.len()].copy_from_slice(STALE);
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(&path).unwrap();
    assert!(contains(&path, STALE));
    store.compact().unwrap();
    assert!(
        contains(&path, STALE),
        "compaction does not reach a live page's unused part"
    );
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert!(
        !contains(&path, STALE),
        "the stale bytes outlived the vacuum"
    );
    let db = store.db();
    let txn = db.begin_read().unwrap();
    let row = txn.open_table(CREDENTIALS).unwrap().get("anchor").unwrap();
    assert_eq!(row.expect("anchor row").value(), ANCHOR);
}

#[test]
fn a_vacuum_does_not_wait_for_readers_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    put(&store, 0);
    // An export streaming holds a snapshot: it keeps reading the old file's snapshot.
    let reader = store.read().unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert!(!new_file_of(&path).exists());
    assert_eq!(store.vacuums(), 1);
    drop(reader);
    all_there(&store, 1);
}

/// A crash (SIGKILL) while the new file is written, or after it is written and before the
/// rename: the main file is whole, and the new file is deleted at start-up, never read.
#[test]
fn a_vacuum_cut_short_before_its_rename_leaves_the_main_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    for n in 0..50 {
        put(&store, n);
    }
    // The whole new file, written but never renamed; then a partial one, as a kill mid-copy
    // leaves it (garbage, for all the start-up may know).
    let fresh = {
        let db = store.db.write().unwrap();
        store.write_new_file(&db, &new_file_of(&path)).unwrap()
    };
    drop(fresh);
    drop(store);
    assert!(new_file_of(&path).exists());
    let store = Store::open(&path).unwrap();
    assert!(
        !new_file_of(&path).exists(),
        "the leftover is removed at open"
    );
    all_there(&store, 50);
    put(&store, 50);
    drop(store);
    std::fs::write(new_file_of(&path), b"half a database").unwrap();
    let store = Store::open(&path).unwrap();
    assert!(!new_file_of(&path).exists());
    all_there(&store, 51);
    // A vacuum after it works as ever.
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    drop(store);
    all_there(&Store::open(&path).unwrap(), 51);
}

/// Asking whether the file failed does not wait out a vacuum (or compaction) in progress.
#[test]
fn the_failure_check_does_not_wait_for_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let held = store.db.write().unwrap();
    assert_eq!(store.failure(), None);
    drop(held);
    read_db(&store.db).sync.fail_for_test();
    assert!(store.failure().is_some());
}

/// A file whose syncs failed is not rewritten: what reached its disk is unknown.
#[test]
fn a_failed_file_is_not_vacuumed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    put(&store, 0);
    read_db(&store.db).sync.fail_for_test();
    assert!(matches!(store.vacuum(), Err(StoreError::Unavailable(_))));
    assert!(!new_file_of(&path).exists());
}

/// The new file keeps the access the operator gave the old one: it holds every tenant's data.
#[cfg(unix)]
#[test]
fn a_vacuum_keeps_the_main_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    put(&store, 1);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A copy that fails (the new file's disk full, say) is not a failure of the main file: it
/// must not read as `Unavailable`, which refuses every later write and stops the next start.
#[test]
fn a_failed_copy_is_not_a_failed_main_file() {
    let full = StoreError::Unavailable("the data directory's disk is full".into());
    assert!(matches!(copy_failed(full), StoreError::Engine(m) if m.contains("disk is full")));
    let other = StoreError::Corrupt("x".into());
    assert!(matches!(copy_failed(other), StoreError::Corrupt(_)));
}

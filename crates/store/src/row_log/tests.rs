//! The row log inside the store: what a crash at an instant leaves (the files copied while the
//! store runs, as a killed process leaves them in the page cache) comes back whole.

use std::path::Path;

use redb::ReadableDatabase;

use crate::keys::TenantKey;
use crate::tables::META;
use crate::{Reads, Store};

const T: TenantKey = TenantKey::from_raw(7);

/// The main file and its log, copied to `to` as they are now.
fn crash_copy(from: &Path, to: &Path) {
    let main = from.join("main.redb");
    for (src, name) in std::iter::once((main.clone(), "main.redb".to_string())).chain(
        super::paths_of(&main).into_iter().map(|p| {
            (
                p.clone(),
                p.file_name().unwrap().to_string_lossy().into_owned(),
            )
        }),
    ) {
        std::fs::copy(&src, to.join(name)).unwrap();
    }
}

fn put(store: &Store, name: &str, bytes: &[u8]) {
    let ((), pending) = store
        .write_batched_for(T, |w| w.put_blob(T, name, bytes))
        .unwrap();
    pending.wait_durable().unwrap();
}

fn blob(store: &Store, name: &str) -> Option<Vec<u8>> {
    store.read().unwrap().blob(T, name).unwrap()
}

/// A store in a fresh directory whose checkpoints are held (what a crash now leaves of its
/// acknowledged writes is in the log alone), with its log.
pub(super) fn held_store() -> (tempfile::TempDir, Store, std::sync::Arc<super::RowLog>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let log = store.log.clone().unwrap();
    log.hold_checkpoints(true);
    (dir, store, log)
}

#[test]
fn acknowledged_writes_come_back_from_the_log_alone_after_a_crash() {
    let (dir, store, log) = held_store();
    let durable_before = log.durable();
    for i in 0..40u32 {
        put(&store, &format!("k{i}"), &i.to_le_bytes());
    }
    // Batched and unbatched, a removal and a rewrite among them.
    store
        .write(|w| -> Result<(), crate::StoreError> {
            w.delete_blob(T, "k3")?;
            w.put_blob(T, "k4", b"again")
        })
        .unwrap();
    assert_eq!(
        log.durable().lsn,
        durable_before.lsn,
        "no durable commit of the main file made these writes durable"
    );
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    // The main file alone, without its log, holds none of them.
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("main.redb"), bare.path().join("main.redb")).unwrap();
    let bare = Store::open(&bare.path().join("main.redb")).unwrap();
    assert_eq!(bare.log_entries_replayed(), 0);
    assert_eq!(blob(&bare, "k0"), None);
    drop(bare);

    let reopened = Store::open(&copy.path().join("main.redb")).unwrap();
    assert_eq!(reopened.log_entries_replayed(), 41);
    for i in (0..40u32).filter(|i| ![3, 4].contains(i)) {
        assert_eq!(
            blob(&reopened, &format!("k{i}")),
            Some(i.to_le_bytes().to_vec())
        );
    }
    assert_eq!(blob(&reopened, "k3"), None);
    assert_eq!(blob(&reopened, "k4"), Some(b"again".to_vec()));
    // Written on after the replay, and copied again: the old epoch's entries are not replayed
    // a second time, the new ones are.
    reopened.log.as_ref().unwrap().hold_checkpoints(true);
    put(&reopened, "after", b"1");
    let again = tempfile::tempdir().unwrap();
    crash_copy(copy.path(), again.path());
    let third = Store::open(&again.path().join("main.redb")).unwrap();
    assert_eq!(third.log_entries_replayed(), 1);
    assert_eq!(blob(&third, "after"), Some(b"1".to_vec()));
    assert_eq!(blob(&third, "k4"), Some(b"again".to_vec()));
}

#[test]
fn a_logged_write_after_an_unlogged_commit_waits_for_that_commit_to_be_durable() {
    let (dir, store, log) = held_store();
    put(&store, "first", b"1");
    // An unlogged commit that does not sync (as a migration's chunk copy is).
    {
        let db = store.db();
        let mut txn = db.begin_write().unwrap();
        txn.set_non_durable().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("unlogged_test_row", 9)
            .unwrap();
        txn.commit().unwrap();
    }
    let unlogged = log.durable().unlogged;
    put(&store, "second", b"2");
    assert!(
        log.durable().unlogged > unlogged,
        "the logged write was acknowledged before the unlogged commit before it was durable"
    );
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    let reopened = Store::open(&copy.path().join("main.redb")).unwrap();
    let meta_row = reopened
        .db()
        .begin_read()
        .unwrap()
        .open_table(META)
        .unwrap()
        .get("unlogged_test_row")
        .unwrap()
        .map(|v| v.value());
    assert_eq!(meta_row, Some(9));
    assert_eq!(blob(&reopened, "first"), Some(b"1".to_vec()));
    assert_eq!(blob(&reopened, "second"), Some(b"2".to_vec()));
}

#[test]
fn a_vacuum_empties_the_log_of_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    store.log.as_ref().unwrap().hold_checkpoints(true);
    let marker = b"a purged tenant's words, 7f3a9c";
    put(&store, "secret", marker);
    store
        .write(|w| -> Result<(), crate::StoreError> { w.delete_blob(T, "secret") })
        .unwrap();
    let holds = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker);
    let logged = super::paths_of(&path).map(|p| std::fs::read(p).unwrap());
    assert!(logged.iter().any(|b| holds(b)), "the marker was logged");
    store.vacuum().unwrap();
    // Written after: the log goes on.
    put(&store, "later", b"x");
    for p in super::paths_of(&path) {
        assert!(
            !holds(&std::fs::read(&p).unwrap()),
            "{} still holds it",
            p.display()
        );
    }
    drop(store);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(blob(&reopened, "later"), Some(b"x".to_vec()));
    assert_eq!(blob(&reopened, "secret"), None);
}

#[test]
fn checkpoints_reuse_the_two_files_in_turn_and_a_restart_replays_nothing_after_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let log = store.log.clone().unwrap();
    let sync = || crate::tables::sync(&store.db, &store.commits).map(|_| ());
    for round in 0..6u32 {
        put(&store, &format!("r{round}"), &[7; 3000]);
        log.checkpoint(&sync).unwrap();
    }
    let sizes = super::paths_of(&path).map(|p| std::fs::metadata(p).unwrap().len());
    assert!(
        sizes.iter().all(|&s| s > 0 && s <= 128 << 10),
        "each file holds a round or two, reused in place: {sizes:?}"
    );
    drop(store);
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.log_entries_replayed(), 0);
    assert_eq!(blob(&reopened, "r5"), Some(vec![7; 3000]));
}

/// A backup's main file, restored beside the source's row log (the main file alone put back),
/// replays none of the source's entries: it has an epoch of its own.
#[test]
fn a_backup_restored_beside_the_sources_log_replays_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    store.log.as_ref().unwrap().hold_checkpoints(true);
    put(&store, "before", b"1");
    let dest = dir.path().join("backup");
    store
        .backup(&dest, &Default::default(), &|| Ok(()))
        .unwrap();
    // Acknowledged after the backup began: in the source's log, not in the backup.
    put(&store, "after", b"2");
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(dest.join("main.redb"), restored.path().join("main.redb")).unwrap();
    for p in super::paths_of(&path) {
        std::fs::copy(&p, restored.path().join(p.file_name().unwrap())).unwrap();
    }
    let reopened = Store::open(&restored.path().join("main.redb")).unwrap();
    assert_eq!(reopened.log_entries_replayed(), 0);
    assert_eq!(blob(&reopened, "before"), Some(b"1".to_vec()));
    assert_eq!(blob(&reopened, "after"), None);
}

/// A transaction of more than a megabyte of rows is not logged: it commits durably in the main
/// file itself (written once, not to the log and again at the next checkpoint).
#[test]
fn a_transaction_of_more_than_a_megabyte_of_rows_commits_durably_instead_of_being_logged() {
    let (dir, store, _log) = held_store();
    let big = vec![5u8; crate::db::MAX_LOGGED_BYTES + 1];
    put(&store, "small", b"1");
    put(&store, "big", &big);
    // The main file alone, without its log, holds the large write (and what came before it).
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("main.redb"), bare.path().join("main.redb")).unwrap();
    let bare = Store::open(&bare.path().join("main.redb")).unwrap();
    assert_eq!(blob(&bare, "big"), Some(big));
    assert_eq!(blob(&bare, "small"), Some(b"1".to_vec()));
    assert_eq!(bare.log_entries_replayed(), 0);
}

/// A start empties the log's files once their entries are replayed: rows a crash left there
/// (a purged tenant's among them, when the crash cut its purge's own emptying short) do not
/// stay on the disk until appends happen to cover them.
#[test]
fn a_start_after_a_crash_leaves_the_logs_files_empty() {
    let (dir, store, _log) = held_store();
    put(&store, "k", b"a purged tenant's row");
    let copy = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), copy.path());
    let main = copy.path().join("main.redb");
    let held: u64 = super::paths_of(&main)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(held > 0, "the crash left the write in the log");
    let reopened = Store::open(&main).unwrap();
    assert_eq!(reopened.log_entries_replayed(), 1);
    assert_eq!(
        blob(&reopened, "k").as_deref(),
        Some(&b"a purged tenant's row"[..])
    );
    for p in super::paths_of(&main) {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(5).any(|w| w == b"purge"),
            "{} still holds the row",
            p.display()
        );
    }
}

/// A checkpoint whose flush of the log fails fails the main file too, as a failed flush of
/// the flusher's does, whoever runs it (the checkpoint thread, a vacuum's emptying of the log,
/// a caller of `Store::checkpoint`): the writes after it are refused before they commit, so
/// none is read and then lost at the next crash.
#[test]
fn a_failed_checkpoint_refuses_writes_before_they_commit() {
    for by_thread in [true, false] {
        let (_dir, store, log) = held_store();
        put(&store, "before", b"1");
        log.fail_checkpoint_flushes();
        if by_thread {
            log.hold_checkpoints(false);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !log.has_failed() {
                assert!(std::time::Instant::now() < deadline, "no checkpoint failed");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        } else {
            assert!(store.checkpoint().is_err());
        }
        let after = store.write_batched_for(T, |w| w.put_blob(T, "after", b"2"));
        let refused = match after {
            Err(_) => true,
            Ok(((), pending)) => pending.wait_durable().is_err(),
        };
        assert!(
            refused,
            "by thread {by_thread}: a write was acknowledged after the failure"
        );
        assert_eq!(
            blob(&store, "after"),
            None,
            "by thread {by_thread}: a refused write committed"
        );
        assert_eq!(blob(&store, "before").as_deref(), Some(&b"1"[..]));
    }
}

use super::*;
use crate::Reads;
use crate::recovery::FileOptions;
use redb::Database;
use strata_types::TenantId;

use crate::test_tenant::{put, tenant};

fn blobs(store: &Store, t: TenantKey) -> Vec<(String, Vec<u8>)> {
    store.read().unwrap().blobs_named(t, "").unwrap()
}

/// A record replaced by a server-wide write (an import) takes its old dedup row with it,
/// in the tenant's own file: a later write of the old content in the run must not be
/// answered "deduplicated" with a record that no longer holds it.
#[test]
fn a_server_wide_replacement_drops_the_old_dedup_row_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let b = tenant(&store, "b");
    store.route_dedicated(store.create_dedicated(b).unwrap());
    let mut rec: strata_types::Record = serde_json::from_value(serde_json::json!({
        "id": "r1", "modality": "text", "kind": null, "content": "old", "vector": null,
        "user_tokens": [], "memory_domain": "default", "run_id": "run",
        "memory_scope": null, "metadata": {}, "created_at": 1, "updated_at": 1,
        "expires_at": null,
        "confidence": {"value": 0.5, "evidence_count": 0, "corroborations": 0,
                       "contradictions": 0}
    }))
    .unwrap();
    let old = rec.clone();
    store.write(|w| w.put_record(b, &rec).map(drop)).unwrap();
    rec.content = Some("new".into());
    store.write(|w| w.put_record(b, &rec).map(drop)).unwrap();
    let r = store.read().unwrap();
    assert_eq!(r.dedup_target(b, &old).unwrap(), None);
    assert_eq!(r.dedup_target(b, &rec).unwrap(), Some(rec.id.clone()));
}

/// A dedicated file whose sync failed refuses its tenant's later writes; the main file
/// and other tenants go on.
#[test]
fn a_failed_sync_of_a_dedicated_file_refuses_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    store.route_dedicated(store.create_dedicated(b).unwrap());
    put(&store, b, "x", b"b1");
    crate::tables::read_db(&store.placement.get(b).unwrap().db)
        .sync
        .fail_for_test();
    let refused = store.write_pending_for(b, |w| w.put_blob(b, "y", b"b2"));
    assert!(refused.is_err());
    put(&store, a, "x", b"a1");
    assert_eq!(blobs(&store, b), vec![("x".into(), b"b1".to_vec())]);
    assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
}

#[test]
fn a_dedicated_tenants_reads_and_writes_go_to_its_own_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    let file = store.create_dedicated(b).unwrap();
    store.route_dedicated(file);
    assert!(store.is_dedicated(b) && !store.is_dedicated(a));
    put(&store, a, "x", b"a1");
    put(&store, b, "x", b"b1");
    // A server-wide write reaches the dedicated file too.
    store.write(|w| w.put_blob(b, "y", b"b2")).unwrap();
    assert_eq!(store.main_keys(b).unwrap(), 0);
    assert_eq!(store.main_keys(a).unwrap(), 1);
    assert_eq!(
        blobs(&store, b),
        vec![("x".into(), b"b1".to_vec()), ("y".into(), b"b2".to_vec())]
    );
    assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
    // One tenant's own write cannot reach another tenant, in either file.
    assert!(
        store
            .write_pending_for(a, |w| w.put_blob(b, "z", b""))
            .is_err()
    );
    assert!(
        store
            .write_pending_for(b, |w| w.put_blob(a, "z", b""))
            .is_err()
    );
    // Nor the registry from inside a dedicated tenant's file.
    let meta = store
        .read()
        .unwrap()
        .tenant(&TenantId::parse("b").unwrap())
        .unwrap()
        .unwrap();
    assert!(store.write_pending_for(b, |w| w.put_tenant(&meta)).is_err());
    // Liveness reads of the registry work there.
    let seen = store
        .write_pending_for(b, |w| w.tenant(&meta.id))
        .map(|(m, p)| {
            p.wait_durable().unwrap();
            m
        })
        .unwrap();
    assert_eq!(seen.map(|m| m.key), Some(b));
    // It survives a reopen once attached.
    drop(store);
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    store.attach_dedicated(b).unwrap();
    assert_eq!(blobs(&store, b).len(), 2);
    // A file found empty or missing is refused, never opened as a new, empty tenant.
    let file = store.placement.dir_of(b).join(DEDICATED_FILE);
    drop(store);
    assert!(file.is_file(), "{}", file.display());
    std::fs::File::create(&file).unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let err = store.attach_dedicated(b).unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");
    std::fs::remove_file(&file).unwrap();
    let err = store.attach_dedicated(b).unwrap_err().to_string();
    assert!(err.contains("is missing"), "{err}");
}

fn migrate_in(store: &Store, t: TenantKey) {
    let file = store.create_dedicated(t).unwrap();
    let mut after = None;
    loop {
        let (last, _) = store
            .copy_chunk(t, CopyTarget::File(&file), after.as_deref(), 2)
            .unwrap();
        match last {
            Some(k) => after = Some(k),
            None => break,
        }
        // A write between chunks is caught up by the flip.
        put(store, t, "late", b"1");
    }
    store
        .flip_in(file, None, |w| w.put_blob(t, "flip", b"in"))
        .map_err(|e: StoreError| e)
        .unwrap();
    store.erase_main_range(t).unwrap();
}

/// Out of its file with the deletion left to the caller: the tenant reads and writes the
/// main file at once while the old file still exists; deleting it later (or, after a
/// crash, the start-up cleanup) removes it, and never a file the tenant lives in again.
#[test]
fn a_retired_file_is_deleted_after_the_flip_or_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let t = tenant(&store, "a");
    put(&store, t, "x", b"1");
    migrate_in(&store, t);
    let retire = |store: &Store| {
        let mut after = None;
        while let (Some(k), _) = store
            .copy_chunk(t, CopyTarget::Main, after.as_deref(), 3)
            .unwrap()
        {
            after = Some(k);
        }
        store
            .flip_out_retiring(t, None, |_| Ok::<_, StoreError>(()))
            .unwrap()
            .2
    };
    let retired = retire(&store);
    assert!(!store.is_dedicated(t) && store.has_dedicated_dir(t));
    put(&store, t, "after", b"2");
    assert_eq!(store.main_keys(t).unwrap(), blobs(&store, t).len() as u64);
    store.delete_retired(retired).unwrap();
    assert!(!store.has_dedicated_dir(t));
    assert_eq!(blobs(&store, t).len(), 4, "{:?}", blobs(&store, t));

    // Moved in again while an old retired handle waits: it is refused, the file kept.
    migrate_in(&store, t);
    let stale = retire(&store);
    migrate_in(&store, t);
    assert!(store.delete_retired(stale).is_err());
    assert!(store.is_dedicated(t) && store.has_dedicated_dir(t));

    // A new file created at the same path since (a move in, not routed yet): refused, its
    // directory kept.
    let stale = retire(&store);
    let fresh = store.create_dedicated(t).unwrap();
    assert!(store.delete_retired(stale).is_err());
    assert!(store.has_dedicated_dir(t));
    store.discard_dedicated(fresh).unwrap();
    assert!(!store.has_dedicated_dir(t));
    migrate_in(&store, t);

    // A crash between the flip and the deletion: the next start's cleanup removes it, and
    // a tombstone a crash left mid-deletion too.
    std::mem::forget(retire(&store));
    assert!(store.has_dedicated_dir(t));
    let tomb = store
        .placement
        .dir_of(t)
        .with_file_name(format!("{:016x}{TOMBSTONE}", t.raw()));
    std::fs::create_dir_all(&tomb).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.remove_orphan_files(&HashSet::new()).unwrap(), vec![t]);
    assert!(!store.has_dedicated_dir(t));
    assert!(!tomb.exists());
    assert_eq!(blobs(&store, t).len(), 4);
}

fn migrate_out(store: &Store, t: TenantKey) {
    let mut after = None;
    while let (Some(k), _) = store
        .copy_chunk(t, CopyTarget::Main, after.as_deref(), 3)
        .unwrap()
    {
        after = Some(k);
        store.write(|w| w.delete_blob(t, "late")).unwrap();
    }
    store
        .flip_out(t, None, |w| w.put_blob(t, "flip", b"out"))
        .map_err(|e: StoreError| e)
        .unwrap();
}

#[test]
fn migrating_in_and_out_keeps_every_key_on_exactly_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    for i in 0..9 {
        put(&store, b, &format!("k{i}"), format!("v{i}").as_bytes());
    }
    put(&store, a, "k", b"a");
    let mut want = blobs(&store, b);
    migrate_in(&store, b);
    want.push(("flip".into(), b"in".to_vec()));
    want.push(("late".into(), b"1".to_vec()));
    want.sort();
    assert!(store.is_dedicated(b));
    assert_eq!(store.main_keys(b).unwrap(), 0);
    assert_eq!(blobs(&store, b), want);
    assert!(store.has_dedicated_dir(b));

    migrate_out(&store, b);
    want.retain(|(n, _)| n != "late");
    want.iter_mut().find(|(n, _)| n == "flip").unwrap().1 = b"out".to_vec();
    assert!(!store.is_dedicated(b));
    assert!(!store.has_dedicated_dir(b));
    assert_eq!(blobs(&store, b), want);
    assert_eq!(blobs(&store, a), vec![("k".into(), b"a".to_vec())]);
}

#[test]
fn stale_migration_steps_are_refused_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    put(&store, a, "x", b"a1");
    put(&store, b, "x", b"b1");
    // A migration of `b` into its file planned before another one moved it there.
    let stale = store.create_dedicated(b).unwrap();
    migrate_in(&store, b);
    let want = blobs(&store, b);
    assert_eq!(want.len(), 3);
    // Its flip is refused, and discarding its file leaves the live one alone.
    assert!(
        store
            .flip_in(stale, None, |_| Ok::<_, StoreError>(()))
            .is_err()
    );
    assert!(store.is_dedicated(b) && store.has_dedicated_dir(b));
    // A fresh file for a routed tenant would replace the live one: refused.
    assert!(store.create_dedicated(b).is_err());
    assert_eq!(blobs(&store, b), want);
    // Flipping out a tenant that is not in a file, and erasing its main range, are refused
    // or do nothing: that range is its live data.
    assert!(
        store
            .flip_out(a, None, |_| Ok::<_, StoreError>(()))
            .is_err()
    );
    assert_eq!(store.erase_main_range(a).unwrap(), 0);
    assert_eq!(blobs(&store, a), vec![("x".into(), b"a1".to_vec())]);
    // The same after `b` moved back: its main range is live now.
    migrate_out(&store, b);
    let want = blobs(&store, b);
    assert_eq!(want.len(), 2, "x and flip; late was deleted");
    assert!(
        store
            .flip_out(b, None, |_| Ok::<_, StoreError>(()))
            .is_err()
    );
    assert_eq!(store.erase_main_range(b).unwrap(), 0);
    assert_eq!(blobs(&store, b), want);
    // A reopened store serves the same.
    drop(store);
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    assert_eq!(blobs(&store, b), want);
    assert_eq!(blobs(&store, a).len(), 1);
}

#[test]
fn erasing_a_dedicated_tenant_leaves_its_file_to_be_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    store.route_dedicated(store.create_dedicated(b).unwrap());
    put(&store, a, "x", b"1");
    put(&store, b, "x", b"1");
    let meta = |id: &str| {
        store
            .read()
            .unwrap()
            .tenant(&TenantId::parse(id).unwrap())
            .unwrap()
            .unwrap()
    };
    let mb = meta("b");
    store.write(|w| w.erase_tenant(&mb)).unwrap();
    // The registry row is gone, but nothing was written to the file: a crash now leaves
    // an orphan file (deleted at start), never a registered tenant without its data.
    assert!(store.read().unwrap().tenant(&mb.id).unwrap().is_none());
    assert_eq!(blobs(&store, b).len(), 1);
    store.remove_dedicated(b).unwrap();
    assert!(!store.has_dedicated_dir(b) && !store.is_dedicated(b));
    // A tenant in the main file is erased there.
    let ma = meta("a");
    store.write(|w| w.erase_tenant(&ma)).unwrap();
    assert_eq!(store.main_keys(a).unwrap(), 0);
}

/// A server-wide write or a read joins a dedicated file only when it touches its tenant: one
/// that does not is not held up by a write in progress in that file.
#[test]
fn server_wide_writes_and_reads_join_only_the_files_they_touch() {
    use std::sync::mpsc::channel;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("main.redb")).unwrap());
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    store.route_dedicated(store.create_dedicated(b).unwrap());
    put(&store, b, "x", b"1");
    let (inside_tx, inside) = channel();
    let (release, release_rx) = channel::<()>();
    let holder = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let ((), pending) = store
                .write_pending_for(b, |w| {
                    inside_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    w.put_blob(b, "y", b"2")
                })
                .unwrap();
            pending.wait_durable().unwrap();
        })
    };
    // `b`'s file write lock is held now.
    inside.recv().unwrap();
    let (done_tx, done) = channel();
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            store.write(|w| w.put_blob(a, "x", b"1")).unwrap();
            let r = store.read().unwrap();
            done_tx
                .send((
                    r.blobs_named(a, "").unwrap().len(),
                    store.main_keys(b).unwrap(),
                ))
                .unwrap();
        })
    };
    let finished = done.recv_timeout(Duration::from_secs(10));
    release.send(()).unwrap();
    holder.join().unwrap();
    writer.join().unwrap();
    assert_eq!(
        finished,
        Ok((1, 0)),
        "the server-wide write waited for b's file"
    );
    // A server-wide write that touches `b` joins its file.
    store.write(|w| w.put_blob(b, "z", b"3")).unwrap();
    assert_eq!(blobs(&store, b).len(), 3);
    assert_eq!(store.main_keys(b).unwrap(), 0);
}

#[test]
fn orphan_files_and_main_ranges_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    put(&store, a, "x", b"1");
    put(&store, b, "x", b"1");
    // An interrupted migration of `a` into its file: the file is an orphan.
    let orphan = store.create_dedicated(a).unwrap();
    drop(orphan);
    // `b` moved to its file, but a crash left a partial copy in the main file.
    let file = store.create_dedicated(b).unwrap();
    store.route_dedicated(file);
    let keep: HashSet<TenantKey> = [b].into_iter().collect();
    assert_eq!(store.remove_orphan_files(&keep).unwrap(), vec![a]);
    assert!(!store.has_dedicated_dir(a) && store.has_dedicated_dir(b));
    assert_eq!(store.erase_main_range(b).unwrap(), 1);
    assert_eq!(store.main_keys(b).unwrap(), 0);
    assert_eq!(store.main_keys(a).unwrap(), 1);
}

#[test]
fn a_dedicated_file_gets_a_fixed_page_cache() {
    assert_eq!(dedicated_cache_bytes(64 << 20), 16 << 20);
    // However large the main file's cache (its default grows with the machine), each
    // dedicated file's stays fixed: a thousand dedicated tenants do not multiply it.
    assert_eq!(dedicated_cache_bytes(4 << 30), 16 << 20);
    assert_eq!(dedicated_cache_bytes(8 << 20), 8 << 20);
    assert_eq!(dedicated_cache_bytes(1 << 20), 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_cache(&dir.path().join("main.redb"), 64 << 20).unwrap();
    assert_eq!(store.placement.options.cache_bytes, 16 << 20);
}

/// The main range left behind by a move into a file is erased in several transactions,
/// all of it, and a tenant that is not dedicated keeps its range.
#[test]
fn a_large_main_range_is_erased_in_chunks_after_the_flip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let (a, b) = (tenant(&store, "a"), tenant(&store, "b"));
    let n = ERASE_CHUNK_KEYS * 2 + 7;
    store
        .write(|w| {
            for i in 0..n {
                w.put_blob(b, &format!("k{i}"), b"v")?;
            }
            w.put_blob(a, "k", b"v")
        })
        .unwrap();
    let before = store.main_keys(b).unwrap();
    assert!(before >= n as u64);
    assert_eq!(store.erase_main_range(b).unwrap(), 0, "b is not dedicated");
    migrate_in(&store, b);
    assert_eq!(store.main_keys(b).unwrap(), 0);
    assert_eq!(
        blobs(&store, b).len(),
        n + 2,
        "every blob, `late` and `flip`"
    );
    assert_eq!(store.main_keys(a).unwrap(), 1);
}

/// Tracking begins only once a write transaction already under way has ended, so the
/// copy that follows sees that write.
#[test]
fn tracking_waits_for_a_write_already_under_way() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let t = tenant(&store, "t");
    put(&store, t, "a", b"1");
    let (inside, entered) = std::sync::mpsc::channel();
    let (release, go) = std::sync::mpsc::channel::<()>();
    let tracking = AtomicBool::new(false);
    let store = &store;
    let tracker = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let ((), pending) = store
                .write_pending_for(t, |w| {
                    w.put_blob(t, "b", b"2")?;
                    inside.send(()).unwrap();
                    go.recv().unwrap();
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            pending.wait_durable().unwrap();
        });
        entered.recv().unwrap();
        let starter = s.spawn(|| {
            let tracker = store.track_writes(t).unwrap();
            tracking.store(true, Ordering::SeqCst);
            tracker
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!tracking.load(Ordering::SeqCst), "it waits for the write");
        release.send(()).unwrap();
        writer.join().unwrap();
        starter.join().unwrap()
    });
    let file = store.create_dedicated(t).unwrap();
    let mut after = None;
    while let (Some(k), _) = store
        .copy_chunk(t, CopyTarget::File(&file), after.as_deref(), 1)
        .unwrap()
    {
        after = Some(k);
        put(store, t, "c", b"3");
    }
    store
        .flip_in(file, Some(&tracker), |_| Ok::<_, StoreError>(()))
        .unwrap();
    let names: Vec<_> = blobs(store, t).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn catch_up_writes_only_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("t.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut src = txn.open_table(DATA).unwrap();
        let t = TenantKey::from_raw(7);
        let k = |n: &str| keys::blob(t, n);
        for (n, v) in [("a", "1"), ("b", "2"), ("d", "4")] {
            src.insert(k(n).as_slice(), v.as_bytes()).unwrap();
        }
        let dst_def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("dst");
        let mut dst = crate::file_writes::Tracked::new(
            txn.open_table(dst_def).unwrap(),
            crate::file_writes::TableTag::Data,
            None,
        );
        for (n, v) in [("a", "1"), ("b", "x"), ("c", "3")] {
            dst.insert(k(n).as_slice(), v.as_bytes()).unwrap();
        }
        // Another tenant's key in the destination is not touched.
        dst.insert(
            keys::blob(TenantKey::from_raw(8), "a").as_slice(),
            b"".as_slice(),
        )
        .unwrap();
        let n = catch_up(&src, &mut dst, &keys::tenant_all(t)).unwrap();
        assert_eq!(n, 3, "b changed, c removed, d added");
        let all: Vec<_> = dst
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect();
        assert_eq!(all.len(), 4);
        assert_eq!(catch_up(&src, &mut dst, &keys::tenant_all(t)).unwrap(), 0);
    }
}

/// One change of the property test below: a blob set (`Some`) or deleted (`None`).
type Change = (u8, Option<u8>);

fn apply(store: &Store, t: TenantKey, model: &mut BTreeMap<String, Vec<u8>>, c: &Change) {
    let name = format!("k{:02}", c.0);
    match c.1 {
        Some(v) => {
            put(store, t, &name, &[v]);
            model.insert(name, vec![v]);
        }
        None => {
            let ((), pending) = store
                .write_pending_for(t, |w| w.delete_blob(t, &name))
                .unwrap();
            pending.wait_durable().unwrap();
            model.remove(&name);
        }
    }
}

/// Moves `t` into its own file (or out of it) in chunks of `chunk` keys with a tracked
/// catch-up, applying each batch of `between` after a chunk; the other tenant `u` writes
/// too. Returns the flip's catch-up count.
fn tracked_move(
    store: &Store,
    (t, u): (TenantKey, TenantKey),
    chunk: usize,
    between: &[Vec<Change>],
    model: &mut BTreeMap<String, Vec<u8>>,
) -> u64 {
    let into = !store.is_dedicated(t);
    let file = into.then(|| store.create_dedicated(t).unwrap());
    let tracker = store.track_writes(t).unwrap();
    let target = || match &file {
        Some(f) => CopyTarget::File(f),
        None => CopyTarget::Main,
    };
    let (mut after, mut batches) = (None, between.iter());
    while let (Some(k), _) = store
        .copy_chunk(t, target(), after.as_deref(), chunk)
        .unwrap()
    {
        after = Some(k);
        for c in batches.next().into_iter().flatten() {
            apply(store, t, model, c);
            put(store, u, "other", &[c.0]);
        }
    }
    for c in batches.flatten() {
        apply(store, t, model, c);
    }
    let caught = match file {
        Some(f) => store.flip_in(f, Some(&tracker), |_| Ok::<_, StoreError>(())),
        None => store.flip_out(t, Some(&tracker), |_| Ok::<_, StoreError>(())),
    }
    .unwrap()
    .1;
    store.erase_main_range(t).unwrap();
    caught
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// A catch-up of only the keys written since the copy began leaves the tenant's range
    /// on its new side exactly as a model says, in both directions, whatever the writes
    /// between chunks (new keys before and after the copy's cursor, changes, deletes).
    #[test]
    fn a_tracked_catch_up_moves_every_change(
        initial in proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..30),
        into in proptest::collection::vec(
            proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..4), 0..10),
        out in proptest::collection::vec(
            proptest::collection::vec((0u8..30, proptest::option::of(0u8..4)), 0..4), 0..10),
        chunk in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("main.redb")).unwrap();
        let (t, u) = (tenant(&store, "t"), tenant(&store, "u"));
        let mut model = BTreeMap::new();
        for c in &initial {
            apply(&store, t, &mut model, c);
        }
        let caught = tracked_move(&store, (t, u), chunk, &into, &mut model);
        let changes: usize = into.iter().map(Vec::len).sum();
        proptest::prop_assert!(caught <= changes as u64);
        proptest::prop_assert!(store.is_dedicated(t));
        proptest::prop_assert_eq!(store.main_keys(t).unwrap(), 0);
        let want: Vec<_> = model.clone().into_iter().collect();
        proptest::prop_assert_eq!(blobs(&store, t), want);

        tracked_move(&store, (t, u), chunk, &out, &mut model);
        proptest::prop_assert!(!store.is_dedicated(t));
        let want: Vec<_> = model.into_iter().collect();
        proptest::prop_assert_eq!(blobs(&store, t), want);
        proptest::prop_assert_eq!(store.tracking.of(t).map(|_| ()), None);
    }
}

/// A dedicated tenant's file records the allocator state as the main file does, by its own
/// length: a copy taken after its writes (what a kill leaves) opens without a full repair when
/// the store records it, and with one when it does not.
#[test]
fn a_dedicated_file_records_the_allocator_state_as_the_main_file_does() {
    for (from, repaired) in [(Some(0), false), (None, true)] {
        let dir = tempfile::tempdir().unwrap();
        let options = FileOptions {
            cache_bytes: 4 << 20,
            fast_recovery_from_bytes: from,
        };
        let store = Store::open_with(&dir.path().join("main.redb"), options).unwrap();
        let b = tenant(&store, "b");
        store.route_dedicated(store.create_dedicated(b).unwrap());
        for i in 0..5 {
            put(&store, b, &format!("r{i}"), b"value");
        }
        let copy = dir.path().join("crashed.redb");
        std::fs::copy(store.placement.dir_of(b).join(DEDICATED_FILE), &copy).unwrap();
        let reopened = open_database(&copy, options).unwrap();
        assert_eq!(
            reopened.opened.full_repair, repaired,
            "recording from {from:?}"
        );
    }
}

/// A creation in a file of its own that fails must delete only its own file: another
/// creation may take the same next key as soon as the failed one lets the main file go, and
/// its new file must survive (it once was deleted under the tenant, whose acknowledged writes
/// then went to an unlinked file and whose next start failed on the missing file).
#[test]
fn a_failed_dedicated_creation_never_deletes_the_next_ones_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let created = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..30 {
                let failed = store.write_creating_dedicated(|w| {
                    let id = TenantId::parse(format!("refused-{i}")).unwrap();
                    let m = w.create_tenant(&id, 0, Default::default())?;
                    w.put_blob(m.key, "own", b"never committed")?;
                    Err::<((), TenantKey), _>(StoreError::Engine("refused after writing".into()))
                });
                assert!(failed.is_err());
            }
        });
        let made = s.spawn(|| {
            (0..30)
                .map(|i| {
                    store
                        .write_creating_dedicated(|w| {
                            let id = TenantId::parse(format!("kept-{i}")).unwrap();
                            let m = w.create_tenant(&id, 0, Default::default())?;
                            w.put_blob(m.key, "own", b"acknowledged")?;
                            Ok::<_, StoreError>((m.key, m.key))
                        })
                        .unwrap()
                })
                .collect::<Vec<_>>()
        });
        made.join().unwrap()
    });
    for key in &created {
        let file = store.placement.dir_of(*key).join(DEDICATED_FILE);
        assert!(file.is_file(), "{key:?}: {} deleted", file.display());
        assert_eq!(
            blobs(&store, *key),
            vec![("own".into(), b"acknowledged".to_vec())]
        );
    }
    // And every one of them opens again at the next start.
    drop(store);
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    for key in created {
        store.attach_dedicated(key).unwrap();
        assert_eq!(
            blobs(&store, key),
            vec![("own".into(), b"acknowledged".to_vec())]
        );
    }
}

/// A creation whose main-file commit failed keeps its file: the registry row naming it may
/// have reached the disk all the same, and deleting the file would leave a tenant whose
/// next start fails. A row that did not reach the disk leaves an orphan, deleted then.
#[test]
fn a_dedicated_creation_whose_commit_failed_keeps_its_file_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let mut created = None;
    let failed = store.write_creating_dedicated(|w| {
        let m = w.create_tenant(&TenantId::parse("unsure").unwrap(), 0, Default::default())?;
        w.put_blob(m.key, "own", b"maybe durable")?;
        created = Some(m.key);
        // The main file fails as its commit begins.
        store.db().sync.fail_for_test();
        Ok::<_, StoreError>(((), m.key))
    });
    assert!(failed.is_err());
    let key = created.unwrap();
    let file = store.placement.dir_of(key).join(DEDICATED_FILE);
    assert!(file.is_file(), "the file was deleted after a failed commit");
    assert!(!store.is_dedicated(key));
    drop(store);
    let store = Store::open(&path).unwrap();
    assert!(
        store
            .read()
            .unwrap()
            .tenant(&TenantId::parse("unsure").unwrap())
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.remove_orphan_files(&HashSet::new()).unwrap(),
        vec![key]
    );
    assert!(!file.exists());
}

/// A move into a tenant's own file whose flip failed to commit keeps the file (the flip may
/// have reached the disk all the same); the tenant stays whole in the main file, where it
/// is still routed.
#[test]
fn a_flip_in_whose_commit_failed_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let t = tenant(&store, "moving");
    put(&store, t, "x", b"1");
    let file = store.create_dedicated(t).unwrap();
    store
        .copy_chunk(t, CopyTarget::File(&file), None, 100)
        .unwrap();
    let failed = store.flip_in(file, None, |w| {
        w.put_blob(t, "flip", b"in")?;
        store.db().sync.fail_for_test();
        Ok::<_, StoreError>(())
    });
    assert!(failed.is_err());
    assert!(store.placement.dir_of(t).join(DEDICATED_FILE).is_file());
    assert!(!store.is_dedicated(t));
    assert_eq!(blobs(&store, t), vec![("x".into(), b"1".to_vec())]);
}

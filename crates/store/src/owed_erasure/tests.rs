//! A purge's range erased in chunks after its transaction ends exactly as the one-shot erasure
//! does, resumes after a cut, and lets other writes in between its chunks.

use redb::{ReadableDatabase, ReadableTable};
use strata_types::TenantId;

use super::*;
use crate::tables::{CREDENTIALS, REGISTRY, Reads};
use crate::{Owner, TenantMeta};

type Dump = Vec<(u8, Vec<u8>, Vec<u8>)>;

/// Every row of the main file's four tables, tagged by table.
fn dump(store: &Store) -> Dump {
    let db = store.db().clone();
    let txn = db.begin_read().unwrap();
    let mut out = Vec::new();
    for entry in txn.open_table(DATA).unwrap().iter().unwrap() {
        let (k, v) = entry.unwrap();
        out.push((0, k.value().to_vec(), v.value().to_vec()));
    }
    for (tag, def) in [(1, REGISTRY), (3, CREDENTIALS)] {
        for entry in txn.open_table(def).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            out.push((tag, k.value().as_bytes().to_vec(), v.value().to_vec()));
        }
    }
    for entry in txn.open_table(META).unwrap().iter().unwrap() {
        let (k, v) = entry.unwrap();
        // The row log's position counts commits, which the two ways of erasing differ in.
        if k.value().starts_with("row_log_") {
            continue;
        }
        out.push((
            2,
            k.value().as_bytes().to_vec(),
            v.value().to_be_bytes().to_vec(),
        ));
    }
    out
}

fn no_audit(_: &mut crate::Writer<'_>, _: TenantKey) -> Result<(), StoreError> {
    Ok(())
}

/// A store with tenants `acme` (`rows` blobs, an audit row and a credential) and `globex`
/// (a blob and a credential), built the same way each time.
fn store_with(rows: usize) -> (tempfile::TempDir, Store, TenantMeta, TenantKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let creds = store.credentials();
    creds.operator_credentials().unwrap();
    let mut metas = Vec::new();
    for name in ["acme", "globex"] {
        let id = TenantId::parse(name).unwrap();
        let meta = store
            .write(|w| w.create_tenant(&id, 1, Default::default()))
            .unwrap();
        creds
            .insert(&format!("k-{name}"), Owner::Tenant(&id), b"{}", no_audit)
            .unwrap();
        metas.push(meta);
    }
    let (acme, globex) = (metas[0].clone(), metas[1].key);
    store
        .write(|w| {
            for i in 0..rows {
                w.put_blob(acme.key, &format!("b{i:05}"), b"acme's")?;
            }
            w.append_audit(acme.key, b"{}")?;
            w.put_blob(globex, "note", b"kept")?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    (dir, store, acme, globex)
}

#[test]
fn chunked_erasure_ends_in_the_state_of_the_one_shot_one() {
    let (_a, one_shot, acme, _) = store_with(50);
    one_shot.write(|w| w.erase_tenant(&acme)).unwrap();
    for chunk in [1, 3, 7, 52, 53, 4096] {
        let (_b, chunked, acme, _) = store_with(50);
        chunked
            .write(|w| w.unregister_tenant_owing_erasure(&acme))
            .unwrap();
        assert_eq!(chunked.owed_erasures().unwrap().keys, [acme.key]);
        // Registry row and credentials go with the purge's transaction; the data waits.
        assert!(chunked.main_keys(acme.key).unwrap() > 50);
        let erased = chunked.erase_owed_ranges_in(chunk).unwrap().erased;
        assert!(erased > 50, "chunk {chunk}: {erased}");
        assert_eq!(chunked.owed_erasures().unwrap().keys, []);
        assert_eq!(dump(&chunked), dump(&one_shot), "chunk {chunk}");
        // Again: nothing owed, nothing erased.
        assert_eq!(chunked.erase_owed_ranges_in(chunk).unwrap().erased, 0);
    }
}

#[test]
fn a_vacuum_finishes_an_erasure_a_restart_cut_short() {
    let (dir, store, acme, globex) = store_with(20);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    // The crash: the purge committed, none of its chunks ran.
    drop(store);
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    assert_eq!(store.owed_erasures().unwrap().keys, [acme.key]);
    store.vacuum().unwrap();
    assert_eq!(store.owed_erasures().unwrap().keys, []);
    assert_eq!(store.main_keys(acme.key).unwrap(), 0);
    let r = store.read().unwrap();
    assert_eq!(
        r.blob(globex, "note").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

/// Another tenant writes between two chunks: from the eraser's own thread, which would wait
/// forever if the erasure held the write lock across its chunks.
#[test]
fn another_tenant_writes_between_chunks() {
    let (_dir, store, acme, globex) = store_with(30);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let mut between = 0;
    store
        .erase_owed_range_with(acme.key, 4, &mut || {
            between += 1;
            store
                .write(|w| w.put_blob(globex, &format!("w{between}"), b"x"))
                .unwrap();
            // Still under way: the range is partly erased, the row still owed.
            assert_eq!(store.owed_erasures().unwrap().keys, [acme.key]);
        })
        .unwrap();
    assert!(between >= 7, "{between} chunks");
    assert_eq!(store.main_keys(acme.key).unwrap(), 0);
    let r = store.read().unwrap();
    assert!(r.blob(globex, &format!("w{between}")).unwrap().is_some());
}

#[test]
fn an_owed_row_that_does_not_parse_is_corrupt() {
    for (row, value) in [
        ("erasure.owed:00000000000000zz", 1),
        ("erasure.owed:7", 1),
        ("erasure.owed:0000000000000000", 1),
        ("erasure.owed:0000000000000007", 2),
    ] {
        assert!(
            matches!(owed_key(row, value), Err(StoreError::Corrupt(_))),
            "{row} = {value}"
        );
    }
    assert_eq!(
        owed_key("erasure.owed:00000000000000ab", 1).unwrap(),
        TenantKey::from_raw(0xab)
    );
}

/// Writes the `meta` row `row` = `value` directly, as a damaged or forged file would hold it.
fn put_meta(store: &Store, row: &str, value: u64) {
    let db = store.db().clone();
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert(row, value).unwrap();
    txn.commit().unwrap();
}

#[test]
fn an_erasure_after_a_failed_sync_is_refused() {
    let (_dir, store, acme, _) = store_with(20);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let before = store.main_keys(acme.key).unwrap();
    store.db().sync.fail_for_test();
    let e = store.erase_owed_ranges_in(4).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(store.main_keys(acme.key).unwrap(), before);
    assert_eq!(store.owed_erasures().unwrap().keys, [acme.key]);
}

/// A sync that fails between two chunks: the next chunk is refused before it commits.
#[test]
fn a_sync_failing_between_chunks_stops_the_erasure() {
    let (_dir, store, acme, _) = store_with(20);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let before = store.main_keys(acme.key).unwrap();
    let e = store
        .erase_owed_range_with(acme.key, 4, &mut || store.db().sync.fail_for_test())
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(store.main_keys(acme.key).unwrap(), before - 4);
}

/// Chunks run under the vacuums' guard, so no vacuum's online copy records their deletions.
#[test]
fn no_vacuum_runs_while_a_range_is_erased() {
    let (_dir, store, acme, _) = store_with(20);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let mut between = 0;
    store
        .erase_owed_ranges_hooked(4, &mut || {
            between += 1;
            assert!(store.vacuuming.try_lock().is_err(), "the guard is free");
        })
        .unwrap();
    assert!(between >= 5, "{between} chunks");
    assert_eq!(store.main_keys(acme.key).unwrap(), 0);
}

#[test]
fn the_registry_epoch_moves_before_the_first_chunk() {
    let (_dir, store, acme, _) = store_with(20);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let purged = store.registry_epoch();
    let mut seen = Vec::new();
    store
        .erase_owed_range_with(acme.key, 4, &mut || seen.push(store.registry_epoch()))
        .unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|&e| e > purged), "{purged} then {seen:?}");
}

/// An owed row naming a live tenant's key, or one never given out, erases nothing: it is
/// reported with the malformed rows, and a real purge's range beside it is still erased (one
/// wrong row must not stop every later erasure and vacuum).
#[test]
fn an_owed_row_naming_a_live_or_unborn_key_is_refused() {
    let (_dir, store, acme, globex) = store_with(5);
    let unborn = TenantKey::from_raw(1 << 40);
    for t in [globex, unborn] {
        put_meta(&store, &owed_row(t), 1);
    }
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let owed = store.owed_erasures().unwrap();
    assert_eq!(owed.keys, [acme.key]);
    assert_eq!(owed.malformed.len(), 2, "{owed:?}");
    assert!(
        owed.malformed
            .iter()
            .any(|m| m.contains("is tenant globex's")),
        "{owed:?}"
    );
    assert!(
        owed.malformed.iter().any(|m| m.contains("never given")),
        "{owed:?}"
    );
    let pass = store.erase_owed_ranges_in(4).unwrap();
    assert!(pass.erased > 0);
    assert_eq!(
        pass.malformed, owed.malformed,
        "the pass reports what it skipped"
    );
    assert_eq!(store.main_keys(acme.key).unwrap(), 0);
    store.vacuum().unwrap();
    let r = store.read().unwrap();
    assert_eq!(
        r.blob(globex, "note").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(store.owed_erasures().unwrap().malformed.len(), 2);
}

/// A malformed owed row is reported beside the good ones, which are still erased.
#[test]
fn a_malformed_owed_row_is_reported_and_the_others_erased() {
    let (_dir, store, acme, _) = store_with(10);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    put_meta(&store, "erasure.owed:zz", 1);
    let owed = store.owed_erasures().unwrap();
    assert_eq!(owed.keys, [acme.key]);
    assert_eq!(owed.malformed.len(), 1, "{owed:?}");
    assert!(owed.malformed[0].contains("erasure.owed:zz"), "{owed:?}");
    let pass = store.erase_owed_ranges_in(4).unwrap();
    assert!(pass.erased > 10);
    assert_eq!(
        pass.malformed, owed.malformed,
        "the pass reports what it skipped"
    );
    assert_eq!(store.main_keys(acme.key).unwrap(), 0);
    store.vacuum().unwrap();
    let owed = store.owed_erasures().unwrap();
    assert_eq!((owed.keys.len(), owed.malformed.len()), (0, 1));
}

/// A second eraser of the same range (a retry, another purge's vacuum) that runs between two
/// chunks of the first finishes it; the first then stops, and the end state is the one-shot one.
#[test]
fn two_erasers_of_one_range_finish_it_together() {
    let (_a, one_shot, acme, _) = store_with(30);
    one_shot.write(|w| w.erase_tenant(&acme)).unwrap();
    let (_b, store, acme, _) = store_with(30);
    store
        .write(|w| w.unregister_tenant_owing_erasure(&acme))
        .unwrap();
    let mut second = None;
    let first = store
        .erase_owed_range_with(acme.key, 4, &mut || {
            if second.is_none() {
                second = Some(
                    store
                        .erase_owed_range_with(acme.key, 4, &mut || {})
                        .unwrap(),
                );
            }
        })
        .unwrap();
    assert_eq!(first, 4, "the first stops once the second finished");
    assert!(second.unwrap() > 26, "{second:?}");
    assert_eq!(store.owed_erasures().unwrap().keys, []);
    assert_eq!(dump(&store), dump(&one_shot));
}

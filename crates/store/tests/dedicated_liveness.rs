//! A dedicated tenant's write checks liveness against a snapshot of the main file's registry,
//! taken before it holds its own file's write lock. A registry change that committed and
//! returned while the write waited for that lock must be what the write sees, not the
//! snapshot from before it.

use std::sync::mpsc;
use std::time::Duration;

use strata_store::{Reads, Store, StoreError, TenantMeta};
use strata_types::TenantId;

#[test]
fn a_write_that_waited_for_its_file_sees_a_registry_change_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("main.redb")).unwrap();
    let id = TenantId::parse("b").unwrap();
    let meta = store
        .write(|w| w.create_tenant(&id, 0, Default::default()))
        .unwrap();
    let b = meta.key;
    store.route_dedicated(store.create_dedicated(b).unwrap());

    let store = &store;
    std::thread::scope(|s| {
        // A first write of the tenant holds its file's write lock until told to finish.
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let holder = s.spawn(move || {
            let ((), pending) = store
                .write_pending_for(b, |w| {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    w.put_blob(b, "first", b"1")
                })
                .unwrap();
            pending.wait_durable().unwrap();
        });
        held_rx.recv().unwrap();

        // A second write takes its registry snapshot, then waits for the file.
        let waiter = s.spawn(|| {
            let (seen, pending) = store
                .write_pending_for(b, |w| w.tenant(&id))
                .map_err(|e: StoreError| e)
                .unwrap();
            pending.wait_durable().unwrap();
            seen
        });
        // Long enough for the waiter to have taken its snapshot and be waiting on the lock.
        std::thread::sleep(Duration::from_millis(200));

        // The registry row changes (as a suspend would) and the change returns.
        let mut changed: TenantMeta = meta.clone();
        changed
            .profile
            .insert("marker".into(), serde_json::json!("after"));
        store.write(|w| w.put_tenant(&changed)).unwrap();

        go_tx.send(()).unwrap();
        holder.join().unwrap();
        let seen = waiter.join().unwrap().expect("registered");
        assert_eq!(
            seen.profile.get("marker"),
            Some(&serde_json::json!("after")),
            "the write checked a registry snapshot from before a change that had returned"
        );
    });
}

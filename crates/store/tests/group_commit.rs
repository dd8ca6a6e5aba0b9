//! Group commit from the outside: concurrent writers, some of which fail, share fsyncs without
//! sharing fates — every write that returned `Ok` is there after reopening, and no write that
//! returned `Err` left anything behind.

use std::sync::Arc;

use strata_store::{Reads, Store, StoreError};
use strata_types::TenantId;

#[derive(Debug)]
struct Refused;

#[derive(Debug)]
enum WriteError {
    Refused,
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl From<Refused> for WriteError {
    fn from(_: Refused) -> Self {
        WriteError::Refused
    }
}

fn run(grouped: bool) {
    run_with(grouped, false);
}

/// With `batched`, the writes go through `Store::write_batched_for`, so concurrent ones share
/// transactions, and one that fails there must still fail alone.
fn run_with(grouped: bool, batched: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Arc::new(Store::open(&path).unwrap());
    store.set_group_commit(grouped);
    let tenant = store
        .write(|w| -> Result<_, StoreError> {
            w.create_tenant(&TenantId::parse("t").unwrap(), 0, Default::default())
        })
        .unwrap();
    let key = tenant.key;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..40 {
                    let name = format!("w{t}-{i}");
                    // Every third write writes, then fails: it must roll back alone.
                    let fail = i % 3 == 0;
                    let write = |w: &mut strata_store::Writer<'_>| {
                        w.put_blob(key, &name, name.as_bytes())?;
                        if fail {
                            return Err(WriteError::Refused);
                        }
                        Ok(())
                    };
                    let result = if batched {
                        store
                            .write_batched_for(key, write)
                            .and_then(|((), p)| Ok(p.wait_durable()?))
                    } else {
                        store.write(write)
                    };
                    match result {
                        Ok(()) => ok.push(name),
                        Err(WriteError::Refused) => assert!(fail),
                        Err(WriteError::Store(e)) => panic!("storage failed: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ok.len(), 8 * 26);
    drop(store);
    let store = Store::open(&path).unwrap();
    let r = store.read().unwrap();
    for t in 0..8 {
        for i in 0..40 {
            let name = format!("w{t}-{i}");
            let got = r.blob(key, &name).unwrap();
            if i % 3 == 0 {
                assert_eq!(got, None, "{name} failed but was stored");
            } else {
                assert_eq!(got.as_deref(), Some(name.as_bytes()), "{name} lost");
            }
        }
    }
}

#[test]
fn concurrent_writes_share_fsyncs_but_not_failures() {
    run(true);
}

#[test]
fn the_same_holds_with_group_commit_off() {
    run(false);
}

#[test]
fn batched_writes_share_transactions_but_not_failures() {
    run_with(true, true);
}

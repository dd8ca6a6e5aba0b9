//! What other tenants pay for dedicated tenants: snapshots (`Store::read` plus one read of a
//! tenant in the main file) and server-wide writes (`Store::write` of a blob of a tenant in
//! the main file) per second, with 0 and with N dedicated tenants whose files are open.
//!
//! `cargo bench -p strata-store --bench dedicated_fanout` (N = 200; `DEDICATED=<n>` to change).

use std::time::{Duration, Instant};

use strata_store::{Reads, Store, TenantKey};
use strata_types::TenantId;

fn tenant(store: &Store, id: &str) -> TenantKey {
    store
        .write(|w| {
            w.create_tenant(&TenantId::parse(id).expect("id"), 0, Default::default())
                .map(|m| m.key)
        })
        .expect("create tenant")
}

/// Operations per second of `op` over about `for_`.
fn rate(for_: Duration, mut op: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < for_ {
        op(n);
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let dedicated: usize = std::env::var("DEDICATED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!("| dedicated files | reads/s (snapshot + 1 read) | server-wide writes/s |");
    println!("|---|---|---|");
    for files in [0, dedicated] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("main.redb")).expect("open");
        let main = tenant(&store, "main");
        store.write(|w| w.put_blob(main, "x", b"v")).expect("put");
        for i in 0..files {
            let t = tenant(&store, &format!("d{i}"));
            let file = store.create_dedicated(t).expect("create file");
            store.route_dedicated(file);
            let ((), pending) = store
                .write_pending_for(t, |w| w.put_blob(t, "x", b"v"))
                .expect("put");
            pending.wait_durable().expect("durable");
        }
        let reads = rate(Duration::from_secs(3), |_| {
            let r = store.read().expect("read");
            assert_eq!(r.blobs_named(main, "").expect("blobs").len(), 1);
        });
        let writes = rate(Duration::from_secs(3), |n| {
            store
                .write(|w| w.put_blob(main, "x", &n.to_le_bytes()))
                .expect("write");
        });
        println!("| {files} | {reads:.0} | {writes:.0} |");
    }
}

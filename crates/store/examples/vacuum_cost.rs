//! How long a purge's vacuum (the main file rewritten into a new one) blocks the store, beside
//! the compaction a purge ran before it. Fills a main file with about `MIB` MiB of tenant rows,
//! then, alternating, erases a small tenant and times a compaction (the old way), erases
//! another and times a vacuum (the new way). Each holds the main database's write lock
//! throughout: no read or write of the main file begins meanwhile.
//!
//! ```text
//! cargo run --release -p strata-store --example vacuum_cost -- MIB [ROUNDS] [DIR]
//! ```

use std::time::Instant;

use strata_store::{Store, TenantMeta};
use strata_types::TenantId;

/// Bytes per row; rows vary a little in content so pages are not all alike.
const ROW_BYTES: usize = 1024;
const ROWS_PER_TXN: usize = 2_000;
const TENANTS: usize = 64;

fn tenant(store: &Store, name: &str) -> TenantMeta {
    let id = TenantId::parse(name).expect("tenant id");
    store
        .write(|w| w.create_tenant(&id, 0, Default::default()))
        .expect("create tenant")
}

/// Appends `bytes` of rows to `meta`'s range.
fn fill(store: &Store, meta: &TenantMeta, bytes: usize, seed: u64) {
    let mut row = vec![0u8; ROW_BYTES];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = bytes;
    while left > 0 {
        store
            .write(|w| {
                for _ in 0..ROWS_PER_TXN.min(left.div_ceil(ROW_BYTES)) {
                    for b in row.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = b'a' + (x % 26) as u8;
                    }
                    w.append_audit(meta.key, &row)?;
                }
                Ok::<_, strata_store::StoreError>(())
            })
            .expect("fill");
        left = left.saturating_sub(ROWS_PER_TXN * ROW_BYTES);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(100, |a| a.parse().expect("MIB"));
    let rounds: usize = args.next().map_or(2, |a| a.parse().expect("ROUNDS"));
    let dir = tempfile::tempdir_in(args.next().unwrap_or_else(|| ".".into())).expect("dir");
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).expect("open");
    let started = Instant::now();
    for i in 0..TENANTS {
        let meta = tenant(&store, &format!("t{i}"));
        fill(&store, &meta, (mib << 20) / TENANTS, i as u64);
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >> 20;
    println!(
        "filled {} MiB of rows in {:.1} s; file {} MiB",
        mib,
        started.elapsed().as_secs_f64(),
        size(&path)
    );
    println!("round\tstep\tfile_mib_before\tfile_mib_after\tblocked_ms\tloadavg");
    for round in 0..rounds {
        for step in ["compact", "vacuum"] {
            // What a purge erases first: a small tenant's rows.
            let victim = tenant(&store, &format!("victim-{round}-{step}"));
            fill(&store, &victim, 1 << 20, 1_000 + round as u64);
            store.write(|w| w.erase_tenant(&victim)).expect("erase");
            let before = size(&path);
            let load = loadavg();
            let t = Instant::now();
            match step {
                "compact" => drop(store.compact().expect("compact")),
                _ => drop(store.vacuum().expect("vacuum")),
            }
            let ms = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "{round}\t{step}\t{before}\t{}\t{ms:.0}\t{load}",
                size(&path)
            );
        }
    }
}

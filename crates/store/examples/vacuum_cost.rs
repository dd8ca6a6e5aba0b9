//! What a purge's vacuum (the main file rewritten into a new one) costs the other tenants.
//! Fills a main file with about `MIB` MiB of tenant rows; then, each round, erases a small
//! tenant and vacuums, while one thread reads (a snapshot, a registry row and a blob of
//! another tenant) and another writes (a durable blob write of another tenant) in a loop.
//! Prints how long the vacuum took and the longest and 99th-percentile latency of the reads
//! and writes that overlapped it: the pause the other tenants saw.
//!
//! ```text
//! cargo run --release -p strata-store --example vacuum_cost -- MIB [ROUNDS] [DIR]
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_store::{Reads, Store, TenantMeta};
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

/// Operations as (start, duration), one list per probe thread.
type Ops = Mutex<Vec<(Instant, Duration)>>;

/// Runs `op` in a loop until `stop`, recording each run.
fn probe(stop: &AtomicBool, ops: &Ops, mut op: impl FnMut()) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        op();
        let took = t.elapsed();
        ops.lock().unwrap().push((t, took));
        // A request now and then, not a tight loop beside the vacuum.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The longest and the 99th-percentile latency (ms) of the operations that overlapped
/// `from..to`, and how many there were.
fn pauses(ops: &Ops, from: Instant, to: Instant) -> (f64, f64, usize) {
    let mut took: Vec<f64> = ops
        .lock()
        .unwrap()
        .iter()
        .filter(|(start, d)| *start < to && *start + *d > from)
        .map(|(_, d)| d.as_secs_f64() * 1e3)
        .collect();
    took.sort_by(f64::total_cmp);
    let max = took.last().copied().unwrap_or(0.0);
    let p99 = took
        .get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    (max, p99, took.len())
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
    // The disk blocks the file takes: a commit after a compaction can extend the file with a
    // hole (its length then overstates what the disk holds).
    let allocated = |p: &std::path::Path| -> String {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p)
                .map(|m| ((m.blocks() * 512) >> 20).to_string())
                .unwrap_or_default()
        }
        #[cfg(not(unix))]
        {
            let _ = p;
            "-".to_string()
        }
    };
    println!(
        "filled {} MiB of rows in {:.1} s; file {} MiB",
        mib,
        started.elapsed().as_secs_f64(),
        size(&path)
    );
    let other = tenant(&store, "other");
    store
        .write(|w| w.put_blob(other.key, "probe", b"before"))
        .expect("probe row");
    println!(
        "round\tfile_mib_before\tfile_mib_after\tallocated_mib_after\tvacuum_ms\tread_max_ms\tread_p99_ms\treads\twrite_max_ms\twrite_p99_ms\twrites\tloadavg"
    );
    for round in 0..rounds {
        // What a purge erases first: a small tenant's rows.
        let victim = tenant(&store, &format!("victim-{round}"));
        fill(&store, &victim, 1 << 20, 1_000 + round as u64);
        store.write(|w| w.erase_tenant(&victim)).expect("erase");
        let before = size(&path);
        let load = loadavg();
        let (reads, writes) = (Ops::default(), Ops::default());
        let stop = AtomicBool::new(false);
        let (from, to) = std::thread::scope(|s| {
            s.spawn(|| {
                probe(&stop, &reads, || {
                    let r = store.read().expect("read");
                    assert!(r.tenant(&other.id).expect("registry").is_some());
                    assert!(r.blob(other.key, "probe").expect("blob").is_some());
                })
            });
            s.spawn(|| {
                let mut i = 0u64;
                probe(&stop, &writes, || {
                    i += 1;
                    store
                        .write(|w| w.put_blob(other.key, "probe", &i.to_be_bytes()))
                        .expect("write");
                })
            });
            // The probes run for a moment before, so the first vacuum does not race their start.
            std::thread::sleep(Duration::from_millis(200));
            let from = Instant::now();
            store.vacuum().expect("vacuum");
            let to = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            (from, to)
        });
        let ms = (to - from).as_secs_f64() * 1e3;
        let (rmax, rp99, rn) = pauses(&reads, from, to);
        let (wmax, wp99, wn) = pauses(&writes, from, to);
        println!(
            "{round}\t{before}\t{}\t{}\t{ms:.0}\t{rmax:.1}\t{rp99:.1}\t{rn}\t{wmax:.1}\t{wp99:.1}\t{wn}\t{load}",
            size(&path),
            allocated(&path)
        );
    }
}

//! Heap bytes per record of the text and field indexes, measured by a counting allocator: the
//! breakdown behind the "memory per resident record" figures in `docs/benchmarks.md`.
//!
//! Builds, for `--records` records (200,000) shaped like `scale_bench`'s (a short text holding
//! a number unique to each record; `created_at` shared by a batch of 1,000 or, with
//! `--unique-times`, unique per record; `updated_at` the same; one confidence value), a BM25
//! index and a field index the way a collection does, and reports the live heap bytes each
//! holds per record, and what a roaring bitmap per unique value would cost by comparison.
//!
//! Run: `cargo run --release -p strata-index --example resident_breakdown -- [--records N]
//! [--unique-times]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use strata_index::{Bm25Index, FieldIndex};

/// The system allocator, counting the bytes it has live (requested sizes; glibc adds 8–16
/// bytes of header and rounding per allocation, which RSS shows and this does not).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (usize, usize) {
    (
        LIVE.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    )
}

/// Bytes and allocations per record that `build` leaves live, with its result.
fn measure<T>(n: usize, build: impl FnOnce() -> T) -> (T, f64, f64) {
    let (b0, a0) = live();
    let t = build();
    let (b1, a1) = live();
    (t, (b1 - b0) as f64 / n as f64, (a1 - a0) as f64 / n as f64)
}

fn main() {
    let mut n = 200_000usize;
    let mut unique_times = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                n = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("--records N")
            }
            "--unique-times" => unique_times = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let t0 = 1_764_000_000_000u64;
    let time = |i: usize| {
        t0 + if unique_times {
            i as u64
        } else {
            (i / 1000) as u64
        }
    };
    println!(
        "{n} records, created_at {}",
        if unique_times {
            "unique"
        } else {
            "per batch of 1,000"
        }
    );

    let (bm25, bytes, allocs) = measure(n, || {
        let mut ix = Bm25Index::new();
        for i in 0..n {
            ix.insert(
                i as u32,
                &format!("memory {i} of tenant 0 about topic {}", i % 7),
            );
        }
        ix
    });
    println!(
        "bm25: {bytes:.0} B/record in {allocs:.2} allocations/record ({} docs)",
        bm25.doc_count()
    );

    let columns = ["b:created_at", "b:updated_at", "b:confidence"];
    for (name, make) in [
        (
            "field index, timestamps and confidence as maps",
            FieldIndex::new as fn() -> FieldIndex,
        ),
        ("field index, timestamps and confidence as columns", || {
            FieldIndex::with_columns(&["b:created_at", "b:updated_at", "b:confidence"])
        }),
    ] {
        let (fields, bytes, allocs) = measure(n, || {
            let mut ix = make();
            for i in 0..n {
                let slot = i as u32;
                ix.insert(slot, columns[0], &Value::from(time(i)));
                ix.insert(slot, columns[1], &Value::from(time(i)));
                ix.insert(slot, columns[2], &Value::from(0.5));
            }
            ix
        });
        println!(
            "{name}: {bytes:.0} B/record in {allocs:.2} allocations/record ({} slots)",
            fields.slot_count()
        );
    }
}

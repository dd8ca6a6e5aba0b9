//! Durable write throughput: one record per commit, and 1,000-record batches.
//!
//! Records carry a 384-dimension vector and about 200 bytes of text, and every put is synced to
//! disk before it returns. Run: `cargo bench -p strata-engine --bench writes`.

use divan::Bencher;
use divan::counter::ItemsCount;
use strata_auth::{Grant, OperatorScope, Permission, Permissions, TenantScope};
use strata_engine::{Engine, EngineConfig};
use strata_types::{NewRecord, RequestScope, TenantId};

fn main() {
    divan::main();
}

fn engine() -> (tempfile::TempDir, Engine, TenantScope) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("open");
    let id = TenantId::parse("bench").expect("id");
    engine
        .create_tenant(&OperatorScope::for_tests(), &id, None)
        .expect("tenant");
    let grant = Grant {
        permissions: Permissions::of(&[Permission::Read, Permission::Write]),
        user_tokens: None,
        domains: None,
    };
    let scope = TenantScope::for_tests(&engine.tenant_meta(&id).expect("meta"), grant);
    (dir, engine, scope)
}

fn record(i: u64) -> NewRecord {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let vector = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let text = format!(
        "memory {i}: the user mentioned that they prefer green tea in the morning, work remotely on Tuesdays and Thursdays, and would like summaries sent by email rather than chat. {i}"
    );
    NewRecord {
        content: Some(text),
        vector: Some(vector),
        ..Default::default()
    }
}

#[divan::bench(sample_count = 300, sample_size = 1)]
fn single_record_durable(bencher: Bencher) {
    let (_dir, engine, scope) = engine();
    let req = RequestScope::default();
    let mut i = 0;
    bencher
        .counter(ItemsCount::new(1usize))
        .with_inputs(|| {
            i += 1;
            record(i)
        })
        .bench_local_values(|r| engine.put(&scope, &req, vec![r]).expect("put"));
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn batch_of_1000_durable(bencher: Bencher) {
    let (_dir, engine, scope) = engine();
    let req = RequestScope::default();
    let mut next = 0;
    bencher
        .counter(ItemsCount::new(1000usize))
        .with_inputs(|| {
            next += 1000;
            (next..next + 1000).map(record).collect::<Vec<_>>()
        })
        .bench_local_values(|batch| engine.put(&scope, &req, batch).expect("put"));
}

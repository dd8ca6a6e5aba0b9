//! A vacuum's copy runs while the store reads and writes: every write made meanwhile reaches
//! the new file, and what was erased meanwhile does not stay in it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable};
use strata_types::TenantId;

use super::*;
use crate::{CopyTarget, Owner, Reads, TenantKey, TenantMeta};

/// Long enough for any step of these tests on a busy machine, short beside a hang.
const PATIENCE: Duration = Duration::from_secs(60);

type Dump = Vec<(u8, Vec<u8>, Vec<u8>)>;

/// Every row of the four tables of `db`, tagged by table.
fn dump(db: &Database) -> Dump {
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
        out.push((
            2,
            k.value().as_bytes().to_vec(),
            v.value().to_be_bytes().to_vec(),
        ));
    }
    out
}

fn tenant(store: &Store, name: &str) -> TenantMeta {
    let id = TenantId::parse(name).unwrap();
    store
        .write(|w| w.create_tenant(&id, 0, Default::default()))
        .unwrap()
}

fn put_blob(store: &Store, t: TenantKey, name: &str, bytes: &[u8]) {
    store.write(|w| w.put_blob(t, name, bytes)).unwrap();
}

fn no_audit(_: &mut crate::Writer<'_>, _: TenantKey) -> Result<(), StoreError> {
    Ok(())
}

fn contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle)
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Another tenant's read and write complete while the copy is under way (the copy waits for
/// them to finish, so a vacuum that held the lock through its copy would never see them).
#[test]
fn reads_and_writes_go_on_while_the_copy_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    let b = tenant(&store, "b");
    put_blob(&store, a.key, "x", b"of a");
    put_blob(&store, b.key, "y", b"of b, before");
    let mut during = None;
    let done = store
        .vacuum_with(
            || {
                let (tx, rx) = mpsc::channel();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let read = store.read().unwrap();
                        let got = read.blob(b.key, "y").unwrap();
                        let found = read.tenant(&a.id).unwrap().is_some();
                        drop(read);
                        put_blob(&store, b.key, "y", b"of b, during the copy");
                        let _ = tx.send((got, found));
                    });
                    during = Some(rx.recv_timeout(PATIENCE));
                });
            },
            |_, _| {},
        )
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    let (got, found) = during
        .expect("the hook ran")
        .expect("a read and a write finished while the copy was under way");
    assert_eq!(got.as_deref(), Some(b"of b, before".as_slice()));
    assert!(found);
    // The write made during the copy is in the new file, and survives a restart.
    drop(store);
    let store = Store::open(&path).unwrap();
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(b.key, "y").unwrap().as_deref(),
        Some(b"of b, during the copy".as_slice())
    );
    assert_eq!(
        read.blob(a.key, "x").unwrap().as_deref(),
        Some(b"of a".as_slice())
    );
}

/// Writers of every kind (records and blobs, batched writes, tenant creation and erasure,
/// credentials and their owner index, meta counters, a migration's copy, flip in, main-range
/// erasure and flip out, a server-wide write joining a dedicated file, a tenant created in its
/// own file and moved out with its file retired) run throughout a vacuum; at the swap the new file holds exactly the old file's
/// latest state, in all four tables.
#[test]
fn every_write_during_the_vacuum_reaches_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    let b = tenant(&store, "b");
    let doomed = tenant(&store, "doomed");
    let moving = tenant(&store, "moving");
    for i in 0..200 {
        put_blob(&store, a.key, &format!("a{i}"), &[b'a'; 300]);
        put_blob(&store, doomed.key, &format!("d{i}"), &[b'd'; 300]);
        put_blob(&store, moving.key, &format!("m{i}"), &[b'm'; 300]);
    }
    let creds = store.credentials();
    assert!(creds.insert("op", Owner::Server, b"{}", no_audit).unwrap());
    assert!(
        creds
            .insert("doomed-key", Owner::Tenant(&doomed.id), b"{}", no_audit)
            .unwrap()
    );
    let stop = AtomicBool::new(false);
    let compared = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The writers stop however the vacuum ends (a failed comparison panics).
        let _stop = StopOnDrop(&stop);
        // Blobs written and removed, one transaction each.
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                put_blob(&store, a.key, &format!("w{}", i % 50), &i.to_be_bytes());
                store
                    .write(|w| w.delete_blob(a.key, &format!("a{}", i % 200)))
                    .unwrap();
                i += 1;
            }
        });
        // Batched writes of another tenant.
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (_, pending) = store
                    .write_batched_for(b.key, |w| {
                        w.put_blob(b.key, &format!("b{}", i % 30), &i.to_be_bytes())
                    })
                    .unwrap();
                pending.wait_durable().unwrap();
                i += 1;
            }
        });
        // Tenants created (registry, the next key) with a credential (credentials, the owner
        // index), then erased; meta flags toggled.
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let t = tenant(&store, &format!("churn-{i}"));
                assert!(
                    creds
                        .insert(&format!("key-{i}"), Owner::Tenant(&t.id), b"{}", no_audit)
                        .unwrap()
                );
                if i.is_multiple_of(2) {
                    store.write(|w| w.erase_tenant(&t)).unwrap();
                }
                store
                    .write(|w| {
                        w.set_compaction_owed(i.is_multiple_of(2))?;
                        w.note_purge(i as i64)
                    })
                    .unwrap();
                i += 1;
            }
        });
        let done = store
            .vacuum_with(
                || {
                    // Certainly after the snapshot: an erasure of rows the copy holds, and a
                    // migration in of a tenant (copy, flip, main range erased) and one chunk
                    // copied back into the main file.
                    store.write(|w| w.erase_tenant(&doomed)).unwrap();
                    let file = store.create_dedicated(moving.key).unwrap();
                    let mut after = None;
                    while let (Some(last), _) = store
                        .copy_chunk(moving.key, CopyTarget::File(&file), after.as_deref(), 64)
                        .unwrap()
                    {
                        after = Some(last);
                    }
                    store
                        .flip_in(file, None, |w| w.put_blob(moving.key, "flip", b"in"))
                        .map_err(|e: StoreError| e)
                        .unwrap();
                    store.erase_main_range(moving.key).unwrap();
                    // A server-wide write that joins the dedicated file's transaction.
                    store
                        .write(|w| {
                            w.put_blob(moving.key, "joined", b"in its file")?;
                            w.put_blob(a.key, "server-wide", b"in the main file")
                        })
                        .unwrap();
                    store
                        .copy_chunk(moving.key, CopyTarget::Main, None, 10)
                        .unwrap();
                    // And back out: the main range caught up with the file.
                    store
                        .flip_out(moving.key, None, |w| w.put_blob(moving.key, "flip", b"out"))
                        .unwrap();
                    // A tenant created in its own file, then moved out, its file deleted later.
                    let born = store
                        .write_creating_dedicated(|w| {
                            let id = TenantId::parse("born-dedicated").unwrap();
                            let m = w.create_tenant(&id, 0, Default::default())?;
                            w.put_blob(m.key, "own", b"from its first write")?;
                            Ok::<_, StoreError>((m.key, m.key))
                        })
                        .unwrap();
                    let (_, _, retired) = store
                        .flip_out_retiring(born, None, |w| w.put_blob(born, "out", b"retiring"))
                        .unwrap();
                    store.delete_retired(retired).unwrap();
                    put_blob(&store, a.key, "during", b"the copy");
                },
                |old, fresh| {
                    let (old, fresh) = (dump(old), dump(fresh));
                    assert!(
                        old.iter().any(|(_, _, v)| v == b"the copy"),
                        "the old file holds the rows written during the copy"
                    );
                    if old != fresh {
                        let missing: Vec<_> = old.iter().filter(|r| !fresh.contains(r)).collect();
                        let extra: Vec<_> = fresh.iter().filter(|r| !old.contains(r)).collect();
                        panic!("the new file differs: missing {missing:?}, extra {extra:?}");
                    }
                    compared.store(true, Ordering::SeqCst);
                },
            )
            .unwrap();
        assert!(matches!(done, Vacuumed::Done { .. }));
        stop.store(true, Ordering::SeqCst);
    });
    assert!(compared.load(Ordering::SeqCst));
    // The erasure made during the copy holds in the new file.
    let read = store.read().unwrap();
    assert!(read.tenant(&doomed.id).unwrap().is_none());
    assert_eq!(read.blob(doomed.key, "d0").unwrap(), None);
    assert!(creds.get("doomed-key").unwrap().is_none());
    assert_eq!(
        read.blob(a.key, "during").unwrap().as_deref(),
        Some(b"the copy".as_slice())
    );
    for (t, name, want) in [
        (moving.key, "joined", b"in its file".as_slice()),
        (moving.key, "flip", b"out"),
        (a.key, "server-wide", b"in the main file"),
    ] {
        assert_eq!(read.blob(t, name).unwrap().as_deref(), Some(want), "{name}");
    }
    let born = read
        .tenant(&TenantId::parse("born-dedicated").unwrap())
        .unwrap()
        .expect("the tenant born dedicated is in the new file's registry");
    assert_eq!(
        read.blob(born.key, "own").unwrap().as_deref(),
        Some(b"from its first write".as_slice())
    );
    assert_eq!(
        read.blob(born.key, "out").unwrap().as_deref(),
        Some(b"retiring".as_slice())
    );
    drop(read);
    drop(store);
    // And the file is whole after a restart.
    let store = Store::open(&path).unwrap();
    assert!(store.read().unwrap().tenant(&a.id).unwrap().is_some());
}

/// Rows a purge erases while another vacuum copies: that vacuum's catch-up removes them from
/// its new file, and the purge's own vacuum, which waits for it, leaves no byte of them.
#[test]
fn rows_erased_during_the_copy_leave_no_bytes_once_their_purge_vacuums() {
    const SECRET: &[u8] = b"SECRET-row-erased-while-the-copy-runs";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let keep = tenant(&store, "keep");
    let doomed = tenant(&store, "doomed");
    for i in 0..50 {
        put_blob(&store, keep.key, &format!("k{i}"), &[b'k'; 500]);
        put_blob(&store, doomed.key, &format!("s{i}"), SECRET);
    }
    let (erased_tx, erased_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let store = &store;
        let purge = s.spawn(move || {
            // The purge: its erasure once the first vacuum's copy holds the rows, then its own
            // vacuum, which waits for the first.
            erased_rx.recv_timeout(PATIENCE).unwrap();
            store.vacuum().unwrap()
        });
        store
            .vacuum_with(
                || {
                    store.write(|w| w.erase_tenant(&doomed)).unwrap();
                    erased_tx.send(()).unwrap();
                },
                |_, fresh| {
                    let txn = fresh.begin_read().unwrap();
                    let data = txn.open_table(DATA).unwrap();
                    for entry in data.iter().unwrap() {
                        let (_, v) = entry.unwrap();
                        assert_ne!(v.value(), SECRET, "an erased row is in the new file");
                    }
                },
            )
            .unwrap();
        assert_eq!(purge.join().unwrap(), Vacuumed::Done { settled: true });
    });
    assert_eq!(store.vacuums(), 2);
    assert!(
        !contains(&path, SECRET),
        "the erased rows' bytes outlived the purge's vacuum"
    );
    let read = store.read().unwrap();
    assert!(read.tenant(&doomed.id).unwrap().is_none());
    assert_eq!(
        read.blob(keep.key, "k7").unwrap().as_deref(),
        Some([b'k'; 500].as_slice())
    );
}

/// A read transaction begun before the swap goes on reading its snapshot of the old file;
/// the vacuum does not wait for it, and later reads see the new file.
#[test]
fn a_reader_in_flight_keeps_its_snapshot_through_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    for i in 0..100 {
        put_blob(&store, a.key, &format!("x{i}"), &[b'x'; 400]);
    }
    let reader = store.read().unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    put_blob(&store, a.key, "x0", b"after");
    for i in 0..100 {
        let got = reader.blob(a.key, &format!("x{i}")).unwrap();
        assert_eq!(got.as_deref(), Some([b'x'; 400].as_slice()));
    }
    drop(reader);
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "x0").unwrap().as_deref(),
        Some(b"after".as_slice())
    );
    assert_eq!(
        read.blob(a.key, "x99").unwrap().as_deref(),
        Some([b'x'; 400].as_slice())
    );
}

/// Past the memory a recording may take, the copy is tried again online with a fresh
/// recording: one burst of writes does not stop every tenant for a whole copy.
#[test]
fn too_many_writes_during_one_copy_copy_again_online() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    put_blob(&store, a.key, "before", b"1");
    let mut whole_copy = false;
    let mut first = true;
    let done = store
        .vacuum_hooked(Hooks {
            during_copy: Some(Box::new(|| {
                if !std::mem::take(&mut first) {
                    return;
                }
                put_blob(&store, a.key, "during", b"2");
                // What a recording past its cap keeps: nothing.
                let key = vec![0u8; crate::tracking::MAX_BYTES];
                store.file_writes.record(TableTag::Data, &key);
            })),
            whole_copy: Some(Box::new(|| whole_copy = true)),
            before_swap: Some(Box::new(|old, fresh| assert_eq!(dump(old), dump(fresh)))),
            ..Hooks::default()
        })
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    assert!(!whole_copy, "the second online copy kept its keys");
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "during").unwrap().as_deref(),
        Some(b"2".as_slice())
    );
    assert_eq!(
        read.blob(a.key, "before").unwrap().as_deref(),
        Some(b"1".as_slice())
    );
}

/// When every online copy sees more writes than its recording keeps (a tiny cap here), the
/// swap copies the whole file again, under the lock: slower, never a lost write.
#[test]
fn too_many_writes_during_every_copy_fall_back_to_a_whole_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    put_blob(&store, a.key, "before", b"1");
    // Room for a key or two: every copy, during which five are written, overflows.
    store.file_writes.set_cap(200);
    let mut whole_copy = false;
    let mut copies = 0;
    let done = store
        .vacuum_hooked(Hooks {
            during_copy: Some(Box::new(|| {
                copies += 1;
                for i in 0..5 {
                    put_blob(&store, a.key, &format!("d{i}"), &[copies]);
                }
            })),
            whole_copy: Some(Box::new(|| whole_copy = true)),
            before_swap: Some(Box::new(|old, fresh| assert_eq!(dump(old), dump(fresh)))),
            ..Hooks::default()
        })
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    assert_eq!(copies, ONLINE_TRIES as u8, "each online copy was tried");
    assert!(whole_copy);
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "d4").unwrap().as_deref(),
        Some([ONLINE_TRIES as u8].as_slice())
    );
    assert_eq!(
        read.blob(a.key, "before").unwrap().as_deref(),
        Some(b"1".as_slice())
    );
}

/// The flag of `db` that a vacuum is owed, as the file holds it.
fn owed_in(db: &Database) -> Option<u64> {
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get(COMPACTION_OWED).unwrap().map(|v| v.value())
}

/// An erasure that commits while another vacuum copies sets the record of a vacuum owed: that
/// vacuum's new file may keep the erased bytes in a free page, so it keeps the record set
/// (and says so), for the erasure's own vacuum to settle.
#[test]
fn a_vacuum_owed_by_an_erasure_during_the_copy_stays_owed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let doomed = tenant(&store, "doomed");
    put_blob(&store, doomed.key, "x", b"erased during the copy");
    let mut in_new_file = None;
    let done = store
        .vacuum_with(
            || {
                store
                    .write(|w| {
                        w.erase_tenant(&doomed)?;
                        w.set_compaction_owed(true)
                    })
                    .unwrap();
            },
            |_, fresh| in_new_file = Some(owed_in(fresh)),
        )
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: false });
    assert_eq!(
        in_new_file,
        Some(Some(1)),
        "the new file holds the record set"
    );
    assert!(store.compaction_owed().unwrap());
    // The erasure's own vacuum, from a snapshot without its rows, settles it, durably.
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert!(!store.compaction_owed().unwrap());
    drop(store);
    assert!(!Store::open(&path).unwrap().compaction_owed().unwrap());
}

/// An erasure that commits after the first catch-up, before the lock, sets the record of a
/// vacuum owed too late for the first round to see: the catch-up under the lock must keep it
/// (its rows' old bytes may be in the new file's free pages), not settle it.
#[test]
fn a_vacuum_owed_between_the_catch_ups_stays_owed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let doomed = tenant(&store, "doomed");
    put_blob(&store, doomed.key, "x", b"erased between the catch-ups");
    let mut in_new_file = None;
    let done = store
        .vacuum_hooked(Hooks {
            before_lock: Some(Box::new(|| {
                store
                    .write(|w| {
                        w.erase_tenant(&doomed)?;
                        w.set_compaction_owed(true)
                    })
                    .unwrap();
            })),
            before_swap: Some(Box::new(|_, fresh| in_new_file = Some(owed_in(fresh)))),
            ..Hooks::default()
        })
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: false });
    assert_eq!(
        in_new_file,
        Some(Some(1)),
        "the new file holds the record set"
    );
    assert!(store.compaction_owed().unwrap());
}

/// A record set before the vacuum began (its erasure is in no snapshot the copy reads) is
/// settled in the new file, at the swap; a file that never owed one is left as it was.
#[test]
fn a_vacuum_owed_before_the_copy_is_settled_at_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let mut in_new_file = None;
    let done = store
        .vacuum_with(|| {}, |_, fresh| in_new_file = Some(owed_in(fresh)))
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    assert_eq!(in_new_file, Some(None), "no record written where none was");
    let doomed = tenant(&store, "doomed");
    store
        .write(|w| {
            w.erase_tenant(&doomed)?;
            w.set_compaction_owed(true)
        })
        .unwrap();
    let done = store
        .vacuum_with(|| {}, |_, fresh| in_new_file = Some(owed_in(fresh)))
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    assert_eq!(
        in_new_file,
        Some(Some(0)),
        "settled before the swap, not after"
    );
    drop(store);
    assert!(!Store::open(&path).unwrap().compaction_owed().unwrap());
}

/// A write transaction under way when the recording starts (its keys written before, so not
/// recorded, and a range removal that found no recording) commits during the copy: the snapshot waits for it, so the new file holds it.
#[test]
fn a_write_under_way_when_the_recording_starts_reaches_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    let doomed = tenant(&store, "doomed");
    for i in 0..100 {
        put_blob(&store, a.key, &format!("x{i}"), &[b'x'; 400]);
        put_blob(&store, doomed.key, &format!("d{i}"), &[b'd'; 400]);
    }
    let (opened_tx, opened) = mpsc::channel();
    let release = std::sync::Barrier::new(2);
    let mut compared = false;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            store
                .write(|w| {
                    w.put_blob(a.key, "under way", b"written before the recording")?;
                    w.delete_blob(a.key, "x7")?;
                    // A range removal that checked for a recording before there was one.
                    w.erase_tenant(&doomed)?;
                    opened_tx.send(()).unwrap();
                    release.wait();
                    Ok::<_, StoreError>(())
                })
                .unwrap()
        });
        opened.recv_timeout(PATIENCE).unwrap();
        let done = store
            .vacuum_hooked(Hooks {
                after_start: Some(Box::new(|| {
                    release.wait();
                })),
                before_swap: Some(Box::new(|old, fresh| {
                    assert_eq!(dump(old), dump(fresh));
                    compared = true;
                })),
                ..Hooks::default()
            })
            .unwrap();
        assert_eq!(done, Vacuumed::Done { settled: true });
        writer.join().unwrap();
    });
    assert!(compared);
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "under way").unwrap().as_deref(),
        Some(b"written before the recording".as_slice())
    );
    assert_eq!(read.blob(a.key, "x7").unwrap(), None);
    assert!(read.tenant(&doomed.id).unwrap().is_none());
    assert_eq!(read.blob(doomed.key, "d0").unwrap(), None);
}

/// Writes and erasures in all four tables after the first catch-up, before the lock: the
/// catch-up under the lock brings them to the new file.
#[test]
fn writes_after_the_first_catch_up_reach_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    let doomed = tenant(&store, "doomed");
    for i in 0..50 {
        put_blob(&store, a.key, &format!("x{i}"), &[b'x'; 400]);
        put_blob(&store, doomed.key, &format!("d{i}"), &[b'd'; 400]);
    }
    let creds = store.credentials();
    assert!(
        creds
            .insert("doomed-key", Owner::Tenant(&doomed.id), b"{}", no_audit)
            .unwrap()
    );
    let mut compared = false;
    let mut late = None;
    let done = store
        .vacuum_hooked(Hooks {
            before_lock: Some(Box::new(|| {
                put_blob(&store, a.key, "late", b"after the first catch-up");
                store.write(|w| w.delete_blob(a.key, "x3")).unwrap();
                let t = tenant(&store, "late");
                assert!(
                    creds
                        .insert("late-key", Owner::Tenant(&t.id), b"{}", no_audit)
                        .unwrap()
                );
                store.write(|w| w.erase_tenant(&doomed)).unwrap();
                store.write(|w| w.note_purge(42)).unwrap();
                late = Some(t);
            })),
            before_swap: Some(Box::new(|old, fresh| {
                assert_eq!(dump(old), dump(fresh));
                compared = true;
            })),
            ..Hooks::default()
        })
        .unwrap();
    assert_eq!(done, Vacuumed::Done { settled: true });
    assert!(compared);
    let late = late.expect("the hook ran");
    drop(store);
    let store = Store::open(&path).unwrap();
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "late").unwrap().as_deref(),
        Some(b"after the first catch-up".as_slice())
    );
    assert_eq!(read.blob(a.key, "x3").unwrap(), None);
    assert!(read.tenant(&late.id).unwrap().is_some());
    assert!(read.tenant(&doomed.id).unwrap().is_none());
    assert_eq!(read.blob(doomed.key, "d0").unwrap(), None);
    assert_eq!(store.last_purge_at().unwrap(), Some(42));
    let creds = store.credentials();
    assert!(creds.get("late-key").unwrap().is_some());
    assert!(creds.get("doomed-key").unwrap().is_none());
}

/// The old database of a vacuum that a reader still held closes on a write path once that
/// reader has ended (a commit, plain or batched), never on the reader's own thread; with no
/// reader, the vacuum closes it itself.
#[test]
fn an_old_database_closes_on_a_write_path_once_its_last_reader_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.redb");
    let store = Store::open(&path).unwrap();
    let a = tenant(&store, "a");
    put_blob(&store, a.key, "x", b"before");
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert_eq!(
        store.retired.parked(),
        0,
        "closed by the vacuum: no reader held it"
    );
    let reader = store.read().unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    assert_eq!(store.retired.parked(), 1);
    put_blob(&store, a.key, "x", b"after");
    assert_eq!(
        store.retired.parked(),
        1,
        "a commit does not close what a reader holds"
    );
    assert_eq!(
        reader.blob(a.key, "x").unwrap().as_deref(),
        Some(b"before".as_slice())
    );
    drop(reader);
    assert_eq!(
        store.retired.parked(),
        1,
        "the reader's drop did not close it"
    );
    put_blob(&store, a.key, "y", b"a plain commit");
    assert_eq!(store.retired.parked(), 0, "the next commit closed it");
    // The same through a batched write.
    let reader = store.read().unwrap();
    assert_eq!(store.vacuum().unwrap(), Vacuumed::Done { settled: true });
    drop(reader);
    assert_eq!(store.retired.parked(), 1);
    let (_, pending) = store
        .write_batched_for(a.key, |w| w.put_blob(a.key, "z", b"batched"))
        .unwrap();
    pending.wait_durable().unwrap();
    assert_eq!(store.retired.parked(), 0, "the batched commit closed it");
    let read = store.read().unwrap();
    assert_eq!(
        read.blob(a.key, "x").unwrap().as_deref(),
        Some(b"after".as_slice())
    );
}

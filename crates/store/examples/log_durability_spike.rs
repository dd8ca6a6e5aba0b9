//! Spike (not product code): would making writes durable through an append-only log, with redb
//! committing durably only at checkpoints, raise the rate of acknowledged durable writes?
//!
//! Models the rows of one record write (7 inserts into 6 redb tables: a ~1.8 KB record value,
//! three small index rows, a change-log row, a ~150-byte audit row and a per-tenant counter) from
//! W writer threads for S seconds, in two modes:
//!
//! - `today`: writers queue their writes; one batch leader at a time commits everything queued in
//!   one redb transaction with `Durability::None`; then one sync leader at a time runs an empty
//!   `Durability::Immediate` commit (which persists all earlier non-durable commits) and every
//!   writer whose batch it covers is acknowledged.
//! - `log`: the same batches, plus the batch leader appends each write's row bytes (one framed
//!   entry with a sequence number) to a preallocated log file; one sync leader at a time runs
//!   `fdatasync` on the log and acknowledges every write below the offset it covered. A
//!   checkpoint thread commits redb durably every 100 ms (or when the log passes 16 MB), storing
//!   the last log sequence in a meta row in the same transaction, then restarts the log at
//!   offset 0. The log is preallocated and overwritten in place so that `fdatasync` has no file
//!   size or block allocation to journal.
//!
//! - `volatile`: the same batches with no durability at all, the ceiling of the redb work.
//!
//! Usage: `log_durability_spike <today|log|volatile> <writers> <seconds> <dir> [checkpoint_ms]`
//! (checkpoints every 100 ms unless given, or at 16 MB of log); prints one line of
//! `key=value` figures. CPU time is the process's user+sys from `/proc/self/stat`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition};

type Bytes = &'static [u8];
const RECORDS: TableDefinition<Bytes, Bytes> = TableDefinition::new("records");
const INDEX: [TableDefinition<Bytes, Bytes>; 3] = [
    TableDefinition::new("idx_kind"),
    TableDefinition::new("idx_time"),
    TableDefinition::new("idx_scope"),
];
const CHANGES: TableDefinition<Bytes, Bytes> = TableDefinition::new("changes");
const AUDIT: TableDefinition<Bytes, Bytes> = TableDefinition::new("audit");
const COUNTERS: TableDefinition<Bytes, u64> = TableDefinition::new("counters");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const TENANTS: u64 = 16;
const DIMS: usize = 384;
const TEXT_BYTES: usize = 200;
const LOG_CAPACITY: u64 = 64 << 20;
const CHECKPOINT_BYTES: u64 = 16 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Today,
    Log,
    /// No durability at all: acknowledged after the non-durable batch commit. The ceiling that
    /// the redb work of a write alone allows, whatever makes it durable.
    Volatile,
}

/// The rows of one record write, built by the writer before it queues the write.
struct Write7 {
    tenant: u64,
    record_key: Vec<u8>,
    record_value: Vec<u8>,
    index_keys: [Vec<u8>; 3],
    change_key: Vec<u8>,
    change_value: Vec<u8>,
    audit_key: Vec<u8>,
    audit_value: Vec<u8>,
}

impl Write7 {
    fn new(tenant: u64, writer: u64, n: u64, rng: &mut u64) -> Self {
        let mut id = [0u8; 16];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&xorshift(rng).to_be_bytes());
        }
        let mut record_key = tenant.to_be_bytes().to_vec();
        record_key.extend_from_slice(&id);
        let mut record_value = Vec::with_capacity(DIMS * 4 + TEXT_BYTES + 64);
        for d in 0..DIMS {
            record_value.extend_from_slice(&((d as f32) * 0.001 + n as f32).to_le_bytes());
        }
        record_value.extend(std::iter::repeat_n(b't', TEXT_BYTES));
        record_value.extend_from_slice(&[7u8; 64]);
        let index_key = |field: &[u8]| {
            let mut k = tenant.to_be_bytes().to_vec();
            k.extend_from_slice(field);
            k.extend_from_slice(&id);
            k
        };
        let seq = (writer << 40) | n;
        let mut change_key = tenant.to_be_bytes().to_vec();
        change_key.extend_from_slice(&seq.to_be_bytes());
        let mut audit_key = change_key.clone();
        audit_key.push(b'a');
        Write7 {
            tenant,
            index_keys: [
                index_key(b"kind:note"),
                index_key(&n.to_be_bytes()),
                index_key(b"scope:agent-1"),
            ],
            record_key,
            record_value,
            change_key,
            change_value: id.repeat(2),
            audit_key,
            audit_value: vec![b'x'; 150],
        }
    }

    fn insert(&self, txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
        txn.open_table(RECORDS)?
            .insert(self.record_key.as_slice(), self.record_value.as_slice())?;
        for (def, key) in INDEX.iter().zip(&self.index_keys) {
            txn.open_table(*def)?.insert(key.as_slice(), &b""[..])?;
        }
        txn.open_table(CHANGES)?
            .insert(self.change_key.as_slice(), self.change_value.as_slice())?;
        txn.open_table(AUDIT)?
            .insert(self.audit_key.as_slice(), self.audit_value.as_slice())?;
        let mut counters = txn.open_table(COUNTERS)?;
        let key = self.tenant.to_be_bytes();
        let count = counters.get(&key[..])?.map_or(0, |v| v.value());
        counters.insert(&key[..], count + 1)?;
        Ok(())
    }

    /// The physical row puts as one log entry body: (table tag, key, value) triples.
    fn encode_rows(&self, out: &mut Vec<u8>) {
        let mut put = |tag: u8, k: &[u8], v: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        };
        put(0, &self.record_key, &self.record_value);
        for (i, key) in self.index_keys.iter().enumerate() {
            put(1 + i as u8, key, b"");
        }
        put(4, &self.change_key, &self.change_value);
        put(5, &self.audit_key, &self.audit_value);
        // The counter is logged as its delta; replay re-applies it once per sequence.
        put(6, &self.tenant.to_be_bytes(), &1u64.to_le_bytes());
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[derive(Default)]
struct State {
    pending: Vec<(u64, Write7)>,
    next_id: u64,
    batch_running: bool,
    /// Every write with an id below this is committed to redb (non-durably) and, in log mode,
    /// appended to the log.
    applied: u64,
    sync_running: bool,
    /// Every write with an id below this is durable and may be acknowledged.
    durable: u64,
    syncs: u64,
    checkpoints: u64,
}

struct Log {
    file: File,
    /// Next write offset and next entry sequence; guarded by the batch gate.
    offset: u64,
    seq: u64,
}

struct Shared {
    mode: Mode,
    db: Database,
    state: Mutex<State>,
    cv: Condvar,
    /// Held by the batch leader while it commits and appends, and by a checkpoint: a checkpoint
    /// must not restart the log under a batch that has committed to redb but not yet appended.
    gate: Mutex<Option<Log>>,
    sync_file: Option<File>,
    log_bytes: AtomicU64,
}

impl Shared {
    fn write(&self, w: Write7) -> Result<(), redb::Error> {
        let mut st = self.state.lock().expect("state lock");
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push((id, w));
        while st.applied <= id {
            if st.batch_running {
                st = self.cv.wait(st).expect("state lock");
                continue;
            }
            st.batch_running = true;
            let batch = std::mem::take(&mut st.pending);
            drop(st);
            let last = self.commit_batch(&batch)?;
            st = self.state.lock().expect("state lock");
            st.applied = last + 1;
            st.batch_running = false;
            self.cv.notify_all();
        }
        while st.durable <= id {
            if st.sync_running {
                st = self.cv.wait(st).expect("state lock");
                continue;
            }
            st.sync_running = true;
            let target = st.applied;
            drop(st);
            self.sync()?;
            st = self.state.lock().expect("state lock");
            st.durable = st.durable.max(target);
            st.sync_running = false;
            st.syncs += 1;
            self.cv.notify_all();
        }
        Ok(())
    }

    fn commit_batch(&self, batch: &[(u64, Write7)]) -> Result<u64, redb::Error> {
        let mut gate = self.gate.lock().expect("gate lock");
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        for (_, w) in batch {
            w.insert(&txn)?;
        }
        txn.commit()?;
        if let Some(log) = gate.as_mut() {
            let mut buf = Vec::with_capacity(batch.len() * 2200);
            for (_, w) in batch {
                // Entry: length, sequence, body. A real log adds a checksum so that replay stops
                // at a torn tail; this spike never replays.
                let start = buf.len();
                buf.extend_from_slice(&[0u8; 12]);
                w.encode_rows(&mut buf);
                let len = (buf.len() - start - 12) as u32;
                buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
                buf[start + 4..start + 12].copy_from_slice(&log.seq.to_le_bytes());
                log.seq += 1;
            }
            if log.offset + buf.len() as u64 > LOG_CAPACITY {
                checkpoint_locked(self, log)?;
            }
            log.file.write_all_at(&buf, log.offset).expect("log write");
            log.offset += buf.len() as u64;
            self.log_bytes.store(log.offset, Ordering::Relaxed);
        }
        Ok(batch
            .last()
            .expect("a batch holds the leader's own write")
            .0)
    }

    fn sync(&self) -> Result<(), redb::Error> {
        match self.mode {
            Mode::Today => {
                let mut txn = self.db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.commit()?;
            }
            Mode::Log => {
                let file = self.sync_file.as_ref().expect("log mode has a log");
                file.sync_data().expect("fdatasync");
            }
            Mode::Volatile => {}
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), redb::Error> {
        let mut gate = self.gate.lock().expect("gate lock");
        let log = gate.as_mut().expect("log mode has a log");
        checkpoint_locked(self, log)
    }
}

/// Commits redb durably with the last log sequence in the same transaction, then restarts the
/// log. Everything applied before is now durable, so the writers waiting on it are released.
fn checkpoint_locked(shared: &Shared, log: &mut Log) -> Result<(), redb::Error> {
    let applied = shared.state.lock().expect("state lock").applied;
    let mut txn = shared.db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.open_table(META)?.insert("log_seq", log.seq)?;
    txn.commit()?;
    log.offset = 0;
    shared.log_bytes.store(0, Ordering::Relaxed);
    let mut st = shared.state.lock().expect("state lock");
    st.durable = st.durable.max(applied);
    st.checkpoints += 1;
    shared.cv.notify_all();
    Ok(())
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn open_log(dir: &Path) -> std::io::Result<(File, File)> {
    let path = dir.join("spike.log");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(LOG_CAPACITY >> 20) {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let sync_file = file.try_clone()?;
    Ok((file, sync_file))
}

const USAGE: &str =
    "usage: log_durability_spike <today|log|volatile> <writers> <seconds> <dir> [checkpoint_ms]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 6 {
        return Err(USAGE.into());
    }
    let mode = match args[1].as_str() {
        "today" => Mode::Today,
        "log" => Mode::Log,
        "volatile" => Mode::Volatile,
        other => return Err(format!("unknown mode {other}").into()),
    };
    let writers: u64 = args[2].parse()?;
    let seconds: f64 = args[3].parse()?;
    let dir = PathBuf::from(&args[4]);
    let checkpoint_every = Duration::from_millis(args.get(5).map_or(Ok(100), |a| a.parse())?);
    std::fs::create_dir_all(&dir)?;
    let db = Database::create(dir.join("spike.redb"))?;
    {
        let txn = db.begin_write()?;
        for def in [RECORDS, INDEX[0], INDEX[1], INDEX[2], CHANGES, AUDIT] {
            txn.open_table(def)?;
        }
        txn.open_table(COUNTERS)?;
        txn.open_table(META)?;
        txn.commit()?;
    }
    let (log, sync_file) = match mode {
        Mode::Today | Mode::Volatile => (None, None),
        Mode::Log => {
            let (file, sync_file) = open_log(&dir)?;
            (
                Some(Log {
                    file,
                    offset: 0,
                    seq: 0,
                }),
                Some(sync_file),
            )
        }
    };
    let shared = Arc::new(Shared {
        mode,
        db,
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        gate: Mutex::new(log),
        sync_file,
        log_bytes: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));

    let checkpointer = (mode == Mode::Log).then(|| {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(5));
                let big = shared.log_bytes.load(Ordering::Relaxed) >= CHECKPOINT_BYTES;
                if big || last.elapsed() >= checkpoint_every {
                    shared.checkpoint().expect("checkpoint");
                    last = Instant::now();
                }
            }
        })
    });

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (w + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
                let mut lat = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let write = Write7::new(w % TENANTS, w, n, &mut rng);
                    let start = Instant::now();
                    shared.write(write).expect("write");
                    lat.push(start.elapsed().as_micros() as u32);
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = checkpointer {
        h.join().expect("checkpointer");
    }
    lat.sort_unstable();
    let n = lat.len();
    let pct = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)];
    let st = shared.state.lock().expect("state lock");
    println!(
        "mode={}/{}ms writers={writers} writes={n} writes_per_s={:.0} p50_us={} p99_us={} \
         cpu_us_per_write={:.1} writes_per_sync={:.1} syncs={} checkpoints={}",
        args[1],
        checkpoint_every.as_millis(),
        n as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu * 1e6 / n as f64,
        n as f64 / st.syncs.max(1) as f64,
        st.syncs,
        st.checkpoints,
    );
    Ok(())
}

//! Opening the row log: the entries a crash left after the durable state, applied to it.

use std::fs::{File, OpenOptions};
use std::path::Path;

use redb::{ReadableDatabase, Table};

use super::format::{self, Entry, Row};
use super::{LOG_EPOCH, LOG_LSN, LOG_UNLOGGED, Mark, RowLog, paths_of};
use crate::StoreError;
use crate::db::Open;
use crate::file_writes::TableTag;
use crate::tables::{CREDENTIALS, DATA, META, REGISTRY};

/// What an open of the log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Replayed {
    /// Entries applied.
    pub(crate) entries: u64,
    /// Rows they wrote or removed.
    pub(crate) rows: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens the log of the main file at `main`, whose database `db` is open and has no log
/// attached yet: applies the entries after its durable state in one durable transaction
/// (see the parent module), which also moves the epoch on.
pub(crate) fn open(main: &Path, db: &Open) -> Result<(RowLog, Replayed), StoreError> {
    let paths = paths_of(main);
    let (epoch, state) = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get =
            |key: &str| -> Result<u64, StoreError> { Ok(meta.get(key)?.map_or(0, |v| v.value())) };
        (
            get(LOG_EPOCH)?,
            Mark {
                lsn: get(LOG_LSN)?,
                unlogged: get(LOG_UNLOGGED)?,
            },
        )
    };
    let mut files: Vec<File> = Vec::with_capacity(2);
    let mut contents: Vec<Vec<u8>> = Vec::with_capacity(2);
    for path in &paths {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io(path, e))?;
        contents.push(std::fs::read(path).map_err(|e| io(path, e))?);
        files.push(file);
    }
    // A file just created must stay named after a power loss, with the entries synced in it.
    if let Some(dir) = main.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    let chains: Vec<Vec<Entry<'_>>> = contents.iter().map(|c| format::chain(c, epoch)).collect();
    let next_epoch = super::fresh_epoch(epoch);
    let entries = to_replay(&chains, state);
    let mut replayed = Replayed::default();
    let mut last = state.lsn;
    {
        let txn = db.begin_write()?;
        {
            let mut tables = (
                txn.open_table(DATA)?,
                txn.open_table(REGISTRY)?,
                txn.open_table(META)?,
                txn.open_table(CREDENTIALS)?,
            );
            for entry in &entries {
                let rows = format::rows(entry.payload).map_err(StoreError::Corrupt)?;
                for row in &rows {
                    apply(&mut tables, row)?;
                }
                replayed.entries += 1;
                replayed.rows += rows.len() as u64;
                last = entry.lsn;
            }
            tables.2.insert(LOG_LSN, last)?;
            tables.2.insert(LOG_EPOCH, next_epoch)?;
        }
        // Durable (the default): synced before the files are written again.
        txn.commit()?;
    }
    if replayed.entries > 0 {
        tracing::info!(
            entries = replayed.entries,
            rows = replayed.rows,
            "row log: replayed the writes acknowledged after the last checkpoint"
        );
    }
    let files: [File; 2] = files
        .try_into()
        .map_err(|_| StoreError::Engine("the row log has two files".into()))?;
    let durable = Mark {
        lsn: last,
        unlogged: state.unlogged,
    };
    Ok((RowLog::new(next_epoch, durable, files, paths), replayed))
}

/// The entries to apply onto a durable state at `state`, in order: from the one after its
/// number, following across the two files' chains, up to the first that needs unlogged
/// commits the state does not hold.
fn to_replay<'a>(chains: &[Vec<Entry<'a>>], state: Mark) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    let mut next = state.lsn + 1;
    loop {
        let run = chains
            .iter()
            .find_map(|c| c.iter().position(|e| e.lsn == next).map(|at| &c[at..]));
        let Some(run) = run else {
            return out;
        };
        for entry in run {
            if entry.needs != state.unlogged {
                return out;
            }
            out.push(*entry);
            next = entry.lsn + 1;
        }
    }
}

type Tables<'t> = (
    Table<'t, &'static [u8], &'static [u8]>,
    Table<'t, &'static str, &'static [u8]>,
    Table<'t, &'static str, u64>,
    Table<'t, &'static str, &'static [u8]>,
);

fn apply(tables: &mut Tables<'_>, row: &Row<'_>) -> Result<(), StoreError> {
    let text = || {
        std::str::from_utf8(row.key).map_err(|_| {
            StoreError::Corrupt("a row log entry has a text key that is not UTF-8".into())
        })
    };
    match (row.tag, row.value) {
        (TableTag::Data, Some(v)) => drop(tables.0.insert(row.key, v)?),
        (TableTag::Data, None) => drop(tables.0.remove(row.key)?),
        (TableTag::Registry, Some(v)) => drop(tables.1.insert(text()?, v)?),
        (TableTag::Registry, None) => drop(tables.1.remove(text()?)?),
        (TableTag::Credentials, Some(v)) => drop(tables.3.insert(text()?, v)?),
        (TableTag::Credentials, None) => drop(tables.3.remove(text()?)?),
        (TableTag::Meta, Some(v)) => {
            let v: [u8; 8] = v.try_into().map_err(|_| {
                StoreError::Corrupt("a row log entry has a meta value of the wrong length".into())
            })?;
            drop(tables.2.insert(text()?, u64::from_le_bytes(v))?)
        }
        (TableTag::Meta, None) => drop(tables.2.remove(text()?)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lsn: u64, needs: u64) -> Entry<'static> {
        Entry {
            lsn,
            needs,
            payload: b"",
        }
    }

    fn lsns(entries: &[Entry<'_>]) -> Vec<u64> {
        entries.iter().map(|e| e.lsn).collect()
    }

    #[test]
    fn replay_follows_the_chains_across_files_from_the_state_on() {
        let a = vec![entry(10, 2), entry(11, 2), entry(12, 2)];
        let b = vec![entry(13, 2), entry(14, 2)];
        let chains = [b.clone(), a.clone()];
        let state = |lsn| Mark { lsn, unlogged: 2 };
        assert_eq!(lsns(&to_replay(&chains, state(11))), [12, 13, 14]);
        assert_eq!(lsns(&to_replay(&chains, state(9))), [10, 11, 12, 13, 14]);
        assert!(to_replay(&chains, state(14)).is_empty());
        // A gap: the state's next entry is in neither file (it was reused): nothing.
        assert!(to_replay(&chains, state(7)).is_empty());
    }

    #[test]
    fn replay_stops_at_an_entry_that_follows_an_unlogged_commit_the_state_lacks() {
        let chains = [vec![entry(5, 0), entry(6, 0), entry(7, 1), entry(8, 1)]];
        assert_eq!(
            lsns(&to_replay(
                &chains,
                Mark {
                    lsn: 4,
                    unlogged: 0
                }
            )),
            [5, 6]
        );
        assert_eq!(
            lsns(&to_replay(
                &chains,
                Mark {
                    lsn: 6,
                    unlogged: 1
                }
            )),
            [7, 8]
        );
    }
}

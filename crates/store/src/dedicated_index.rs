//! The registry rows that may be of tenants at `dedicated`, listed in the `meta` table and
//! kept in the transaction that writes or removes each row, so that a start routes the
//! dedicated tenants' files by reading those rows alone: without it, a start with any
//! dedicated tenant read every registry row (150–250 ms at 100,000 tenants, about 2 s at a
//! million).
//!
//! The store does not decode profiles (the engine owns them); a row is listed when its stored
//! bytes hold the JSON string `"dedicated"`, which every profile at that level does. The list
//! is a superset (a display name may say it too): the engine decodes each listed row and
//! decides.

use redb::ReadableDatabase;

use crate::StoreError;
use crate::file_writes::Tracked;
use crate::tables::sealed::Tables;
use crate::tables::{META, REGISTRY, RegistryRow, Store, decode_registry_rows};

/// Set once the list below holds every row that mentions the level; before that (a new data
/// directory, or one from an older version) the first start builds it by one scan.
const COMPLETE: &str = "registry.mentions_dedicated_complete";
/// Prefix of the list: `registry.mentions_dedicated:<tenant id>`, valued 1.
const PREFIX: &str = "registry.mentions_dedicated:";
/// The end of the list's range: `;` is the byte after `:`.
const PREFIX_END: &str = "registry.mentions_dedicated;";
const NEEDLE: &[u8] = b"\"dedicated\"";
/// Registry rows read at a time by the one scan that builds the list.
const BUILD_PAGE: usize = 4096;

fn entry(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn mentions_level(row: &[u8]) -> bool {
    row.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Lists or unlists tenant `id` as its registry row `row` is written.
pub(crate) fn note_row(
    meta: &mut Tracked<'_, &'static str, u64>,
    id: &str,
    row: &[u8],
) -> Result<(), StoreError> {
    if mentions_level(row) {
        meta.insert(entry(id).as_str(), 1)?;
    } else {
        meta.remove(entry(id).as_str())?;
    }
    Ok(())
}

/// Unlists tenant `id` as its registry row is removed.
pub(crate) fn forget_row(
    meta: &mut Tracked<'_, &'static str, u64>,
    id: &str,
) -> Result<(), StoreError> {
    meta.remove(entry(id).as_str())?;
    Ok(())
}

impl Store {
    /// The registry rows that may be of tenants at `dedicated`, decoded: every row whose
    /// bytes mention the level, read through the list. A file from before the list gets it
    /// built here, by one scan of the registry (the only start that reads every row).
    pub fn dedicated_candidates(&self) -> Result<Vec<RegistryRow>, StoreError> {
        {
            let main = self.db().clone();
            let txn = main.begin_read()?;
            let meta = txn.open_table(META)?;
            if meta.get(COMPLETE)?.is_some() {
                let registry = txn.open_table(REGISTRY)?;
                let mut rows = Vec::new();
                for listed in meta.range(PREFIX..PREFIX_END)? {
                    let (k, _) = listed?;
                    let id = &k.value()[PREFIX.len()..];
                    // An entry without its row would be a bug; the row is what counts.
                    if let Some(v) = registry.get(id)? {
                        rows.push((id.to_owned(), v.value().to_vec()));
                    }
                }
                return Ok(decode_registry_rows(rows));
            }
        }
        self.write(|w| {
            // A page at a time, keeping only the rows that mention the level: a million rows
            // held at once would be hundreds of megabytes.
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = w.registry_rows(after.as_deref(), BUILD_PAGE)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                rows.extend(page.into_iter().filter(|(_, bytes)| mentions_level(bytes)));
            }
            for (id, _) in &rows {
                w.meta.insert(entry(id).as_str(), 1)?;
            }
            w.meta.insert(COMPLETE, 1)?;
            Ok(decode_registry_rows(rows))
        })
    }
}

#[cfg(test)]
mod tests;

//! Registry rows a start must find without reading every row, listed in the `meta` table and
//! kept in the transaction that writes or removes each row: the tenants at `dedicated` (whose
//! files a start routes) and those an import was creating (which a start discards). Without
//! the lists a start read every registry row: with a million tenants, about 2 s to find the
//! dedicated ones and 5 s to find the imports cut short, before the server listened.
//!
//! The store does not decode profiles (the engine owns them); a row is listed under a mark
//! when its stored bytes hold the mark's JSON string (`"dedicated"`, the level's name;
//! `"importing"`, a field a profile holds only while set), which every such profile does.
//! A list is a superset (a display name may say the word too): the engine decodes each
//! listed row and decides.

use redb::ReadableDatabase;

use crate::StoreError;
use crate::file_writes::Tracked;
use crate::tables::sealed::Tables;
use crate::tables::{META, REGISTRY, RegistryRow, Store, decode_registry_rows};

/// A kind of registry row listed for the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMark {
    /// Rows that mention `"dedicated"`: tenants that may be at that level.
    Dedicated,
    /// Rows that mention `"importing"`: tenants an import may be creating.
    Importing,
}

impl RowMark {
    const ALL: [RowMark; 2] = [RowMark::Dedicated, RowMark::Importing];

    fn needle(self) -> &'static [u8] {
        match self {
            RowMark::Dedicated => b"\"dedicated\"",
            RowMark::Importing => b"\"importing\"",
        }
    }

    /// The list's prefix in `meta`: `registry.mentions_<mark>:<tenant id>`, valued 1.
    fn prefix(self) -> &'static str {
        match self {
            RowMark::Dedicated => "registry.mentions_dedicated:",
            RowMark::Importing => "registry.mentions_importing:",
        }
    }

    /// The end of the list's range: `;` is the byte after `:`.
    fn prefix_end(self) -> &'static str {
        match self {
            RowMark::Dedicated => "registry.mentions_dedicated;",
            RowMark::Importing => "registry.mentions_importing;",
        }
    }

    fn entry(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }

    fn marks(self, row: &[u8]) -> bool {
        let needle = self.needle();
        row.windows(needle.len()).any(|w| w == needle)
    }
}

/// Set once every list holds every row with its mark; before that (a new data directory, or
/// one from an older version) the first start builds them by one scan.
const COMPLETE: &str = "registry.marks_complete";
/// Registry rows read at a time by the one scan that builds the lists.
const BUILD_PAGE: usize = 4096;

/// Lists or unlists tenant `id` under each mark as its registry row `row` is written.
pub(crate) fn note_row(
    meta: &mut Tracked<'_, &'static str, u64>,
    id: &str,
    row: &[u8],
) -> Result<(), StoreError> {
    for mark in RowMark::ALL {
        if mark.marks(row) {
            meta.insert(mark.entry(id).as_str(), 1)?;
        } else {
            meta.remove(mark.entry(id).as_str())?;
        }
    }
    Ok(())
}

/// Unlists tenant `id` as its registry row is removed.
pub(crate) fn forget_row(
    meta: &mut Tracked<'_, &'static str, u64>,
    id: &str,
) -> Result<(), StoreError> {
    for mark in RowMark::ALL {
        meta.remove(mark.entry(id).as_str())?;
    }
    Ok(())
}

impl Store {
    /// The registry rows with `mark`, decoded, read through its list. A file from before the
    /// lists gets them built here, by one scan of the registry (the only start that reads
    /// every row).
    pub fn rows_marked(&self, mark: RowMark) -> Result<Vec<RegistryRow>, StoreError> {
        {
            let main = self.db().clone();
            let txn = main.begin_read()?;
            let meta = txn.open_table(META)?;
            if meta.get(COMPLETE)?.is_some() {
                let registry = txn.open_table(REGISTRY)?;
                let mut rows = Vec::new();
                for listed in meta.range(mark.prefix()..mark.prefix_end())? {
                    let (k, _) = listed?;
                    let id = &k.value()[mark.prefix().len()..];
                    // An entry without its row would be a bug; the row is what counts.
                    if let Some(v) = registry.get(id)? {
                        rows.push((id.to_owned(), v.value().to_vec()));
                    }
                }
                return Ok(decode_registry_rows(rows));
            }
        }
        self.write(|w| {
            // A page at a time, keeping only the marked rows: a million rows held at once
            // would be hundreds of megabytes.
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = w.registry_rows(after.as_deref(), BUILD_PAGE)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (id, bytes) in page {
                    for m in RowMark::ALL {
                        if m.marks(&bytes) {
                            w.meta.insert(m.entry(&id).as_str(), 1)?;
                        }
                    }
                    if mark.marks(&bytes) {
                        rows.push((id, bytes));
                    }
                }
            }
            w.meta.insert(COMPLETE, 1)?;
            Ok(decode_registry_rows(rows))
        })
    }
}

#[cfg(test)]
mod tests;

//! Refuses to start over a main data file that is missing or empty where data was kept.
//!
//! The storage engine creates a database in an empty or missing file, which is right for a new
//! data directory and wrong for one whose file was truncated or deleted: it would start empty,
//! answer every tenant `404`, and the start-up clean-up would then delete the dedicated
//! tenants' files as orphans. So the first open writes a marker beside the main file, and an
//! open that finds the marker (or dedicated tenants' files) but no data file refuses, naming
//! what to do. A file that is merely damaged is the storage engine's to refuse.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::placement::TENANTS_DIR;

/// What the marker says, for whoever finds it.
const MARKER_TEXT: &str = "This directory holds a Strata data file. While this marker exists, \
the server refuses to start if the data file beside it is missing or empty; restore the file \
from a backup, or delete this marker (and the tenants directory beside it, if any) to start \
with an empty database.\n";

/// The marker of the main file at `path`: `<file name>.created` beside it.
fn marker_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".created");
    path.with_file_name(name)
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Before the main file at `path` is opened: fails if it is missing or empty while its marker,
/// or any dedicated tenant's directory, says the directory held data.
pub(crate) fn check_before_open(path: &Path) -> Result<(), StoreError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(path, e)),
    };
    if len > 0 {
        return Ok(());
    }
    let state = if path.exists() { "empty" } else { "missing" };
    let marker = marker_of(path);
    if marker.exists() {
        return Err(StoreError::Corrupt(format!(
            "data file {} is {state}, but this data directory held data ({} exists); restore \
             the file from a backup, or delete that marker (and the tenants directory beside \
             it, if any) to start with an empty database",
            path.display(),
            marker.display()
        )));
    }
    let tenants = path.with_file_name(TENANTS_DIR);
    let dedicated = match std::fs::read_dir(&tenants) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(&tenants, e)),
    };
    if dedicated {
        return Err(StoreError::Corrupt(format!(
            "data file {} is {state}, but {} holds dedicated tenants' files; restore the data \
             file from a backup (starting empty would delete those files as orphans)",
            path.display(),
            tenants.display()
        )));
    }
    Ok(())
}

/// After the main file at `path` opened: writes its marker if it has none yet (a new data
/// directory, or one from before markers).
pub(crate) fn mark_after_open(path: &Path) -> Result<(), StoreError> {
    let marker = marker_of(path);
    if marker.exists() {
        return Ok(());
    }
    let mut file = std::fs::File::create(&marker).map_err(|e| io(&marker, e))?;
    file.write_all(MARKER_TEXT.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&marker, e))?;
    if let Some(dir) = marker.parent() {
        // The marker's name reaches the disk too: a marker lost to a crash just after creation
        // only leaves the next open unguarded, but durability is cheap here.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn a_missing_or_empty_main_file_is_refused_once_data_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        drop(Store::open(&path).unwrap());
        assert!(marker_of(&path).exists());
        drop(Store::open(&path).unwrap());
        for how in ["empty", "missing"] {
            match how {
                "empty" => std::fs::File::create(&path).map(drop).unwrap(),
                _ => std::fs::remove_file(&path).unwrap(),
            }
            let err = Store::open(&path).err().expect("refused").to_string();
            assert!(err.contains(&format!("is {how}")), "{err}");
        }
        // The operator's way out: delete the marker to start empty.
        std::fs::remove_file(marker_of(&path)).unwrap();
        drop(Store::open(&path).unwrap());
    }

    #[test]
    fn without_a_marker_dedicated_files_still_stop_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.redb");
        std::fs::create_dir_all(dir.path().join(TENANTS_DIR).join("7")).unwrap();
        let err = Store::open(&path).err().expect("refused").to_string();
        assert!(err.contains("dedicated tenants' files"), "{err}");
        // A new directory (nothing at all) starts.
        let fresh = tempfile::tempdir().unwrap();
        drop(Store::open(&fresh.path().join("main.redb")).unwrap());
    }
}

//! A file that appears whole or not at all: written as `FILE.partial` beside its destination
//! (same directory, so the rename cannot cross file systems), synced, and renamed over `FILE`
//! only by [`PartialFile::commit`]. Dropped uncommitted (an error, a lost connection, Ctrl-C),
//! it removes its temporary file and leaves `FILE` as it was: an export cut short must never
//! look like a backup.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct PartialFile {
    dest: PathBuf,
    tmp: PathBuf,
    /// `None` once a commit began.
    file: Option<BufWriter<File>>,
    /// Renamed over `dest`: nothing to remove.
    committed: bool,
}

/// `FILE.partial` for `FILE`.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

impl PartialFile {
    /// Creates `dest`'s temporary file. Created exclusively: one that exists belongs to
    /// another export writing the same file, or to one killed outright (nothing can clean up
    /// after `SIGKILL`), and is never written over.
    pub fn create(dest: &Path) -> anyhow::Result<PartialFile> {
        let tmp = partial_path(dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| {
                if tmp.exists() {
                    format!(
                        "creating {}: it exists (another export is writing it, or one was \
                         killed; remove it if none runs)",
                        tmp.display()
                    )
                } else {
                    format!("creating {}", tmp.display())
                }
            })?;
        Ok(PartialFile {
            dest: dest.to_owned(),
            tmp,
            file: Some(BufWriter::new(file)),
            committed: false,
        })
    }

    fn writer(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the file was already committed"))
    }

    /// Flushes and syncs the temporary file, renames it over the destination and syncs the
    /// directory, so that after a crash the destination is the old file or the new one whole.
    pub fn commit(mut self) -> anyhow::Result<()> {
        let writer = self.file.take().context("the file was already committed")?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        self.committed = true;
        // The rename is in the directory's entries: synced with it. Only where a directory can
        // be opened and synced (not every platform allows it); the file itself is whole anyway.
        let dir = match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer()?.flush()
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            // Not committed, or the commit failed before its rename: the temporary file goes.
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_file_replaces_the_destination_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        std::fs::write(&dest, "old").unwrap();
        let mut f = PartialFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        // Until the commit the destination is the old file.
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(!partial_path(&dest).exists());
    }

    #[test]
    fn a_dropped_file_leaves_nothing_and_the_destination_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        let mut f = PartialFile::create(&dest).unwrap();
        f.write_all(&[b'x'; 100_000]).unwrap();
        assert!(partial_path(&dest).exists());
        drop(f);
        assert!(!partial_path(&dest).exists());
        assert!(!dest.exists());
        std::fs::write(&dest, "old").unwrap();
        drop(PartialFile::create(&dest).unwrap());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
    }

    #[test]
    fn a_temporary_file_that_exists_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        std::fs::write(partial_path(&dest), "another export's").unwrap();
        let e = PartialFile::create(&dest).err().expect("refused");
        assert!(format!("{e:#}").contains("it exists"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(partial_path(&dest)).unwrap(),
            "another export's"
        );
    }
}

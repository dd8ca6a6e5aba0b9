//! A file that appears whole or not at all: written as `FILE.partial` beside its destination
//! (same directory, so the rename cannot cross file systems), synced, and renamed over `FILE`
//! only by [`PartialFile::commit`]. Dropped uncommitted (an error, a lost connection, Ctrl-C),
//! it removes its temporary file and leaves `FILE` as it was: an export cut short must never
//! look like a backup.
//!
//! A destination that is a link is written through it (the file it names is replaced, the
//! link stays), and one that is not a regular file (`/dev/stdout`, a pipe, a device) is
//! written directly, as before: renaming over it would replace a device or a link with a
//! plain file. The temporary file is created readable by its owner only (an export is a
//! tenant's data), and takes an existing destination's permissions before the rename.
//!
//! The temporary file is held under an exclusive advisory lock (`flock`, std's
//! [`File::try_lock`]) for the writer's whole life, rename included. The kernel drops it with
//! the process, so one left by an export killed outright (`SIGKILL`, a crash: nothing can
//! clean up after those) is free: the next export of `FILE` takes it over, truncated. One whose
//! lock is held belongs to an export still running, and is never touched. Only a plain file
//! of the user's own is taken over: the name is opened without following a link, and a file
//! with other names (a hard link) or another owner is refused, so a link planted at
//! `FILE.partial` cannot have an export empty and overwrite the file it leads to.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Attempts at locking a temporary file that another export renames or removes just as it is
/// opened (each such race means that export moved on; the next attempt finds the path anew).
const LOCK_ATTEMPTS: usize = 5;

pub struct PartialFile {
    dest: PathBuf,
    /// `None` when the destination is written directly (not a regular file).
    tmp: Option<PathBuf>,
    /// `None` once a commit began.
    file: Option<BufWriter<File>>,
    /// Renamed over `dest`: nothing to remove.
    committed: bool,
    /// The temporary file's lock (a handle on the same open file, which holds it until the
    /// last one closes), kept until this is dropped: past the rename, or past the removal.
    _lock: Option<File>,
}

/// `FILE.partial` for `FILE`.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

impl PartialFile {
    /// Creates `dest`'s temporary file, locked. One that exists and is locked belongs to
    /// another export writing the same file: refused, untouched. One that exists unlocked was
    /// left by an export killed outright: taken over, truncated.
    pub fn create(dest: &Path) -> anyhow::Result<PartialFile> {
        let is_link = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink());
        // A dangling link is replaced like a missing file.
        let dest = match is_link {
            true => std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_owned()),
            false => dest.to_owned(),
        };
        if std::fs::metadata(&dest).is_ok_and(|m| !m.is_file()) {
            let file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&dest)
                .with_context(|| format!("opening {}", dest.display()))?;
            return Ok(PartialFile {
                dest,
                tmp: None,
                file: Some(BufWriter::new(file)),
                committed: false,
                _lock: None,
            });
        }
        let tmp = partial_path(&dest);
        let file = lock_temporary(&tmp)?;
        // Ours now: a file a killed export left is emptied before anything is written.
        file.set_len(0)
            .with_context(|| format!("truncating {}", tmp.display()))?;
        let lock = file
            .try_clone()
            .with_context(|| format!("opening {} again", tmp.display()))?;
        let partial = PartialFile {
            dest,
            tmp: Some(tmp),
            file: Some(BufWriter::new(file)),
            committed: false,
            _lock: Some(lock),
        };
        // The file it replaces keeps its permissions; a new one is its owner's only, also when
        // a killed export's file is taken over (after the file is ours, so that a failure here
        // removes it).
        if let Some(tmp) = &partial.tmp {
            let permissions = match std::fs::metadata(&partial.dest) {
                Ok(m) => Some(m.permissions()),
                #[cfg(unix)]
                Err(_) => Some(std::os::unix::fs::PermissionsExt::from_mode(0o600)),
                #[cfg(not(unix))]
                Err(_) => None,
            };
            if let (Some(p), Some(file)) = (permissions, &partial.file) {
                file.get_ref()
                    .set_permissions(p)
                    .with_context(|| format!("setting the permissions of {}", tmp.display()))?;
            }
        }
        Ok(partial)
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
            .with_context(|| format!("writing {}", self.dest.display()))?;
        let Some(tmp) = self.tmp.clone() else {
            // Written directly: a device or a pipe may not sync, and has nothing to rename.
            let _ = file.sync_all();
            self.committed = true;
            return Ok(());
        };
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        // Still locked through `_lock`: released before the rename, the file could be taken
        // over (and truncated) by another export in between.
        drop(file);
        std::fs::rename(&tmp, &self.dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.dest.display()))?;
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

/// Opens `tmp` (created, `0600`, if missing; never truncated here) and takes its lock. The
/// lock is on the open file, not the name: if the name no longer leads to the file locked
/// (its export renamed or removed it between our open and our lock), that file is not the
/// temporary one any more, and the name is opened again.
fn lock_temporary(tmp: &Path) -> anyhow::Result<File> {
    for _ in 0..LOCK_ATTEMPTS {
        let mut options = OpenOptions::new();
        options.write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let file = options
            .open(tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "{} is being written by another export of the same file; wait for it to \
                 end or export to another file",
                tmp.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", tmp.display()));
            }
        }
        if still_named(&file, tmp) {
            if !plain_file_of_ours(&file) {
                bail!(
                    "{} is not a plain file of yours (it has other names, or another owner): \
                     remove it, or export to another file",
                    tmp.display()
                );
            }
            return Ok(file);
        }
    }
    bail!(
        "{} keeps being replaced by other exports of the same file",
        tmp.display()
    )
}

/// The open `file` is a regular file with no other name, owned by this process's user: one
/// that may be emptied and written over.
fn plain_file_of_ours(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        file.metadata()
            .is_ok_and(|m| m.is_file() && m.nlink() == 1 && m.uid() == me)
    }
    #[cfg(not(unix))]
    {
        file.metadata().is_ok_and(|m| m.is_file())
    }
}

/// `path` leads to the open `file` itself (the name is not a link to it).
fn still_named(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            // Not committed, or the commit failed before its rename: the temporary file goes,
            // removed while still locked (`_lock` is dropped after this), so another export
            // cannot take it over in between.
            drop(self.file.take());
            if let Some(tmp) = &self.tmp {
                let _ = std::fs::remove_file(tmp);
            }
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
    fn a_temporary_file_another_export_holds_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        std::fs::write(&dest, "old").unwrap();
        let mut first = PartialFile::create(&dest).unwrap();
        first.write_all(b"the first export's").unwrap();
        first.flush().unwrap();
        let e = PartialFile::create(&dest).err().expect("refused");
        assert!(format!("{e:#}").contains("another export"), "{e:#}");
        // Neither its temporary file nor the destination was touched, and it goes on.
        assert_eq!(
            std::fs::read_to_string(partial_path(&dest)).unwrap(),
            "the first export's"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        first.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            "the first export's"
        );
        // Once it is done, the file is free again.
        PartialFile::create(&dest).unwrap().commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_name_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        let victim = dir.path().join("important.db");
        std::fs::write(&victim, "precious").unwrap();
        let before = std::fs::metadata(&victim).unwrap().permissions();
        // A symbolic link, then a hard link: neither is written through.
        std::os::unix::fs::symlink(&victim, partial_path(&dest)).unwrap();
        assert!(PartialFile::create(&dest).is_err(), "through a symlink");
        std::fs::remove_file(partial_path(&dest)).unwrap();
        std::fs::hard_link(&victim, partial_path(&dest)).unwrap();
        let e = PartialFile::create(&dest)
            .err()
            .expect("through a hard link");
        assert!(e.to_string().contains("not a plain file of yours"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions(), before);
        assert!(!dest.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_temporary_file_a_killed_export_left_is_taken_over() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("acme.ndjson");
        // Left by an export killed outright: no lock held, longer than what comes next.
        std::fs::write(partial_path(&dest), "a killed export's lines, cut short").unwrap();
        std::fs::set_permissions(partial_path(&dest), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let mut f = PartialFile::create(&dest).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "whole");
        assert!(!partial_path(&dest).exists());
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a new file is its owner's only");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_written_through_and_a_device_directly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("backup-1.ndjson");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("latest.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut f = PartialFile::create(&link).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o640,
            "the replaced file's permissions are kept"
        );
        // A new file is its owner's only: an export is a tenant's data.
        let fresh = dir.path().join("fresh.ndjson");
        PartialFile::create(&fresh).unwrap().commit().unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Not a regular file: written directly, never renamed over.
        let mut f = PartialFile::create(Path::new("/dev/null")).unwrap();
        f.write_all(b"discarded").unwrap();
        f.commit().unwrap();
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(!null.is_file());
        assert!(!Path::new("/dev/null.partial").exists());
    }
}

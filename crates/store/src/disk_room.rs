//! Room on a file system before a whole data file is copied onto it.
//!
//! A vacuum writes a copy of the main file beside it, and a backup a copy of every data file
//! into its directory (often on the same disk). A copy that fills the disk makes the next
//! tenant write that needs a new block fail with ENOSPC, and a file whose write failed refuses
//! every later write until the server restarts (`deferred_sync`): one copy started on a nearly
//! full disk would stop every tenant's writes, and an owed vacuum retried after each restart
//! would do it again. So the copy is not started unless the file system has room for it, a
//! tenth more, and a reserve for the tenants' writes meanwhile; it is then refused with a full
//! disk's error, which an owed vacuum takes as "try again later".

use std::path::Path;

use crate::StoreError;

/// Free space left for the tenants' writes beside a copy.
pub(crate) const RESERVE_BYTES: u64 = 64 << 20;

/// Refuses to start `what`, a copy of about `bytes`, onto the file system holding `dir`
/// unless it has room for it, a tenth more and [`RESERVE_BYTES`]. A file system whose free
/// space cannot be read is not refused (the copy then meets a full disk as before).
pub(crate) fn require_room(dir: &Path, bytes: u64, what: &str) -> Result<(), StoreError> {
    let need = bytes
        .saturating_add(bytes / 10)
        .saturating_add(RESERVE_BYTES);
    let have = match available(dir) {
        Ok(have) => have,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "free space unknown; {what} goes ahead");
            return Ok(());
        }
    };
    if have >= need {
        return Ok(());
    }
    Err(StoreError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "not enough free space for {what}: it needs about {} MiB (a copy of {} MiB, a \
                 tenth more, and {} MiB kept for writes), and {} MiB are free",
                need >> 20,
                bytes >> 20,
                RESERVE_BYTES >> 20,
                have >> 20
            ),
        ),
    })
}

/// Stops a copy under way onto the file system holding `dir` once its free space falls below
/// half of [`RESERVE_BYTES`]: the room checked at its start may have gone to something else
/// since (another copy, a vacuum during a backup, the tenants' own writes), and the copy must
/// not take the last of what their writes need. Called between a copy's chunks; a file system
/// whose free space cannot be read is not stopped.
pub(crate) fn keep_reserve(dir: &Path, what: &str) -> Result<(), StoreError> {
    match available(dir) {
        Ok(have) if have < RESERVE_BYTES / 2 => Err(StoreError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{what} stopped: {} MiB are free, less than the {} MiB kept for the \
                     tenants' writes",
                    have >> 20,
                    RESERVE_BYTES >> 21
                ),
            ),
        }),
        _ => Ok(()),
    }
}

/// Bytes this process may still write on the file system holding `path` (blocks free to
/// unprivileged users).
fn available(path: &Path) -> std::io::Result<u64> {
    #[cfg(test)]
    if let Some(fake) = tests::FAKE_AVAILABLE.get() {
        return Ok(fake);
    }
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated path and `st` is written by the call before it is
    // read, only when it succeeds.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // u32 or u64 by platform.
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// The free space this thread's calls see, for tests of a nearly full disk.
        pub(crate) static FAKE_AVAILABLE: Cell<Option<u64>> = const { Cell::new(None) };
    }

    #[test]
    fn a_copy_needs_its_size_a_tenth_more_and_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let real = available(dir.path()).unwrap();
        assert!(real > 0);
        FAKE_AVAILABLE.set(Some(100 << 20));
        let copy = 30 << 20;
        // 30 + 3 + 64 = 97 MiB of 100: room.
        require_room(dir.path(), copy, "a test copy").unwrap();
        // 33 + 3.3 + 64 > 100: none.
        let refused = require_room(dir.path(), 33 << 20, "a test copy").unwrap_err();
        let StoreError::Io { source, .. } = &refused else {
            panic!("{refused:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
        assert!(source.to_string().contains("100 MiB are free"), "{source}");
        FAKE_AVAILABLE.set(None);
    }

    /// On a disk without room for the copy, a vacuum and a backup are refused before they
    /// write anything, with a full disk's error, and the tenants' writes go on.
    #[test]
    fn a_vacuum_or_backup_without_room_is_refused_and_writes_go_on() {
        let (dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        crate::test_tenant::put(&store, t, "before", b"1");
        FAKE_AVAILABLE.set(Some(RESERVE_BYTES));
        let refused = store.vacuum().unwrap_err();
        assert!(
            matches!(&refused, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
            "{refused:?}"
        );
        let dest = dir.path().join("backups").join("b1");
        let refused = store
            .backup(&dest, &Default::default(), &|| Ok(()))
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("not enough free space for a backup"),
            "{refused}"
        );
        assert!(!dest.exists() && !crate::backup::partial_dir_of(&dest).exists());
        // Nothing of either was left on the disk, and the file takes writes.
        assert!(!crate::vacuum::new_file_of(&dir.path().join("db")).exists());
        crate::test_tenant::put(&store, t, "after", b"2");
        // With room, both run.
        FAKE_AVAILABLE.set(None);
        store.vacuum().unwrap();
        store
            .backup(&dest, &Default::default(), &|| Ok(()))
            .unwrap();
        assert!(dest.is_dir());
    }

    /// A tenant's data move into its own file stops at a chunk once the disk's free space is
    /// below half the reserve, its copy left for the move's own clean-up; with room it goes on.
    #[test]
    fn a_data_move_stops_when_the_disk_fills_under_it() {
        let (_dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        for i in 0..10 {
            crate::test_tenant::put(&store, t, &format!("k{i}"), b"v");
        }
        let file = store.create_dedicated(t).unwrap();
        let target = || crate::placement::CopyTarget::File(&file);
        let (after, _) = store.copy_chunk(t, target(), None, 2).unwrap();
        FAKE_AVAILABLE.set(Some(RESERVE_BYTES / 4));
        let stopped = store
            .copy_chunk(t, target(), after.as_deref(), 2)
            .unwrap_err();
        FAKE_AVAILABLE.set(None);
        assert!(
            stopped.to_string().contains("a data move stopped"),
            "{stopped}"
        );
        store.copy_chunk(t, target(), after.as_deref(), 2).unwrap();
    }

    /// Free space that falls below half the reserve while a backup copies (another copy, the
    /// tenants' writes) stops it, its partial copy removed, and the tenants' writes go on.
    #[test]
    fn a_backup_stops_when_the_disk_fills_under_it() {
        let (dir, store, t) = crate::test_tenant::store_with_tenant("acme");
        for i in 0..50 {
            crate::test_tenant::put(&store, t, &format!("k{i}"), &[7; 512]);
        }
        keep_reserve(dir.path(), "a test copy").unwrap();
        let dest = dir.path().join("backups").join("b1");
        // Room at the start; almost none once the copy has begun (its first check of stop).
        let stopped = store
            .backup(&dest, &Default::default(), &|| {
                FAKE_AVAILABLE.set(Some(RESERVE_BYTES / 4));
                Ok(())
            })
            .unwrap_err();
        FAKE_AVAILABLE.set(None);
        let StoreError::Io { source, .. } = &stopped else {
            panic!("{stopped:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
        assert!(
            source
                .to_string()
                .contains("a backup stopped: 16 MiB are free"),
            "{source}"
        );
        assert!(!dest.exists() && !crate::backup::partial_dir_of(&dest).exists());
        crate::test_tenant::put(&store, t, "after", b"2");
    }
}

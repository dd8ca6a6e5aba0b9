//! Storage errors.

/// Something below the engine failed. None of these are the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// Writing the data directory failed (a full disk, an I/O error): the file refuses every
    /// later write until the server reopens it, because what the kernel dropped cannot be
    /// known; reads of cached pages go on. What was acknowledged before stays durable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("data directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// An I/O failure of the file (now, or earlier: redb then refuses every write) is
/// [`StoreError::Unavailable`]; anything else is the engine's own error.
fn classify(e: redb::Error) -> StoreError {
    match e {
        // A reader's refused write-back (`deferred_sync`) is not a failure of the file.
        redb::Error::Io(io) if io.kind() != std::io::ErrorKind::WouldBlock => {
            StoreError::Unavailable(describe_io(&io))
        }
        redb::Error::PreviousIo => {
            StoreError::Unavailable("an earlier write to the data file failed".into())
        }
        other => StoreError::Engine(other.to_string()),
    }
}

/// An I/O error for people: a full disk or quota is named as such.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    // ENOSPC and EDQUOT on Linux; `StorageFull` where the platform maps them.
    if e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122)) {
        format!("the data directory's disk is full ({e})")
    } else {
        format!("I/O error on the data file ({e})")
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                classify(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError
);

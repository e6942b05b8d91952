//! What can go wrong with the store, in words an operator can act on.

use std::io;
use std::path::{Path, PathBuf};

/// A store operation failed.
///
/// sled's and serde's errors are converted here, where they enter, so that callers see
/// what happened to *their* store (which path, locked or corrupt) rather than a backend's
/// vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's lock. sled admits one process per store, and the
    /// running daemon is the usual holder: a second `clawpen run`, or a CLI command that
    /// opens the store while the daemon runs.
    #[error("another clawpen process (is `clawpen run` running?) owns the store at {}", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The files or a record cannot be read back: a damaged disk, a truncated copy, or
    /// something other than clawpen writing there. Nothing is repaired automatically.
    #[error("the store at {} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What was found unreadable, and where.
        detail: String,
    },
    /// The store was written by a clawpen with another on-disk format; reading it anyway
    /// could misinterpret or destroy its records.
    #[error(
        "the store at {} has format version {found}, but this clawpen reads version {expected}",
        path.display()
    )]
    Incompatible {
        /// The store's directory.
        path: PathBuf,
        /// The format version recorded in the store.
        found: u32,
        /// The format version this build reads and writes.
        expected: u32,
    },
    /// The operating system refused a file operation (permissions, disk full, missing dir).
    #[error("I/O error on the store at {}", path.display())]
    Io {
        /// The store's directory (or the file that failed).
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// An earlier write failed (a full or failing disk), so the store is closed until it
    /// can be opened again, which it tries by itself; nothing was written.
    #[error("the store at {} cannot be used right now ({reason}); retrying by itself", path.display())]
    Unavailable {
        /// The store's directory.
        path: PathBuf,
        /// The last failure.
        reason: String,
    },
    /// sled failed in a way that is neither I/O nor corruption (a bug or a misuse).
    #[error("the store failed: {0}")]
    Db(String),
    /// A record could not be turned into JSON; a bug in a record type, never bad input.
    #[error("could not encode a record: {0}")]
    Encode(String),
}

impl StoreError {
    /// Converts an error of sled's `open`: besides I/O, anything sled refuses while reading
    /// its files back (bad config, corruption) means the files are not a store we can read.
    pub(super) fn opening(path: &Path, error: sled::Error) -> Self {
        match error {
            sled::Error::Io(source) => Self::io(path, source),
            sled::Error::Corruption { at, .. } => Self::corrupt(path, corruption_detail(at)),
            sled::Error::Unsupported(why) | sled::Error::ReportableBug(why) => {
                Self::corrupt(path, format!("sled cannot read it: {why}"))
            }
            other => Self::Db(other.to_string()),
        }
    }

    /// Converts an error of sled during normal operation.
    pub(super) fn from_sled(path: &Path, error: sled::Error) -> Self {
        match error {
            sled::Error::Io(source) => Self::io(path, source),
            sled::Error::Corruption { at, .. } => Self::corrupt(path, corruption_detail(at)),
            other => Self::Db(other.to_string()),
        }
    }

    /// Converts the outcome of a sled transaction whose closure aborts with a `StoreError`.
    pub(super) fn from_transaction(
        path: &Path,
        error: sled::transaction::TransactionError<StoreError>,
    ) -> Self {
        match error {
            sled::transaction::TransactionError::Abort(error) => error,
            sled::transaction::TransactionError::Storage(error) => Self::from_sled(path, error),
        }
    }

    /// An I/O error, recognising sled's lock failure. sled reports it as an `Other` error
    /// whose text says "could not acquire lock" (wrapping the `WouldBlock` of flock).
    pub(super) fn io(path: &Path, source: io::Error) -> Self {
        let text = source.to_string();
        if source.kind() == io::ErrorKind::WouldBlock
            || text.contains("could not acquire lock")
            || text.contains("WouldBlock")
        {
            Self::Locked {
                path: path.to_path_buf(),
            }
        } else {
            Self::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A copy of this error for each of the writers one failed flush served. An I/O error
    /// cannot be copied; each gets it as [`StoreError::Unavailable`], which is what the
    /// store is after it (see `health`).
    pub(super) fn shared(&self) -> Self {
        match self {
            Self::Locked { path } => Self::Locked { path: path.clone() },
            Self::Corrupt { path, detail } => Self::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
            Self::Incompatible {
                path,
                found,
                expected,
            } => Self::Incompatible {
                path: path.clone(),
                found: *found,
                expected: *expected,
            },
            Self::Io { path, source } => Self::Unavailable {
                path: path.clone(),
                reason: source.to_string(),
            },
            Self::Unavailable { path, reason } => Self::Unavailable {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::Db(why) => Self::Db(why.clone()),
            Self::Encode(why) => Self::Encode(why.clone()),
        }
    }

    /// A corrupt store or record.
    pub(super) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

fn corruption_detail(at: Option<sled::DiskPtr>) -> String {
    match at {
        Some(at) => format!("sled found corrupted data at {at:?}"),
        None => "sled found corrupted data".to_string(),
    }
}

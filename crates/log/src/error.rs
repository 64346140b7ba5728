//! The read side's error: why reading a log (a ledger folder or a bundle) failed.

use crate::codec::CodecError;
use crate::segment::FormatError;
use std::path::PathBuf;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The signed checkpoints a log carries cannot be read (a bundle's section, a folder's files).
    #[error("{path}: checkpoints: {source}")]
    Checkpoints {
        /// The bundle or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::bundle::CheckpointSectionError,
    },
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A frame, header or trailer is damaged (where no position is known: a header, a trailer).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The frame of the record at `position` is damaged.
    #[error("position {position}: {source}")]
    Frame {
        /// The position of the record whose frame is damaged.
        position: u64,
        /// What is wrong, with the file and offset.
        source: FormatError,
    },
    /// The log ends before the end its HEAD records: acknowledged records were cut or lost.
    #[error("{path}: the log holds {found} records but its HEAD records {recorded}: {missing} acknowledged records were cut or lost", missing = recorded.saturating_sub(*found))]
    Cut {
        /// The ledger folder.
        path: PathBuf,
        /// The size HEAD records.
        recorded: u64,
        /// The committed records found.
        found: u64,
    },
    /// The log reaches the size its HEAD records, but with another root: records were changed.
    #[error(
        "{path}: the root of the first {size} records is {found}, but HEAD records {recorded}: the log was rewritten"
    )]
    AnchorMismatch {
        /// The ledger folder.
        path: PathBuf,
        /// The size HEAD records.
        size: u64,
        /// The root HEAD records (hex).
        recorded: String,
        /// The root found (hex).
        found: String,
    },
    /// The HEAD file is missing or damaged.
    #[error(transparent)]
    Anchor(#[from] crate::anchor::AnchorError),
    /// The folder is not a ledger folder (no `segments/`) and not a bundle.
    #[error("{0}: not a posledger ledger (no segments/ folder) and not a bundle")]
    NotALedger(PathBuf),
    /// A record's body does not decode.
    #[error("{path}: position {position}: {error}")]
    Codec {
        /// The file.
        path: PathBuf,
        /// The record's position.
        position: u64,
        /// What failed.
        error: CodecError,
    },
    /// The log breaks an invariant at this position.
    #[error("{path}: position {position}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The position.
        position: u64,
        /// What is wrong.
        what: String,
    },
    /// A position past the head.
    #[error("position {position} is past the end of the log ({size} records)")]
    OutOfRange {
        /// Asked for.
        position: u64,
        /// The log size.
        size: u64,
    },
    /// The writer's index (sled, the stream index) cannot answer; the source is the writer's own typed
    /// error (`ledger::IndexUnavailable`), which this read-side crate does not know.
    #[error("index: {0}")]
    Index(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A thread panicked while holding one of the ledger's locks: the state it guards cannot be trusted;
    /// reopen the ledger.
    #[error("a thread panicked while holding the ledger's {lock} lock; reopen the ledger")]
    LockPoisoned {
        /// Which lock.
        lock: &'static str,
    },
    /// The ledger was closed (a subscription outlived it).
    #[error("the ledger is closed")]
    Closed,
}

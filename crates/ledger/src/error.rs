//! Typed errors, one enum per operation family. Every message names the file, position or input index.

use log::codec::CodecError;
use log::lifecycle::Violation;
use log::model::{EventId, FieldError, StreamId};
use log::segment::FormatError;
pub use log::ReadError;
use std::path::PathBuf;

/// Why a ledger could not be opened (or recovered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The folder holds files but no posledger ledger.
    #[error("{0}: not a posledger ledger (the folder is not empty and has no segments)")]
    NotALedger(PathBuf),
    /// A segment file is damaged, missing or out of place.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The log breaks an invariant (dense positions, one ledger id, contiguous segments, ...).
    #[error("{path}: {what}")]
    Corrupt {
        /// The file where it was found.
        path: PathBuf,
        /// What is wrong, with the position.
        what: String,
    },
    /// A record of the log could not be read back.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The sled index could not be opened even after a rebuild.
    #[error("index at {path}: {what}")]
    Index {
        /// The index folder.
        path: PathBuf,
        /// What sled said.
        what: String,
    },
    /// The folder is already open (its lock is held by another writer).
    #[error("{0}: the ledger is open in another process")]
    Locked(PathBuf),
    /// The path exists and is not a folder.
    #[error("{0}: exists and is not a folder")]
    NotAFolder(PathBuf),
}

/// Why an append was refused or failed. Refusals (everything but `Io` and `Poisoned`) write nothing.
/// `index` is the event's index within the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// More events than [`crate::MAX_APPEND_EVENTS`].
    #[error("append of {len} events exceeds the limit of {max}")]
    TooMany {
        /// Events given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field failed validation.
    #[error("event {index}: {error}")]
    Field {
        /// Index in the request.
        index: usize,
        /// What is wrong.
        error: FieldError,
    },
    /// An illegal decision: a lifecycle rule is broken.
    #[error("event {index} ({event} on {stream}): {violation}")]
    Rule {
        /// Index in the request.
        index: usize,
        /// The stream.
        stream: StreamId,
        /// The event type.
        event: &'static str,
        /// The broken rule.
        violation: Violation,
    },
    /// Optimistic concurrency: the stream does not hold the expected number of events.
    #[error("event {index}: {stream} has {actual} events, expected {expected}")]
    WrongExpectedVersion {
        /// Index in the request.
        index: usize,
        /// The stream.
        stream: StreamId,
        /// What the caller expected.
        expected: u64,
        /// What the stream holds.
        actual: u64,
    },
    /// The event id was used before for a different event.
    #[error("event {index}: event_id {event_id} was already used at position {position} for a different event")]
    IdempotencyConflict {
        /// Index in the request.
        index: usize,
        /// The id.
        event_id: EventId,
        /// Where it was used.
        position: u64,
    },
    /// The same event id twice in one request.
    #[error("event {index}: event_id {event_id} appears twice in the append")]
    DuplicateEventId {
        /// Index in the request.
        index: usize,
        /// The id.
        event_id: EventId,
    },
    /// An explicit recorded-at time before the head's (recorded-at never decreases along the log).
    #[error("recorded_at {given} is before the head's {head}")]
    RecordedAtBeforeHead {
        /// The time given.
        given: chrono::DateTime<chrono::Utc>,
        /// The head's recorded-at time.
        head: chrono::DateTime<chrono::Utc>,
    },
    /// A record could not be encoded (for example over the size limit).
    #[error("event {index}: {error}")]
    Codec {
        /// Index in the request.
        index: usize,
        /// What failed.
        error: CodecError,
    },
    /// Reading an earlier record (to check an event id) failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing or syncing failed. The append is not acknowledged; the ledger refuses appends until reopened.
    #[error("{path}: write failed: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An import whose last events were all already in the log (idempotent retries) after it had
    /// written others: its last record would carry no commit marker. Nothing of it is kept.
    #[error("the import ends with events already in the log after writing new ones; put the retried events first")]
    ImportEndsWithRetries,
    /// An earlier write or sync failed; reopen the ledger (recovery cuts any torn tail).
    #[error("the ledger refuses appends after an earlier I/O failure ({0}); reopen it")]
    Poisoned(String),
}

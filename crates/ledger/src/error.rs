//! Typed errors, one enum per operation family. Every message names the file, position or input index.

pub use crate::guard::LockPoisoned;
use crate::index::StoreError;
use log::codec::CodecError;
use log::lifecycle::Violation;
use log::model::{DirectiveId, EventId, FieldError, StreamId};
use log::segment::FormatError;
pub use log::ReadError;
use std::path::PathBuf;
use std::sync::Arc;

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
    #[error("index at {path}: {source}")]
    Index {
        /// The index folder.
        path: PathBuf,
        /// What failed.
        source: StoreError,
    },
    /// A thread panicked while holding one of the ledger's locks during the open.
    #[error(transparent)]
    LockPoisoned(#[from] LockPoisoned),
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
    /// A restore's given record holds another value of a field the writer assigns than the writer
    /// would write there (its position, stream version, recorded-at time or commit marker).
    #[error("event {index} (position {position}): the record's {field} is {given}, the writer would write {writer}")]
    GivenRecordDiffers {
        /// Index in the request.
        index: usize,
        /// The position the writer assigns it.
        position: u64,
        /// The field that differs.
        field: &'static str,
        /// The record's value.
        given: String,
        /// The writer's value.
        writer: String,
    },
    /// A record body over the write limit ([`log::codec::MAX_ENTRY_BYTES`], what a C2SP tlog-tiles
    /// entry holds). Nothing is written.
    #[error(
        "event {index}: its record of {len} bytes exceeds the limit of {max} bytes for one log entry \
         (a long directive: list fewer models, or record it with stop-models, which splits it)"
    )]
    EntryTooLarge {
        /// Index in the request.
        index: usize,
        /// The encoded record body's length.
        len: usize,
        /// The limit ([`log::codec::MAX_ENTRY_BYTES`]).
        max: usize,
    },
    /// `stop_models` had to split a directive whose record would exceed the entry limit, and a part's
    /// id (`<id>-p<N>`) would be longer than the limit of an identifier. Nothing is written.
    #[error(
        "directive {directive} needs {parts} records to fit the entry limit, and the id of part {part} \
         ({directive}-p{part}) would be longer than {max} bytes; use a shorter directive id"
    )]
    PartIdTooLong {
        /// The directive given.
        directive: DirectiveId,
        /// The part whose id does not fit (2 or more).
        part: usize,
        /// How many parts the directive needs.
        parts: usize,
        /// The identifier limit ([`log::model::MAX_ID_LEN`]).
        max: usize,
    },
    /// Reading an earlier record (to check an event id) failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing or syncing failed. The append is not acknowledged; the ledger refuses appends until reopened.
    #[error("{path}: write failed: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The error (shared with the [`WriterFailure`] later appends are refused with).
        source: Arc<std::io::Error>,
    },
    /// An import whose last events were all already in the log (idempotent retries) after it had
    /// written others: its last record would carry no commit marker. Nothing of it is kept.
    #[error("the import ends with events already in the log after writing new ones; put the retried events first")]
    ImportEndsWithRetries,
    /// An earlier write or sync failed, or a thread panicked holding the writer's state; reopen the
    /// ledger (recovery cuts any torn tail).
    #[error("the ledger refuses appends after an earlier failure ({0}); reopen it")]
    Poisoned(#[source] WriterFailure),
}

impl From<LockPoisoned> for ReadError {
    fn from(poisoned: LockPoisoned) -> ReadError {
        ReadError::LockPoisoned { lock: poisoned.lock }
    }
}

impl From<LockPoisoned> for AppendError {
    fn from(poisoned: LockPoisoned) -> AppendError {
        AppendError::Poisoned(WriterFailure::LockPoisoned(poisoned))
    }
}

/// The failure after which the ledger refuses appends until it is reopened (the first one stays). The
/// I/O error is shared, since every later refusal reports the same failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriterFailure {
    /// Writing an append's records to the live segment failed.
    #[error("write to {path} failed: {source}")]
    Write {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// Sealing a segment (its trailer and fsync) or creating the next one failed.
    #[error("sealing {path} failed: {source}")]
    Seal {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// The group commit's fsync failed (whether the bytes before it are on disk is unknown).
    #[error("fsync of {path} failed: {source}")]
    Sync {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// Recording the log's end in HEAD failed.
    #[error("recording the log's end in {path} failed: {source}")]
    Anchor {
        /// The HEAD file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// An aborted import could not be cut off the live segment.
    #[error("an aborted import could not be cut off the log ({path}): {source}")]
    ImportCut {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
    /// An import was aborted after part of it had been checked into the writer's view.
    #[error("an import was aborted after part of it was checked")]
    ImportAborted,
    /// A thread panicked while holding the writer's state.
    #[error(transparent)]
    LockPoisoned(#[from] LockPoisoned),
}

/// Why [`crate::Ledger::close`] failed: the log could not be made durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The final flush of the log failed; appends after the last acknowledged one may be lost.
    #[error(transparent)]
    Flush(AppendError),
}

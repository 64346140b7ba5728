//! One atomic append of any length, streamed: [`Ledger::import`] and [`Import`].
//!
//! An import holds the writer lock from [`Ledger::begin_import`] to [`Import::commit`]. Events are
//! pushed one at a time and cut into chunks of about [`IMPORT_CHUNK_EVENTS`] (never between the two
//! halves of a replacement, which the lifecycle rules check within one append). Each chunk is checked
//! against the view and written to the live segment as it comes, *without* a commit marker; the last
//! chunk carries the commit marker on its last record, so the whole import becomes visible at once, after
//! one group-commit fsync, or not at all:
//!
//! - a crash before the commit leaves records without a commit marker, which recovery cuts;
//! - a refused event (a bad field, a broken rule) aborts the import: the bytes it wrote are cut off the
//!   live segment and the writer's state is restored, so the log is exactly as it was. If a chunk had
//!   already been checked into the writer's view, the ledger then refuses appends until it is reopened
//!   (its in-memory view holds the aborted events; the log does not).
//!
//! Memory is bounded by two chunks of events, not by the import. An import never spans segments: the
//! live segment may grow past `segment_max_bytes` by one import, as it may by one append; once the
//! import is committed, a live segment at or past the limit is sealed ([`Import::commit`]).

use crate::apply::precheck;
use crate::error::{AppendError, WriterFailure};
use crate::indexer::{IndexStop, FOLLOWER_BACKLOG_EVENTS};
use crate::ledger::{Ledger, WriteMode, Writer, MAX_APPEND_EVENTS};
use crate::merkle::{Frontier, Hash};
use crate::model::AppendEvent;
use crate::model::{Event, Sn, TerminalEvent};
use crate::source::Head;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::MutexGuard;

/// Events per chunk of an import (a chunk is cut at the first balanced point past this many).
pub const IMPORT_CHUNK_EVENTS: usize = 65_536;
/// The longest a chunk may grow while a replacement's two halves are apart (then the chunk is checked as
/// it is, and the unpaired half refused): the limit of one append.
pub const IMPORT_MAX_CHUNK_EVENTS: usize = MAX_APPEND_EVENTS;

const _: () = assert!(IMPORT_CHUNK_EVENTS <= IMPORT_MAX_CHUNK_EVENTS, "a chunk fits in one append");
const _: () =
    assert!(IMPORT_CHUNK_EVENTS as u64 <= FOLLOWER_BACKLOG_EVENTS, "an import chunk fits in the follower's backlog");

/// What a committed import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// Records written.
    pub written: u64,
    /// Events that were already in the log (idempotent retries, by event id).
    pub retried: u64,
    /// The head after the import.
    pub head: Head,
}

/// Why an import failed. Nothing of it is in the log.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ImportError {
    /// The tag the caller pushed with the event at fault (an input line, say), when one event is.
    pub tag: Option<u64>,
    /// What failed; an `index` in it counts events from the start of the import.
    #[source]
    pub error: AppendError,
}

struct Chunk {
    events: Vec<AppendEvent>,
    tags: Vec<u64>,
    /// Events pushed before this chunk.
    offset: u64,
}

/// The halves of replacements (an `issued` that replaces, and its `replaced`) seen in a chunk without
/// their other half: a chunk is only cut where none is open, since the lifecycle rules check the two
/// halves within one append (used by imports and restores).
#[derive(Default)]
pub(crate) struct Halves {
    /// (old SN, new SN) of each open half.
    issued: HashSet<(Sn, Sn)>,
    replaced: HashSet<(Sn, Sn)>,
}

impl Halves {
    /// Notes `event` if it is one half of a replacement.
    pub(crate) fn track(&mut self, event: &AppendEvent) {
        let Event::Terminal(d) = &event.event else { return };
        let (half, mine, theirs) = match &d.event {
            TerminalEvent::Issued(issued) => match &issued.replaces {
                Some(old) => ((old.clone(), d.device.clone()), &mut self.issued, &mut self.replaced),
                None => return,
            },
            TerminalEvent::Replaced { by } => ((d.device.clone(), by.clone()), &mut self.replaced, &mut self.issued),
            _ => return,
        };
        if !theirs.remove(&half) {
            mine.insert(half);
        }
    }

    /// No half is open: a chunk may end here.
    pub(crate) fn balanced(&self) -> bool {
        self.issued.is_empty() && self.replaced.is_empty()
    }

    /// Forgets every open half (a new chunk starts).
    pub(crate) fn clear(&mut self) {
        self.issued.clear();
        self.replaced.clear();
    }
}

/// The writer's state before the import, to restore on abort.
struct Before {
    size: u64,
    frontier: Frontier,
    last_leaf: Hash,
    last_recorded_at: Option<DateTime<Utc>>,
    active_len: u64,
    sparse_len: usize,
}

/// An import in progress (see the module documentation). Dropping it without [`Import::commit`] aborts it.
pub struct Import<'a> {
    ledger: &'a Ledger,
    writer: MutexGuard<'a, Writer>,
    recorded_at: DateTime<Utc>,
    before: Before,
    ready: Option<Chunk>,
    current: Chunk,
    halves: Halves,
    written: u64,
    retried: u64,
    /// A chunk was checked into the writer's view (an abort must then poison the writer).
    view_changed: bool,
    /// The log size after the last record written, and whether that record carries the commit marker.
    end: u64,
    last_commit: bool,
    done: bool,
}

impl Ledger {
    /// Starts an import (one atomic append of any length, streamed; see [`Import`]), recorded at
    /// `recorded_at` (`None`: now, clamped up to the head's). Holds the writer lock until it is committed
    /// or dropped.
    pub fn begin_import(&self, recorded_at: Option<DateTime<Utc>>) -> Result<Import<'_>, AppendError> {
        let mut writer = self.shared.writer.lock()?;
        let recorded_at = writer.writable_at(recorded_at)?;
        // An import never spans segments: start it in a fresh one if the live one is full.
        if writer.active.len >= self.shared.options.segment_max_bytes && writer.size > writer.active.first_position {
            self.seal_and_rotate(&mut writer)?;
        }
        let sparse_len = self.shared.active_sparse.read()?.2.len();
        let before = Before {
            size: writer.size,
            frontier: writer.frontier.clone(),
            last_leaf: writer.last_leaf,
            last_recorded_at: writer.last_recorded_at,
            active_len: writer.active.len,
            sparse_len,
        };
        let end = writer.size;
        Ok(Import {
            ledger: self,
            writer,
            recorded_at,
            before,
            ready: None,
            current: Chunk { events: Vec::new(), tags: Vec::new(), offset: 0 },
            halves: Halves::default(),
            written: 0,
            retried: 0,
            view_changed: false,
            end,
            last_commit: true,
            done: false,
        })
    }

    /// Imports every event of `events` (each with a caller's tag, such as its input line) as one atomic
    /// append. See [`Import`].
    pub fn import(
        &self,
        events: impl IntoIterator<Item = (AppendEvent, u64)>,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<Imported, ImportError> {
        let mut import = self.begin_import(recorded_at).map_err(|error| ImportError { tag: None, error })?;
        for (event, tag) in events {
            import.push(event, tag)?;
        }
        import.commit()
    }
}

impl Import<'_> {
    /// Adds one event. It is checked when its chunk is written (a chunk after it is started, or at the
    /// commit), so an error may name an event pushed earlier: [`ImportError::tag`] says which.
    pub fn push(&mut self, event: AppendEvent, tag: u64) -> Result<(), ImportError> {
        self.halves.track(&event);
        self.current.events.push(event);
        self.current.tags.push(tag);
        let len = self.current.events.len();
        if (len >= IMPORT_CHUNK_EVENTS && self.halves.balanced()) || len >= IMPORT_MAX_CHUNK_EVENTS {
            let offset = self.current.offset + len as u64;
            let full = std::mem::replace(&mut self.current, Chunk { events: Vec::new(), tags: Vec::new(), offset });
            self.halves.clear();
            if let Some(ready) = self.ready.replace(full) {
                self.write(ready, false)?;
            }
        }
        Ok(())
    }

    /// Events pushed so far.
    pub fn pushed(&self) -> u64 {
        self.current.offset + self.current.events.len() as u64
    }

    /// Writes what is left, the last record with the commit marker, and waits until the import is
    /// durable and published.
    pub fn commit(mut self) -> Result<Imported, ImportError> {
        let current = std::mem::replace(&mut self.current, Chunk { events: Vec::new(), tags: Vec::new(), offset: 0 });
        match self.ready.take() {
            Some(ready) if current.events.is_empty() => self.write(ready, true)?,
            Some(ready) => {
                self.write(ready, false)?;
                self.write(current, true)?;
            }
            None if current.events.is_empty() => {}
            None => self.write(current, true)?,
        }
        self.done = true;
        let (ledger, end, written, retried) = (self.ledger, self.end, self.written, self.retried);
        // If the last chunk held only retries, the records written before it carry no commit marker, and
        // none can be added without a record: refuse (the abort cuts them).
        if written > 0 && !self.last_commit {
            self.done = false;
            return Err(ImportError { tag: None, error: AppendError::ImportEndsWithRetries });
        }
        drop(self);
        let head = if written == 0 {
            ledger.head()
        } else {
            ledger.wait_published(end).map_err(|error| ImportError { tag: None, error })?
        };
        // An import may leave the live segment far past its size limit (it never spans segments): it
        // is sealed now, not at the next append, since until then every open of the ledger (every
        // command) hashes the whole live segment to check HEAD — 2 s for `posledger head` after a
        // 10^7-line `posledger append`, against 0.04 s. The import is committed (fsynced, anchored)
        // whatever happens here: a failed seal poisons the writer (the next append reports it) and the
        // next open recovers it; see `seal_if_full` for when it does not seal.
        if written > 0 {
            let _ = ledger.seal_if_full();
        }
        Ok(Imported { written, retried, head })
    }

    /// Checks and writes one chunk; on any error, aborts the import.
    fn write(&mut self, chunk: Chunk, commit_last: bool) -> Result<(), ImportError> {
        let Chunk { events, tags, offset } = chunk;
        let tag_of = |error: &AppendError| index_of(error).and_then(|i| tags.get(i).copied());
        let global = |error: AppendError| reindex(error, offset);
        if let Err(error) = precheck(&events) {
            let tag = tag_of(&error);
            self.abort();
            return Err(ImportError { tag, error: global(error) });
        }
        let mode = WriteMode { commit_last, may_seal: false, import_from: Some(self.before.size), given: None };
        let result = self.ledger.append_locked(&mut self.writer, &events, Some(self.recorded_at), mode);
        match result {
            Ok((end, appended, written)) => {
                let count = written.as_ref().map_or(0, |(fresh, _)| fresh.len() as u64);
                self.written += count;
                self.retried += events.len() as u64 - count;
                if count > 0 {
                    self.view_changed = true;
                    self.end = end;
                    self.last_commit = commit_last;
                }
                debug_assert_eq!(appended.written, count);
                self.writer.follow(&self.ledger.shared.index.backlog, events, written);
                Ok(())
            }
            Err(error) => {
                let tag = tag_of(&error);
                self.abort();
                Err(ImportError { tag, error: global(error) })
            }
        }
    }

    /// Cuts what the import wrote off the live segment and restores the writer's state; poisons the
    /// writer if its view took any of the import's events.
    fn abort(&mut self) {
        self.done = true;
        let before = &self.before;
        let writer = &mut *self.writer;
        if writer.active.len > before.active_len {
            if let Err(e) = writer.active.cut(before.active_len) {
                let path = writer.active.path.clone();
                writer.poisoned = Some(WriterFailure::ImportCut { path, source: std::sync::Arc::new(e) });
            }
        }
        writer.size = before.size;
        writer.frontier = before.frontier.clone();
        writer.last_leaf = before.last_leaf;
        writer.last_recorded_at = before.last_recorded_at;
        match self.ledger.shared.active_sparse.write() {
            Ok(mut sparse) => sparse.2.truncate(before.sparse_len),
            Err(poisoned) => {
                writer.poisoned.get_or_insert(WriterFailure::LockPoisoned(poisoned));
            }
        }
        if self.view_changed {
            writer.poisoned.get_or_insert(WriterFailure::ImportAborted);
            self.ledger.shared.index.stop(IndexStop::ImportAborted);
        }
        assert_eq!(writer.size, before.size, "an aborted import leaves the log as it was");
    }
}

impl Drop for Import<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.abort();
        }
    }
}

/// The index of the event an append error names, if it names one.
pub(crate) fn index_of(error: &AppendError) -> Option<usize> {
    match error {
        AppendError::Field { index, .. }
        | AppendError::Rule { index, .. }
        | AppendError::WrongExpectedVersion { index, .. }
        | AppendError::IdempotencyConflict { index, .. }
        | AppendError::DuplicateEventId { index, .. }
        | AppendError::GivenRecordDiffers { index, .. }
        | AppendError::EntryTooLarge { index, .. }
        | AppendError::Codec { index, .. } => Some(*index),
        _ => None,
    }
}

/// The same error with its index counted from the start of the import.
fn reindex(mut error: AppendError, offset: u64) -> AppendError {
    let shift = usize::try_from(offset).unwrap_or(usize::MAX);
    match &mut error {
        AppendError::Field { index, .. }
        | AppendError::Rule { index, .. }
        | AppendError::WrongExpectedVersion { index, .. }
        | AppendError::IdempotencyConflict { index, .. }
        | AppendError::DuplicateEventId { index, .. }
        | AppendError::GivenRecordDiffers { index, .. }
        | AppendError::EntryTooLarge { index, .. }
        | AppendError::Codec { index, .. } => *index = index.saturating_add(shift),
        _ => {}
    }
    error
}

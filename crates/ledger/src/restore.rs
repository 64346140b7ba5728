//! Rebuilding a ledger in a new folder from the bodies of its records: [`Restore`].
//!
//! The bodies are the exact bytes the source stores (format byte included: the Merkle leaf data), in
//! position order, from a bundle, a ledger folder or (later) published tiles. Each body is decoded and
//! goes through the writer's own path ([`Ledger::append_locked`] in its *given* mode): the records of
//! one atomic append (up to and including the record with the commit marker) are checked together by
//! the same code that checks a new append (field limits, the lifecycle rules, event ids), the writer
//! assigns positions, stream versions, the recorded-at time and the commit marker as it would, and
//! the body is written as given only if its decoded fields are exactly those. So the restored segments
//! hold the given bytes, and the restored root is the source's; a record the writer would refuse is
//! refused with its position.
//!
//! - **Speed**: the ledger is written in relaxed durability (no fsync per append) and made durable
//!   once by [`Restore::finish`]. Memory is bounded by one chunk ([`RESTORE_CHUNK_BYTES`], at most
//!   [`RESTORE_MAX_CHUNK_BYTES`]): a long atomic append (an import) is checked and written in chunks
//!   cut where no replacement is half written, as [`crate::Import`] does.
//! - **All or nothing, in a new folder**: the target must not exist or be an empty folder. The ledger
//!   is built in a staging folder beside it (`.<name>.restoring`), and renamed to the target only once
//!   it is durable and its head is the expected one. A failure removes the staging folder (and nothing
//!   else); a restore killed midway leaves the target absent (or empty) and the staging folder, which
//!   the next restore into that target refuses to reuse until it is removed.

use crate::apply::precheck;
use crate::error::{AppendError, CloseError, OpenError};
use crate::faults::{DiskOp, SeamFaults};
use crate::import::{index_of, Halves, IMPORT_CHUNK_EVENTS, IMPORT_MAX_CHUNK_EVENTS};
use crate::ledger::disk::sync_dir;
use crate::ledger::{Durability, Given, GivenRecord, Ledger, Options, WriteMode};
use crate::lock::DirLock;
use crate::merkle::Hash;
use crate::model::{AppendEvent, Record};
use crate::source::Head;
use chrono::{DateTime, Utc};
use log::codec::{decode_record, CodecError};
use log::ReadError;
use std::io;
use std::path::{Path, PathBuf};

/// Once a chunk of one atomic append holds this many bytes of bodies, it is written at the next point
/// where no replacement is half written.
pub const RESTORE_CHUNK_BYTES: usize = 64 << 20;
/// The most bytes of bodies a chunk holds: past this it is written as it is (as an import's chunk is
/// past [`IMPORT_MAX_CHUNK_EVENTS`]), and a replacement whose halves it separates is refused.
pub const RESTORE_MAX_CHUNK_BYTES: usize = 512 << 20;
/// The staging folder's name is the target's with this suffix (and a leading dot).
pub const RESTORE_STAGING_SUFFIX: &str = ".restoring";

const _: () = assert!(RESTORE_CHUNK_BYTES <= RESTORE_MAX_CHUNK_BYTES, "the soft cut comes before the hard one");
const _: () = assert!(IMPORT_CHUNK_EVENTS <= IMPORT_MAX_CHUNK_EVENTS, "the soft cut comes before the hard one");

/// Why a restore failed. Whatever it had created is removed (the staging folder); the target is as
/// it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target exists and is not an empty folder: it is never touched.
    #[error("{0}: exists and is not empty; a restore needs a new or empty folder")]
    NotEmpty(PathBuf),
    /// The target exists and is not a folder (a file, a symbolic link).
    #[error("{0}: exists and is not a folder")]
    NotAFolder(PathBuf),
    /// The target's parent folder does not exist, or the target has no name.
    #[error("{0}: the folder to restore into must be a new name in an existing folder")]
    NoParent(PathBuf),
    /// A staging folder of an earlier restore into the same target is there: that restore was
    /// interrupted (or is running). Remove it to restore again.
    #[error("{staging}: an earlier restore into this folder was interrupted (or is running); remove {staging} first")]
    Interrupted {
        /// The staging folder.
        staging: PathBuf,
    },
    /// The OS refused (creating, syncing or renaming the folders).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The new ledger could not be created.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A record's body does not decode.
    #[error("position {position}: {error}")]
    Decode {
        /// The record's place in the stream (its position).
        position: u64,
        /// What failed.
        #[source]
        error: CodecError,
    },
    /// The writer refuses the record at `position`: a field, a lifecycle rule, an event id, or a field
    /// the writer assigns (position, version, recorded-at, commit marker) that is not what it would write.
    #[error("position {position}: {error}")]
    Refused {
        /// The position of the record at fault.
        position: u64,
        /// Why the writer refuses it.
        #[source]
        error: AppendError,
    },
    /// The stream ended inside an atomic append: its last records carry no commit marker.
    #[error("the records end at {size} inside an append (from position {open_from}, no commit marker)")]
    Uncommitted {
        /// Records given.
        size: u64,
        /// The first record of the unfinished append.
        open_from: u64,
    },
    /// The restored log is whole and valid, but it is not the expected one.
    #[error("the restored log has {restored_size} records with root {restored_root}, but {expected_size} records with root {expected_root} were expected")]
    HeadDiffers {
        /// The expected size.
        expected_size: u64,
        /// The expected root (hex).
        expected_root: String,
        /// The restored size.
        restored_size: u64,
        /// The restored root (hex).
        restored_root: String,
    },
    /// Writing or syncing the new ledger failed.
    #[error(transparent)]
    Write(AppendError),
    /// The new ledger could not be closed.
    #[error(transparent)]
    Close(#[from] CloseError),
    /// Reading the restored ledger back failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The restore had already failed (and removed what it created).
    #[error("the restore already failed")]
    Failed,
}

impl RestoreError {
    /// True when the records were refused (the data is at fault), false for usage and I/O errors.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RestoreError::Decode { .. }
                | RestoreError::Refused { .. }
                | RestoreError::Uncommitted { .. }
                | RestoreError::HeadDiffers { .. }
        )
    }
}

/// A finished restore: the ledger is durable in its folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The ledger's folder (the target).
    pub dir: PathBuf,
    /// Its head (the expected one).
    pub head: Head,
    /// Its ledger id.
    pub ledger_id: u64,
    /// Why the index could not be persisted, if it could not (the next open rebuilds it).
    pub index_warning: Option<String>,
}

/// The records of the open atomic append not yet written.
#[derive(Default)]
struct Chunk {
    events: Vec<AppendEvent>,
    given: Given,
    /// The position of the first.
    first: u64,
}

/// A restore in progress (see the module documentation). Dropping it without [`Restore::finish`]
/// removes the staging folder.
pub struct Restore {
    ledger: Option<Ledger>,
    target: PathBuf,
    staging: PathBuf,
    options: Options,
    chunk: Chunk,
    halves: Halves,
    /// The recorded-at time of the open append (its first record's), if one is open.
    open_at: Option<DateTime<Utc>>,
    /// The first position of the open append.
    open_from: u64,
    /// A chunk of the open append was written (the next may not seal: an append never spans segments).
    open_written: bool,
    pushed: u64,
    done: bool,
}

impl Restore {
    /// Starts a restore into `dir`, which must not exist or be an empty folder in an existing folder.
    /// The new ledger gets `ledger_id` (the source's: the restored ledger is the same log), or a new
    /// random one. `options.durability` is ignored: a restore writes without fsyncs and makes the
    /// whole ledger durable once, in [`Restore::finish`].
    pub fn create(dir: &Path, ledger_id: Option<u64>, options: Options) -> Result<Restore, RestoreError> {
        let (parent, name) = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(name)) => (if parent.as_os_str().is_empty() { Path::new(".") } else { parent }, name),
            _ => return Err(RestoreError::NoParent(dir.to_owned())),
        };
        if !parent.is_dir() {
            return Err(RestoreError::NoParent(dir.to_owned()));
        }
        check_target(dir)?;
        let mut staging_name = std::ffi::OsString::from(".");
        staging_name.push(name);
        staging_name.push(RESTORE_STAGING_SUFFIX);
        let staging = parent.join(staging_name);
        match std::fs::create_dir(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(RestoreError::Interrupted { staging }),
            Err(source) => return Err(RestoreError::Io { path: staging, source }),
        }
        let options = Options { durability: Durability::Relaxed, ..options };
        let mut restore = Restore {
            ledger: None,
            target: dir.to_owned(),
            staging,
            options,
            chunk: Chunk::default(),
            halves: Halves::default(),
            open_at: None,
            open_from: 0,
            open_written: false,
            pushed: 0,
            done: false,
        };
        // From here on, a failure removes the staging folder (the drop).
        let faults = SeamFaults(&restore.options.faults);
        faults.observe(&DiskOp::CreateDir { path: &restore.staging });
        sync_dir(parent, &faults).map_err(|source| RestoreError::Io { path: parent.to_owned(), source })?;
        let lock = DirLock::acquire(&restore.staging)?;
        let ledger = crate::ledger::recovery::open_locked(lock, restore.options.clone(), ledger_id)?;
        assert_eq!(ledger.head().size, 0, "a restore starts from an empty ledger");
        restore.ledger = Some(ledger);
        Ok(restore)
    }

    /// The folder the ledger is built in until [`Restore::finish`] renames it to the target (files a
    /// caller adds there, such as signed checkpoints, move with it).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Records given so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The root of the first `size` records written (each append is readable once its commit marker
    /// was pushed).
    pub fn root_at(&self, size: u64) -> Result<Hash, RestoreError> {
        Ok(self.ledger.as_ref().ok_or(RestoreError::Failed)?.root_at(size)?)
    }

    /// Adds the next record's body (the exact bytes the source stores). The records of one atomic
    /// append are checked and written when its commit marker comes (a long one in chunks), so an
    /// error may name a record pushed earlier. On any error the restore is over: what it created is
    /// removed.
    pub fn push(&mut self, body: &[u8]) -> Result<(), RestoreError> {
        if self.ledger.is_none() {
            return Err(RestoreError::Failed);
        }
        let result = self.push_inner(body);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn push_inner(&mut self, body: &[u8]) -> Result<(), RestoreError> {
        let position = self.pushed;
        let Record { position: given_position, version, event_id, recorded_at, commit, event } =
            decode_record(body).map_err(|error| RestoreError::Decode { position, error })?;
        let at = *self.open_at.get_or_insert_with(|| {
            self.open_from = position;
            recorded_at
        });
        if self.chunk.events.is_empty() {
            self.chunk.first = position;
        }
        let event = AppendEvent { event, event_id, expected_version: None };
        self.halves.track(&event);
        self.chunk.events.push(event);
        self.chunk.given.bodies.extend_from_slice(body);
        let end = self.chunk.given.bodies.len();
        self.chunk.given.records.push(GivenRecord { position: given_position, version, recorded_at, commit, end });
        self.pushed += 1;
        let (len, bytes) = (self.chunk.events.len(), end);
        if commit {
            self.write(at, true)?;
        } else if ((len >= IMPORT_CHUNK_EVENTS || bytes >= RESTORE_CHUNK_BYTES) && self.halves.balanced())
            || len >= IMPORT_MAX_CHUNK_EVENTS
            || bytes >= RESTORE_MAX_CHUNK_BYTES
        {
            self.write(at, false)?;
        }
        Ok(())
    }

    /// Checks and writes the chunk through the writer; at the append's end, publishes it.
    fn write(&mut self, at: DateTime<Utc>, commit_last: bool) -> Result<(), RestoreError> {
        let ledger = self.ledger.as_ref().ok_or(RestoreError::Failed)?;
        let first = self.chunk.first;
        let refused = |error: AppendError| match error {
            AppendError::Io { .. } | AppendError::Poisoned(_) => RestoreError::Write(error),
            error => {
                let position = first.saturating_add(index_of(&error).map_or(0, |i| i as u64));
                RestoreError::Refused { position, error }
            }
        };
        let events = std::mem::take(&mut self.chunk.events);
        precheck(&events).map_err(refused)?;
        // Every event id of the log is new: one already in it would be an idempotent retry, which the
        // writer does not write again (`import_from: 0` makes it a duplicate).
        let mode = WriteMode {
            commit_last,
            may_seal: !self.open_written,
            import_from: Some(0),
            given: Some(&self.chunk.given),
        };
        let end = {
            let mut writer = ledger.shared.writer.lock().map_err(|e| RestoreError::Write(e.into()))?;
            let (end, appended, written) =
                ledger.append_locked(&mut writer, &events, Some(at), mode).map_err(refused)?;
            assert_eq!(appended.written, events.len() as u64, "a restore writes every record it is given");
            writer.follow(&ledger.shared.index.backlog, events, written);
            end
        };
        assert_eq!(end, self.pushed, "the log holds every record pushed and written");
        self.chunk.given.clear();
        self.halves.clear();
        if commit_last {
            self.open_at = None;
            self.open_written = false;
            ledger.wait_published(end).map_err(RestoreError::Write)?;
        } else {
            self.open_written = true;
        }
        Ok(())
    }

    /// Ends the restore: refuses a stream that ends inside an append, makes the ledger durable (one
    /// fsync of what is not yet), checks that its head is `expected` (a signed checkpoint's size and
    /// root, or the source's head), closes it and renames the staging folder to the target. Only then
    /// is the ledger there. On any error, what the restore created is removed.
    pub fn finish(mut self, expected: Head) -> Result<Restored, RestoreError> {
        let result = self.finish_inner(expected);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn finish_inner(&mut self, expected: Head) -> Result<Restored, RestoreError> {
        if self.open_at.is_some() {
            return Err(RestoreError::Uncommitted { size: self.pushed, open_from: self.open_from });
        }
        let ledger = self.ledger.take().ok_or(RestoreError::Failed)?;
        let ledger_id = ledger.ledger_id();
        let head = ledger.flush().map_err(RestoreError::Write)?;
        if head != expected {
            return Err(RestoreError::HeadDiffers {
                expected_size: expected.size,
                expected_root: expected.root_hex(),
                restored_size: head.size,
                restored_root: head.root_hex(),
            });
        }
        let closed = ledger.close()?;
        assert_eq!(closed.head, head, "the close keeps the restored head");
        // The target is checked again: it may have been filled meanwhile (renaming over a non-empty
        // folder fails anyway).
        check_target(&self.target)?;
        let faults = SeamFaults(&self.options.faults);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RestoreError::Io { path, source }
        };
        std::fs::rename(&self.staging, &self.target).map_err(io(&self.target))?;
        faults.observe(&DiskOp::Rename { from: &self.staging, to: &self.target });
        self.done = true;
        let parent = match self.target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent, &faults).map_err(io(parent))?;
        Ok(Restored { dir: self.target.clone(), head, ledger_id, index_warning: closed.index_warning })
    }

    /// Removes what the restore created: closes the ledger (dropping it shuts its threads down), then
    /// removes the staging folder.
    fn abandon(&mut self) {
        drop(self.ledger.take());
        if !self.done {
            self.done = true;
            // Best effort: a folder that cannot be removed is reported by the next restore into the
            // same target (`Interrupted`).
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The target must not exist, or be an empty folder (not a symbolic link).
fn check_target(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RestoreError::Io { path: dir.to_owned(), source }),
        Ok(meta) if !meta.is_dir() => Err(RestoreError::NotAFolder(dir.to_owned())),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).map_err(|source| RestoreError::Io { path: dir.to_owned(), source })?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(RestoreError::NotEmpty(dir.to_owned())),
            }
        }
    }
}

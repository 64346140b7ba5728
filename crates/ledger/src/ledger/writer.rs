//! The write path: validate, encode and write an append under the writer lock, seal and rotate segments, group commit (fsync, then the anchor), flush.

use super::*;
use crate::apply::{precheck, Pending, Steps, Written};
use crate::codec::{encode_record_ref, RecordRef, MAX_RECORD_BYTES};
use crate::error::AppendError;
use crate::index::View;
use crate::indexer::{Applied, Backlog, FollowerMsg};
use crate::lifecycle::Status;
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::model::{AppendEvent, Directive, Event, StopReason, TerminalEvent};
use crate::segment::{push_frame, FileKind, Header, Trailer, HEADER_LEN};
use crate::source::Head;
use crate::source::{FileMeta, SEGMENTS_DIR, SPARSE_EVERY_RECORDS};
use chrono::{DateTime, Utc};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// How [`Ledger::append_locked`] writes a batch of records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteMode {
    /// Mark the last record as the append's commit (false for all but the last chunk of an import).
    pub(crate) commit_last: bool,
    /// Seal the live segment first if the batch would carry it past its size limit (never inside an
    /// import: an append never spans two segments).
    pub(crate) may_seal: bool,
    /// For a chunk of an import: the position the import started at (an event id used since is a
    /// duplicate within the append).
    pub(crate) import_from: Option<u64>,
}

impl WriteMode {
    /// A whole append.
    pub(crate) const APPEND: WriteMode = WriteMode { commit_last: true, may_seal: true, import_from: None };
}

pub(crate) struct Active {
    pub(crate) seq: u32,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) first_position: u64,
    pub(crate) len: u64,
}

pub(crate) struct Writer {
    pub(crate) view: View,
    pub(crate) size: u64,
    pub(crate) frontier: Frontier,
    pub(crate) last_recorded_at: Option<DateTime<Utc>>,
    pub(crate) active: Active,
    pub(crate) poisoned: Option<String>,
    pub(crate) buf: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) last_leaf: Hash,
    /// The follower's queue (see [`crate::indexer`]); `None` once the ledger is closing.
    pub(crate) follower_tx: Option<SyncSender<FollowerMsg>>,
}

impl Writer {
    /// The recorded-at time of the next append, if the writer may write at all: refused after an I/O
    /// failure; a given time must not be before the head's (recorded-at never decreases along the log),
    /// and "now" is clamped up to the head's.
    pub(crate) fn writable_at(&self, recorded_at: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, AppendError> {
        if let Some(why) = &self.poisoned {
            return Err(AppendError::Poisoned(why.clone()));
        }
        match (recorded_at, self.last_recorded_at) {
            (Some(given), Some(head)) if given < head => Err(AppendError::RecordedAtBeforeHead { given, head }),
            (Some(given), _) => Ok(given),
            (None, Some(head)) => Ok(Utc::now().max(head)),
            (None, None) => Ok(Utc::now()),
        }
    }

    /// Hands a written append to the follower (in log order: called under the writer lock). Blocks
    /// while the follower's queue is full.
    pub(crate) fn follow(&self, backlog: &Backlog, events: Vec<AppendEvent>, written: Option<(Vec<usize>, Steps)>) {
        let Some((fresh, steps)) = written else { return };
        // The append's records are the last `fresh.len()` of the log (positions are dense).
        let first = self.size - fresh.len() as u64;
        if let Some(tx) = &self.follower_tx {
            backlog.add(events.len() as u64);
            let written = Written { events, fresh, first, steps };
            let _ = tx.send(FollowerMsg::Apply(Applied { written, size: self.size, last_leaf: self.last_leaf }));
        }
    }

    /// Asks the follower for a snapshot of what changed since the last one.
    pub(crate) fn request_snapshot(&self) {
        if let Some(tx) = &self.follower_tx {
            let _ = tx.send(FollowerMsg::Snapshot);
        }
    }
}

impl Ledger {
    /// Appends events atomically (all or nothing), recorded now.
    pub fn append(&self, events: Vec<AppendEvent>) -> Result<Appended, AppendError> {
        self.append_at(events, None)
    }

    /// Appends events atomically with an explicit recorded-at time (a simulator's clock, an import).
    /// `None` means now. recorded_at never decreases along the log: a time before the head's is refused,
    /// and "now" is clamped up to the head's.
    pub fn append_at(
        &self,
        events: Vec<AppendEvent>,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<Appended, AppendError> {
        if events.len() > MAX_APPEND_EVENTS {
            return Err(AppendError::TooMany { len: events.len(), max: MAX_APPEND_EVENTS });
        }
        precheck(&events)?;
        let (end, appended) = {
            let mut writer = lock(&self.shared.writer);
            let (end, appended, written) = self.append_locked(&mut writer, &events, recorded_at, WriteMode::APPEND)?;
            writer.follow(&self.shared.backlog, events, written);
            (end, appended)
        };
        if appended.written == 0 {
            return Ok(Appended { head: self.head(), ..appended });
        }
        let head = self.wait_published(end)?;
        Ok(Appended { head, ..appended })
    }

    /// Records `directive` and stops every not-yet-stopped terminal (status issued or active) of its
    /// models, in one atomic append. Uses the model index; stops are timed at the directive's `at`.
    pub fn stop_models(
        &self,
        directive: Directive,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<StopModelsOutcome, AppendError> {
        directive.validate().map_err(|error| AppendError::Field { index: 0, error })?;
        let (end, appended, stopped) = {
            let mut writer = lock(&self.shared.writer);
            let mut stopped = Vec::new();
            for model in &directive.models {
                for sn in writer.view.models.get(model).map(Vec::as_slice).unwrap_or_default() {
                    if let Some(mem) = writer.view.terminal(sn) {
                        if matches!(mem.state.status, Status::Issued | Status::Active) {
                            stopped.push(sn.clone());
                        }
                    }
                }
            }
            stopped.sort();
            let id = directive.id.clone();
            let at = directive.at;
            let mut events = Vec::with_capacity(stopped.len() + 1);
            events.push(AppendEvent::from(Event::Directive(directive)));
            for sn in &stopped {
                events.push(AppendEvent::from(Event::Terminal(crate::model::DeviceEvent {
                    device: sn.clone(),
                    at,
                    event: TerminalEvent::Stopped { reason: StopReason::ModelRecall, directive: Some(id.clone()) },
                })));
            }
            if events.len() > MAX_APPEND_EVENTS {
                return Err(AppendError::TooMany { len: events.len(), max: MAX_APPEND_EVENTS });
            }
            let (end, appended, written) = self.append_locked(&mut writer, &events, recorded_at, WriteMode::APPEND)?;
            writer.follow(&self.shared.backlog, events, written);
            (end, appended, stopped)
        };
        let head = self.wait_published(end)?;
        Ok(StopModelsOutcome { stopped, appended: Appended { head, ..appended } })
    }

    /// Validates against current state, encodes, writes. Returns the log size after the append, the
    /// outcome, and (unless every event was an idempotent retry) the indices of the events written with
    /// what each did, for the follower.
    pub(crate) fn append_locked(
        &self,
        writer: &mut Writer,
        events: &[AppendEvent],
        recorded_at: Option<DateTime<Utc>>,
        mode: WriteMode,
    ) -> Result<(u64, Appended, Option<(Vec<usize>, Steps)>), AppendError> {
        let recorded_at = writer.writable_at(recorded_at)?;
        // Idempotent retries: events whose id is already in the log are not appended again.
        let mut positions = vec![0u64; events.len()];
        let mut fresh: Vec<usize> = Vec::with_capacity(events.len());
        for (index, e) in events.iter().enumerate() {
            match e.event_id.as_ref().and_then(|id| writer.view.event_id(id).map(|p| (id, p))) {
                // Within one import, an id used twice is a duplicate, as within one append.
                Some((id, position)) if mode.import_from.is_some_and(|from| position >= from) => {
                    return Err(AppendError::DuplicateEventId { index, event_id: id.clone() });
                }
                Some((id, position)) => {
                    let existing = self.read_at_unpublished(position, writer)?;
                    if existing.event != e.event {
                        return Err(AppendError::IdempotencyConflict { index, event_id: id.clone(), position });
                    }
                    positions[index] = position;
                }
                None => fresh.push(index),
            }
        }
        if fresh.is_empty() {
            return Ok((
                writer.size,
                Appended { positions, written: 0, head: Head { size: writer.size, root: writer.frontier.root() } },
                None,
            ));
        }
        let changes = Pending::check_all(&writer.view, events, &fresh).map_err(|(_, e)| e)?;
        // Encode every record; nothing has been written yet, so a failure here changes nothing.
        let first = writer.size;
        let mut buf = std::mem::take(&mut writer.buf);
        let mut body = std::mem::take(&mut writer.body);
        buf.clear();
        let mut frontier = writer.frontier.clone();
        let mut sparse_new = Vec::new();
        let mut last_leaf = [0u8; 32];
        let active_base = writer.active.len;
        let encoded: Result<(), AppendError> = (|| {
            for (i, (&index, &version)) in fresh.iter().zip(&changes.versions).enumerate() {
                let position = first + i as u64;
                let record = RecordRef {
                    position,
                    version,
                    event_id: events[index].event_id.as_ref(),
                    recorded_at,
                    commit: mode.commit_last && i + 1 == fresh.len(),
                    event: &events[index].event,
                };
                body.clear();
                encode_record_ref(&record, &mut body).map_err(|error| AppendError::Codec { index, error })?;
                assert!(body.len() <= MAX_RECORD_BYTES);
                if (position - writer.active.first_position).is_multiple_of(SPARSE_EVERY_RECORDS) {
                    sparse_new.push((position, buf.len() as u64));
                }
                push_frame(&mut buf, &body);
                last_leaf = leaf_hash(&body);
                frontier.push_leaf_hash(last_leaf);
                positions[index] = position;
            }
            Ok(())
        })();
        writer.body = body;
        if let Err(e) = encoded {
            writer.buf = buf;
            return Err(e);
        }
        // Seal the active segment first if this append would carry it past its size limit. An append
        // never spans two segments, so a sealed segment always ends on a commit marker.
        let mut active_base = active_base;
        if mode.may_seal
            && writer.active.len > HEADER_LEN as u64
            && writer.active.len + buf.len() as u64 > self.shared.options.segment_max_bytes
        {
            if let Err(e) = self.seal_and_rotate(writer) {
                writer.buf = buf;
                return Err(e);
            }
            active_base = writer.active.len;
            // Sparse offsets are relative to the segment a record lands in.
            sparse_new.clear();
            let mut offset = 0u64;
            let mut rest = &buf[..];
            let mut position = first;
            while !rest.is_empty() {
                if (position - writer.active.first_position).is_multiple_of(SPARSE_EVERY_RECORDS) {
                    sparse_new.push((position, offset));
                }
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize + 8;
                offset += len as u64;
                rest = &rest[len..];
                position += 1;
            }
        }
        let path = writer.active.path.clone();
        let write = (|| {
            let faults = SeamFaults(&self.shared.options.faults);
            faults.before_write(&path, buf.len())?;
            (&*writer.active.file).write_all(&buf)?;
            faults.observe(&DiskOp::Write { path: &path, offset: writer.active.len, bytes: &buf });
            Ok(())
        })();
        if let Err(source) = write {
            writer.poisoned = Some(format!("write to {} failed: {source}", path.display()));
            writer.buf = buf;
            return Err(AppendError::Io { path, source });
        }
        // Written: commit the new state in memory and hand the index its update.
        writer.active.len += buf.len() as u64;
        {
            let mut sparse = self.shared.active_sparse.write().unwrap_or_else(|e| e.into_inner());
            for (_, offset) in &sparse_new {
                sparse.2.push(active_base + offset);
            }
        }
        writer.buf = buf;
        writer.size = frontier.size();
        writer.frontier = frontier;
        writer.last_recorded_at = Some(recorded_at);
        writer.last_leaf = last_leaf;
        let steps = changes.commit(&mut writer.view, &fresh, events, &positions);
        assert_eq!(writer.size, first + fresh.len() as u64, "positions must be dense");
        let head = Head { size: writer.size, root: writer.frontier.root() };
        let written = fresh.len() as u64;
        Ok((writer.size, Appended { positions, written, head }, Some((fresh, steps))))
    }

    pub(crate) fn seal_and_rotate(&self, writer: &mut Writer) -> Result<(), AppendError> {
        let path = writer.active.path.clone();
        let fail = |writer: &mut Writer, source: io::Error| {
            writer.poisoned = Some(format!("sealing {} failed: {source}", path.display()));
            AppendError::Io { path: path.clone(), source }
        };
        let records = writer.size - writer.active.first_position;
        let trailer = Trailer::new(records, &writer.frontier);
        let mut bytes = Vec::new();
        trailer.encode(&mut bytes);
        let faults = SeamFaults(&self.shared.options.faults);
        let sealed = (|| {
            faults.before_write(&path, bytes.len())?;
            faults.before_sync(&path)?;
            (&*writer.active.file).write_all(&bytes)?;
            faults.observe(&DiskOp::Write { path: &path, offset: writer.active.len, bytes: &bytes });
            writer.active.file.sync_all()?;
            faults.observe(&DiskOp::Sync { path: &path });
            Ok(())
        })();
        if let Err(e) = sealed {
            return Err(fail(writer, e));
        }
        let seg_dir = self.shared.dir.join(SEGMENTS_DIR);
        let (new_path, file) =
            match create_segment(&seg_dir, writer.active.seq + 1, writer.size, self.shared.ledger_id, &faults) {
                Ok(created) => created,
                Err(e) => return Err(fail(writer, e)),
            };
        let mut meta = FileMeta {
            path: path.clone(),
            header: Header {
                kind: FileKind::Segment,
                seq: writer.active.seq,
                first_position: writer.active.first_position,
                ledger_id: self.shared.ledger_id,
            },
            records,
            readable_len: writer.active.len,
            trailer: Some(trailer),
            sparse: None,
        };
        {
            // The sealed list and the live segment's offsets change together, under both locks (taken in
            // the order readers take them: sealed, then the live segment's). A reader between two
            // separate updates saw the new live segment without the newly sealed one, and read a
            // record of the sealed segment at an offset of the new one (found by the concurrency test).
            let mut sealed = self.shared.sealed.write().unwrap_or_else(|e| e.into_inner());
            let mut sparse = self.shared.active_sparse.write().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::take(&mut sparse.2);
            *sparse = (writer.active.seq + 1, writer.size, Vec::new());
            meta.sparse = Some(Arc::new(old));
            sealed.push(meta);
        }
        writer.active = Active {
            seq: writer.active.seq + 1,
            path: new_path,
            file: Arc::new(file),
            first_position: writer.size,
            len: HEADER_LEN as u64,
        };
        Ok(())
    }

    /// Waits until the log of size `end` is published, syncing it if nobody else is (group commit).
    pub(crate) fn wait_published(&self, end: u64) -> Result<Head, AppendError> {
        let sync = self.shared.options.durability == Durability::Durable;
        let mut durable = lock(&self.shared.durable);
        loop {
            if durable.published.head.size >= end {
                return Ok(durable.published.head);
            }
            if let Some(why) = &durable.failed {
                return Err(AppendError::Poisoned(why.clone()));
            }
            if durable.syncing {
                durable = self.shared.published_cv.wait(durable).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            durable.syncing = true;
            drop(durable);
            let result = self.sync_once(sync);
            durable = lock(&self.shared.durable);
            durable.syncing = false;
            match result {
                Ok(published) => {
                    let head = published.head;
                    if head.size > durable.published.head.size {
                        durable.published = published;
                    }
                }
                Err(why) => {
                    durable.failed = Some(why.clone());
                    drop(durable);
                    lock(&self.shared.writer).poisoned = Some(why.clone());
                    self.shared.published_cv.notify_all();
                    return Err(AppendError::Poisoned(why));
                }
            }
            self.shared.published_cv.notify_all();
        }
    }

    /// One group-commit round: takes what has been written so far and fsyncs it.
    pub(crate) fn sync_once(&self, sync: bool) -> Result<Published, String> {
        let (file, path, published) = {
            let writer = lock(&self.shared.writer);
            let head = Head { size: writer.size, root: writer.frontier.root() };
            (
                writer.active.file.clone(),
                writer.active.path.clone(),
                Published { head, frontier: writer.frontier.clone() },
            )
        };
        if sync {
            let synced = (|| {
                let faults = SeamFaults(&self.shared.options.faults);
                faults.before_sync(&path)?;
                file.sync_data()?;
                faults.observe(&DiskOp::Sync { path: &path });
                Ok::<(), io::Error>(())
            })();
            if let Err(e) = synced {
                return Err(format!("fsync of {} failed: {e}", path.display()));
            }
            // The end is recorded durably before anything it covers is acknowledged (HEAD never lags an
            // acknowledged append; in relaxed mode it waits for `flush`). Group commits are serialised
            // by `Durable::syncing`, so the recorded end only moves forward.
            let mut anchor = lock(&self.shared.anchor);
            if let Err(e) = anchor.record(published.head, &SeamFaults(&self.shared.options.faults)) {
                return Err(format!("recording the log's end in {} failed: {e}", anchor.path().display()));
            }
        }
        Ok(published)
    }

    /// Makes every append durable (fsync) and published; in durable mode this is already so.
    pub fn flush(&self) -> Result<Head, AppendError> {
        let size = lock(&self.shared.writer).size;
        let mut durable = lock(&self.shared.durable);
        while durable.syncing {
            durable = self.shared.published_cv.wait(durable).unwrap_or_else(|e| e.into_inner());
        }
        // After a failed fsync, whether the bytes written before it are on disk is unknown (a second
        // fsync may succeed without writing them): never publish them; the ledger must be reopened.
        if let Some(why) = &durable.failed {
            return Err(AppendError::Poisoned(why.clone()));
        }
        durable.syncing = true;
        drop(durable);
        let result = self.sync_once(true);
        let mut durable = lock(&self.shared.durable);
        durable.syncing = false;
        let result = match result {
            Ok(published) => {
                if published.head.size > durable.published.head.size {
                    durable.published = published;
                }
                Ok(durable.published.head)
            }
            Err(why) => {
                durable.failed = Some(why.clone());
                Err(AppendError::Poisoned(why))
            }
        };
        drop(durable);
        if let Err(AppendError::Poisoned(why)) = &result {
            // Refuse appends before they write (as a failed group commit does).
            lock(&self.shared.writer).poisoned = Some(why.clone());
        }
        self.shared.published_cv.notify_all();
        if let Ok(head) = &result {
            assert!(head.size >= size);
        }
        result
    }
}

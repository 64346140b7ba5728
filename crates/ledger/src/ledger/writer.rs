//! The write path: validate, encode and write an append under the writer lock, seal and rotate segments, group commit (fsync, then the anchor), flush.

use super::segment_writer::{create_segment, Active};
use super::{Appended, Durability, Ledger, Published, StopModelsOutcome, MAX_APPEND_EVENTS};
use crate::apply::{precheck, Pending, Steps, Written};
use crate::codec::{encode_record_ref, RecordRef, MAX_ENTRY_BYTES, MAX_RECORD_BYTES};
use crate::error::{AppendError, WriterFailure};
use crate::index::View;
use crate::indexer::{Applied, Backlog, FollowerMsg};
use crate::lifecycle::Status;
use crate::merkle::{leaf_hashes_into, Frontier, Hash};
use crate::model::{AppendEvent, Directive};
use crate::recall::recall;
use crate::segment::{push_frame, FileKind, Header, Trailer, FRAME_PREFIX_LEN, HEADER_LEN};
use crate::source::{FileMeta, Head, SEGMENTS_DIR, SPARSE_EVERY_RECORDS};
use chrono::{DateTime, Utc};
use std::io;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

const _: () = assert!(SPARSE_EVERY_RECORDS > 0, "sparse offsets are kept every so many records");
const _: () = assert!(super::DEFAULT_SEGMENT_BYTES > HEADER_LEN as u64, "a default segment holds more than its header");
const _: () = assert!(MAX_RECORD_BYTES <= u32::MAX as usize, "a frame's length prefix holds any record");

/// How [`Ledger::append_locked`] writes a batch of records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteMode<'g> {
    /// Mark the last record as the append's commit (false for all but the last chunk of an import).
    pub(crate) commit_last: bool,
    /// Seal the live segment first if the batch would carry it past its size limit (never inside an
    /// import: an append never spans two segments).
    pub(crate) may_seal: bool,
    /// For a chunk of an import: the position the import started at (an event id used since is a
    /// duplicate within the append).
    pub(crate) import_from: Option<u64>,
    /// For a restore: the bodies to write, given rather than encoded (one per event, in order). Each
    /// is written as it is, after its decoded fields were found to be what the writer would write.
    pub(crate) given: Option<&'g Given>,
}

impl WriteMode<'static> {
    /// A whole append.
    pub(crate) const APPEND: WriteMode<'static> =
        WriteMode { commit_last: true, may_seal: true, import_from: None, given: None };
}

/// The bodies of a batch of records, given as they are stored (a restore): one flat buffer, and per
/// record the fields the writer assigns, as decoded from its body.
#[derive(Debug, Default)]
pub(crate) struct Given {
    pub(crate) bodies: Vec<u8>,
    pub(crate) records: Vec<GivenRecord>,
}

/// One given record: what its body says the writer assigned, and where the body ends in
/// [`Given::bodies`].
#[derive(Debug)]
pub(crate) struct GivenRecord {
    pub(crate) position: u64,
    pub(crate) version: u64,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) commit: bool,
    pub(crate) end: usize,
}

impl Given {
    pub(crate) fn clear(&mut self) {
        self.bodies.clear();
        self.records.clear();
    }

    /// The body of the `i`-th record and its fields.
    fn get(&self, i: usize) -> Option<(&[u8], &GivenRecord)> {
        let record = self.records.get(i)?;
        let start = match i.checked_sub(1) {
            Some(before) => self.records.get(before)?.end,
            None => 0,
        };
        Some((self.bodies.get(start..record.end)?, record))
    }

    /// The given body of the event `index`, after checking that its fields are those of `writes` (what
    /// the writer assigns it).
    fn body_for(&self, index: usize, writes: &RecordRef<'_>) -> Result<&[u8], AppendError> {
        let differs = |field: &'static str, given: String, writer: String| AppendError::GivenRecordDiffers {
            index,
            position: writes.position,
            field,
            given,
            writer,
        };
        let Some((body, given)) = self.get(index) else {
            return Err(differs("body", "none".into(), "a record".into()));
        };
        if given.position != writes.position {
            return Err(differs("position", given.position.to_string(), writes.position.to_string()));
        }
        if given.version != writes.version {
            return Err(differs("version", given.version.to_string(), writes.version.to_string()));
        }
        if given.recorded_at != writes.recorded_at {
            return Err(differs("recorded_at", given.recorded_at.to_rfc3339(), writes.recorded_at.to_rfc3339()));
        }
        if given.commit != writes.commit {
            return Err(differs("commit", given.commit.to_string(), writes.commit.to_string()));
        }
        if body.len() > MAX_RECORD_BYTES {
            let error = crate::codec::CodecError::TooLarge { len: body.len(), max: MAX_RECORD_BYTES };
            return Err(AppendError::Codec { index, error });
        }
        Ok(body)
    }
}

pub(crate) struct Writer {
    pub(crate) view: View,
    pub(crate) size: u64,
    pub(crate) frontier: Frontier,
    pub(crate) last_recorded_at: Option<DateTime<Utc>>,
    pub(crate) active: Active,
    /// The failure after which the writer refuses appends (until the ledger is reopened).
    pub(crate) poisoned: Option<WriterFailure>,
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
            let mut writer = self.shared.writer.lock()?;
            let (end, appended, written) = self.append_locked(&mut writer, &events, recorded_at, WriteMode::APPEND)?;
            writer.follow(&self.shared.index.backlog, events, written);
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
    ///
    /// A directive whose record would exceed [`MAX_ENTRY_BYTES`] is split into several directive
    /// records in the same append ([`crate::recall::split_directive`]: the given id, then `<id>-p2`,
    /// `<id>-p3`, …), and each stop names the part that lists its terminal's model.
    pub fn stop_models(
        &self,
        directive: Directive,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<StopModelsOutcome, AppendError> {
        directive.validate().map_err(|error| AppendError::Field { index: 0, error })?;
        let (end, appended, recall) = {
            let mut writer = self.shared.writer.lock()?;
            let mut running = Vec::new();
            for model in &directive.models {
                for (sn, mem) in writer.view.model_terminals(model) {
                    if matches!(mem.state.status, Status::Issued | Status::Active) {
                        running.push((sn, model.clone()));
                    }
                }
            }
            let mut recall = recall(directive, running)?;
            let events = std::mem::take(&mut recall.events);
            if events.len() > MAX_APPEND_EVENTS {
                return Err(AppendError::TooMany { len: events.len(), max: MAX_APPEND_EVENTS });
            }
            let (end, appended, written) = self.append_locked(&mut writer, &events, recorded_at, WriteMode::APPEND)?;
            writer.follow(&self.shared.index.backlog, events, written);
            (end, appended, recall)
        };
        let head = self.wait_published(end)?;
        Ok(StopModelsOutcome {
            stopped: recall.stopped,
            directives: recall.directives,
            appended: Appended { head, ..appended },
        })
    }

    /// Validates against current state, encodes, writes. Returns the log size after the append, the
    /// outcome, and (unless every event was an idempotent retry) the indices of the events written with
    /// what each did, for the follower.
    pub(crate) fn append_locked(
        &self,
        writer: &mut Writer,
        events: &[AppendEvent],
        recorded_at: Option<DateTime<Utc>>,
        mode: WriteMode<'_>,
    ) -> Result<(u64, Appended, Option<(Vec<usize>, Steps)>), AppendError> {
        let recorded_at = writer.writable_at(recorded_at)?;
        // Idempotent retries: events whose id is already in the log are not appended again.
        let mut positions = vec![0u64; events.len()];
        let mut fresh: Vec<usize> = Vec::with_capacity(events.len());
        for ((index, e), slot) in events.iter().enumerate().zip(positions.iter_mut()) {
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
                    *slot = position;
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
        let mut last_leaf = [0u8; 32];
        let mut body_ends: Vec<usize> = Vec::with_capacity(fresh.len());
        let active_base = writer.active.len;
        #[expect(
            clippy::indexing_slicing,
            reason = "bound proven: fresh holds indices of events, and positions has one entry per event"
        )]
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
                // The event id and the event of a given record are its own (decoded from its body);
                // the fields the writer assigns are checked against what the body says.
                let written: &[u8] = match mode.given {
                    Some(given) => given.body_for(index, &record)?,
                    None => {
                        body.clear();
                        encode_record_ref(&record, &mut body).map_err(|error| AppendError::Codec { index, error })?;
                        // The write limit: a new record must fit one tlog-tiles entry. A restore copies
                        // the records of an existing log as they are (readers accept larger ones).
                        if body.len() > MAX_ENTRY_BYTES {
                            return Err(AppendError::EntryTooLarge { index, len: body.len(), max: MAX_ENTRY_BYTES });
                        }
                        &body
                    }
                };
                assert!(written.len() <= MAX_RECORD_BYTES);
                push_frame(&mut buf, written);
                body_ends.push(buf.len());
                positions[index] = position;
            }
            // The leaves of the whole append, hashed together (`leaf_hashes_into`): each frame starts
            // where the one before ended, and is its prefix (length, CRC) then its body.
            let mut start = 0;
            let bodies: Vec<&[u8]> = body_ends
                .iter()
                .map(|&end| {
                    let frame = buf.get(start..end).unwrap_or_default();
                    start = end;
                    // Each frame was just written into `buf` as its prefix and a non-empty body: a
                    // shorter one is a bug, and an empty leaf in its place would give a wrong root.
                    assert!(frame.len() > FRAME_PREFIX_LEN, "a frame holds its prefix and a body");
                    frame.get(FRAME_PREFIX_LEN..).unwrap_or_default()
                })
                .collect();
            assert!(bodies.len() == fresh.len(), "one frame a fresh event");
            let mut leaves = vec![[0u8; 32]; bodies.len()];
            leaf_hashes_into(&bodies, &mut leaves);
            frontier.extend(&leaves);
            last_leaf = leaves.last().copied().unwrap_or(last_leaf);
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
        }
        // Sparse offsets are relative to the segment the records land in.
        let sparse_new = sparse_offsets(&buf, first, writer.active.first_position);
        let faults = self.shared.faults();
        if let Err(e) = writer.active.write_frames(&buf, &faults) {
            let (path, source) = (writer.active.path.clone(), Arc::new(e));
            writer.poisoned = Some(WriterFailure::Write { path: path.clone(), source: Arc::clone(&source) });
            writer.buf = buf;
            return Err(AppendError::Io { path, source });
        }
        // Written: commit the new state in memory and hand the index its update.
        match self.shared.active_sparse.write() {
            Ok(mut sparse) => sparse.2.extend(sparse_new.iter().map(|(_, offset)| active_base + offset)),
            Err(poisoned) => {
                // Readers' offsets cannot be trusted: the records are written but never published.
                writer.poisoned = Some(WriterFailure::LockPoisoned(poisoned));
                writer.buf = buf;
                return Err(poisoned.into());
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

    /// Seals the live segment if it holds records and has reached its size limit (after an import,
    /// which may carry it past the limit); a failure poisons the writer.
    ///
    /// Only in durable mode, where the records are already fsynced and anchored: in relaxed mode the
    /// seal's fsync would be the import's first, and a failure of it must not be left to a later flush.
    /// It never waits for the writer lock: whoever holds it (another import, an append) seals a full
    /// segment itself before it writes, and an import that is committed must not wait on another one.
    pub(crate) fn seal_if_full(&self) -> Result<(), AppendError> {
        if self.shared.options.durability != Durability::Durable {
            return Ok(());
        }
        let Some(mut writer) = self.shared.writer.try_lock()? else { return Ok(()) };
        if writer.poisoned.is_none()
            && writer.active.len >= self.shared.options.segment_max_bytes
            && writer.size > writer.active.first_position
        {
            self.seal_and_rotate(&mut writer)?;
        }
        Ok(())
    }

    /// Seals the live segment (its trailer, fsynced) and starts the next one. A failure poisons the
    /// writer.
    pub(crate) fn seal_and_rotate(&self, writer: &mut Writer) -> Result<(), AppendError> {
        let path = writer.active.path.clone();
        let fail = |writer: &mut Writer, e: io::Error| {
            let source = Arc::new(e);
            writer.poisoned = Some(WriterFailure::Seal { path: path.clone(), source: Arc::clone(&source) });
            AppendError::Io { path: path.clone(), source }
        };
        let records = writer.size - writer.active.first_position;
        let trailer = Trailer::new(records, &writer.frontier);
        let mut bytes = Vec::new();
        trailer.encode(&mut bytes);
        let faults = self.shared.faults();
        if let Err(e) = writer.active.seal(&bytes, &faults) {
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
            let locked = self.shared.sealed.write().and_then(|sealed| Ok((sealed, self.shared.active_sparse.write()?)));
            let (mut sealed, mut sparse) = match locked {
                Ok(locked) => locked,
                Err(poisoned) => {
                    writer.poisoned = Some(WriterFailure::LockPoisoned(poisoned));
                    return Err(poisoned.into());
                }
            };
            let old = std::mem::take(&mut sparse.2);
            *sparse = (writer.active.seq + 1, writer.size, Vec::new());
            meta.sparse = Some(Arc::new(old));
            sealed.push(meta);
        }
        writer.active = Active::new(writer.active.seq + 1, new_path, file, writer.size, HEADER_LEN as u64);
        Ok(())
    }

    /// Waits until the log of size `end` is published, syncing it if nobody else is (group commit).
    pub(crate) fn wait_published(&self, end: u64) -> Result<Head, AppendError> {
        let sync = self.shared.options.durability == Durability::Durable;
        let mut durable = self.shared.durable.lock()?;
        loop {
            if durable.published.head.size >= end {
                return Ok(durable.published.head);
            }
            if let Some(why) = &durable.failed {
                return Err(AppendError::Poisoned(why.clone()));
            }
            if durable.syncing {
                durable = self.shared.durable.wait(&self.shared.published_cv, durable)?;
                continue;
            }
            durable.syncing = true;
            drop(durable);
            let result = self.sync_once(sync);
            durable = self.shared.durable.lock()?;
            durable.syncing = false;
            match result {
                Ok(published) => self.publish(&mut durable, published),
                Err(why) => {
                    durable.failed = Some(why.clone());
                    drop(durable);
                    self.fail(&why);
                    return Err(AppendError::Poisoned(why));
                }
            }
            self.shared.published_cv.notify_all();
        }
    }

    /// Publishes what a group commit made durable (never moving the head back), and tells the index.
    fn publish(&self, durable: &mut super::Durable, published: Published) {
        if published.head.size > durable.published.head.size {
            self.shared.index.publish(published.head.size);
            durable.published = published;
        }
    }

    /// After a failed group commit: refuse appends before they write, tell the index, wake the waiters.
    fn fail(&self, why: &WriterFailure) {
        if let Ok(mut writer) = self.shared.writer.lock() {
            writer.poisoned = Some(why.clone());
        }
        self.shared.index.fail();
        self.shared.published_cv.notify_all();
    }

    /// One group-commit round: takes what has been written so far and fsyncs it.
    fn sync_once(&self, sync: bool) -> Result<Published, WriterFailure> {
        let (syncer, published) = {
            let writer = self.shared.writer.lock()?;
            let head = Head { size: writer.size, root: writer.frontier.root() };
            (writer.active.syncer(), Published { head, frontier: writer.frontier.clone() })
        };
        if sync {
            let faults = self.shared.faults();
            syncer
                .sync_data(&faults)
                .map_err(|e| WriterFailure::Sync { path: syncer.path().to_owned(), source: Arc::new(e) })?;
            // The end is recorded durably before anything it covers is acknowledged (HEAD never lags an
            // acknowledged append; in relaxed mode it waits for `flush`). Group commits are serialised
            // by `Durable::syncing`, so the recorded end only moves forward.
            let mut anchor = self.shared.anchor.lock()?;
            anchor
                .record(published.head, &faults)
                .map_err(|e| WriterFailure::Anchor { path: anchor.path().to_owned(), source: Arc::new(e) })?;
        }
        Ok(published)
    }

    /// Makes every append durable (fsync) and published; in durable mode this is already so.
    pub fn flush(&self) -> Result<Head, AppendError> {
        let size = self.shared.writer.lock()?.size;
        let mut durable = self.shared.durable.lock()?;
        while durable.syncing {
            durable = self.shared.durable.wait(&self.shared.published_cv, durable)?;
        }
        // After a failed fsync, whether the bytes written before it are on disk is unknown (a second
        // fsync may succeed without writing them): never publish them; the ledger must be reopened.
        if let Some(why) = &durable.failed {
            return Err(AppendError::Poisoned(why.clone()));
        }
        durable.syncing = true;
        drop(durable);
        let result = self.sync_once(true);
        let mut durable = self.shared.durable.lock()?;
        durable.syncing = false;
        match result {
            Ok(published) => {
                self.publish(&mut durable, published);
                let head = durable.published.head;
                drop(durable);
                self.shared.published_cv.notify_all();
                assert!(head.size >= size);
                Ok(head)
            }
            Err(why) => {
                durable.failed = Some(why.clone());
                drop(durable);
                self.fail(&why);
                Err(AppendError::Poisoned(why))
            }
        }
    }
}

/// The sparse offsets (position, offset within `frames`) of the records `frames` holds, the first at
/// `first`, in a segment that starts at `segment_first`.
fn sparse_offsets(frames: &[u8], first: u64, segment_first: u64) -> Vec<(u64, u64)> {
    let mut sparse = Vec::new();
    let mut offset = 0u64;
    let mut rest = frames;
    let mut position = first;
    while let Some((prefix, _)) = rest.split_first_chunk::<4>() {
        if crate::source::is_sparse_record(position - segment_first) {
            sparse.push((position, offset));
        }
        let len = u32::from_le_bytes(*prefix) as usize + FRAME_PREFIX_LEN;
        offset += len as u64;
        rest = rest.get(len..).unwrap_or_default();
        position += 1;
    }
    sparse
}

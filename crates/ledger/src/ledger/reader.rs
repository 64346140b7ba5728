//! The read side of an open ledger: stream reads from the follower's view, records and frames up to the published head, roots and proofs, catch-up subscriptions.

use super::{Ledger, Published, Shared, Writer, INDEX_WAIT};
use crate::error::ReadError;
use crate::merkle::{Frontier, Hash};
use crate::model::{ModelCode, Record, Sn, StreamId};
use crate::segment::{FileKind, Header};
use crate::source::{segment_file_name, FileMeta, FrameIter, RecordIter, SEGMENTS_DIR, SPARSE_EVERY_RECORDS};
use std::sync::{Arc, Weak};
use std::time::Duration;

impl Ledger {
    /// Persists the index now: snapshots the view and waits until sled covers every published record.
    pub fn sync_index(&self) -> Result<(), ReadError> {
        let target = self.head().size;
        self.shared.writer.lock()?.request_snapshot();
        self.shared.index.wait_indexed(target, std::time::Instant::now() + INDEX_WAIT)
    }

    /// Every record of one stream, in version order (from the stream index).
    pub fn read_stream(&self, stream: &StreamId) -> Result<Vec<Record>, ReadError> {
        let size = self.head().size;
        let positions = {
            let follower = self.shared.index.follower_at(size)?;
            match stream {
                StreamId::Terminal(sn) => follower.view.terminal(sn).map(|m| m.positions.to_vec()),
                StreamId::Directives => Some(follower.view.directives_stream.to_vec()),
            }
        };
        let positions = positions.unwrap_or(Ok(Vec::new())).map_err(crate::indexer::IndexUnavailable::from)?;
        let mut records = Vec::with_capacity(positions.len());
        for (version, position) in positions.into_iter().enumerate() {
            if position >= size {
                break;
            }
            let record = self.read_at(position)?;
            if record.stream() != *stream || record.version != version as u64 {
                return Err(crate::indexer::IndexUnavailable::Misplaced {
                    stream: stream.to_string(),
                    version: version as u64,
                    position,
                }
                .into());
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Terminals issued with `model` (from the model index).
    pub fn terminals_of_model(&self, model: &ModelCode) -> Result<Vec<Sn>, ReadError> {
        let writer = self.shared.writer.lock()?;
        Ok(writer.view.terminals_of_model(model))
    }

    /// Terminals issued with `model` according to the persisted (sled) model index, after persisting it.
    pub fn persisted_terminals_of_model(&self, model: &ModelCode) -> Result<Vec<Sn>, ReadError> {
        self.sync_index()?;
        let store = self.shared.index.store()?.ok_or(ReadError::Closed)?;
        Ok(store.terminals_of_model(model).map_err(crate::indexer::IndexUnavailable::from)?)
    }

    /// The record at `position`.
    pub fn read_at(&self, position: u64) -> Result<Record, ReadError> {
        let size = self.head().size;
        if position >= size {
            return Err(ReadError::OutOfRange { position, size });
        }
        match self.read_range(position, position + 1).next() {
            Some(record) => record,
            None => Err(ReadError::OutOfRange { position, size }),
        }
    }

    pub(crate) fn read_at_unpublished(&self, position: u64, writer: &Writer) -> Result<Record, ReadError> {
        // Called under the writer lock: the record may not be published yet but it is written.
        let files = self.shared.files_snapshot(writer.size);
        let mut iter = RecordIter::new(FrameIter::new(files, position, position + 1));
        iter.next().unwrap_or(Err(ReadError::OutOfRange { position, size: writer.size }))
    }

    /// Every published record from `position` on, in order, in constant memory. The end is the head at
    /// the time of the call.
    pub fn read_from(&self, position: u64) -> RecordIter {
        let size = self.head().size;
        self.read_range(position, size)
    }

    pub(crate) fn read_range(&self, from: u64, to: u64) -> RecordIter {
        RecordIter::new(self.frames(from, to))
    }

    /// Raw frames (record bodies as stored) of positions `from..to`, bounded by the published head.
    pub fn frames(&self, from: u64, to: u64) -> FrameIter {
        self.shared.frames(from, to)
    }

    /// A read-only view of the published log, for projections and exports.
    pub fn source(&self) -> crate::source::Source {
        let Published { head, frontier } = self.shared.durable.lock_assigned_whole().published.clone();
        crate::source::Source {
            path: self.shared.dir.clone(),
            kind: FileKind::Segment,
            files: self.shared.files_snapshot(head.size),
            head,
            published_head: Some(head),
            anchor: None,
            root_at_published: Some(head.root),
            torn: None,
            frontier,
            unwritten: None,
            checkpoints: None,
        }
    }

    /// A subscription from `position`: every published record from there on, in order, then live ones
    /// as they are published. It does not keep the ledger open: once the ledger is closed or dropped,
    /// it ends with [`ReadError::Closed`] (resume from [`Subscription::position`] after reopening).
    pub fn subscribe(&self, position: u64) -> Subscription {
        Subscription { shared: Arc::downgrade(&self.shared), next: position, iter: None }
    }

    /// The RFC 6962 root of the first `size` records.
    pub fn root_at(&self, size: u64) -> Result<Hash, ReadError> {
        let head = self.head();
        if size > head.size {
            return Err(ReadError::OutOfRange { position: size, size: head.size });
        }
        if size == head.size {
            return Ok(head.root);
        }
        self.subtree(0, size)
    }

    pub(crate) fn subtree(&self, start: u64, end: u64) -> Result<Hash, ReadError> {
        let mut frontier = Frontier::new();
        let mut frames = self.frames(start, end);
        while let Some((_, body, _)) = frames.next_frame()? {
            frontier.push_leaf(body);
        }
        if frontier.size() != end - start {
            return Err(ReadError::OutOfRange { position: end, size: self.head().size });
        }
        Ok(frontier.root())
    }

    /// Inclusion proof of record `index` in the log of `size` records (streams the log; O(log n) memory).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        let head = self.head();
        if index >= size || size > head.size {
            return Err(ReadError::OutOfRange { position: index.max(size), size: head.size });
        }
        // One pass over the records the proof covers (log::proof), not one per subtree.
        Ok(log::proof::inclusion(index, size, |from, to| self.frames(from, to), &mut |_| {})?.proof)
    }

    /// Consistency proof between the log of `old_size` records and that of `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ReadError> {
        let head = self.head();
        if old_size == 0 || old_size > new_size || new_size > head.size {
            return Err(ReadError::OutOfRange { position: old_size.max(new_size), size: head.size });
        }
        Ok(log::proof::consistency(old_size, new_size, |from, to| self.frames(from, to), &mut |_| {})?.proof)
    }
}

/// A catch-up subscription: records from a position, then live ones.
///
/// It holds the ledger weakly, so a subscription left alive does not keep the folder locked (nor its
/// index threads running) after the ledger that made it is closed.
pub struct Subscription {
    shared: Weak<Shared>,
    next: u64,
    iter: Option<RecordIter>,
}

impl Subscription {
    /// The next record, waiting up to `timeout` for one to be published. `Ok(None)` on timeout;
    /// [`ReadError::Closed`] once the ledger is closed and the records already fetched are delivered.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>, ReadError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(iter) = &mut self.iter {
                match iter.next() {
                    Some(Ok(record)) => {
                        assert_eq!(record.position, self.next, "subscription skipped a position");
                        self.next += 1;
                        return Ok(Some(record));
                    }
                    Some(Err(e)) => return Err(e),
                    None => self.iter = None,
                }
            }
            // Held only for this wait: the last strong reference is the owner's.
            let Some(shared) = self.shared.upgrade() else { return Err(ReadError::Closed) };
            let mut durable = shared.durable.lock()?;
            loop {
                // Published records first: an append that landed just before the close is delivered.
                if durable.published.head.size > self.next {
                    break;
                }
                if durable.closed {
                    return Err(ReadError::Closed);
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                durable = shared.durable.wait_timeout(&shared.published_cv, durable, deadline - now)?;
            }
            drop(durable);
            self.iter = Some(RecordIter::new(shared.frames(self.next, u64::MAX)));
        }
    }

    /// The position of the next record it will deliver.
    pub fn position(&self) -> u64 {
        self.next
    }
}

impl Shared {
    /// Raw frames of positions `from..to`, bounded by the published head (what every read goes through,
    /// a subscription's included).
    pub(crate) fn frames(&self, from: u64, to: u64) -> FrameIter {
        let size = self.durable.lock_assigned_whole().published.head.size;
        FrameIter::new(self.files_snapshot(size), from, to.min(size))
    }

    /// The files of the log with the active segment cut at `size` records.
    pub(crate) fn files_snapshot(&self, size: u64) -> Vec<FileMeta> {
        // Both read under their locks together (sealed first, as the rotation takes them), so the files
        // always chain: the live segment starts where the last sealed one ends.
        let sealed = self.sealed.read_assigned_whole();
        let mut files = sealed.clone();
        let sparse = self.active_sparse.read_assigned_whole();
        drop(sealed);
        let (seq, first_position, offsets) = &*sparse;
        assert!(
            files.last().is_none_or(|f| f.end_position() == *first_position),
            "the live segment starts where the last sealed one ends"
        );
        let keep = size.saturating_sub(*first_position).div_ceil(SPARSE_EVERY_RECORDS) as usize;
        files.push(FileMeta {
            path: self.dir.join(SEGMENTS_DIR).join(segment_file_name(*seq)),
            header: Header {
                kind: FileKind::Segment,
                seq: *seq,
                first_position: *first_position,
                ledger_id: self.ledger_id,
            },
            records: size.saturating_sub(*first_position),
            readable_len: u64::MAX,
            trailer: None,
            sparse: Some(Arc::new(offsets.get(..keep).unwrap_or(offsets).to_vec())),
        });
        files
    }
}

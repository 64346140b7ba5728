//! Recovery on open: read the segments (cutting an unacknowledged tail), check them against the anchor, then load or rebuild the sled index and replay the log after its watermark.

use super::*;
use crate::anchor::Anchor;
use crate::apply::Pending;
use crate::error::{OpenError, ReadError};
use crate::index::{Store, StoreError, View};
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::model::AppendEvent;
use crate::segment::{FileKind, Header, HEADER_LEN};
use crate::source::{FileMeta, FrameIter, RecordIter};
use chrono::{DateTime, Utc};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What recovery found in the segment files.
pub(super) struct Recovered {
    pub(crate) ledger_id: u64,
    pub(crate) sealed: Vec<FileMeta>,
    pub(crate) active: FileMeta,
    pub(crate) active_file: File,
    pub(crate) frontier: Frontier,
    pub(crate) last_recorded_at: Option<DateTime<Utc>>,
    /// The anchor the log was checked against.
    pub(crate) anchor: Option<Anchor>,
}

/// Reads the segment files, checks their chain, cuts a torn tail off the live segment, and checks the
/// result against the published HEAD (which may lag the log but never lead it).
pub(super) fn recover(dir: &Path, seg_dir: &Path, faults: &SeamFaults<'_>) -> Result<Recovered, OpenError> {
    // The read side finds the committed log and everything wrong with it; recovery only acts on that.
    let source = crate::source::Source::open(dir)?;
    let ledger_id = source.ledger_id().unwrap_or_else(new_ledger_id);
    let mut sealed = source.files.clone();
    let live = match sealed.last() {
        Some(file) if file.trailer.is_none() => sealed.pop(),
        _ => None,
    };
    let active = match live {
        Some(active) => {
            if let Some(torn) = &source.torn {
                // Unacknowledged bytes: cut them so new appends follow the last commit.
                let file = OpenOptions::new().write(true).open(&active.path).map_err(io_err(&active.path))?;
                file.set_len(torn.committed_len).map_err(io_err(&active.path))?;
                faults.observe(&DiskOp::Truncate { path: &active.path, len: torn.committed_len });
                file.sync_all().map_err(io_err(&active.path))?;
                faults.observe(&DiskOp::Sync { path: &active.path });
            }
            active
        }
        None => {
            // No live segment: a new ledger, a crash between sealing a segment and creating the next,
            // or a crash while creating it (its header never reached the disk). Create it (again).
            if let Some(path) = &source.unwritten {
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
            let seq = u32::try_from(sealed.len()).unwrap_or(u32::MAX);
            let (path, _) =
                create_segment(seg_dir, seq, source.head.size, ledger_id, faults).map_err(io_err(seg_dir))?;
            let header = Header { kind: FileKind::Segment, seq, first_position: source.head.size, ledger_id };
            FileMeta {
                path,
                header,
                records: 0,
                readable_len: HEADER_LEN as u64,
                trailer: None,
                sparse: Some(Arc::default()),
            }
        }
    };
    let active_file = OpenOptions::new().read(true).append(true).open(&active.path).map_err(io_err(&active.path))?;
    // What a crashed relaxed-mode writer left in the page cache is durable from here on, so the HEAD
    // this open publishes never leads the disk.
    active_file.sync_all().map_err(io_err(&active.path))?;
    faults.observe(&DiskOp::Sync { path: &active.path });
    let last_recorded_at = match source.head.size.checked_sub(1) {
        Some(last) => match source.records(last).next() {
            Some(record) => Some(record?.recorded_at),
            None => None,
        },
        None => None,
    };
    assert_eq!(source.frontier.size(), source.head.size, "the frontier covers the committed log");
    Ok(Recovered {
        ledger_id,
        sealed,
        active,
        active_file,
        frontier: source.frontier,
        last_recorded_at,
        anchor: source.anchor,
    })
}

/// The leaf hash of the last record of the recovered log.
pub(super) fn last_leaf_of(recovered: &Recovered) -> Result<Hash, OpenError> {
    let size = recovered.frontier.size();
    let mut files = recovered.sealed.clone();
    files.push(recovered.active.clone());
    let mut frames = FrameIter::new(files, size - 1, size);
    match frames.next_frame()? {
        Some((_, body, _)) => Ok(leaf_hash(body)),
        None => Err(OpenError::Read(ReadError::OutOfRange { position: size - 1, size })),
    }
}

/// Opens sled, waiting a little while its lock is still held: the ledger lock already excludes other
/// writers, so a held sled lock can only be a previous `Ledger` of this process whose sled is still
/// closing. That is told apart from a damaged index by a typed answer (`StoreError::Locked`, from the
/// OS), never by an error's text, so a held index is never deleted under its holder.
pub(super) fn open_store(path: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
    loop {
        match Store::open(path) {
            Err(StoreError::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Opens the sled index and loads the view from its snapshot, then replays the log after the snapshot.
/// When the index is missing, unreadable (sled failed or panicked), from another ledger, or ahead of the
/// log, it is deleted and the view is rebuilt from the whole log. Returns the store, the view, and the
/// size the store covers.
pub(super) fn open_index(path: &Path, recovered: &Recovered) -> Result<(Store, View, u64), OpenError> {
    let size = recovered.frontier.size();
    let index_error = |e: StoreError| OpenError::Index { path: path.to_owned(), what: e.to_string() };
    let attempt = (|| -> Result<(Store, View, u64), StoreError> {
        let store = open_store(path)?;
        let Some(mark) = store.watermark()? else {
            return Ok((store, View::default(), 0));
        };
        if mark.ledger_id != recovered.ledger_id || mark.size > size {
            return Err(StoreError::Invalid("index belongs to another log".into()));
        }
        if mark.size > 0 {
            let mut files = recovered.sealed.clone();
            files.push(recovered.active.clone());
            let mut frames = FrameIter::new(files, mark.size - 1, mark.size);
            match frames.next_frame() {
                Ok(Some((_, body, _))) if leaf_hash(body) == mark.last_leaf => {}
                _ => return Err(StoreError::Invalid("index watermark does not match the log".into())),
            }
        }
        let view = store.load_view(mark.size)?;
        Ok((store, view, mark.size))
    })();
    let (store, mut view, indexed) = match attempt {
        Ok(opened) => opened,
        // Held by a closing ledger of this process for longer than it may take: not damage, so it is
        // not deleted.
        Err(StoreError::Locked) => return Err(index_error(StoreError::Locked)),
        Err(_) => {
            match std::fs::remove_dir_all(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(OpenError::Io { path: path.to_owned(), source }),
            }
            let store = open_store(path).map_err(index_error)?;
            store.clear().map_err(index_error)?;
            (store, View::default(), 0)
        }
    };
    replay_into(&mut view, recovered, indexed)?;
    Ok((store, view, indexed))
}

/// Folds records `from..` of the log through the lifecycle rules into `view`, append by append (the
/// commit markers delimit them), exactly as the write path applied them.
pub(super) fn replay_into(view: &mut View, recovered: &Recovered, from: u64) -> Result<(), OpenError> {
    let mut files = recovered.sealed.clone();
    files.push(recovered.active.clone());
    let mut group: Vec<AppendEvent> = Vec::new();
    let mut group_positions: Vec<u64> = Vec::new();
    for record in RecordIter::new(FrameIter::new(files, from, recovered.frontier.size())) {
        let record = record?;
        group_positions.push(record.position);
        let commit = record.commit;
        group.push(AppendEvent {
            event: record.event,
            event_id: record.event_id,
            expected_version: Some(record.version),
        });
        if !commit {
            continue;
        }
        let fresh: Vec<usize> = (0..group.len()).collect();
        let changes = Pending::check_all(view, &group, &fresh).map_err(|(index, e)| OpenError::Corrupt {
            path: recovered.active.path.clone(),
            what: format!("position {}: the log breaks a rule the writer enforces: {e}", group_positions[index]),
        })?;
        changes.commit(view, &fresh, &group, &group_positions);
        group.clear();
        group_positions.clear();
    }
    Ok(())
}

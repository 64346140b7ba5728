//! Recovery on open: create an unborn ledger, read the segments (cutting an unacknowledged tail), check
//! them against the anchor, load or rebuild the sled index and replay the log after its watermark, then
//! start the index threads.

use super::disk::{io_err, new_ledger_id, sync_dir, UNBORN_LEFTOVERS};
use super::segment_writer::{create_segment, Active};
use super::{Durable, Ledger, Options, Published, Shared, Writer, SHUTDOWN_WAIT};
use crate::anchor_writer::AnchorWriter;
use crate::apply::Pending;
use crate::error::{OpenError, ReadError};
use crate::faults::{DiskOp, SeamFaults};
use crate::guard::{Lock, RwLockNamed};
use crate::index::{SnapshotError, Store, StoreError, View};
use crate::indexer::{follower_loop, store_loop, Follower, IndexShared, FOLLOWER_QUEUE_APPENDS};
use crate::lock::DirLock;
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::model::AppendEvent;
use crate::segment::{FileKind, Header, HEADER_LEN};
use crate::source::{FileMeta, FrameIter, Head, RecordIter, HEAD_FILE, SEGMENTS_DIR};
use chrono::{DateTime, Utc};
use log::anchor::Anchor;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar};
use std::time::Duration;

/// How often the open looks whether sled's lock has been released by a ledger being closed.
const SLED_LOCK_POLL_MS: u64 = 20;

/// Opens (or creates) the ledger in the folder `dir_lock` holds. A ledger created here gets `ledger_id`
/// when one is given (a restore keeps its source's), else a new random one.
pub(crate) fn open_locked(dir_lock: DirLock, options: Options, ledger_id: Option<u64>) -> Result<Ledger, OpenError> {
    let dir_buf = dir_lock.dir().to_owned();
    let dir = dir_buf.as_path();
    let seg_dir = dir.join(SEGMENTS_DIR);
    let faults = SeamFaults(&options.faults);
    create_if_unborn(dir, ledger_id, &faults)?;
    let recovered = recover(dir, &seg_dir, &faults)?;
    let head = Head { size: recovered.frontier.size(), root: recovered.frontier.root() };
    // The recovered log is durable now (recovery synced the live segment): record its end. A format-1
    // HEAD, or one with a damaged slot, is replaced by a whole format-2 one.
    let head_path = dir.join(HEAD_FILE);
    let mut anchor_writer = match &recovered.anchor {
        Some(a) if !a.legacy && a.damaged_slot.is_none() => AnchorWriter::open(dir, a).map_err(io_err(&head_path))?,
        _ => AnchorWriter::create(dir, head, &faults).map_err(io_err(&head_path))?,
    };
    anchor_writer.record(head, &faults).map_err(io_err(&head_path))?;
    let (store, view, indexed) = open_index(&dir.join("index"), &recovered)?;
    let size = recovered.frontier.size();
    let last_leaf = if size == 0 { [0u8; 32] } else { last_leaf_of(&recovered)? };
    let published = Published { head, frontier: recovered.frontier.clone() };
    let (follower_tx, follower_rx) = std::sync::mpsc::sync_channel(FOLLOWER_QUEUE_APPENDS);
    let (store_tx, store_rx) = std::sync::mpsc::channel();
    let writer_view = view.writer_copy();
    let follower = Follower::new(view, size, last_leaf, indexed);
    let index = Arc::new(IndexShared::new(recovered.ledger_id, follower, store, indexed, size));
    let Recovered { ledger_id, sealed, active, active_file, frontier, last_recorded_at, .. } = recovered;
    let sparse = (
        active.header.seq,
        active.header.first_position,
        active.sparse.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
    );
    let writer = Writer {
        view: writer_view,
        size,
        frontier,
        last_recorded_at,
        active: Active::new(
            active.header.seq,
            active.path,
            active_file,
            active.header.first_position,
            active.readable_len,
        ),
        poisoned: None,
        buf: Vec::new(),
        body: Vec::new(),
        last_leaf,
        follower_tx: Some(follower_tx),
    };
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        ledger_id,
        options,
        writer: Lock::new("writer", writer),
        durable: Lock::new("durable", Durable { published, syncing: false, failed: None, closed: false }),
        published_cv: Condvar::new(),
        sealed: RwLockNamed::new("sealed segments", sealed),
        active_sparse: RwLockNamed::new("live segment offsets", sparse),
        index: Arc::clone(&index),
        threads: Lock::new("threads", Vec::new()),
        anchor: Lock::new("anchor", anchor_writer),
        _lock: dir_lock,
    });
    let weak = Arc::downgrade(&index);
    let follower = std::thread::Builder::new()
        .name("posledger-follower".into())
        .spawn(move || follower_loop(weak, follower_rx, store_tx))
        .map_err(io_err(dir))?;
    shared.threads.lock()?.push(follower);
    let weak = Arc::downgrade(&index);
    let store = std::thread::Builder::new()
        .name("posledger-store".into())
        .spawn(move || store_loop(weak, store_rx))
        .map_err(io_err(dir))?;
    shared.threads.lock()?.push(store);
    let ledger = Ledger { shared };
    // Records replayed from the log on open are already durable: persist them now, so the next open
    // starts from here.
    ledger.shared.writer.lock()?.request_snapshot();
    Ok(ledger)
}

/// Creates the ledger if `dir` holds none yet: no `segments/`, or a crash during the first open left
/// it empty. HEAD first, then the segments: a folder with segments always has a HEAD.
fn create_if_unborn(dir: &Path, ledger_id: Option<u64>, faults: &SeamFaults<'_>) -> Result<(), OpenError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let anchor = log::anchor::read(dir).map_err(|e| OpenError::Read(e.into()))?;
    let unborn = !seg_dir.exists() || std::fs::read_dir(&seg_dir).map_err(io_err(&seg_dir))?.next().is_none();
    if !unborn {
        return Ok(());
    }
    if !seg_dir.exists() {
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            // `.posledger-*`: a mark a posledger tool leaves (the demo's, for one).
            let mark = name.to_str().is_some_and(|n| n.starts_with(".posledger-"));
            if !mark && !UNBORN_LEFTOVERS.iter().any(|known| name == *known) {
                return Err(OpenError::NotALedger(dir.to_owned()));
            }
        }
    }
    if let Some(anchor) = anchor.filter(|a| a.head.size > 0) {
        return Err(OpenError::Read(ReadError::Cut { path: dir.to_owned(), recorded: anchor.head.size, found: 0 }));
    }
    let empty = Head { size: 0, root: Frontier::new().root() };
    AnchorWriter::create(dir, empty, faults).map_err(io_err(&dir.join(HEAD_FILE)))?;
    if !seg_dir.exists() {
        std::fs::create_dir(&seg_dir).map_err(io_err(&seg_dir))?;
        faults.observe(&DiskOp::CreateDir { path: &seg_dir });
        sync_dir(dir, faults).map_err(io_err(dir))?;
    }
    create_segment(&seg_dir, 0, 0, ledger_id.unwrap_or_else(new_ledger_id), faults).map_err(io_err(&seg_dir))?;
    Ok(())
}

/// What recovery found in the segment files.
struct Recovered {
    ledger_id: u64,
    sealed: Vec<FileMeta>,
    active: FileMeta,
    active_file: File,
    frontier: Frontier,
    last_recorded_at: Option<DateTime<Utc>>,
    /// The anchor the log was checked against.
    anchor: Option<Anchor>,
}

/// Reads the segment files, checks their chain, cuts a torn tail off the live segment, and checks the
/// result against the published HEAD (which may lag the log but never lead it).
fn recover(dir: &Path, seg_dir: &Path, faults: &SeamFaults<'_>) -> Result<Recovered, OpenError> {
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
fn last_leaf_of(recovered: &Recovered) -> Result<Hash, OpenError> {
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
fn open_store(path: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
    loop {
        match Store::open(path) {
            Err(StoreError::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(SLED_LOCK_POLL_MS));
            }
            result => return result,
        }
    }
}

/// Opens the sled index and loads the view from its snapshot, then replays the log after the snapshot.
/// When the index is missing, unreadable (sled failed or panicked), from another ledger, or ahead of the
/// log, it is deleted and the view is rebuilt from the whole log. Returns the store, the view, and the
/// size the store covers.
fn open_index(path: &Path, recovered: &Recovered) -> Result<(Store, View, u64), OpenError> {
    let size = recovered.frontier.size();
    let index_error = |source: StoreError| OpenError::Index { path: path.to_owned(), source };
    let attempt = (|| -> Result<(Store, View, u64), StoreError> {
        let store = open_store(path)?;
        let Some(mark) = store.watermark()? else {
            return Ok((store, View::default(), 0));
        };
        if mark.ledger_id != recovered.ledger_id || mark.size > size {
            return Err(SnapshotError::AnotherLog.into());
        }
        if mark.size > 0 {
            let mut files = recovered.sealed.clone();
            files.push(recovered.active.clone());
            let mut frames = FrameIter::new(files, mark.size - 1, mark.size);
            match frames.next_frame() {
                Ok(Some((_, body, _))) if leaf_hash(body) == mark.last_leaf => {}
                _ => return Err(SnapshotError::WatermarkMismatch.into()),
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
fn replay_into(view: &mut View, recovered: &Recovered, from: u64) -> Result<(), OpenError> {
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
        let changes = Pending::check_all(view, &group, &fresh).map_err(|(index, e)| {
            let position = group_positions.get(index).map_or_else(|| "?".to_owned(), u64::to_string);
            OpenError::Corrupt {
                path: recovered.active.path.clone(),
                what: format!("position {position}: the log breaks a rule the writer enforces: {e}"),
            }
        })?;
        changes.commit(view, &fresh, &group, &group_positions);
        group.clear();
        group_positions.clear();
    }
    Ok(())
}

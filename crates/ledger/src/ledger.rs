//! The [`Ledger`]: open and recover, validate and append with group commit, read, subscribe, prove.
//!
//! Concurrency: one `writer` mutex serialises validation and the write of each append (positions and
//! versions are assigned there, densely). Durability is a second step outside that lock: the first
//! appender that needs a sync becomes the syncer and fsyncs everything written so far, so concurrent
//! appends share one fsync (group commit); the others wait on a condition variable. A record becomes
//! visible to readers only when it is *published*: after its fsync in durable mode.

use crate::anchor::Anchor;
use crate::anchor_writer::AnchorWriter;
use crate::apply::{precheck, Pending, Steps, Written};
use crate::codec::{encode_record_ref, RecordRef, MAX_RECORD_BYTES};
use crate::error::{AppendError, OpenError, ReadError};
use crate::index::{Store, StoreError, View};
use crate::indexer::{follower_loop, store_loop, Applied, Backlog, Follower, FollowerMsg, FOLLOWER_QUEUE};
use crate::lifecycle::{State, Status};
use crate::lock::DirLock;
use crate::merkle::{self, leaf_hash, Frontier, Hash};
use crate::model::{AppendEvent, Directive, Event, ModelCode, Record, Sn, StopReason, StreamId, TerminalEvent};
use crate::segment::{push_frame, FileKind, Header, Trailer, HEADER_LEN};
use crate::source::Head;
use crate::source::{segment_file_name, FileMeta, FrameIter, RecordIter, HEAD_FILE, SEGMENTS_DIR, SPARSE_EVERY};
use chrono::{DateTime, Utc};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

/// The most events one append may hold.
pub const MAX_APPEND_EVENTS: usize = 2_000_000;
/// Default size at which a segment is sealed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// When an append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// After its records are fsynced (group commit). The default.
    #[default]
    Durable,
    /// As soon as its records are written to the OS; a crash may lose the latest appends (never
    /// half of one). [`Ledger::flush`] makes everything durable.
    Relaxed,
}

/// A seam for injecting I/O faults into the writer and for observing what it does to the disk (tests of
/// failure handling and simulated power cuts).
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    /// Called before `len` bytes are written to `path`; an error fails the write.
    fn before_write(&self, path: &Path, len: usize) -> io::Result<()>;
    /// Called before `path` (a file, or a folder whose entries are made durable) is fsynced; an error
    /// fails the sync.
    fn before_sync(&self, path: &Path) -> io::Result<()>;
    /// Called after each operation on the ledger's files succeeded, in the order they happened (under
    /// the locks that order them): what a simulated disk needs to tell what a power cut would keep.
    fn observe(&self, _op: &DiskOp<'_>) {}
}

/// One operation of the writer on the ledger folder, as [`FaultInjector::observe`] sees it. The sled
/// index (derived data) is not observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskOp<'a> {
    /// A new, empty file (or one truncated to empty).
    Create {
        /// The file.
        path: &'a Path,
    },
    /// A new folder.
    CreateDir {
        /// The folder.
        path: &'a Path,
    },
    /// Bytes written at an offset.
    Write {
        /// The file.
        path: &'a Path,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A file cut to a length.
    Truncate {
        /// The file.
        path: &'a Path,
        /// Its new length.
        len: u64,
    },
    /// A file's data made durable (`fsync`/`fdatasync` returned).
    Sync {
        /// The file.
        path: &'a Path,
    },
    /// A folder's entries made durable (created, renamed and removed names in it).
    SyncDir {
        /// The folder.
        path: &'a Path,
    },
    /// A file renamed (over `to`, if it exists).
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
}

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

/// How to open a ledger.
#[derive(Clone, Debug)]
pub struct Options {
    /// When appends return.
    pub durability: Durability,
    /// A segment is sealed once it holds at least this many bytes (an append never spans segments).
    pub segment_max_bytes: u64,
    /// Fault injection, for tests.
    pub faults: Option<Arc<dyn FaultInjector>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { durability: Durability::Durable, segment_max_bytes: DEFAULT_SEGMENT_BYTES, faults: None }
    }
}

/// The result of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The position of each event of the request (an idempotent retry gets the original position).
    pub positions: Vec<u64>,
    /// How many records this call wrote (0 when every event was a retry).
    pub written: u64,
    /// The head after the append.
    pub head: Head,
}

/// The result of [`Ledger::stop_models`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopModelsOutcome {
    /// Terminals stopped under the directive.
    pub stopped: Vec<Sn>,
    /// The append (the directive first, then the stops).
    pub appended: Appended,
}

pub(crate) struct Active {
    seq: u32,
    path: PathBuf,
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
    buf: Vec<u8>,
    body: Vec<u8>,
    pub(crate) last_leaf: Hash,
    /// The follower's queue (see [`crate::indexer`]); `None` once the ledger is closing.
    follower_tx: Option<SyncSender<FollowerMsg>>,
}

impl Writer {
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
    fn request_snapshot(&self) {
        if let Some(tx) = &self.follower_tx {
            let _ = tx.send(FollowerMsg::Snapshot);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Published {
    pub(crate) head: Head,
    /// The Merkle frontier at `head` (for read-only snapshots that may be extended, e.g. exports).
    frontier: Frontier,
}

pub(crate) struct Durable {
    pub(crate) published: Published,
    syncing: bool,
    pub(crate) failed: Option<String>,
    pub(crate) closed: bool,
}

pub(crate) struct Shared {
    dir: PathBuf,
    pub(crate) ledger_id: u64,
    pub(crate) options: Options,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) durable: Mutex<Durable>,
    pub(crate) published_cv: Condvar,
    /// Sealed segments, for readers.
    sealed: RwLock<Vec<FileMeta>>,
    /// Offsets of every SPARSE_EVERY-th record of the active segment (written records; readers only use
    /// entries below the published size).
    pub(crate) active_sparse: RwLock<(u32, u64, Vec<u64>)>,
    /// The sled index; taken out (and closed within [`SHUTDOWN_WAIT`]) when the ledger shuts down.
    store: Mutex<Option<Store>>,
    /// Log size the sled index covers.
    pub(crate) indexed: Mutex<u64>,
    /// Set when a snapshot could not be encoded or written: later snapshots are not written either
    /// (each covers only what changed since the one before), so the persisted index stays at its last
    /// good watermark and the next open replays the log from there.
    pub(crate) index_error: Mutex<Option<String>>,
    pub(crate) indexed_cv: Condvar,
    /// The full view, kept by the follower thread (stream reads).
    pub(crate) follower: Mutex<Follower>,
    pub(crate) follower_cv: Condvar,
    /// Events handed to the follower and not yet applied.
    pub(crate) backlog: Backlog,
    /// Snapshots handed to the store thread and not yet written (see [`crate::indexer`]).
    pub(crate) snapshots_in_flight: std::sync::atomic::AtomicUsize,
    /// The follower and store threads, joined on close (the follower first).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The HEAD file: the log's committed end, recorded durably after each group commit.
    anchor: Mutex<AnchorWriter>,
    _lock: DirLock,
}

/// An open ledger. `Sync`: share it between threads with `Arc`.
pub struct Ledger {
    pub(crate) shared: Arc<Shared>,
    owner: bool,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state we cannot trust, but the data it guards is only ever
    // changed after every check passed; recover the guard rather than cascade the panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fault seam as the anchor writer sees it.
pub(crate) struct SeamFaults<'a>(pub(crate) &'a Option<Arc<dyn FaultInjector>>);

impl crate::anchor_writer::Faults for SeamFaults<'_> {
    fn before_write(&self, path: &Path, len: usize) -> io::Result<()> {
        self.0.as_ref().map_or(Ok(()), |f| f.before_write(path, len))
    }
    fn before_sync(&self, path: &Path) -> io::Result<()> {
        self.0.as_ref().map_or(Ok(()), |f| f.before_sync(path))
    }
    fn observe(&self, op: &DiskOp<'_>) {
        if let Some(f) = self.0.as_ref() {
            f.observe(op);
        }
    }
}

/// Entries a folder may hold and still be a ledger not yet created: what a crash during the first open
/// leaves (the HEAD written, `segments/` not yet), a `LOCK` file of an earlier version, an index.
const UNBORN_LEFTOVERS: [&str; 4] = ["LOCK", HEAD_FILE, "HEAD.tmp", "index"];

/// Creates `dir` and every missing parent, and makes each new entry durable (fsyncs the folder that
/// holds it), so the ledger's own folder survives a power cut once its first append is acknowledged.
fn create_dir_durable(dir: &Path, faults: &SeamFaults<'_>) -> Result<(), OpenError> {
    use crate::anchor_writer::Faults;
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        match std::fs::symlink_metadata(at) {
            Ok(meta) if meta.is_dir() || at != dir => break,
            Ok(_) => match std::fs::metadata(at) {
                Ok(target) if target.is_dir() => break,
                _ => return Err(OpenError::NotAFolder(dir.to_owned())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(at),
            Err(source) => return Err(OpenError::Io { path: at.to_owned(), source }),
        }
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for created in missing.iter().rev() {
        faults.observe(&DiskOp::CreateDir { path: created });
    }
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent, faults).map_err(io_err(parent))?;
    }
    Ok(())
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

fn sync_dir(dir: &Path, faults: &SeamFaults<'_>) -> io::Result<()> {
    use crate::anchor_writer::Faults;
    faults.before_sync(dir)?;
    File::open(dir)?.sync_all()?;
    faults.observe(&DiskOp::SyncDir { path: dir });
    Ok(())
}

fn new_ledger_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    h.finish()
}

fn create_segment(
    seg_dir: &Path,
    seq: u32,
    first_position: u64,
    ledger_id: u64,
    faults: &SeamFaults<'_>,
) -> io::Result<(PathBuf, File)> {
    use crate::anchor_writer::Faults;
    let path = seg_dir.join(segment_file_name(seq));
    let mut file = OpenOptions::new().create_new(true).read(true).append(true).open(&path)?;
    faults.observe(&DiskOp::Create { path: &path });
    let header = Header { kind: FileKind::Segment, seq, first_position, ledger_id }.encode();
    faults.before_write(&path, header.len())?;
    file.write_all(&header)?;
    faults.observe(&DiskOp::Write { path: &path, offset: 0, bytes: &header });
    faults.before_sync(&path)?;
    file.sync_all()?;
    faults.observe(&DiskOp::Sync { path: &path });
    sync_dir(seg_dir, faults)?;
    Ok((path, file))
}

impl Ledger {
    /// Opens the ledger in `dir` with default options, creating it if `dir` is missing or empty.
    pub fn open(dir: &Path) -> Result<Ledger, OpenError> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (or creates) the ledger in `dir`: recovers the log (cutting a torn tail), then loads or
    /// rebuilds the index.
    pub fn open_with(dir: &Path, options: Options) -> Result<Ledger, OpenError> {
        create_dir_durable(dir, &SeamFaults(&options.faults))?;
        let lock = DirLock::acquire(dir)?;
        Self::open_locked(lock, options)
    }

    /// Opens (or creates) the ledger in the folder `lock` holds (see [`Ledger::open_with`]).
    pub fn open_locked(dir_lock: DirLock, options: Options) -> Result<Ledger, OpenError> {
        let dir_buf = dir_lock.dir().to_owned();
        let dir = dir_buf.as_path();
        let seg_dir = dir.join(SEGMENTS_DIR);
        let faults = SeamFaults(&options.faults);
        let anchor = crate::anchor::read(dir).map_err(|e| OpenError::Read(e.into()))?;
        // Not yet a ledger: no `segments/`, or a crash during the first open left it empty.
        let unborn = !seg_dir.exists() || std::fs::read_dir(&seg_dir).map_err(io_err(&seg_dir))?.next().is_none();
        if unborn {
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
                return Err(OpenError::Read(ReadError::Cut {
                    path: dir.to_owned(),
                    recorded: anchor.head.size,
                    found: 0,
                }));
            }
            // HEAD first, then the segments: a folder with segments always has a HEAD.
            let empty = Head { size: 0, root: Frontier::new().root() };
            AnchorWriter::create(dir, empty, &faults).map_err(io_err(&dir.join(HEAD_FILE)))?;
            if !seg_dir.exists() {
                std::fs::create_dir(&seg_dir).map_err(io_err(&seg_dir))?;
                crate::anchor_writer::Faults::observe(&faults, &DiskOp::CreateDir { path: &seg_dir });
                sync_dir(dir, &faults).map_err(io_err(dir))?;
            }
            create_segment(&seg_dir, 0, 0, new_ledger_id(), &faults).map_err(io_err(&seg_dir))?;
        }
        let recovered = recover(dir, &seg_dir, &faults)?;
        let head = Head { size: recovered.frontier.size(), root: recovered.frontier.root() };
        // The recovered log is durable now (recovery synced the live segment): record its end. A format-1
        // HEAD, or one with a damaged slot, is replaced by a whole format-2 one.
        let head_path = dir.join(HEAD_FILE);
        let mut anchor_writer = match recovered.anchor {
            Some(a) if !a.legacy && a.damaged_slot.is_none() => {
                AnchorWriter::open(dir, &a).map_err(io_err(&head_path))?
            }
            _ => AnchorWriter::create(dir, head, &faults).map_err(io_err(&head_path))?,
        };
        anchor_writer.record(head, &faults).map_err(io_err(&head_path))?;
        let index_path = dir.join("index");
        let (store, view, indexed) = open_index(&index_path, &recovered)?;
        let last_leaf = if recovered.frontier.size() == 0 { [0u8; 32] } else { last_leaf_of(&recovered)? };
        let published = Published { head, frontier: recovered.frontier.clone() };
        let (follower_tx, follower_rx) = std::sync::mpsc::sync_channel(FOLLOWER_QUEUE);
        let (store_tx, store_rx) = std::sync::mpsc::channel();
        let size = recovered.frontier.size();
        let writer_view = view.writer_copy();
        let follower = Follower::new(view, size, last_leaf, indexed);
        let active = recovered.active;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            ledger_id: recovered.ledger_id,
            options,
            writer: Mutex::new(Writer {
                view: writer_view,
                size,
                frontier: recovered.frontier.clone(),
                last_recorded_at: recovered.last_recorded_at,
                active: Active {
                    seq: active.header.seq,
                    path: active.path.clone(),
                    file: Arc::new(recovered.active_file),
                    first_position: active.header.first_position,
                    len: active.readable_len,
                },
                poisoned: None,
                buf: Vec::new(),
                body: Vec::new(),
                last_leaf,
                follower_tx: Some(follower_tx),
            }),
            durable: Mutex::new(Durable { published, syncing: false, failed: None, closed: false }),
            published_cv: Condvar::new(),
            sealed: RwLock::new(recovered.sealed),
            active_sparse: RwLock::new((
                active.header.seq,
                active.header.first_position,
                active.sparse.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
            )),
            store: Mutex::new(Some(store)),
            indexed: Mutex::new(indexed),
            index_error: Mutex::new(None),
            indexed_cv: Condvar::new(),
            follower: Mutex::new(follower),
            follower_cv: Condvar::new(),
            backlog: Backlog::default(),
            snapshots_in_flight: std::sync::atomic::AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            anchor: Mutex::new(anchor_writer),
            _lock: dir_lock,
        });
        let weak = Arc::downgrade(&shared);
        let follower = std::thread::Builder::new()
            .name("posledger-follower".into())
            .spawn(move || follower_loop(weak, follower_rx, store_tx))
            .map_err(io_err(dir))?;
        lock(&shared.threads).push(follower);
        let weak = Arc::downgrade(&shared);
        let store = std::thread::Builder::new()
            .name("posledger-store".into())
            .spawn(move || store_loop(weak, store_rx))
            .map_err(io_err(dir))?;
        lock(&shared.threads).push(store);
        let ledger = Ledger { shared, owner: true };
        // Records replayed from the log on open are already durable: persist them now, so the next open
        // starts from here.
        lock(&ledger.shared.writer).request_snapshot();
        Ok(ledger)
    }

    /// The folder of the ledger.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The random id chosen when the ledger was created (stored in every segment header).
    pub fn ledger_id(&self) -> u64 {
        self.shared.ledger_id
    }

    /// The published head: size and Merkle root of every record a reader can see.
    pub fn head(&self) -> Head {
        lock(&self.shared.durable).published.head
    }

    /// The current lifecycle state and stream version of a terminal (including appends not yet
    /// published, so use it for decisions only, like the write path does).
    pub fn terminal(&self, sn: &Sn) -> Option<(u64, State, ModelCode)> {
        let writer = lock(&self.shared.writer);
        writer.view.terminal(sn).map(|m| (m.version, m.state, m.model.clone()))
    }

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
        if let Some(why) = &writer.poisoned {
            return Err(AppendError::Poisoned(why.clone()));
        }
        let recorded_at = match (recorded_at, writer.last_recorded_at) {
            (Some(given), Some(head)) if given < head => return Err(AppendError::RecordedAtBeforeHead { given, head }),
            (Some(given), _) => given,
            (None, Some(head)) => Utc::now().max(head),
            (None, None) => Utc::now(),
        };
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
                if (position - writer.active.first_position).is_multiple_of(SPARSE_EVERY) {
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
                if (position - writer.active.first_position).is_multiple_of(SPARSE_EVERY) {
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
            if let Some(faults) = &self.shared.options.faults {
                faults.before_write(&path, buf.len())?;
            }
            (&*writer.active.file).write_all(&buf)?;
            if let Some(faults) = &self.shared.options.faults {
                faults.observe(&DiskOp::Write { path: &path, offset: writer.active.len, bytes: &buf });
            }
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
        let sealed = (|| {
            if let Some(faults) = &self.shared.options.faults {
                faults.before_write(&path, bytes.len())?;
                faults.before_sync(&path)?;
            }
            (&*writer.active.file).write_all(&bytes)?;
            let faults = SeamFaults(&self.shared.options.faults);
            crate::anchor_writer::Faults::observe(
                &faults,
                &DiskOp::Write { path: &path, offset: writer.active.len, bytes: &bytes },
            );
            writer.active.file.sync_all()?;
            crate::anchor_writer::Faults::observe(&faults, &DiskOp::Sync { path: &path });
            Ok(())
        })();
        if let Err(e) = sealed {
            return Err(fail(writer, e));
        }
        let seg_dir = self.shared.dir.join(SEGMENTS_DIR);
        let faults = SeamFaults(&self.shared.options.faults);
        let (new_path, file) =
            match create_segment(&seg_dir, writer.active.seq + 1, writer.size, self.shared.ledger_id, &faults) {
                Ok(created) => created,
                Err(e) => return Err(fail(writer, e)),
            };
        let old_sparse = {
            let mut sparse = self.shared.active_sparse.write().unwrap_or_else(|e| e.into_inner());
            let old = std::mem::take(&mut sparse.2);
            *sparse = (writer.active.seq + 1, writer.size, Vec::new());
            old
        };
        let meta = FileMeta {
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
            sparse: Some(Arc::new(old_sparse)),
        };
        self.shared.sealed.write().unwrap_or_else(|e| e.into_inner()).push(meta);
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
    fn sync_once(&self, sync: bool) -> Result<Published, String> {
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
                if let Some(faults) = &self.shared.options.faults {
                    faults.before_sync(&path)?;
                }
                file.sync_data()?;
                if let Some(faults) = &self.shared.options.faults {
                    faults.observe(&DiskOp::Sync { path: &path });
                }
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

    /// Persists the index now: snapshots the view and waits until sled covers every published record.
    pub fn sync_index(&self) -> Result<(), ReadError> {
        let target = self.head().size;
        lock(&self.shared.writer).request_snapshot();
        let deadline = std::time::Instant::now() + INDEX_WAIT;
        let mut indexed = lock(&self.shared.indexed);
        while *indexed < target {
            if std::time::Instant::now() >= deadline {
                return Err(ReadError::Index(format!(
                    "the index did not reach the log's {target} records within {} s",
                    INDEX_WAIT.as_secs()
                )));
            }
            if lock(&self.shared.durable).failed.is_some() {
                return Err(ReadError::Index("the ledger failed; the index is behind the log".into()));
            }
            if let Some(why) = lock(&self.shared.index_error).clone() {
                return Err(ReadError::Index(format!("the index stopped at its last good snapshot: {why}")));
            }
            let (guard, _) = self
                .shared
                .indexed_cv
                .wait_timeout(indexed, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            indexed = guard;
        }
        Ok(())
    }

    /// Every record of one stream, in version order (from the stream index).
    pub fn read_stream(&self, stream: &StreamId) -> Result<Vec<Record>, ReadError> {
        let size = self.head().size;
        let positions = {
            let follower = self.follower_at(size)?;
            match stream {
                StreamId::Terminal(sn) => follower.view.terminal(sn).map(|m| m.positions.to_vec()),
                StreamId::Directives => Some(follower.view.directives_stream.to_vec()),
            }
        };
        let positions = positions.unwrap_or(Ok(Vec::new())).map_err(ReadError::Index)?;
        let mut records = Vec::with_capacity(positions.len());
        for (version, position) in positions.into_iter().enumerate() {
            if position >= size {
                break;
            }
            let record = self.read_at(position)?;
            if record.stream() != *stream || record.version != version as u64 {
                return Err(ReadError::Index(format!(
                    "index points {stream} version {version} at position {position}, which holds another record"
                )));
            }
            records.push(record);
        }
        Ok(records)
    }

    /// The follower's full view once it covers at least `size` records (every published record has been
    /// handed to it, so it gets there unless it failed or stopped).
    fn follower_at(&self, size: u64) -> Result<MutexGuard<'_, Follower>, ReadError> {
        let mut follower = lock(&self.shared.follower);
        loop {
            // A failed follower may have applied part of the append it refused: never read from it.
            if let Some(why) = &follower.failed {
                return Err(ReadError::Index(format!("the stream index stopped: {why}")));
            }
            if follower.applied >= size {
                return Ok(follower);
            }
            if follower.stopped {
                return Err(ReadError::Index("the stream index stopped: its thread has ended".into()));
            }
            let (guard, _) = self
                .shared
                .follower_cv
                .wait_timeout(follower, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            follower = guard;
        }
    }

    /// Terminals issued with `model` (from the model index).
    pub fn terminals_of_model(&self, model: &ModelCode) -> Vec<Sn> {
        let writer = lock(&self.shared.writer);
        writer.view.models.get(model).cloned().unwrap_or_default()
    }

    /// Terminals issued with `model` according to the persisted (sled) model index, after persisting it.
    pub fn persisted_terminals_of_model(&self, model: &ModelCode) -> Result<Vec<Sn>, ReadError> {
        self.sync_index()?;
        let store = self.shared.store().ok_or(ReadError::Closed)?;
        store.terminals_of_model(model).map_err(|e| ReadError::Index(e.to_string()))
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

    fn read_at_unpublished(&self, position: u64, writer: &Writer) -> Result<Record, ReadError> {
        // Called under the writer lock: the record may not be published yet but it is written.
        let files = self.files_snapshot(writer.size);
        let mut iter = RecordIter::new(FrameIter::new(files, position, position + 1));
        iter.next().unwrap_or(Err(ReadError::OutOfRange { position, size: writer.size }))
    }

    /// Every published record from `position` on, in order, in constant memory. The end is the head at
    /// the time of the call.
    pub fn read_from(&self, position: u64) -> RecordIter {
        let size = self.head().size;
        self.read_range(position, size)
    }

    fn read_range(&self, from: u64, to: u64) -> RecordIter {
        RecordIter::new(self.frames(from, to))
    }

    /// Raw frames (record bodies as stored) of positions `from..to`, bounded by the published head.
    pub fn frames(&self, from: u64, to: u64) -> FrameIter {
        let size = self.head().size;
        let files = self.files_snapshot(size);
        FrameIter::new(files, from, to.min(size))
    }

    /// The files of the log with the active segment cut at `size` records.
    fn files_snapshot(&self, size: u64) -> Vec<FileMeta> {
        let mut files = self.shared.sealed.read().unwrap_or_else(|e| e.into_inner()).clone();
        let sparse = self.shared.active_sparse.read().unwrap_or_else(|e| e.into_inner());
        let (seq, first_position, offsets) = &*sparse;
        let keep = size.saturating_sub(*first_position).div_ceil(SPARSE_EVERY) as usize;
        files.push(FileMeta {
            path: self.shared.dir.join(SEGMENTS_DIR).join(segment_file_name(*seq)),
            header: Header {
                kind: FileKind::Segment,
                seq: *seq,
                first_position: *first_position,
                ledger_id: self.shared.ledger_id,
            },
            records: size.saturating_sub(*first_position),
            readable_len: u64::MAX,
            trailer: None,
            sparse: Some(Arc::new(offsets[..keep.min(offsets.len())].to_vec())),
        });
        files
    }

    /// A read-only view of the published log, for projections and exports.
    pub fn source(&self) -> crate::source::Source {
        let Published { head, frontier } = lock(&self.shared.durable).published.clone();
        crate::source::Source {
            path: self.shared.dir.clone(),
            kind: FileKind::Segment,
            files: self.files_snapshot(head.size),
            head,
            published_head: Some(head),
            anchor: None,
            root_at_published: Some(head.root),
            torn: None,
            frontier,
            unwritten: None,
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

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, ReadError> {
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
        merkle::inclusion_proof_with(index, size, &mut |a, b| self.subtree(a, b))
    }

    /// Consistency proof between the log of `old_size` records and that of `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ReadError> {
        let head = self.head();
        if old_size == 0 || old_size > new_size || new_size > head.size {
            return Err(ReadError::OutOfRange { position: old_size.max(new_size), size: head.size });
        }
        merkle::consistency_proof_with(old_size, new_size, &mut |a, b| self.subtree(a, b))
    }

    /// Flushes and closes: makes every append durable (an error here is the log's, and fails the close),
    /// then persists the index within [`INDEX_WAIT`]. The index is derived: if it cannot be persisted,
    /// the close still succeeds, with [`Closed::index_warning`] saying why (the next open rebuilds or
    /// catches up the index from the log).
    pub fn close(self) -> Result<Closed, CloseError> {
        let head = self.flush().map_err(CloseError::Flush)?;
        let index_warning = match self.sync_index() {
            Ok(()) => match self.shared.store() {
                Some(store) => store.flush().err().map(|e| format!("the index could not be flushed: {e}")),
                None => None,
            },
            Err(e) => Some(e.to_string()),
        };
        Ok(Closed { head, index_warning })
    }
}

/// What [`Ledger::close`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The head, durable.
    pub head: Head,
    /// Why the index could not be persisted, if it could not (the log is unaffected).
    pub index_warning: Option<String>,
}

/// Why [`Ledger::close`] failed: the log could not be made durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The final flush of the log failed; appends after the last acknowledged one may be lost.
    #[error(transparent)]
    Flush(AppendError),
}

/// How long `sync_index` (and so `close`) waits for the index before giving up on it.
pub const INDEX_WAIT: Duration = Duration::from_secs(60);
/// How long dropping a ledger waits for its background threads and for sled to close before leaving
/// them behind (a failed device can block sled's flush forever; the index is derived, so nothing is lost).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(20);

impl Shared {
    /// Stops the indexer after it has drained its queue, and flushes sled. Idempotent.
    fn shutdown(&self) {
        {
            // A last snapshot of what is published, so the next open need not replay the log.
            let published = lock(&self.durable).published.head.size;
            let writer = lock(&self.writer);
            if writer.size == published {
                writer.request_snapshot();
            }
        }
        lock(&self.durable).closed = true;
        self.published_cv.notify_all();
        // Dropping the sender ends the follower once it has drained its queue; the follower's end drops
        // the store thread's sender, which ends that thread once it has written what it was handed.
        lock(&self.writer).follower_tx = None;
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        let threads = std::mem::take(&mut *lock(&self.threads));
        for handle in threads {
            // A background thread may hold the last reference for a moment; it cannot join itself.
            if handle.thread().id() == std::thread::current().id() {
                continue;
            }
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        // sled is closed on a thread of its own, so a device that blocks its flush cannot hang the drop.
        if let Some(store) = lock(&self.store).take() {
            let (done, closed) = std::sync::mpsc::channel();
            let closer = std::thread::Builder::new().name("posledger-sled-close".into()).spawn(move || {
                // A panic in sled's drop must not leave this wait to its deadline.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _ = store.flush();
                    drop(store);
                }));
                let _ = done.send(());
            });
            if closer.is_ok() {
                let _ = closed.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
            }
        }
    }

    /// The sled index, unless the ledger has shut down.
    pub(crate) fn store(&self) -> Option<Store> {
        lock(&self.store).clone()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
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
            let mut durable = lock(&shared.durable);
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
                let (guard, _) =
                    shared.published_cv.wait_timeout(durable, deadline - now).unwrap_or_else(|e| e.into_inner());
                durable = guard;
            }
            drop(durable);
            self.iter = Some(Ledger { shared, owner: false }.read_from(self.next));
        }
    }

    /// The position of the next record it will deliver.
    pub fn position(&self) -> u64 {
        self.next
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // The ledger the caller opened shuts the indexer down deterministically, so the folder can be
        // reopened as soon as it is dropped; the copy inside a subscription does not.
        if self.owner {
            self.shared.shutdown();
        }
    }
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
    use crate::anchor_writer::Faults;
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
fn open_index(path: &Path, recovered: &Recovered) -> Result<(Store, View, u64), OpenError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::apply::tests::{flow, issued};

    /// A follower thread that dies by a panic (here: handed an empty append, which the writer never
    /// sends) records the failure as the index error, so `sync_index`, `read_stream` and `close` answer
    /// with an error instead of waiting for it forever; the next open rebuilds the index from the log.
    #[test]
    fn a_panicking_follower_stops_the_index_instead_of_hanging_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.append(vec![issued("A"), flow("A")]).unwrap();
        ledger.sync_index().unwrap();
        let size = ledger.head().size;
        {
            let writer = lock(&ledger.shared.writer);
            let empty = Written {
                events: Vec::new(),
                fresh: Vec::new(),
                first: size,
                steps: Steps { slots: Vec::new(), versions: Vec::new(), states: Vec::new() },
            };
            let msg = FollowerMsg::Apply(Applied { written: empty, size, last_leaf: [0; 32] });
            writer.follower_tx.as_ref().expect("the follower is running").send(msg).unwrap();
        }
        // The writer is unaffected; the index stops with the panic's reason.
        ledger.append(vec![flow("A")]).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let synced = ledger.sync_index().map_err(|e| e.to_string());
            let read = ledger.read_stream(&StreamId::Terminal(Sn::parse("A").unwrap())).map_err(|e| e.to_string());
            let closed = ledger.close().map(|c| c.index_warning).map_err(|e| e.to_string());
            done.send(()).ok();
            (synced, read, closed)
        });
        finished.recv_timeout(Duration::from_secs(60)).expect("sync_index, read_stream or close hung");
        let (synced, read, closed) = waiter.join().unwrap();
        assert!(synced.as_ref().is_err_and(|e| e.contains("the follower thread panicked")), "{synced:?}");
        assert!(read.is_err(), "{read:?}");
        // The log is durable, so the close succeeds; it says the index could not be persisted.
        assert!(closed.as_ref().is_ok_and(|w| w.as_ref().is_some_and(|w| w.contains("panicked"))), "{closed:?}");
        // The log is whole, and the next open answers from it.
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.head().size, size + 1);
        assert_eq!(ledger.read_stream(&StreamId::Terminal(Sn::parse("A").unwrap())).unwrap().len(), 3);
        ledger.sync_index().unwrap();
    }
}

//! The [`Ledger`]: open and recover, validate and append with group commit, read, subscribe, prove.
//!
//! Concurrency: one `writer` mutex serialises validation and the write of each append (positions and
//! versions are assigned there, densely). Durability is a second step outside that lock: the first
//! appender that needs a sync becomes the syncer and fsyncs everything written so far, so concurrent
//! appends share one fsync (group commit); the others wait on a condition variable. A record becomes
//! visible to readers only when it is *published*: after its fsync in durable mode.

mod disk;
mod reader;
mod recovery;
mod writer;

use crate::anchor_writer::AnchorWriter;
use crate::error::{AppendError, OpenError, ReadError};
use crate::index::Store;
use crate::indexer::{follower_loop, store_loop, Backlog, Follower, FOLLOWER_QUEUE_APPENDS};
use crate::lifecycle::State;
use crate::lock::DirLock;
use crate::merkle::Frontier;
use crate::model::{ModelCode, Sn};
use crate::source::Head;
use crate::source::{FileMeta, HEAD_FILE, SEGMENTS_DIR};
pub(crate) use disk::SeamFaults;
use disk::{create_dir_durable, create_segment, io_err, new_ledger_id, sync_dir, UNBORN_LEFTOVERS};
pub use reader::Subscription;
use recovery::{last_leaf_of, open_index, recover};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;
pub(crate) use writer::{Active, WriteMode, Writer};

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
    /// Offsets of every SPARSE_EVERY_RECORDS-th record of the active segment (written records; readers only use
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
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves state we cannot trust, but the data it guards is only ever
    // changed after every check passed; recover the guard rather than cascade the panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
                faults.observe(&DiskOp::CreateDir { path: &seg_dir });
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
        let (follower_tx, follower_rx) = std::sync::mpsc::sync_channel(FOLLOWER_QUEUE_APPENDS);
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
        let ledger = Ledger { shared };
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
}

impl Ledger {
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

impl Drop for Ledger {
    fn drop(&mut self) {
        // Shut the indexer down deterministically, so the folder can be reopened as soon as the ledger
        // is dropped (a subscription holds the shared state weakly and reads through it, never through
        // a `Ledger` of its own).
        self.shared.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::apply::tests::{flow, issued};
    use crate::apply::{Steps, Written};
    use crate::indexer::{Applied, FollowerMsg};
    use crate::model::StreamId;

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

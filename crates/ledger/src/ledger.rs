//! The [`Ledger`] façade, which reads as the table of contents: the public types, the shared state, and
//! one child module per concern (as fjall splits its journal):
//!
//! - [`recovery`]: open: read the segments against the anchor, cut an unacknowledged tail, load or
//!   rebuild the index, start the index threads;
//! - [`writer`]: validate, encode and write an append under the writer lock, seal and rotate, group
//!   commit (fsync, then the anchor), `flush`;
//! - [`segment_writer`]: the bytes of the live segment (frames, trailer, header) and their fsyncs;
//! - [`reader`]: stream reads, records and frames up to the published head, roots, proofs,
//!   [`Subscription`];
//! - [`disk`]: the folder's own file operations (creating it durably, folder fsyncs);
//! - [`close`]: flush and close, and the shutdown of the index threads.
//!
//! Concurrency: one `writer` mutex serialises validation and the write of each append (positions and
//! versions are assigned there, densely). Durability is a second step outside that lock: the first
//! appender that needs a sync becomes the syncer and fsyncs everything written so far, so concurrent
//! appends share one fsync (group commit); the others wait on a condition variable. A record becomes
//! visible to readers only when it is *published*: after its fsync in durable mode. The index threads
//! have their own shared state ([`IndexShared`]), which the writer tells what it published.

mod close;
pub(crate) mod disk;
mod reader;
pub(crate) mod recovery;
mod segment_writer;
mod writer;

use crate::anchor_writer::AnchorWriter;
use crate::error::{OpenError, ReadError, WriterFailure};
use crate::faults::{FaultInjector, SeamFaults};
use crate::guard::{Lock, RwLockNamed};
use crate::indexer::IndexShared;
use crate::lifecycle::State;
use crate::lock::DirLock;
use crate::merkle::Frontier;
use crate::model::{DirectiveId, ModelCode, Sn};
use crate::source::{FileMeta, Head};
pub use close::{Closed, INDEX_WAIT, SHUTDOWN_WAIT};
pub use reader::Subscription;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar};
pub(crate) use writer::{Given, GivenRecord, WriteMode, Writer};

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

/// How to open a ledger.
#[derive(Clone, Debug)]
pub struct Options {
    /// When appends return.
    pub durability: Durability,
    /// A segment is sealed once it holds at least this many bytes (an append never spans segments).
    pub segment_max_bytes: u64,
    /// Fault injection, for tests only (see [`crate::testing`]); `None` in production.
    #[doc(hidden)]
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
    /// The directive records written: the given id, then `<id>-p2`, `<id>-p3`, … when the model list
    /// was split to fit the entry limit.
    pub directives: Vec<DirectiveId>,
    /// The append (the directive first, then the stops).
    pub appended: Appended,
}

/// What readers may see: the head after the last group commit.
#[derive(Clone)]
pub(crate) struct Published {
    pub(crate) head: Head,
    /// The Merkle frontier at `head` (for read-only snapshots that may be extended, e.g. exports).
    frontier: Frontier,
}

/// The group commit's state. Every field is only ever changed by assigning it a whole value (see
/// [`Lock::lock_assigned_whole`], which [`Ledger::head`] relies on).
pub(crate) struct Durable {
    pub(crate) published: Published,
    syncing: bool,
    pub(crate) failed: Option<WriterFailure>,
    pub(crate) closed: bool,
}

/// What the ledger's handles and its subscriptions share.
pub(crate) struct Shared {
    dir: PathBuf,
    ledger_id: u64,
    pub(crate) options: Options,
    pub(crate) writer: Lock<Writer>,
    durable: Lock<Durable>,
    published_cv: Condvar,
    /// Sealed segments, for readers.
    sealed: RwLockNamed<Vec<FileMeta>>,
    /// The live segment's sequence number, first position, and the offsets of every
    /// SPARSE_EVERY_RECORDS-th record of it (written records; readers only use entries below the
    /// published size).
    pub(crate) active_sparse: RwLockNamed<(u32, u64, Vec<u64>)>,
    /// The index threads' state: the follower's view, sled, what is published (see [`crate::indexer`]).
    pub(crate) index: Arc<IndexShared>,
    /// The follower and store threads, joined on close (the follower first).
    threads: Lock<Vec<std::thread::JoinHandle<()>>>,
    /// The HEAD file: the log's committed end, recorded durably after each group commit.
    anchor: Lock<AnchorWriter>,
    _lock: DirLock,
}

impl Shared {
    fn faults(&self) -> SeamFaults<'_> {
        SeamFaults(&self.options.faults)
    }
}

/// An open ledger. `Sync`: share it between threads with `Arc`.
pub struct Ledger {
    pub(crate) shared: Arc<Shared>,
}

impl Ledger {
    /// Opens the ledger in `dir` with default options, creating it if `dir` is missing or empty.
    pub fn open(dir: &Path) -> Result<Ledger, OpenError> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (or creates) the ledger in `dir`: recovers the log (cutting a torn tail), then loads or
    /// rebuilds the index.
    pub fn open_with(dir: &Path, options: Options) -> Result<Ledger, OpenError> {
        disk::create_dir_durable(dir, &SeamFaults(&options.faults))?;
        let lock = DirLock::acquire(dir)?;
        Self::open_locked(lock, options)
    }

    /// Opens (or creates) the ledger in the folder `lock` holds (see [`Ledger::open_with`]).
    pub fn open_locked(dir_lock: DirLock, options: Options) -> Result<Ledger, OpenError> {
        recovery::open_locked(dir_lock, options, None)
    }

    /// The folder of the ledger.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The random id chosen when the ledger was created (stored in every segment header).
    pub fn ledger_id(&self) -> u64 {
        self.shared.ledger_id
    }

    /// The published head: size and Merkle root of every record a reader can see. Infallible: the
    /// published head is only ever replaced whole, so it is read even after a panic poisoned its lock.
    pub fn head(&self) -> Head {
        self.shared.durable.lock_assigned_whole().published.head
    }

    /// The current lifecycle state and stream version of a terminal (including appends not yet
    /// published, so use it for decisions only, like the write path does).
    pub fn terminal(&self, sn: &Sn) -> Result<Option<(u64, State, ModelCode)>, ReadError> {
        let writer = self.shared.writer.lock()?;
        Ok(writer.view.terminal(sn).map(|m| (m.version, m.state, m.model.clone())))
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

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]
    use super::*;
    use crate::apply::tests::{flow, issued};
    use crate::apply::{Steps, Written};
    use crate::indexer::{Applied, FollowerMsg};
    use crate::model::StreamId;
    use std::time::Duration;

    /// Regression test for the review of the post-import seal: a committed import's seal never waits
    /// for the writer lock (another import may hold it for as long as its input lasts), and only seals
    /// in durable mode.
    #[test]
    fn the_seal_after_an_import_never_waits_for_the_writer_lock() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { segment_max_bytes: 1_024, ..Options::default() };
        let ledger = Ledger::open_with(dir.path(), options).unwrap();
        let events: Vec<_> = (0..100).map(|i| (issued(&format!("T{i}")), i)).collect();
        // The importer seals what it filled: two segments.
        ledger.import(events, None).unwrap();
        let segments = || std::fs::read_dir(dir.path().join("segments")).unwrap().count();
        assert_eq!(segments(), 2);
        // Another import holds the writer lock; the seal returns at once without sealing.
        let open_import = ledger.begin_import(None).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let sealed = ledger.seal_if_full();
                done.send(sealed.is_ok()).ok();
            });
            let sealed = finished.recv_timeout(Duration::from_secs(10));
            // Released before the assertion, so a failure cannot leave the sealing thread blocked.
            drop(open_import);
            assert_eq!(sealed, Ok(true), "the seal waited for the lock");
        });
        // In relaxed mode an import past the limit is left live (the next append seals it).
        let relaxed = tempfile::tempdir().unwrap();
        let options = Options { segment_max_bytes: 1_024, durability: Durability::Relaxed, ..Options::default() };
        let ledger = Ledger::open_with(relaxed.path(), options).unwrap();
        ledger.import((0..100).map(|i| (issued(&format!("T{i}")), i)), None).unwrap();
        assert_eq!(std::fs::read_dir(relaxed.path().join("segments")).unwrap().count(), 1);
    }

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
            let writer = ledger.shared.writer.lock().unwrap();
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

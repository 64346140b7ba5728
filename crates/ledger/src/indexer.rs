//! The index pipeline: two background threads between the write path and sled.
//!
//! ```text
//!  writer (append, under the writer lock)        follower thread               store thread
//!  check + encode + write + commit to  --Apply-->  commit to the full view  --Changed-->  encode pages, wait
//!  the writer's view (no positions)   (bounded)   (stream positions), take    (one at a    until published,
//!                                                  a snapshot every           time)        write to sled
//!                                                  SNAPSHOT_EVERY_RECORDS records
//!                                                  (at least 4 a terminal)
//! ```
//!
//! The writer hands each append's events (moved, not copied) to the *follower*, which applies them to
//! the full [`View`] through the same check and commit the writer ran ([`crate::apply`]) and answers
//! stream reads from it. So the append path pays neither for the per-stream position lists nor for
//! copying the view into snapshots, nor for dropping the events: those run on another core. Stream
//! reads wait until the follower has applied every published record ([`Follower`]`::applied`).
//!
//! The *store* thread encodes each snapshot and writes it to sled once every record it covers is
//! published (only durable records are indexed).
//!
//! At most one periodic snapshot is in flight: while the store thread still holds one
//! (`IndexShared::snapshots_in_flight`), the follower does not take the next and keeps its dirty marks, so
//! the next snapshot covers both intervals. A snapshot copies the buckets that changed, so without this
//! a store thread slowed by the disk would let copies of the view pile up in its queue. Snapshots
//! requested by `sync_index`, close and open are always taken (they are what those calls wait for).
//!
//! No deadlock: the writer may block on the follower's bounded queue while holding the writer lock, so
//! the follower never waits for anything the writer holds: it never takes the writer lock, and it never
//! waits for the store thread (it skips a snapshot instead). The store thread waits for publication,
//! which needs the writer lock only briefly and never the follower.

use crate::apply::{apply_written, ApplyError, Written};
use crate::guard::{Lock, LockPoisoned};
use crate::index::{
    Changed, SnapshotError, Store, StoreError, View, SNAPSHOT_EVERY_RECORDS, SNAPSHOT_RECORDS_PER_TERMINAL,
};
use crate::merkle::Hash;
use log::ReadError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Appends that may wait for the follower before the writer blocks.
pub(crate) const FOLLOWER_QUEUE_APPENDS: usize = 32;
/// Events that may wait for the follower before the writer blocks (about 100 MB of requests): with
/// [`FOLLOWER_QUEUE_APPENDS`], bounds the memory held for a follower that falls behind, whatever the append size.
pub(crate) const FOLLOWER_BACKLOG_EVENTS: u64 = 1_000_000;
/// How long the index threads and the index's waiters sleep between checks of a condition that another
/// thread signals (a bound on a missed wake-up, not a polling interval the logic depends on).
const WAKE_MS: u64 = 50;
/// The same bound for the writer waiting on the backlog and the store thread waiting for publication.
const THREAD_WAKE_MS: u64 = 100;

const _: () = assert!(SNAPSHOT_EVERY_RECORDS > 0, "snapshots are taken every so many records");
const _: () = assert!(FOLLOWER_QUEUE_APPENDS > 0, "the follower's queue holds at least one append");

/// Why the index stopped at its last good snapshot (the first reason stays). The index is derived: it
/// never fails an append; the next open catches it up or rebuilds it from the log.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IndexStop {
    /// The follower was handed an append that does not start where its view ends.
    #[error("the follower holds {held} records but was handed an append starting at {first}")]
    Gap {
        /// Records the follower's view covers.
        held: u64,
        /// Where the append starts.
        first: u64,
    },
    /// The follower's view and the writer's disagree.
    #[error("the stream index diverged from the writer's view: {0}")]
    Diverged(#[source] ApplyError),
    /// A background thread died by a panic.
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// A snapshot could not be encoded.
    #[error("a snapshot could not be encoded: {0}")]
    Encode(#[source] SnapshotError),
    /// sled refused the snapshot.
    #[error("{0}")]
    Store(#[source] StoreError),
    /// A snapshot covers records that were never published (the ledger failed first).
    #[error("the snapshot covers records that were never published")]
    Unpublished,
    /// The ledger shut down before the snapshot was written.
    #[error("the ledger has shut down")]
    ShutDown,
    /// An import was aborted after part of it reached the follower.
    #[error("an import was aborted")]
    ImportAborted,
    /// One of the index's locks is poisoned.
    #[error(transparent)]
    LockPoisoned(#[from] LockPoisoned),
}

/// Why the writer's index cannot answer a read (carried by `ReadError::Index`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexUnavailable {
    /// sled did not reach the log's end within the wait.
    #[error("the index did not reach the log's {target} records in time")]
    Timeout {
        /// The records it had to cover.
        target: u64,
    },
    /// The ledger failed, so the index stays behind the log.
    #[error("the ledger failed; the index is behind the log")]
    LedgerFailed,
    /// The index stopped at its last good snapshot.
    #[error("the index stopped at its last good snapshot: {0}")]
    Stopped(#[source] IndexStop),
    /// The stream index (the follower) stopped.
    #[error("the stream index stopped: {0}")]
    StreamStopped(#[source] IndexStop),
    /// The follower's thread has ended.
    #[error("the stream index stopped: its thread has ended")]
    ThreadEnded,
    /// The stream index points a stream version at a position that holds another record.
    #[error("index points {stream} version {version} at position {position}, which holds another record")]
    Misplaced {
        /// The stream.
        stream: String,
        /// The version.
        version: u64,
        /// The position.
        position: u64,
    },
    /// A stream's positions could not be decoded.
    #[error(transparent)]
    Positions(#[from] crate::index::PositionsError),
    /// The sled store failed.
    #[error(transparent)]
    Store(#[from] crate::index::StoreError),
}

impl From<IndexUnavailable> for ReadError {
    fn from(e: IndexUnavailable) -> ReadError {
        ReadError::Index(Box::new(e))
    }
}

/// The end of the log as the index threads see it: the writer publishes here after each group commit.
#[derive(Clone, Copy, Default)]
struct Publication {
    /// Records published (durable in durable mode).
    size: u64,
    /// The ledger failed: what is not published now never will be.
    failed: bool,
    /// The ledger is closing.
    closed: bool,
}

/// The state the writer shares with the index threads, and the index's answers to readers. The façade
/// owns it (in its shared state) and the threads hold it weakly; it knows nothing of the writer.
pub(crate) struct IndexShared {
    ledger_id: u64,
    /// The full view, kept by the follower thread (stream reads).
    follower: Lock<Follower>,
    follower_cv: Condvar,
    /// Events handed to the follower and not yet applied.
    pub(crate) backlog: Backlog,
    /// Snapshots handed to the store thread and not yet written (see the module documentation).
    snapshots_in_flight: AtomicUsize,
    /// The sled index; taken out when the ledger shuts down.
    store: Lock<Option<Store>>,
    /// Log size the sled index covers.
    indexed: Lock<u64>,
    /// Set when the index stopped: later snapshots are not written either (each covers only what
    /// changed since the one before), so the persisted index stays at its last good watermark and the
    /// next open replays the log from there.
    stop: Lock<Option<IndexStop>>,
    indexed_cv: Condvar,
    publication: Lock<Publication>,
    published_cv: Condvar,
}

impl IndexShared {
    /// The index of ledger `ledger_id`: the follower's view, sled, the size sled covers and the
    /// published size.
    pub(crate) fn new(ledger_id: u64, follower: Follower, store: Store, indexed: u64, published: u64) -> IndexShared {
        IndexShared {
            ledger_id,
            follower: Lock::new("follower", follower),
            follower_cv: Condvar::new(),
            backlog: Backlog::new(),
            snapshots_in_flight: AtomicUsize::new(0),
            store: Lock::new("store", Some(store)),
            indexed: Lock::new("indexed", indexed),
            stop: Lock::new("index stop", None),
            indexed_cv: Condvar::new(),
            publication: Lock::new("publication", Publication { size: published, failed: false, closed: false }),
            published_cv: Condvar::new(),
        }
    }

    /// Changes what the store thread knows of publication, and wakes it. A poisoned lock is left alone
    /// here (the writer's append does not depend on the index); the store thread stops the index when it
    /// finds it poisoned.
    fn set_publication(&self, change: impl FnOnce(&mut Publication)) {
        if let Ok(mut publication) = self.publication.lock() {
            change(&mut publication);
        }
        self.published_cv.notify_all();
    }

    /// The log is published up to `size` records.
    pub(crate) fn publish(&self, size: u64) {
        self.set_publication(|p| p.size = p.size.max(size));
    }

    /// The ledger failed: nothing more will be published.
    pub(crate) fn fail(&self) {
        self.set_publication(|p| p.failed = true);
    }

    /// The ledger is closing.
    pub(crate) fn close(&self) {
        self.set_publication(|p| p.closed = true);
    }

    /// The sled index, unless the ledger has shut down.
    pub(crate) fn store(&self) -> Result<Option<Store>, LockPoisoned> {
        Ok(self.store.lock()?.clone())
    }

    /// Takes the sled index out (the ledger shuts down).
    pub(crate) fn take_store(&self) -> Result<Option<Store>, LockPoisoned> {
        Ok(self.store.lock()?.take())
    }

    /// Stops the index at its last good snapshot, for `why` (the first reason stays), and wakes whoever
    /// waits for it (`sync_index`, close), who then answer with the reason.
    pub(crate) fn stop(&self, why: IndexStop) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(why);
        }
        self.indexed_cv.notify_all();
    }

    /// Waits until sled covers `target` records, at most until `deadline`.
    pub(crate) fn wait_indexed(&self, target: u64, deadline: Instant) -> Result<(), ReadError> {
        let mut indexed = self.indexed.lock()?;
        while *indexed < target {
            if Instant::now() >= deadline {
                return Err(IndexUnavailable::Timeout { target }.into());
            }
            if self.publication.lock()?.failed {
                return Err(IndexUnavailable::LedgerFailed.into());
            }
            if let Some(why) = self.stop.lock()?.clone() {
                return Err(IndexUnavailable::Stopped(why).into());
            }
            indexed = self.indexed.wait_timeout(&self.indexed_cv, indexed, Duration::from_millis(WAKE_MS))?;
        }
        Ok(())
    }

    /// The follower's full view once it covers at least `size` records (every published record has been
    /// handed to it, so it gets there unless it failed or stopped).
    pub(crate) fn follower_at(&self, size: u64) -> Result<MutexGuard<'_, Follower>, ReadError> {
        let mut follower = self.follower.lock()?;
        loop {
            // A failed follower may have applied part of the append it refused: never read from it.
            if let Some(why) = &follower.failed {
                return Err(IndexUnavailable::StreamStopped(why.clone()).into());
            }
            if follower.applied >= size {
                return Ok(follower);
            }
            if follower.stopped {
                return Err(IndexUnavailable::ThreadEnded.into());
            }
            follower = self.follower.wait_timeout(&self.follower_cv, follower, Duration::from_millis(WAKE_MS))?;
        }
    }
}

/// Events handed to the follower and not yet applied. The writer waits (under the writer lock; the
/// follower never takes it) while the backlog is over [`FOLLOWER_BACKLOG_EVENTS`]; one append larger than
/// the limit still goes through alone.
pub(crate) struct Backlog {
    /// Events waiting, and whether the follower has stopped (then nobody waits).
    state: Lock<(u64, bool)>,
    drained: Condvar,
}

impl Backlog {
    fn new() -> Backlog {
        Backlog { state: Lock::new("backlog", (0, false)), drained: Condvar::new() }
    }

    /// Waits for room for `n` events, then counts them in. A poisoned backlog (a follower that died
    /// holding it) holds nobody back: the follower is gone, so nothing would drain it.
    pub(crate) fn add(&self, n: u64) {
        let Ok(mut state) = self.state.lock() else { return };
        while !state.1 && state.0 > 0 && state.0 + n > FOLLOWER_BACKLOG_EVENTS {
            match self.state.wait_timeout(&self.drained, state, Duration::from_millis(THREAD_WAKE_MS)) {
                Ok(guard) => state = guard,
                Err(_) => return,
            }
        }
        state.0 += n;
    }

    /// Counts `n` applied (or dropped) events out.
    fn remove(&self, n: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.0 = state.0.saturating_sub(n);
        }
        self.drained.notify_all();
    }

    /// The follower has stopped: nothing will drain the backlog, so nobody may wait for it.
    fn stop(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 = true;
        }
        self.drained.notify_all();
    }
}

/// What the writer sends the follower.
pub(crate) enum FollowerMsg {
    /// One append, as written.
    Apply(Applied),
    /// Snapshot whatever changed since the last snapshot (`sync_index`, close, open).
    Snapshot,
}

/// One written append and the log after it.
pub(crate) struct Applied {
    /// The append.
    pub(crate) written: Written,
    /// Log size after the append.
    pub(crate) size: u64,
    /// Leaf hash of record `size - 1`.
    pub(crate) last_leaf: Hash,
}

/// The follower's full view and how far it has got.
pub(crate) struct Follower {
    pub(crate) view: View,
    /// Log size the view covers.
    pub(crate) applied: u64,
    /// Leaf hash of record `applied - 1`.
    pub(crate) last_leaf: Hash,
    /// Log size the last snapshot covered.
    pub(crate) snapshot_size: u64,
    /// Set when an append could not be applied (the view is then behind the log for good).
    pub(crate) failed: Option<IndexStop>,
    /// Set when the follower thread has ended.
    pub(crate) stopped: bool,
    /// Records between periodic snapshots ([`SNAPSHOT_EVERY_RECORDS`]; smaller in tests).
    snapshot_every_records: u64,
    /// And at least this many a terminal ([`SNAPSHOT_RECORDS_PER_TERMINAL`]; 0 in tests).
    snapshot_records_per_terminal: u64,
}

impl Follower {
    /// A follower whose view covers `applied` records, the last snapshot `snapshot_size`.
    pub(crate) fn new(view: View, applied: u64, last_leaf: Hash, snapshot_size: u64) -> Follower {
        assert!(view.is_full(), "the follower keeps a full view");
        assert!(snapshot_size <= applied);
        Follower {
            view,
            applied,
            last_leaf,
            snapshot_size,
            failed: None,
            stopped: false,
            snapshot_every_records: SNAPSHOT_EVERY_RECORDS,
            snapshot_records_per_terminal: SNAPSHOT_RECORDS_PER_TERMINAL,
        }
    }

    /// Applies one append; returns the snapshot to persist if one is due and the store thread is idle
    /// (`store_idle`; otherwise the changes stay marked for the next snapshot).
    fn apply(&mut self, applied: &Applied, store_idle: bool) -> Option<Changed> {
        if self.failed.is_some() {
            return None;
        }
        let written = &applied.written;
        let count = written.fresh.len() as u64;
        assert!(count > 0 && applied.size == written.first + count);
        if written.first != self.applied {
            self.failed = Some(IndexStop::Gap { held: self.applied, first: written.first });
            return None;
        }
        if let Err(why) = apply_written(&mut self.view, written) {
            self.failed = Some(IndexStop::Diverged(why));
            return None;
        }
        self.applied = applied.size;
        self.last_leaf = applied.last_leaf;
        if store_idle {
            self.snapshot(self.periodic_interval())
        } else {
            None
        }
    }

    /// Records between periodic snapshots for the fleet the view holds now: the floor, or
    /// [`SNAPSHOT_RECORDS_PER_TERMINAL`] a terminal when that is more (see there for why).
    fn periodic_interval(&self) -> u64 {
        let terminals = self.view.terminal_count() as u64;
        self.snapshot_every_records.max(terminals.saturating_mul(self.snapshot_records_per_terminal))
    }

    /// A snapshot of what changed, if at least `min_new` records arrived since the last one.
    fn snapshot(&mut self, min_new: u64) -> Option<Changed> {
        if self.failed.is_some() || self.applied < self.snapshot_size + min_new.max(1) {
            return None;
        }
        self.snapshot_size = self.applied;
        Some(self.view.take_snapshot(self.applied, self.last_leaf))
    }
}

/// Marks the follower stopped when its thread ends, even by a panic, so stream reads stop waiting.
struct StopGuard(Weak<IndexShared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(index) = self.0.upgrade() {
            // A follower that panicked holding its lock left it poisoned: readers get that error instead.
            if let Ok(mut follower) = index.follower.lock() {
                follower.stopped = true;
            }
            index.follower_cv.notify_all();
            index.backlog.stop();
            stop_if_panicking(&index, "the follower thread");
        }
    }
}

/// The follower thread: applies each append to the full view, hands snapshots to the store thread.
pub(crate) fn follower_loop(index: Weak<IndexShared>, rx: Receiver<FollowerMsg>, store_tx: Sender<Changed>) {
    let _guard = StopGuard(index.clone());
    while let Ok(msg) = rx.recv() {
        let Some(index) = index.upgrade() else { return };
        let snapshot = match index.follower.lock() {
            Ok(mut follower) => {
                let store_idle = index.snapshots_in_flight.load(Ordering::Acquire) == 0;
                let snapshot = match &msg {
                    FollowerMsg::Apply(applied) => follower.apply(applied, store_idle),
                    FollowerMsg::Snapshot => follower.snapshot(1),
                };
                if let Some(why) = &follower.failed {
                    index.stop(why.clone());
                }
                snapshot
            }
            Err(poisoned) => {
                index.stop(poisoned.into());
                None
            }
        };
        index.follower_cv.notify_all();
        index.indexed_cv.notify_all();
        // The request's events are dropped here, off the append path.
        let applied_events = match &msg {
            FollowerMsg::Apply(applied) => applied.written.events.len() as u64,
            FollowerMsg::Snapshot => 0,
        };
        drop(msg);
        index.backlog.remove(applied_events);
        if let Some(changed) = snapshot {
            index.snapshots_in_flight.fetch_add(1, Ordering::AcqRel);
            if store_tx.send(changed).is_err() {
                index.snapshots_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// A background thread that dies by a panic leaves the index behind the log for good: say so, so that
/// `sync_index` (and close) stop waiting for it.
fn stop_if_panicking(index: &IndexShared, thread: &'static str) {
    if std::thread::panicking() {
        index.stop(IndexStop::Panicked(thread));
    }
}

/// Marks the index stopped if the store thread dies by a panic.
struct StoreGuard(Weak<IndexShared>);

impl Drop for StoreGuard {
    fn drop(&mut self) {
        if let Some(index) = self.0.upgrade() {
            stop_if_panicking(&index, "the store thread");
        }
    }
}

/// Counts one snapshot out of `IndexShared::snapshots_in_flight` when the store thread is done with it,
/// however it is done (written, refused, or a panic).
struct InFlight<'a>(&'a IndexShared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.snapshots_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The store thread: writes snapshots to sled, once the records they cover are published.
pub(crate) fn store_loop(index: Weak<IndexShared>, rx: Receiver<Changed>) {
    let _guard = StoreGuard(index.clone());
    while let Ok(changed) = rx.recv() {
        let Some(index) = index.upgrade() else { return };
        let _done = InFlight(&index);
        if let Err(why) = store_one(&index, changed) {
            index.stop(why);
        }
    }
}

/// Encodes one snapshot and writes it to sled once the records it covers are published.
fn store_one(index: &IndexShared, changed: Changed) -> Result<(), IndexStop> {
    if index.stop.lock()?.is_some() {
        return Ok(());
    }
    let snapshot = changed.encode().map_err(IndexStop::Encode)?;
    // Only durable records go to sled: wait until the snapshot's records are published.
    let mut publication = index.publication.lock()?;
    while publication.size < snapshot.size && !publication.failed && !publication.closed {
        publication =
            index.publication.wait_timeout(&index.published_cv, publication, Duration::from_millis(THREAD_WAKE_MS))?;
    }
    let publishable = publication.size >= snapshot.size;
    drop(publication);
    match index.store()? {
        Some(store) if publishable => store.write(&snapshot, index.ledger_id).map_err(IndexStop::Store)?,
        Some(_) => return Err(IndexStop::Unpublished),
        None => return Err(IndexStop::ShutDown),
    }
    *index.indexed.lock()? = snapshot.size;
    index.indexed_cv.notify_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_backlog_holds_the_writer_until_the_follower_drains_it() {
        let backlog = Arc::new(Backlog::new());
        backlog.add(FOLLOWER_BACKLOG_EVENTS - 10);
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let backlog = Arc::clone(&backlog);
            std::thread::spawn(move || {
                backlog.add(20); // over the limit: waits
                tx.send(()).ok();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the writer went past a full backlog");
        backlog.remove(FOLLOWER_BACKLOG_EVENTS - 10);
        rx.recv_timeout(Duration::from_secs(10)).expect("the writer continues once the backlog drains");
        writer.join().ok();
        assert_eq!(backlog.state.lock().unwrap().0, 20);
    }

    #[test]
    fn no_periodic_snapshot_is_taken_while_the_store_thread_holds_one() {
        use crate::apply::tests::{flow, issued, write};
        let mut writer = View::default().writer_copy();
        let mut follower = Follower::new(View::default(), 0, [0; 32], 0);
        follower.snapshot_every_records = 2;
        follower.snapshot_records_per_terminal = 0;
        let mut first = 0;
        let mut append = |follower: &mut Follower, events, store_idle| {
            let written = write(&mut writer, events, first);
            first += written.fresh.len() as u64;
            follower.apply(&Applied { written, size: first, last_leaf: [0; 32] }, store_idle)
        };
        // Due, but the store thread is busy: nothing is taken and the changes stay marked.
        assert!(append(&mut follower, vec![issued("A"), flow("A")], false).is_none());
        assert_eq!(follower.snapshot_size, 0);
        // The store thread is idle again: the next snapshot covers both appends.
        let changed = append(&mut follower, vec![issued("B")], true).expect("a snapshot is due");
        assert_eq!(changed.size(), 3);
        assert!(changed.terminal_count() >= 2, "A's change was kept for the next snapshot");
        assert_eq!(follower.snapshot_size, 3);
        // Not due again until `snapshot_every` more records.
        assert!(append(&mut follower, vec![flow("B")], true).is_none());
        // A requested snapshot is taken whatever the store thread is doing.
        assert_eq!(follower.snapshot(1).map(|c| c.size()), Some(4));
    }

    /// Regression test for the writer's cost per event growing with the fleet (2.3–4× at 10^8 events
    /// against 10^6, BENCHMARKS.md): periodic snapshots, each about the whole fleet's pages, were taken
    /// every fixed number of records; now at least `SNAPSHOT_RECORDS_PER_TERMINAL` records a terminal
    /// apart.
    #[test]
    fn periodic_snapshots_are_spaced_by_the_size_of_the_fleet() {
        use crate::apply::tests::{flow, issued, write};
        let mut writer = View::default().writer_copy();
        let mut follower = Follower::new(View::default(), 0, [0; 32], 0);
        follower.snapshot_every_records = 20;
        assert_eq!(follower.snapshot_records_per_terminal, SNAPSHOT_RECORDS_PER_TERMINAL);
        assert_eq!(SNAPSHOT_RECORDS_PER_TERMINAL, 4, "the numbers below assume 4 records a terminal");
        let mut first = 0;
        let mut append = |follower: &mut Follower, events| {
            let written = write(&mut writer, events, first);
            first += written.fresh.len() as u64;
            follower.apply(&Applied { written, size: first, last_leaf: [0; 32] }, true).map(|c| c.size())
        };
        // Three terminals: the floor of 20 records is more than 4 a terminal.
        assert_eq!(append(&mut follower, vec![issued("A"), issued("B"), issued("C")]), None);
        for position in 3..19 {
            assert_eq!(append(&mut follower, vec![flow("A")]), None, "a snapshot at {position}");
        }
        assert_eq!(append(&mut follower, vec![flow("A")]), Some(20));
        // Six terminals: 24 records (4 a terminal) until the next snapshot, more than the floor.
        assert_eq!(append(&mut follower, vec![issued("D"), issued("E"), issued("F")]), None);
        assert_eq!(follower.periodic_interval(), 24);
        for position in 23..43 {
            assert_eq!(append(&mut follower, vec![flow("D")]), None, "a snapshot at {position}");
        }
        assert_eq!(append(&mut follower, vec![flow("D")]), Some(44));
    }

    #[test]
    fn one_append_over_the_limit_goes_through_alone_and_a_stopped_follower_blocks_nobody() {
        let backlog = Backlog::new();
        backlog.add(FOLLOWER_BACKLOG_EVENTS * 2); // empty backlog: an oversized append is not refused
        backlog.stop();
        backlog.add(1); // nobody will drain it, so nobody waits
        assert_eq!(backlog.state.lock().unwrap().0, FOLLOWER_BACKLOG_EVENTS * 2 + 1);
    }
}

//! The index pipeline: two background threads between the write path and sled.
//!
//! ```text
//!  writer (append, under the writer lock)        follower thread               store thread
//!  check + encode + write + commit to  --Apply-->  commit to the full view  --Changed-->  encode pages, wait
//!  the writer's view (no positions)   (bounded)   (stream positions), take    (one at a    until published,
//!                                                  a snapshot every           time)        write to sled
//!                                                  SNAPSHOT_EVERY_RECORDS records
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
//! (`Shared::snapshots_in_flight`), the follower does not take the next and keeps its dirty marks, so
//! the next snapshot covers both intervals. A snapshot copies the buckets that changed, so without this
//! a store thread slowed by the disk would let copies of the view pile up in its queue. Snapshots
//! requested by `sync_index`, close and open are always taken (they are what those calls wait for).
//!
//! No deadlock: the writer may block on the follower's bounded queue while holding the writer lock, so
//! the follower never waits for anything the writer holds: it never takes the writer lock, and it never
//! waits for the store thread (it skips a snapshot instead). The store thread waits for publication,
//! which needs the writer lock only briefly and never the follower.

use crate::apply::{apply_written, Written};
use crate::index::{Changed, View, SNAPSHOT_EVERY_RECORDS};
use crate::ledger::{lock, Shared};
use crate::merkle::Hash;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, Mutex, Weak};
use std::time::Duration;

/// Appends that may wait for the follower before the writer blocks.
pub(crate) const FOLLOWER_QUEUE_APPENDS: usize = 32;
/// Events that may wait for the follower before the writer blocks (about 100 MB of requests): with
/// [`FOLLOWER_QUEUE_APPENDS`], bounds the memory held for a follower that falls behind, whatever the append size.
pub(crate) const FOLLOWER_BACKLOG_EVENTS: u64 = 1_000_000;

const _: () = assert!(
    crate::import::IMPORT_CHUNK_EVENTS as u64 <= FOLLOWER_BACKLOG_EVENTS,
    "an import chunk fits in the follower's backlog"
);
const _: () = assert!(SNAPSHOT_EVERY_RECORDS > 0, "snapshots are taken every so many records");

/// Events handed to the follower and not yet applied. The writer waits (under the writer lock; the
/// follower never takes it) while the backlog is over [`FOLLOWER_BACKLOG_EVENTS`]; one append larger than
/// the limit still goes through alone.
#[derive(Default)]
pub(crate) struct Backlog {
    /// Events waiting, and whether the follower has stopped (then nobody waits).
    state: Mutex<(u64, bool)>,
    drained: Condvar,
}

impl Backlog {
    /// Waits for room for `n` events, then counts them in.
    pub(crate) fn add(&self, n: u64) {
        let mut state = lock(&self.state);
        while !state.1 && state.0 > 0 && state.0 + n > FOLLOWER_BACKLOG_EVENTS {
            let (guard, _) =
                self.drained.wait_timeout(state, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner());
            state = guard;
        }
        state.0 += n;
    }

    /// Counts `n` applied (or dropped) events out.
    fn remove(&self, n: u64) {
        let mut state = lock(&self.state);
        state.0 = state.0.saturating_sub(n);
        self.drained.notify_all();
    }

    /// The follower has stopped: nothing will drain the backlog, so nobody may wait for it.
    fn stop(&self) {
        lock(&self.state).1 = true;
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
    pub(crate) failed: Option<String>,
    /// Set when the follower thread has ended.
    pub(crate) stopped: bool,
    /// Records between periodic snapshots ([`SNAPSHOT_EVERY_RECORDS`]; smaller in tests).
    snapshot_every: u64,
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
            snapshot_every: SNAPSHOT_EVERY_RECORDS,
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
            self.failed = Some(format!(
                "the follower holds {} records but was handed an append starting at {}",
                self.applied, written.first
            ));
            return None;
        }
        if let Err(why) = apply_written(&mut self.view, written) {
            self.failed = Some(format!("the stream index diverged from the writer's view: {why}"));
            return None;
        }
        self.applied = applied.size;
        self.last_leaf = applied.last_leaf;
        if store_idle {
            self.snapshot(self.snapshot_every)
        } else {
            None
        }
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
struct StopGuard(Weak<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            lock(&shared.follower).stopped = true;
            shared.follower_cv.notify_all();
            shared.backlog.stop();
            stop_index_if_panicking(&shared, "the follower thread");
        }
    }
}

/// The follower thread: applies each append to the full view, hands snapshots to the store thread.
pub(crate) fn follower_loop(shared: Weak<Shared>, rx: Receiver<FollowerMsg>, store_tx: Sender<Changed>) {
    let _guard = StopGuard(shared.clone());
    while let Ok(msg) = rx.recv() {
        let Some(shared) = shared.upgrade() else { return };
        let snapshot = {
            let mut follower = lock(&shared.follower);
            let store_idle = shared.snapshots_in_flight.load(Ordering::Acquire) == 0;
            let snapshot = match &msg {
                FollowerMsg::Apply(applied) => follower.apply(applied, store_idle),
                FollowerMsg::Snapshot => follower.snapshot(1),
            };
            if let Some(why) = &follower.failed {
                stop_index(&shared, why.clone());
            }
            snapshot
        };
        shared.follower_cv.notify_all();
        shared.indexed_cv.notify_all();
        // The request's events are dropped here, off the append path.
        let applied_events = match &msg {
            FollowerMsg::Apply(applied) => applied.written.events.len() as u64,
            FollowerMsg::Snapshot => 0,
        };
        drop(msg);
        shared.backlog.remove(applied_events);
        if let Some(changed) = snapshot {
            shared.snapshots_in_flight.fetch_add(1, Ordering::AcqRel);
            if store_tx.send(changed).is_err() {
                shared.snapshots_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Stops the index at its last good snapshot, for `why` (the first reason stays), and wakes whoever
/// waits for it (`sync_index`, close), who then answer with the reason.
pub(crate) fn stop_index(shared: &Shared, why: String) {
    lock(&shared.index_error).get_or_insert(why);
    shared.indexed_cv.notify_all();
}

/// A background thread that dies by a panic leaves the index behind the log for good: say so, so that
/// `sync_index` (and close) stop waiting for it.
fn stop_index_if_panicking(shared: &Shared, thread: &str) {
    if std::thread::panicking() {
        stop_index(shared, format!("{thread} panicked"));
    }
}

/// Marks the index stopped if the store thread dies by a panic.
struct StoreGuard(Weak<Shared>);

impl Drop for StoreGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            stop_index_if_panicking(&shared, "the store thread");
        }
    }
}

/// Counts one snapshot out of `Shared::snapshots_in_flight` when the store thread is done with it,
/// however it is done (written, refused, or a panic).
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.snapshots_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The store thread: writes snapshots to sled, once the records they cover are published.
pub(crate) fn store_loop(shared: Weak<Shared>, rx: Receiver<Changed>) {
    let _guard = StoreGuard(shared.clone());
    while let Ok(changed) = rx.recv() {
        let Some(shared) = shared.upgrade() else { return };
        let _done = InFlight(&shared);
        if lock(&shared.index_error).is_some() {
            continue;
        }
        let snapshot = match changed.encode() {
            Ok(snapshot) => snapshot,
            Err(why) => {
                stop_index(&shared, why);
                continue;
            }
        };
        // Only durable records go to sled: wait until the snapshot's records are published.
        let mut durable = lock(&shared.durable);
        while durable.published.head.size < snapshot.size && durable.failed.is_none() && !durable.closed {
            let (guard, _) = shared
                .published_cv
                .wait_timeout(durable, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
            durable = guard;
        }
        let publishable = durable.published.head.size >= snapshot.size;
        drop(durable);
        let written = match shared.store() {
            Some(store) if publishable => store.write(&snapshot, shared.ledger_id).map_err(|e| e.to_string()),
            Some(_) => Err("the snapshot covers records that were never published".to_string()),
            None => Err("the ledger has shut down".to_string()),
        };
        match written {
            Ok(()) => {
                *lock(&shared.indexed) = snapshot.size;
                shared.indexed_cv.notify_all();
            }
            Err(why) => stop_index(&shared, why),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_backlog_holds_the_writer_until_the_follower_drains_it() {
        let backlog = Arc::new(Backlog::default());
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
        assert_eq!(lock(&backlog.state).0, 20);
    }

    #[test]
    fn no_periodic_snapshot_is_taken_while_the_store_thread_holds_one() {
        use crate::apply::tests::{flow, issued, write};
        let mut writer = View::default().writer_copy();
        let mut follower = Follower::new(View::default(), 0, [0; 32], 0);
        follower.snapshot_every = 2;
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

    #[test]
    fn one_append_over_the_limit_goes_through_alone_and_a_stopped_follower_blocks_nobody() {
        let backlog = Backlog::default();
        backlog.add(FOLLOWER_BACKLOG_EVENTS * 2); // empty backlog: an oversized append is not refused
        backlog.stop();
        backlog.add(1); // nobody will drain it, so nobody waits
        assert_eq!(lock(&backlog.state).0, FOLLOWER_BACKLOG_EVENTS * 2 + 1);
    }
}

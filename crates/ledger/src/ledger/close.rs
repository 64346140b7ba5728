//! Closing: [`Ledger::close`] (flush the log, persist the index) and the shutdown of the index threads
//! that dropping the last handle runs.

use super::{Ledger, Shared};
use crate::error::CloseError;
use crate::source::Head;
use std::time::{Duration, Instant};

/// How long `sync_index` (and so `close`) waits for the index before giving up on it.
pub const INDEX_WAIT: Duration = Duration::from_secs(60);
/// How long dropping a ledger waits for its background threads and for sled to close before leaving
/// them behind (a failed device can block sled's flush forever; the index is derived, so nothing is lost).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(20);
/// How often the shutdown looks whether a background thread has finished.
const SHUTDOWN_POLL_MS: u64 = 2;

const _: () = assert!(SHUTDOWN_WAIT.as_millis() > SHUTDOWN_POLL_MS as u128, "the shutdown polls within its wait");

/// What [`Ledger::close`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The head, durable.
    pub head: Head,
    /// Why the index could not be persisted, if it could not (the log is unaffected).
    pub index_warning: Option<String>,
}

impl Ledger {
    /// Flushes and closes: makes every append durable (an error here is the log's, and fails the close),
    /// then persists the index within [`INDEX_WAIT`]. The index is derived: if it cannot be persisted,
    /// the close still succeeds, with [`Closed::index_warning`] saying why (the next open rebuilds or
    /// catches up the index from the log).
    pub fn close(self) -> Result<Closed, CloseError> {
        let head = self.flush().map_err(CloseError::Flush)?;
        let index_warning = match self.sync_index() {
            Ok(()) => match self.shared.index.store() {
                Ok(Some(store)) => store.flush().err().map(|e| format!("the index could not be flushed: {e}")),
                Ok(None) => None,
                Err(poisoned) => Some(poisoned.to_string()),
            },
            Err(e) => Some(e.to_string()),
        };
        Ok(Closed { head, index_warning })
    }
}

impl Shared {
    /// Stops the indexer after it has drained its queue, and flushes sled. Idempotent; a poisoned lock
    /// skips the step that needs it (the index is derived; the next open catches it up).
    pub(super) fn shutdown(&self) {
        // A last snapshot of what is published, so the next open need not replay the log.
        let published = self.durable.lock_assigned_whole().published.head.size;
        if let Ok(writer) = self.writer.lock() {
            if writer.size == published {
                writer.request_snapshot();
            }
        }
        self.durable.lock_assigned_whole().closed = true;
        self.index.close();
        self.published_cv.notify_all();
        // Dropping the sender ends the follower once it has drained its queue; the follower's end drops
        // the store thread's sender, which ends that thread once it has written what it was handed.
        if let Ok(mut writer) = self.writer.lock() {
            writer.follower_tx = None;
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let threads = self.threads.lock().map(|mut threads| std::mem::take(&mut *threads)).unwrap_or_default();
        for handle in threads {
            // The shutdown runs on whichever thread drops the last reference; a thread cannot join itself.
            if handle.thread().id() == std::thread::current().id() {
                continue;
            }
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(SHUTDOWN_POLL_MS));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        // sled is closed on a thread of its own, so a device that blocks its flush cannot hang the drop.
        if let Ok(Some(store)) = self.index.take_store() {
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
                let _ = closed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            }
        }
    }
}

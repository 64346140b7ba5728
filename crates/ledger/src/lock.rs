//! The ledger lock: an exclusive `flock` on the ledger folder's own descriptor.
//!
//! A lock on a file inside the folder (the `LOCK` file of earlier versions) can be deleted from under a
//! running writer, after which a second writer creates a new file, locks it and writes into the same
//! log. The folder itself cannot be replaced while it is open without moving the whole ledger, so its
//! lock holds as long as the writer runs. A `LOCK` file left by an earlier version is ignored.

use crate::error::OpenError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`DirLock::acquire`] waits for a lock that is held: a ledger just closed by a process that
/// is spawning others may stay locked for a few milliseconds (the lock belongs to an open file
/// description, which a child shares between its fork and its exec).
pub const LOCK_WAIT: Duration = Duration::from_secs(1);
const LOCK_POLL: Duration = Duration::from_millis(25);

/// An exclusive lock on a ledger folder, held until dropped. [`crate::Ledger::open_locked`] takes one,
/// so a caller that must prepare the folder first (the demo) holds the lock throughout.
#[derive(Debug)]
pub struct DirLock {
    /// The folder's descriptor, which holds the lock.
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Locks the existing folder `dir`, waiting up to [`LOCK_WAIT`] while another holder has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, OpenError> {
        let io = |source| OpenError::Io { path: dir.to_owned(), source };
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(OpenError::NotAFolder(dir.to_owned()));
        }
        let file = File::open(dir).map_err(io)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file, dir: dir.to_owned() }),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(LOCK_POLL);
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
                Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
            }
        }
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

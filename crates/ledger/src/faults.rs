//! The fault seam: every file operation of the writer goes through [`SeamFaults`], which hands it to
//! the [`FaultInjector`] of `Options::faults` (tests of failure handling and simulated power cuts), and is
//! a no-op without one. Public only through [`crate::testing`].

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

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

/// The fault seam (`Options::faults`), which every file operation of the writer goes through: a no-op
/// without an injector.
pub(crate) struct SeamFaults<'a>(pub(crate) &'a Option<Arc<dyn FaultInjector>>);

/// No injector: the seam does nothing (the operator's `reanchor`).
pub(crate) const NO_FAULTS: SeamFaults<'static> = SeamFaults(&None);

impl SeamFaults<'_> {
    /// Before `len` bytes are written to `path`: the injector may fail the write.
    pub(crate) fn before_write(&self, path: &Path, len: usize) -> io::Result<()> {
        self.0.as_ref().map_or(Ok(()), |f| f.before_write(path, len))
    }
    /// Before `path` is fsynced: the injector may fail the sync.
    pub(crate) fn before_sync(&self, path: &Path) -> io::Result<()> {
        self.0.as_ref().map_or(Ok(()), |f| f.before_sync(path))
    }
    /// After an operation succeeded: the injector sees it.
    pub(crate) fn observe(&self, op: &DiskOp<'_>) {
        if let Some(f) = self.0.as_ref() {
            f.observe(op);
        }
    }
}

/// Fills a new, empty file with `bytes` and fsyncs it (data and size), each step through the seam.
pub(crate) fn write_new_file(file: &mut File, path: &Path, bytes: &[u8], faults: &SeamFaults<'_>) -> io::Result<()> {
    faults.before_write(path, bytes.len())?;
    file.write_all(bytes)?;
    faults.observe(&DiskOp::Write { path, offset: 0, bytes });
    faults.before_sync(path)?;
    file.sync_all()?;
    faults.observe(&DiskOp::Sync { path });
    Ok(())
}

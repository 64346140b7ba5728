//! The writer's file operations through the fault seam: creating the ledger folder and segment files durably, folder fsyncs.

use super::*;
use crate::error::OpenError;
use crate::segment::{FileKind, Header};
use crate::source::{segment_file_name, HEAD_FILE};
use chrono::Utc;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The fault seam (`Options::faults`), which every file operation of the writer goes through: a no-op
/// without an injector.
pub(crate) struct SeamFaults<'a>(pub(crate) &'a Option<Arc<dyn FaultInjector>>);

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

/// Entries a folder may hold and still be a ledger not yet created: what a crash during the first open
/// leaves (the HEAD written, `segments/` not yet), a `LOCK` file of an earlier version, an index.
pub(super) const UNBORN_LEFTOVERS: [&str; 4] = ["LOCK", HEAD_FILE, "HEAD.tmp", "index"];

/// Creates `dir` and every missing parent, and makes each new entry durable (fsyncs the folder that
/// holds it), so the ledger's own folder survives a power cut once its first append is acknowledged.
pub(super) fn create_dir_durable(dir: &Path, faults: &SeamFaults<'_>) -> Result<(), OpenError> {
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

pub(super) fn io_err(path: &Path) -> impl Fn(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

pub(super) fn sync_dir(dir: &Path, faults: &SeamFaults<'_>) -> io::Result<()> {
    faults.before_sync(dir)?;
    File::open(dir)?.sync_all()?;
    faults.observe(&DiskOp::SyncDir { path: dir });
    Ok(())
}

pub(super) fn new_ledger_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.write_u32(std::process::id());
    h.finish()
}

pub(super) fn create_segment(
    seg_dir: &Path,
    seq: u32,
    first_position: u64,
    ledger_id: u64,
    faults: &SeamFaults<'_>,
) -> io::Result<(PathBuf, File)> {
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

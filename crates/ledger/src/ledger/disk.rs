//! The folder's own file operations through the fault seam: creating the ledger folder durably, folder
//! fsyncs, the ledger id of a new ledger (segment files are written by `segment_writer`).

use crate::error::OpenError;
use crate::faults::{DiskOp, SeamFaults};
use crate::source::HEAD_FILE;
use chrono::Utc;
use std::fs::File;
use std::io;
use std::path::Path;

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

pub(crate) fn sync_dir(dir: &Path, faults: &SeamFaults<'_>) -> io::Result<()> {
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

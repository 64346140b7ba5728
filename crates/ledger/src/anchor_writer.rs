//! The writer's side of the anchor (`HEAD`, see `log::anchor` and docs/FORMAT.md): recording each new
//! committed end durably in the next slot, creating a fresh HEAD, and `reanchor` for the operator.

use crate::faults::{write_new_file, DiskOp, SeamFaults, NO_FAULTS};
use log::anchor::{encode_fresh, encode_slot, Anchor, HEAD_FILE, SLOT_LEN};
use log::Head;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why [`reanchor`] refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReanchorError {
    /// The folder could not be locked or read.
    #[error(transparent)]
    Open(#[from] crate::error::OpenError),
    /// The log could not be read whole.
    #[error(transparent)]
    Read(#[from] log::ReadError),
    /// The log does not end where the operator said it does.
    #[error("the log holds {found} committed records, not the {expected} given: HEAD was not written")]
    SizeDiffers {
        /// The size the operator gave.
        expected: u64,
        /// The committed records found.
        found: u64,
    },
    /// A HEAD exists and is whole: there is nothing to re-anchor.
    #[error("{0}: HEAD is whole; reanchor only replaces a missing or damaged one")]
    HeadIsWhole(PathBuf),
    /// Writing HEAD failed.
    #[error("{path}: {source}")]
    Io {
        /// The HEAD file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Records the end of the log in `dir` as its anchor after HEAD was lost or damaged, when the operator
/// states the log's size (`expected_size`, from a bundle, a signed checkpoint or a record of it): the
/// segments must hold exactly that many committed records. Takes the ledger lock. A whole HEAD is never
/// replaced. This is the one decision the folder cannot make alone: without HEAD it cannot tell a whole
/// log from a cut one.
pub fn reanchor(dir: &Path, expected_size: u64) -> Result<Head, ReanchorError> {
    let _lock = crate::lock::DirLock::acquire(dir)?;
    if let Ok(Some(anchor)) = log::anchor::read(dir) {
        if anchor.damaged_slot.is_none() {
            return Err(ReanchorError::HeadIsWhole(dir.join(HEAD_FILE)));
        }
    }
    let source = log::Source::open_unanchored(dir)?;
    if source.head.size != expected_size {
        return Err(ReanchorError::SizeDiffers { expected: expected_size, found: source.head.size });
    }
    AnchorWriter::create(dir, source.head, &NO_FAULTS)
        .map_err(|source| ReanchorError::Io { path: dir.join(HEAD_FILE), source })?;
    Ok(source.head)
}

/// The writer's handle on `HEAD`: records each new committed end in the next slot, durably.
#[derive(Debug)]
pub(crate) struct AnchorWriter {
    file: File,
    path: PathBuf,
    next_generation: u64,
    /// The last head recorded (the anchor never moves back).
    last: Head,
}

impl AnchorWriter {
    /// Writes a fresh format-2 HEAD recording `head` in both slots (generations 0 and 1): to a temporary
    /// file, fsynced, renamed over `HEAD`, and the folder fsynced. For a new ledger, and to replace a
    /// format-1 or partly damaged HEAD once the writer has recovered the log.
    pub(crate) fn create(dir: &Path, head: Head, faults: &SeamFaults<'_>) -> io::Result<AnchorWriter> {
        let path = dir.join(HEAD_FILE);
        let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
        let bytes = encode_fresh(&head);
        {
            let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
            faults.observe(&DiskOp::Create { path: &tmp });
            write_new_file(&mut file, &tmp, &bytes, faults)?;
        }
        std::fs::rename(&tmp, &path)?;
        faults.observe(&DiskOp::Rename { from: &tmp, to: &path });
        faults.before_sync(dir)?;
        File::open(dir)?.sync_all()?;
        faults.observe(&DiskOp::SyncDir { path: dir });
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        Ok(AnchorWriter { file, path, next_generation: 2, last: head })
    }

    /// Opens the HEAD whose newest slot holds `anchor` (both slots valid), to record what follows it.
    pub(crate) fn open(dir: &Path, anchor: &Anchor) -> io::Result<AnchorWriter> {
        assert!(!anchor.legacy && anchor.damaged_slot.is_none(), "only a whole format-2 HEAD is written in place");
        let path = dir.join(HEAD_FILE);
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        Ok(AnchorWriter { file, path, next_generation: anchor.generation + 1, last: anchor.head })
    }

    /// Records `head` in the next slot and makes it durable (`fdatasync`) before returning: only then may
    /// the appends it covers be acknowledged. The other slot keeps the previous anchor meanwhile.
    pub(crate) fn record(&mut self, head: Head, faults: &SeamFaults<'_>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        assert!(head.size >= self.last.size, "the anchor never moves back");
        if head == self.last {
            return Ok(());
        }
        let generation = self.next_generation;
        let slot = encode_slot(generation, &head);
        let offset = (generation % 2) * SLOT_LEN as u64;
        faults.before_write(&self.path, slot.len())?;
        self.file.write_all_at(&slot, offset)?;
        faults.observe(&DiskOp::Write { path: &self.path, offset, bytes: &slot });
        faults.before_sync(&self.path)?;
        self.file.sync_data()?;
        faults.observe(&DiskOp::Sync { path: &self.path });
        self.next_generation += 1;
        self.last = head;
        Ok(())
    }

    /// The path of the HEAD file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

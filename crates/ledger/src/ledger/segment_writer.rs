//! The live segment, written: the only code that writes segment bytes (record frames, the trailer that
//! seals a segment, the header of a new one) and fsyncs them, each through the fault seam. The read side
//! (`log::segment`) defines the format and never writes.

use crate::faults::{write_new_file, DiskOp, SeamFaults};
use crate::segment::{FileKind, Header};
use crate::source::segment_file_name;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The live segment: the one file appends go to.
pub(crate) struct Active {
    pub(crate) seq: u32,
    pub(crate) path: PathBuf,
    file: Arc<File>,
    pub(crate) first_position: u64,
    /// Bytes written (header included).
    pub(crate) len: u64,
}

impl Active {
    /// The live segment `seq` at `path`, open for appending, holding `len` bytes.
    pub(crate) fn new(seq: u32, path: PathBuf, file: File, first_position: u64, len: u64) -> Active {
        Active { seq, path, file: Arc::new(file), first_position, len }
    }

    /// Writes `frames` (whole record frames) at the end of the segment with one `write`.
    pub(crate) fn write_frames(&mut self, frames: &[u8], faults: &SeamFaults<'_>) -> io::Result<()> {
        faults.before_write(&self.path, frames.len())?;
        (&*self.file).write_all(frames)?;
        faults.observe(&DiskOp::Write { path: &self.path, offset: self.len, bytes: frames });
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Writes the trailer that seals the segment and fsyncs it (data and size).
    pub(crate) fn seal(&mut self, trailer: &[u8], faults: &SeamFaults<'_>) -> io::Result<()> {
        faults.before_write(&self.path, trailer.len())?;
        faults.before_sync(&self.path)?;
        (&*self.file).write_all(trailer)?;
        faults.observe(&DiskOp::Write { path: &self.path, offset: self.len, bytes: trailer });
        self.file.sync_all()?;
        faults.observe(&DiskOp::Sync { path: &self.path });
        Ok(())
    }

    /// Cuts the segment back to `len` bytes and fsyncs it (an aborted import). Not seen by the seam.
    pub(crate) fn cut(&mut self, len: u64) -> io::Result<()> {
        let cut = self.file.set_len(len).and_then(|()| self.file.sync_all());
        self.len = len;
        cut
    }

    /// A handle that fsyncs what has been written so far, outside the writer lock (group commit).
    pub(crate) fn syncer(&self) -> Syncer {
        Syncer { file: Arc::clone(&self.file), path: self.path.clone() }
    }
}

/// Fsyncs a segment's data (see [`Active::syncer`]).
pub(crate) struct Syncer {
    file: Arc<File>,
    path: PathBuf,
}

impl Syncer {
    /// `fdatasync`s the segment through the seam.
    pub(crate) fn sync_data(&self, faults: &SeamFaults<'_>) -> io::Result<()> {
        faults.before_sync(&self.path)?;
        self.file.sync_data()?;
        faults.observe(&DiskOp::Sync { path: &self.path });
        Ok(())
    }

    /// The segment file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates segment `seq` in `seg_dir` durably: the header written and fsynced, the folder fsynced.
pub(crate) fn create_segment(
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
    write_new_file(&mut file, &path, &header, faults)?;
    super::disk::sync_dir(seg_dir, faults)?;
    Ok((path, file))
}

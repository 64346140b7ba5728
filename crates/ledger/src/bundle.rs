//! Writing bundles: the portable export a regulator receives (`docs/FORMAT.md`, "Bundle").
//!
//! A bundle is the segment format itself: a header of kind `Bundle` starting at position 0, every
//! record's frame in position order, and a trailer with the record count and the Merkle root. The
//! writer fills a temporary file beside the destination, fsyncs it, renames it into place and fsyncs
//! the folder, so a bundle is either complete or absent, never half-written.

use crate::codec::MAX_RECORD_BYTES;
use crate::merkle::{Frontier, Hash};
use crate::segment::{push_frame, FileKind, Header, Trailer, HEADER_LEN};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A record body out of the frame's bounds.
    #[error("record {position}: body of {len} bytes is out of bounds (1..={MAX_RECORD_BYTES})")]
    BadRecord {
        /// Its position in the bundle.
        position: u64,
        /// Its length.
        len: usize,
    },
}

/// What a finished bundle holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Records in it.
    pub records: u64,
    /// Their Merkle root.
    pub root: Hash,
    /// Bytes in the file.
    pub bytes: u64,
}

/// Writes one bundle, record body by record body.
pub struct BundleWriter {
    out: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
    frontier: Frontier,
    frame: Vec<u8>,
    bytes: u64,
}

impl BundleWriter {
    /// Starts a bundle that will be renamed to `out` by [`BundleWriter::finish`]. `ledger_id` is the
    /// id of the ledger it comes from (0 when it has none).
    pub fn create(out: &Path, ledger_id: u64) -> Result<BundleWriter, BundleError> {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
        let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let io = |source| BundleError::Io { path: tmp.clone(), source };
        let file = File::create(&tmp).map_err(io)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let header = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id };
        writer.write_all(&header.encode()).map_err(io)?;
        Ok(BundleWriter {
            out: out.to_owned(),
            tmp,
            writer: Some(writer),
            frontier: Frontier::new(),
            frame: Vec::new(),
            bytes: HEADER_LEN as u64,
        })
    }

    /// Appends one record body exactly as stored (format byte included).
    pub fn push(&mut self, body: &[u8]) -> Result<(), BundleError> {
        if body.is_empty() || body.len() > MAX_RECORD_BYTES {
            return Err(BundleError::BadRecord { position: self.frontier.size(), len: body.len() });
        }
        self.frame.clear();
        push_frame(&mut self.frame, body);
        let io = |source| BundleError::Io { path: self.tmp.clone(), source };
        let writer = self.writer.as_mut().ok_or_else(|| io(io::Error::other("bundle already finished")))?;
        writer.write_all(&self.frame).map_err(io)?;
        self.bytes += self.frame.len() as u64;
        self.frontier.push_leaf(body);
        Ok(())
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.frontier.size()
    }

    /// The Merkle root of the records pushed so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Writes the trailer, syncs, and renames the bundle into place.
    pub fn finish(mut self) -> Result<Written, BundleError> {
        let mut trailer = Vec::new();
        Trailer::new(self.frontier.size(), &self.frontier).encode(&mut trailer);
        let tmp = self.tmp.clone();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Io { path: path.clone(), source }
        };
        let mut writer = self.writer.take().ok_or_else(|| io(&tmp)(io::Error::other("bundle already finished")))?;
        writer.write_all(&trailer).map_err(io(&tmp))?;
        self.bytes += trailer.len() as u64;
        let file = writer.into_inner().map_err(|e| BundleError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.out).map_err(io(&self.out))?;
        let parent = match self.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        File::open(&parent).and_then(|dir| dir.sync_all()).map_err(io(&parent))?;
        let written = Written { records: self.frontier.size(), root: self.frontier.root(), bytes: self.bytes };
        self.tmp = PathBuf::new();
        Ok(written)
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        // An unfinished bundle leaves nothing behind.
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::source::Source;

    #[test]
    fn a_finished_bundle_reads_back_and_an_unfinished_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.plb");
        let mut writer = BundleWriter::create(&out, 7).unwrap();
        writer.push(b"not a record, but framed and hashed all the same").unwrap();
        writer.push(b"second").unwrap();
        assert!(matches!(writer.push(&[]), Err(BundleError::BadRecord { position: 2, len: 0 })));
        let written = writer.finish().unwrap();
        assert_eq!(written.records, 2);
        assert_eq!(written.bytes, std::fs::metadata(&out).unwrap().len());
        let source = Source::open(&out).unwrap();
        assert_eq!((source.head.size, source.head.root), (2, written.root));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let abandoned = dir.path().join("c.plb");
        let mut writer = BundleWriter::create(&abandoned, 7).unwrap();
        writer.push(b"x").unwrap();
        drop(writer);
        assert!(!abandoned.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
    }
}

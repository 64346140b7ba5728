//! Bundles as bytes: the portable export a regulator receives (`docs/FORMAT.md`, "Bundle").
//!
//! A bundle is the segment format itself: a header of kind `Bundle` starting at position 0, every
//! record's frame in position order, and a trailer with the record count and the Merkle root.
//! [`BundleStream`] writes those bytes to any `Write` the caller owns (an already open FIFO or device,
//! a buffer, a temporary file); it creates, syncs and renames nothing, so it belongs to the read side.
//! The writer's `ledger::bundle::BundleWriter` puts a bundle in place atomically.

use crate::codec::MAX_RECORD_BYTES;
use crate::merkle::{Frontier, Hash};
use crate::segment::{push_frame, FileKind, Header, Trailer, HEADER_LEN};
use std::io::{self, Write};
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

/// Writes one bundle to any [`Write`], record body by record body: the header at creation, one frame
/// per [`BundleStream::push`], the trailer at [`BundleStream::finish`]. It does not create, sync or
/// rename anything: that is the caller's (the writer's `BundleWriter` replaces a file atomically; or write
/// straight into an already open FIFO or device).
pub struct BundleStream<W: Write> {
    writer: W,
    path: PathBuf,
    frontier: Frontier,
    frame: Vec<u8>,
    bytes: u64,
}

impl<W: Write> BundleStream<W> {
    /// Writes the header of a bundle to `writer`. `path` names the output in errors; `ledger_id` is the
    /// id of the ledger the records come from (0 when it has none).
    pub fn new(mut writer: W, path: &Path, ledger_id: u64) -> Result<BundleStream<W>, BundleError> {
        let header = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id };
        writer.write_all(&header.encode()).map_err(|source| BundleError::Io { path: path.to_owned(), source })?;
        Ok(BundleStream {
            writer,
            path: path.to_owned(),
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
        self.writer.write_all(&self.frame).map_err(|source| BundleError::Io { path: self.path.clone(), source })?;
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

    /// Writes the trailer and flushes; gives the writer back.
    pub fn finish(mut self) -> Result<(Written, W), BundleError> {
        let mut trailer = Vec::new();
        Trailer::new(self.frontier.size(), &self.frontier).encode(&mut trailer);
        let io = |source| BundleError::Io { path: self.path.clone(), source };
        self.writer.write_all(&trailer).map_err(io)?;
        self.writer.flush().map_err(io)?;
        self.bytes += trailer.len() as u64;
        let written = Written { records: self.frontier.size(), root: self.frontier.root(), bytes: self.bytes };
        Ok((written, self.writer))
    }
}

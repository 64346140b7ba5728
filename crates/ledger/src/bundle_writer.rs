//! Writing bundles: the portable export a regulator receives (`docs/FORMAT.md`, "Bundle").
//!
//! A bundle is the segment format itself: a header of kind `Bundle` starting at position 0, every
//! record's frame in position order, and a trailer with the record count and the Merkle root.
//! [`BundleStream`] writes those bytes to any `Write` (an already open FIFO or device, or a caller's
//! own temporary file); [`BundleWriter`] fills a temporary file beside the destination, fsyncs it,
//! renames it into place and fsyncs the folder, so a bundle is either complete or absent, never
//! half-written.

pub use log::bundle::{BundleError, BundleStream, Written};
use log::merkle::{Frontier, Hash};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

/// Writes one bundle file, record body by record body, into a temporary file that
/// [`BundleWriter::finish`] fsyncs and renames into place.
pub struct BundleWriter {
    out: PathBuf,
    tmp: PathBuf,
    stream: Option<BundleStream<BufWriter<File>>>,
}

impl BundleWriter {
    /// Starts a bundle that will be renamed to `out` by [`BundleWriter::finish`]. `ledger_id` is the
    /// id of the ledger it comes from (0 when it has none).
    pub fn create(out: &Path, ledger_id: u64) -> Result<BundleWriter, BundleError> {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
        let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|source| BundleError::Io { path: tmp.clone(), source })?;
        let writer = BufWriter::with_capacity(1 << 20, file);
        // Built before `tmp` is owned by the writer, so a failed header removes the file too.
        let mut bundle = BundleWriter { out: out.to_owned(), tmp: tmp.clone(), stream: None };
        bundle.stream = Some(BundleStream::new(writer, &tmp, ledger_id)?);
        Ok(bundle)
    }

    fn stream(&mut self) -> Result<&mut BundleStream<BufWriter<File>>, BundleError> {
        let path = self.tmp.clone();
        self.stream
            .as_mut()
            .ok_or_else(|| BundleError::Io { path, source: io::Error::other("bundle already finished") })
    }

    /// Appends one record body exactly as stored (format byte included).
    pub fn push(&mut self, body: &[u8]) -> Result<(), BundleError> {
        self.stream()?.push(body)
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.stream.as_ref().map_or(0, BundleStream::records)
    }

    /// The Merkle root of the records pushed so far.
    pub fn root(&self) -> Hash {
        self.stream.as_ref().map_or_else(|| Frontier::new().root(), BundleStream::root)
    }

    /// Writes the trailer, syncs, and renames the bundle into place.
    pub fn finish(mut self) -> Result<Written, BundleError> {
        let tmp = self.tmp.clone();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Io { path: path.clone(), source }
        };
        let stream = self.stream.take().ok_or_else(|| io(&tmp)(io::Error::other("bundle already finished")))?;
        let (written, writer) = stream.finish()?;
        let file = writer.into_inner().map_err(|e| BundleError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.out).map_err(io(&self.out))?;
        let parent = match self.out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        File::open(&parent).and_then(|dir| dir.sync_all()).map_err(io(&parent))?;
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

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
    /// The checkpoints to carry are out of bounds.
    #[error("checkpoints: {0}")]
    Checkpoints(#[source] CheckpointSectionError),
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
    pub fn finish(self) -> Result<(Written, W), BundleError> {
        self.finish_with_checkpoints(&[])
    }

    /// Writes the trailer, then (when `checkpoints` is not empty) the checkpoint section and its
    /// footer, and flushes; gives the writer back.
    pub fn finish_with_checkpoints(mut self, checkpoints: &[CarriedCheckpoint]) -> Result<(Written, W), BundleError> {
        let mut trailer = Vec::new();
        Trailer::new(self.frontier.size(), &self.frontier).encode(&mut trailer);
        if !checkpoints.is_empty() {
            let section = encode_checkpoint_section(checkpoints).map_err(BundleError::Checkpoints)?;
            trailer.extend_from_slice(&section);
        }
        let io = |source| BundleError::Io { path: self.path.clone(), source };
        self.writer.write_all(&trailer).map_err(io)?;
        self.writer.flush().map_err(io)?;
        self.bytes += trailer.len() as u64;
        let written = Written { records: self.frontier.size(), root: self.frontier.root(), bytes: self.bytes };
        Ok((written, self.writer))
    }
}

/// The last 8 bytes of a bundle that carries signed checkpoints (docs/FORMAT.md, "Checkpoints in a
/// bundle"). No trailer can end in them (a trailer ends in its own length, at most 2,109).
pub const CHECKPOINTS_MAGIC: [u8; 8] = *b"PLCKPTS1";
/// The footer after the checkpoint section: count (u32), section length (u64), CRC32C (u32), magic.
pub const CHECKPOINTS_FOOTER_LEN: usize = 24;
/// Most checkpoints a bundle carries.
pub const MAX_BUNDLE_CHECKPOINTS: usize = 1 << 20;
/// Largest checkpoint note a bundle carries (bytes): the note limit of c2sp signed notes as posledger
/// reads them (`tlog::note::MAX_NOTE_BYTES` is asserted equal).
pub const MAX_CARRIED_NOTE_BYTES: usize = 128 * 1024;
/// Largest checkpoint section read (bytes).
pub const MAX_CHECKPOINT_SECTION_BYTES: u64 = 256 * 1024 * 1024;
const _: () =
    assert!(u32::from_le_bytes([b'P', b'T', b'S', b'1']) as usize > 61 + 32 * 64, "the magic is no trailer length");

/// A signed checkpoint carried by a log: the tree size it is for, and the note's bytes as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarriedCheckpoint {
    /// The size of the tree the checkpoint names (as the log's file name or section entry says; the
    /// note itself is the authority once verified).
    pub size: u64,
    /// The signed note.
    pub note: Vec<u8>,
}

/// The section that follows a bundle's trailer when the bundle carries checkpoints: for each one,
/// `size` (u64 LE), `len` (u32 LE), the note's `len` bytes; then the footer.
pub fn encode_checkpoint_section(checkpoints: &[CarriedCheckpoint]) -> Result<Vec<u8>, CheckpointSectionError> {
    if checkpoints.len() > MAX_BUNDLE_CHECKPOINTS {
        return Err(CheckpointSectionError::TooMany(checkpoints.len()));
    }
    let mut section = Vec::new();
    for c in checkpoints {
        if c.note.is_empty() || c.note.len() > MAX_CARRIED_NOTE_BYTES {
            return Err(CheckpointSectionError::BadEntry { size: c.size });
        }
        section.extend_from_slice(&c.size.to_le_bytes());
        section.extend_from_slice(&(c.note.len() as u32).to_le_bytes());
        section.extend_from_slice(&c.note);
    }
    let crc = crc32c::crc32c(&section);
    let len = section.len() as u64;
    section.extend_from_slice(&(checkpoints.len() as u32).to_le_bytes());
    section.extend_from_slice(&len.to_le_bytes());
    section.extend_from_slice(&crc.to_le_bytes());
    section.extend_from_slice(&CHECKPOINTS_MAGIC);
    Ok(section)
}

/// A checkpoint section that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointSectionError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// More than [`MAX_BUNDLE_CHECKPOINTS`].
    #[error("{0} checkpoints, above the limit of {MAX_BUNDLE_CHECKPOINTS}")]
    TooMany(usize),
    /// A note that is empty or above [`MAX_CARRIED_NOTE_BYTES`].
    #[error("the checkpoint of size {size} is empty or larger than {MAX_CARRIED_NOTE_BYTES} bytes")]
    BadEntry {
        /// The checkpoint's size.
        size: u64,
    },
    /// The footer names a section that does not fit in the file or the limit.
    #[error("the checkpoint footer names a section of {len} bytes that does not fit")]
    BadLength {
        /// The length it names.
        len: u64,
    },
    /// The section's CRC does not match.
    #[error("the checkpoint section fails its checksum")]
    Checksum,
    /// The entries do not add up to the section.
    #[error("the checkpoint section's entries do not match its footer")]
    Entries,
}

/// Where a bundle's checkpoint section is, from its footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointSection {
    /// Offset of the section (= the end of the trailer).
    pub offset: u64,
    /// Its length, footer excluded.
    pub len: u64,
    /// Its entries.
    pub count: u32,
    /// Its CRC32C.
    pub crc: u32,
}

/// Reads the footer of a bundle of `file_len` bytes: `Ok(None)` when the bundle carries no
/// checkpoints (it ends in its trailer).
pub fn read_checkpoint_footer(
    file: &mut std::fs::File,
    file_len: u64,
) -> Result<Option<CheckpointSection>, CheckpointSectionError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    if file_len < (HEADER_LEN + CHECKPOINTS_FOOTER_LEN) as u64 {
        return Ok(None);
    }
    let mut footer = [0u8; CHECKPOINTS_FOOTER_LEN];
    file.seek(SeekFrom::Start(file_len - CHECKPOINTS_FOOTER_LEN as u64))?;
    file.read_exact(&mut footer)?;
    let (head, magic) = footer.split_at(16);
    if magic != CHECKPOINTS_MAGIC {
        return Ok(None);
    }
    let (count, rest) = head.split_first_chunk::<4>().ok_or(CheckpointSectionError::Entries)?;
    let (len, rest) = rest.split_first_chunk::<8>().ok_or(CheckpointSectionError::Entries)?;
    let crc = rest.first_chunk::<4>().ok_or(CheckpointSectionError::Entries)?;
    let len = u64::from_le_bytes(*len);
    let room = file_len - (HEADER_LEN + CHECKPOINTS_FOOTER_LEN) as u64;
    if len > room || len > MAX_CHECKPOINT_SECTION_BYTES {
        return Err(CheckpointSectionError::BadLength { len });
    }
    Ok(Some(CheckpointSection {
        offset: file_len - CHECKPOINTS_FOOTER_LEN as u64 - len,
        len,
        count: u32::from_le_bytes(*count),
        crc: u32::from_le_bytes(*crc),
    }))
}

/// Decodes a checkpoint section's bytes (without its footer) against the footer's count and CRC.
pub fn decode_checkpoint_section(
    bytes: &[u8],
    section: &CheckpointSection,
) -> Result<Vec<CarriedCheckpoint>, CheckpointSectionError> {
    if crc32c::crc32c(bytes) != section.crc {
        return Err(CheckpointSectionError::Checksum);
    }
    if section.count as usize > MAX_BUNDLE_CHECKPOINTS {
        return Err(CheckpointSectionError::TooMany(section.count as usize));
    }
    let mut out = Vec::with_capacity(section.count as usize);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (size, tail) = rest.split_first_chunk::<8>().ok_or(CheckpointSectionError::Entries)?;
        let (len, tail) = tail.split_first_chunk::<4>().ok_or(CheckpointSectionError::Entries)?;
        let len = u32::from_le_bytes(*len) as usize;
        if len == 0 || len > MAX_CARRIED_NOTE_BYTES {
            return Err(CheckpointSectionError::BadEntry { size: u64::from_le_bytes(*size) });
        }
        let (note, tail) = tail.split_at_checked(len).ok_or(CheckpointSectionError::Entries)?;
        out.push(CarriedCheckpoint { size: u64::from_le_bytes(*size), note: note.to_vec() });
        rest = tail;
    }
    if out.len() != section.count as usize {
        return Err(CheckpointSectionError::Entries);
    }
    Ok(out)
}

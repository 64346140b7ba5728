//! Segment files and bundles: the bytes on disk (`docs/FORMAT.md` draws them).
//!
//! ```text
//! file    = header(40) frame* [trailer]
//! header  = magic "POSLEDGR" | format u16 | kind u8 | 0u8 | seq u32 | first_position u64
//!           | ledger_id u64 | 0u32 | crc32c(previous 36 bytes) u32          (little endian)
//! frame   = len u32 (1..=MAX_RECORD_BYTES) | crc32c(body) u32 | body[len]
//! trailer = 0xFFFF_FFFF | record_count u64 | log_size u64 | root [32] | n u8 | frontier [32]*n
//!           | crc32c(trailer from the tag to the frontier) u32 | trailer_len u32
//! ```
//! `trailer_len` (the trailer's whole length, 62 + 32·n) lets a reader find the trailer from the end of a
//! sealed file without scanning its records.
//! A segment is *sealed* by its trailer and never written again; the active (last) segment has none.
//! A bundle is one file of kind `Bundle` holding the whole log from position 0, always with a trailer.

use crate::codec::MAX_RECORD_BYTES;
use crate::merkle::{Frontier, Hash, HASH_LEN};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// First bytes of every segment and bundle.
pub const MAGIC: [u8; 8] = *b"POSLEDGR";
/// The file format version this build writes (and the newest it reads).
pub const FILE_FORMAT_V1: u16 = 1;
/// Length of the file header.
pub const HEADER_LEN: usize = 40;
/// Length of a frame's prefix (len + crc).
pub const FRAME_PREFIX_LEN: usize = 8;
/// The length value that marks a trailer instead of a frame.
pub const TRAILER_TAG: u32 = u32::MAX;
/// The most frontier nodes a trailer can hold (one per bit of a u64 size).
pub const MAX_FRONTIER_NODES: usize = 64;
/// Length of a trailer with an empty frontier: tag, count, size, root, n, crc, trailer_len.
pub const TRAILER_FIXED_LEN: usize = 4 + 8 + 8 + HASH_LEN + 1 + 4 + 4;
/// Offset of the frontier node count in a trailer (after tag, record_count, log_size, root).
const TRAILER_NODE_COUNT_OFFSET: usize = 4 + 8 + 8 + HASH_LEN;
/// Offset of the first frontier node in a trailer.
const TRAILER_NODES_OFFSET: usize = TRAILER_NODE_COUNT_OFFSET + 1;
const _: () =
    assert!(TRAILER_NODE_COUNT_OFFSET == 52 && TRAILER_NODES_OFFSET == 53, "docs/FORMAT.md's trailer offsets");
const _: () = assert!(TRAILER_FIXED_LEN == TRAILER_NODES_OFFSET + 8, "a trailer ends with its crc and trailer_len");
const _: () = assert!(FRAME_PREFIX_LEN < TRAILER_NODES_OFFSET, "a trailer's first bytes are read as a frame prefix");
const _: () = assert!(MAX_FRONTIER_NODES <= u8::MAX as usize, "the node count is one byte");
const _: () = assert!(MAX_FRONTIER_NODES == u64::BITS as usize, "one node per bit of a 64-bit log size");

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// One segment of a ledger directory.
    Segment,
    /// A portable export of a whole log.
    Bundle,
}

/// The decoded file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Segment or bundle.
    pub kind: FileKind,
    /// Segment number within the ledger (0 for bundles).
    pub seq: u32,
    /// Position of the first record in the file.
    pub first_position: u64,
    /// Random id chosen when the ledger was created; ties segments to their ledger.
    pub ledger_id: u64,
}

/// The seal at the end of a sealed segment or a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Records in this file.
    pub record_count: u64,
    /// Size of the whole log at the end of this file (first_position + record_count).
    pub log_size: u64,
    /// Merkle root of the log of `log_size` records.
    pub root: Hash,
    /// The Merkle frontier at `log_size`, so a reopen need not rehash sealed segments.
    pub frontier: Vec<Hash>,
}

/// Why a segment or bundle could not be read. Offsets are byte offsets within `path`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a posledger file, or a damaged header.
    #[error("{path}: not a posledger segment or bundle ({error})")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        error: HeaderError,
    },
    /// The file ends inside a frame: a torn write, or a truncated file.
    #[error("{path}: offset {offset}: file ends inside a record frame")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
    },
    /// A length prefix out of bounds.
    #[error("{path}: offset {offset}: record length {len} is out of bounds (1..={MAX_RECORD_BYTES})")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
        /// The length read.
        len: u32,
    },
    /// The body does not match its CRC32C.
    #[error("{path}: offset {offset}: record checksum mismatch")]
    BadChecksum {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        offset: u64,
        /// Whether the frame is the last bytes of the file (a possible torn write).
        at_end: bool,
    },
    /// A damaged trailer.
    #[error("{path}: offset {offset}: bad trailer ({error})")]
    BadTrailer {
        /// The file.
        path: PathBuf,
        /// Where the trailer starts.
        offset: u64,
        /// What is wrong.
        #[source]
        error: TrailerError,
    },
    /// Bytes after the trailer.
    #[error("{path}: offset {offset}: data after the trailer")]
    AfterTrailer {
        /// The file.
        path: PathBuf,
        /// Where the extra data starts.
        offset: u64,
    },
}

/// Why a file header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The file cannot hold a header.
    #[error("file is {len} bytes, shorter than a header")]
    Short {
        /// The file's length.
        len: u64,
    },
    /// Not `POSLEDGR`.
    #[error("bad magic")]
    Magic,
    /// The header's CRC32C does not match.
    #[error("header checksum mismatch")]
    Checksum,
    /// A file format this build does not read.
    #[error("unsupported file format version {0}")]
    Version(u16),
    /// Neither a segment nor a bundle.
    #[error("unknown file kind {0}")]
    Kind(u8),
}

/// Why a trailer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrailerError {
    /// Shorter than a trailer's fixed part, or without the trailer tag.
    #[error("truncated or missing trailer")]
    Missing,
    /// The file ends inside the trailer.
    #[error("truncated")]
    Truncated,
    /// More frontier nodes than a 64-bit log size can have.
    #[error("frontier longer than {MAX_FRONTIER_NODES} nodes")]
    FrontierTooLong,
    /// The bytes given are not the length the frontier count implies.
    #[error("trailer length does not match its frontier")]
    LengthMismatch,
    /// The trailer's CRC32C does not match.
    #[error("trailer checksum mismatch")]
    Checksum,
    /// The closing `trailer_len` field disagrees with the trailer's length.
    #[error("trailer length field mismatch")]
    LengthField,
    /// The file cannot hold a header and a trailer.
    #[error("file too short to be sealed")]
    FileTooShort,
    /// The last four bytes do not give a trailer length that fits the file.
    #[error("no trailer at the end of the file")]
    NotAtEnd,
}

impl Header {
    /// The 40 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FILE_FORMAT_V1.to_le_bytes());
        out[10] = match self.kind {
            FileKind::Segment => 0,
            FileKind::Bundle => 1,
        };
        out[12..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_position.to_le_bytes());
        out[24..32].copy_from_slice(&self.ledger_id.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and checks 40 header bytes.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if bytes[0..8] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let crc = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        if crc != crc32c::crc32c(&bytes[0..36]) {
            return Err(HeaderError::Checksum);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FILE_FORMAT_V1 {
            return Err(HeaderError::Version(version));
        }
        let kind = match bytes[10] {
            0 => FileKind::Segment,
            1 => FileKind::Bundle,
            other => return Err(HeaderError::Kind(other)),
        };
        Ok(Header {
            kind,
            seq: u32::from_le_bytes(le(&bytes[12..16])),
            first_position: u64::from_le_bytes(le(&bytes[16..24])),
            ledger_id: u64::from_le_bytes(le(&bytes[24..32])),
        })
    }
}

/// The first `N` bytes of a slice as an array (the callers slice exact ranges of a header).
fn le<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.first_chunk::<N>().copied().unwrap_or([0; N])
}

impl Trailer {
    /// Builds the trailer for a file of `record_count` records ending the log at `frontier.size()`.
    pub fn new(record_count: u64, frontier: &Frontier) -> Trailer {
        Trailer { record_count, log_size: frontier.size(), root: frontier.root(), frontier: frontier.nodes().to_vec() }
    }

    /// Appends the trailer bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.frontier.len() <= MAX_FRONTIER_NODES, "frontier longer than 64 nodes");
        let start = out.len();
        out.extend_from_slice(&TRAILER_TAG.to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&self.log_size.to_le_bytes());
        out.extend_from_slice(&self.root);
        out.push(self.frontier.len() as u8);
        for node in &self.frontier {
            out.extend_from_slice(node);
        }
        let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
        let len = (out.len() - start + 4) as u32;
        out.extend_from_slice(&len.to_le_bytes());
    }

    /// The encoded length of a trailer with `frontier_len` nodes.
    pub fn encoded_len(frontier_len: usize) -> usize {
        TRAILER_FIXED_LEN + frontier_len * HASH_LEN
    }

    /// Parses a whole encoded trailer (from the tag to `trailer_len`).
    pub fn decode(bytes: &[u8]) -> Result<Trailer, TrailerError> {
        if bytes.len() < TRAILER_FIXED_LEN {
            return Err(TrailerError::Missing);
        }
        let (tag, rest) = bytes.split_first_chunk::<4>().ok_or(TrailerError::Missing)?;
        if *tag != TRAILER_TAG.to_le_bytes() {
            return Err(TrailerError::Missing);
        }
        let (record_count, rest) = rest.split_first_chunk::<8>().ok_or(TrailerError::Missing)?;
        let (log_size, rest) = rest.split_first_chunk::<8>().ok_or(TrailerError::Missing)?;
        let (root, rest) = rest.split_first_chunk::<HASH_LEN>().ok_or(TrailerError::Missing)?;
        let (&n, rest) = rest.split_first().ok_or(TrailerError::Missing)?;
        let n = usize::from(n);
        if n > MAX_FRONTIER_NODES {
            return Err(TrailerError::FrontierTooLong);
        }
        if bytes.len() != Self::encoded_len(n) {
            return Err(TrailerError::LengthMismatch);
        }
        let crc_at = TRAILER_NODES_OFFSET + n * HASH_LEN;
        let (covered, tail) = bytes.split_at_checked(crc_at).ok_or(TrailerError::LengthMismatch)?;
        let (crc, len) = tail.split_first_chunk::<4>().ok_or(TrailerError::LengthMismatch)?;
        if u32::from_le_bytes(*crc) != crc32c::crc32c(covered) {
            return Err(TrailerError::Checksum);
        }
        let len = len.first_chunk::<4>().copied().ok_or(TrailerError::LengthMismatch)?;
        if u32::from_le_bytes(len) as usize != bytes.len() {
            return Err(TrailerError::LengthField);
        }
        let (nodes, _) = rest.get(..n * HASH_LEN).ok_or(TrailerError::LengthMismatch)?.as_chunks::<HASH_LEN>();
        Ok(Trailer {
            record_count: u64::from_le_bytes(*record_count),
            log_size: u64::from_le_bytes(*log_size),
            root: *root,
            frontier: nodes.to_vec(),
        })
    }

    /// The frontier the trailer carries, checked against its size and root.
    pub fn checked_frontier(&self) -> Option<Frontier> {
        let frontier = Frontier::from_parts(self.log_size, self.frontier.clone())?;
        (frontier.root() == self.root).then_some(frontier)
    }
}

/// Appends one frame (length, CRC32C, body) to `out`.
pub fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    assert!(!body.is_empty() && body.len() <= MAX_RECORD_BYTES, "record body size out of bounds");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// One item read from a file.
#[derive(Debug)]
pub enum Item<'a> {
    /// A record body (checksum verified), at this byte offset.
    Record {
        /// Byte offset of the frame.
        offset: u64,
        /// The body bytes.
        body: &'a [u8],
    },
    /// The trailer, at this byte offset; nothing may follow it.
    Trailer {
        /// Byte offset of the trailer.
        offset: u64,
        /// The trailer.
        trailer: Trailer,
    },
}

/// The largest read buffer of a [`FrameReader`]: one read of this size per refill.
pub const MAX_READ_BUFFER_BYTES: usize = 1 << 20;
/// The smallest read buffer of a [`FrameReader`].
pub const MIN_READ_BUFFER_BYTES: usize = 64 << 10;

const _: () = assert!(MIN_READ_BUFFER_BYTES <= MAX_READ_BUFFER_BYTES, "a read buffer's bounds are ordered");
const _: () =
    assert!(crate::codec::MAX_RECORD_BYTES < TRAILER_TAG as usize, "no record length can be taken for the trailer tag");

/// Reads a segment or bundle front to back in constant memory (one record buffer).
pub struct FrameReader {
    path: PathBuf,
    reader: BufReader<File>,
    file_len: u64,
    offset: u64,
    header: Header,
    buf: Vec<u8>,
    /// Bytes of the last frame returned straight from the read buffer, consumed by the next call.
    borrowed: usize,
    ended: bool,
}

impl FrameReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<FrameReader, FormatError> {
        FrameReader::open_span(path, HEADER_LEN as u64, None)
    }

    /// Opens `path` and checks its header, to read the bytes from offset `from` up to offset `to` (the
    /// end of the file when `None`). The read buffer is sized to those bytes, within
    /// `MIN_READ_BUFFER_BYTES..=MAX_READ_BUFFER_BYTES`: every refill reads a whole buffer, so a reader of a few
    /// records wants a small one. Where the reader then goes is the caller's (`seek_to`).
    pub fn open_span(path: &Path, from: u64, to: Option<u64>) -> Result<FrameReader, FormatError> {
        let io = |source| FormatError::Io { path: path.to_owned(), source };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut bytes = [0u8; HEADER_LEN];
        if file_len < HEADER_LEN as u64 {
            return Err(FormatError::BadHeader { path: path.to_owned(), error: HeaderError::Short { len: file_len } });
        }
        // The header is read from the file itself: through the buffer, the first refill would read a
        // whole buffer's worth of records that a reader about to seek elsewhere throws away.
        file.read_exact(&mut bytes).map_err(io)?;
        let span = to.map_or(file_len, |to| to.min(file_len)).saturating_sub(from);
        let capacity = usize::try_from(span).unwrap_or(usize::MAX).clamp(MIN_READ_BUFFER_BYTES, MAX_READ_BUFFER_BYTES);
        let reader = BufReader::with_capacity(capacity, file);
        let header = Header::decode(&bytes).map_err(|error| FormatError::BadHeader { path: path.to_owned(), error })?;
        Ok(FrameReader {
            path: path.to_owned(),
            reader,
            file_len,
            offset: HEADER_LEN as u64,
            header,
            buf: Vec::new(),
            borrowed: 0,
            ended: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of the next item (after the last one returned).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's length when opened (or the limit set by [`FrameReader::limit`]).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Reads no further than `len` bytes into the file: a reader of a live segment stops at the bytes
    /// that were published when it started, never inside a frame still being written.
    pub fn limit(&mut self, len: u64) {
        self.file_len = self.file_len.min(len);
    }

    /// Continues reading at byte `offset`, which must be the start of a frame (from a sparse index).
    pub fn seek_to(&mut self, offset: u64) -> Result<(), FormatError> {
        use std::io::{Seek, SeekFrom};
        assert!(offset >= HEADER_LEN as u64, "seek into the file header");
        // The seek empties the read buffer, and with it the frame last returned from it.
        self.borrowed = 0;
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|source| FormatError::Io { path: self.path.clone(), source })?;
        self.offset = offset;
        Ok(())
    }

    /// The next record or the trailer; `Ok(None)` at a clean end of file.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, FormatError> {
        use std::io::BufRead;
        self.reader.consume(std::mem::take(&mut self.borrowed));
        let offset = self.offset;
        let remaining = self.file_len - offset;
        if self.ended {
            if remaining > 0 {
                return Err(FormatError::AfterTrailer { path: self.path.clone(), offset });
            }
            return Ok(None);
        }
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < FRAME_PREFIX_LEN as u64 {
            return Err(FormatError::Incomplete { path: self.path.clone(), offset });
        }
        // A frame wholly inside the read buffer is checked and returned from it, without a copy (on a
        // scan of short records the copy into `buf` cost as much as the CRC).
        let buffered = self.reader.buffer();
        let fast = buffered.get(..FRAME_PREFIX_LEN).and_then(|frame| {
            let len = u32::from_le_bytes(le(frame));
            let crc = u32::from_le_bytes(le(frame.get(4..).unwrap_or_default()));
            let end = offset + FRAME_PREFIX_LEN as u64 + u64::from(len);
            let whole = FRAME_PREFIX_LEN + len as usize;
            let valid = len != TRAILER_TAG && len != 0 && len as usize <= MAX_RECORD_BYTES && end <= self.file_len;
            (valid && whole <= buffered.len()).then_some((end, whole, crc))
        });
        if let Some((end, whole, crc)) = fast {
            let body = self.reader.buffer().get(FRAME_PREFIX_LEN..whole).unwrap_or_default();
            if crc32c::crc32c(body) != crc {
                return Err(FormatError::BadChecksum { path: self.path.clone(), offset, at_end: end == self.file_len });
            }
            self.offset = end;
            self.borrowed = whole;
            return Ok(Some(Item::Record { offset, body }));
        }
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        self.read_exact(&mut prefix)?;
        let len = u32::from_le_bytes(le(&prefix[0..4]));
        if len == TRAILER_TAG {
            return self.read_trailer(offset, prefix).map(Some);
        }
        if len == 0 || len as usize > MAX_RECORD_BYTES {
            return Err(FormatError::BadLength { path: self.path.clone(), offset, len });
        }
        let end = offset + FRAME_PREFIX_LEN as u64 + u64::from(len);
        if end > self.file_len {
            return Err(FormatError::Incomplete { path: self.path.clone(), offset });
        }
        let crc = u32::from_le_bytes(le(&prefix[4..8]));
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(len as usize, 0);
        let read = self.read_exact(&mut buf);
        self.buf = buf;
        read?;
        if crc32c::crc32c(&self.buf) != crc {
            return Err(FormatError::BadChecksum { path: self.path.clone(), offset, at_end: end == self.file_len });
        }
        self.offset = end;
        Ok(Some(Item::Record { offset, body: &self.buf }))
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), FormatError> {
        self.reader.read_exact(out).map_err(|source| FormatError::Io { path: self.path.clone(), source })
    }

    fn read_trailer(&mut self, offset: u64, prefix: [u8; 8]) -> Result<Item<'_>, FormatError> {
        let path = self.path.clone();
        let bad = |error: TrailerError| FormatError::BadTrailer { path: path.clone(), offset, error };
        let remaining = self.file_len - offset;
        if remaining < TRAILER_FIXED_LEN as u64 {
            return Err(bad(TrailerError::Truncated));
        }
        let mut bytes = Vec::with_capacity(TRAILER_FIXED_LEN);
        bytes.extend_from_slice(&prefix);
        bytes.resize(TRAILER_NODES_OFFSET, 0);
        self.read_exact(bytes.get_mut(FRAME_PREFIX_LEN..).unwrap_or_default())?;
        let n = usize::from(bytes.get(TRAILER_NODE_COUNT_OFFSET).copied().unwrap_or_default());
        if n > MAX_FRONTIER_NODES {
            return Err(bad(TrailerError::FrontierTooLong));
        }
        let total = Trailer::encoded_len(n);
        if remaining < total as u64 {
            return Err(bad(TrailerError::Truncated));
        }
        bytes.resize(total, 0);
        self.read_exact(bytes.get_mut(TRAILER_NODES_OFFSET..).unwrap_or_default())?;
        let trailer = Trailer::decode(&bytes).map_err(bad)?;
        self.offset = offset + total as u64;
        self.ended = true;
        Ok(Item::Trailer { offset, trailer })
    }
}

/// Reads the trailer at the end of a sealed file, without reading its records.
pub fn read_trailer_at_end(path: &Path) -> Result<Trailer, FormatError> {
    read_trailer_ending_at(path, None)
}

/// Reads the trailer that ends at byte `end` of a file (its end when `None`): a bundle that carries
/// checkpoints has them after its trailer (docs/FORMAT.md, "Checkpoints in a bundle").
pub fn read_trailer_ending_at(path: &Path, end: Option<u64>) -> Result<Trailer, FormatError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| FormatError::Io { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let len = end.map_or(file_len, |end| end.min(file_len));
    let bad = |error: TrailerError| FormatError::BadTrailer { path: path.to_owned(), offset: len, error };
    if len < (HEADER_LEN + TRAILER_FIXED_LEN) as u64 {
        return Err(bad(TrailerError::FileTooShort));
    }
    let mut tail = [0u8; 4];
    file.seek(SeekFrom::Start(len - 4)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    let trailer_len = u64::from(u32::from_le_bytes(tail));
    if trailer_len < TRAILER_FIXED_LEN as u64 || trailer_len > (len - HEADER_LEN as u64) {
        return Err(bad(TrailerError::NotAtEnd));
    }
    let offset = len - trailer_len;
    let mut bytes = vec![0u8; trailer_len as usize];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut bytes).map_err(io)?;
    Trailer::decode(&bytes).map_err(|error| FormatError::BadTrailer { path: path.to_owned(), offset, error })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn header_round_trip_and_checks() {
        let h = Header { kind: FileKind::Bundle, seq: 3, first_position: 99, ledger_id: 0xdead_beef };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        let mut bad = bytes;
        bad[17] ^= 1;
        assert!(Header::decode(&bad).is_err());
    }

    #[test]
    fn frames_and_trailer_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = Header { kind: FileKind::Segment, seq: 0, first_position: 0, ledger_id: 1 }.encode().to_vec();
        let mut frontier = Frontier::new();
        for body in [&b"a"[..], b"bb", b"ccc"] {
            push_frame(&mut bytes, body);
            frontier.push_leaf(body);
        }
        Trailer::new(3, &frontier).encode(&mut bytes);
        File::create(&path).unwrap().write_all(&bytes).unwrap();
        let mut reader = FrameReader::open(&path).unwrap();
        let mut bodies = Vec::new();
        loop {
            match reader.next_item().unwrap() {
                Some(Item::Record { body, .. }) => bodies.push(body.to_vec()),
                Some(Item::Trailer { trailer, .. }) => {
                    assert_eq!(trailer.record_count, 3);
                    assert_eq!(trailer.checked_frontier().unwrap(), frontier);
                }
                None => break,
            }
        }
        assert_eq!(bodies, vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]);
        // Every cut inside the last frame is reported as incomplete, never as a record.
        let frames_end = HEADER_LEN + 3 * FRAME_PREFIX_LEN + 1 + 2 + 3;
        let last_frame_start = frames_end - FRAME_PREFIX_LEN - 3;
        for cut in (last_frame_start + 1)..frames_end {
            File::create(&path).unwrap().write_all(&bytes[..cut]).unwrap();
            let mut reader = FrameReader::open(&path).unwrap();
            let mut result: Result<bool, FormatError> = Ok(false);
            for _ in 0..4 {
                result = reader.next_item().map(|i| i.is_some());
                if !matches!(result, Ok(true)) {
                    break;
                }
            }
            assert!(matches!(result, Err(FormatError::Incomplete { .. })), "cut {cut}: {result:?}");
        }
    }

    /// Records larger than the smallest read buffer, and a seek past the first of them, read the same
    /// through a small buffer as through the largest.
    #[test]
    fn records_larger_than_the_read_buffer_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = Header { kind: FileKind::Segment, seq: 0, first_position: 0, ledger_id: 1 }.encode().to_vec();
        let bodies: Vec<Vec<u8>> = [10, MIN_READ_BUFFER_BYTES * 3 + 7, 1, MAX_RECORD_BYTES]
            .iter()
            .map(|&n| vec![(n % 251) as u8; n])
            .collect();
        let mut offsets = Vec::new();
        for body in &bodies {
            offsets.push(bytes.len() as u64);
            push_frame(&mut bytes, body);
        }
        File::create(&path).unwrap().write_all(&bytes).unwrap();
        let header = HEADER_LEN as u64;
        for to in [
            Some(header),
            Some(header + MIN_READ_BUFFER_BYTES as u64),
            Some(header + MAX_READ_BUFFER_BYTES as u64),
            None,
        ] {
            for (start, offset) in offsets.iter().enumerate() {
                let mut reader = FrameReader::open_span(&path, header, to).unwrap();
                if start > 0 {
                    reader.seek_to(*offset).unwrap();
                }
                let mut read = Vec::new();
                while let Some(Item::Record { body, .. }) = reader.next_item().unwrap() {
                    read.push(body.to_vec());
                }
                assert!(read == bodies[start..], "buffer for a span to {to:?}, from record {start}");
            }
        }
    }
}

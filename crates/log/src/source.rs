//! The read side of the log: find the files of a ledger folder or a bundle, recover the committed end of
//! a live segment, and iterate frames and records from any position in constant memory.
//!
//! Both the [`crate::Ledger`] (on open and for every read) and read-only tools (replay) use this module,
//! so there is one copy of the rules for what counts as a committed record and what is a torn tail.

use crate::codec::{decode_record, decode_view, MAX_RECORD_BYTES};
use crate::error::ReadError;
use crate::merkle::{leaf_hashes_parallel, Frontier, Hash};
use crate::model::Record;
use crate::segment::{
    read_trailer_at_end, FileKind, FormatError, FrameReader, Header, Item, Trailer, FRAME_PREFIX_LEN, HEADER_LEN,
};
use chrono::{DateTime, Utc};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A sparse offset is kept for every this many records of a file.
pub const SPARSE_EVERY_RECORDS: u64 = 64;
const _: () = assert!(SPARSE_EVERY_RECORDS.is_power_of_two(), "a sparse slot is a shift");

/// Whether the `index`th record of a file (counted from its first) has a sparse offset: the one rule
/// every builder of sparse offsets follows (`build_sparse`, the live scan, the writer).
#[inline]
pub fn is_sparse_record(index: u64) -> bool {
    index.is_multiple_of(SPARSE_EVERY_RECORDS)
}

/// The sparse slot of a file starting at position `first` that holds `position` (at or before it: the
/// offset to seek to for reading `position`).
#[inline]
pub fn sparse_slot(first: u64, position: u64) -> usize {
    usize::try_from(position.saturating_sub(first) / SPARSE_EVERY_RECORDS).unwrap_or(usize::MAX)
}

/// The position whose offset sparse slot `slot` of a file starting at `first` holds.
#[inline]
pub fn sparse_slot_start(first: u64, slot: usize) -> u64 {
    first + slot as u64 * SPARSE_EVERY_RECORDS
}
/// The folder, inside a ledger folder, that holds the segment files.
pub const SEGMENTS_DIR: &str = "segments";
pub use crate::anchor::HEAD_FILE;

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u32) -> String {
    format!("{seq:08}.seg")
}

/// What the reader knows of one file of the log.
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// Where it is.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Committed records in it.
    pub records: u64,
    /// Bytes from the start of the file to the end of its last committed record.
    pub readable_len: u64,
    /// The trailer, for a sealed segment or a bundle.
    pub trailer: Option<Trailer>,
    /// Byte offsets of every [`SPARSE_EVERY_RECORDS`]th record, when known.
    pub sparse: Option<Arc<Vec<u64>>>,
}

impl FileMeta {
    /// Position of the first record.
    pub fn first_position(&self) -> u64 {
        self.header.first_position
    }
    /// Position after the last record.
    pub fn end_position(&self) -> u64 {
        self.header.first_position + self.records
    }
}

/// The head of a log: how many records, and the Merkle root over them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    /// Number of records (the next position).
    pub size: u64,
    /// RFC 6962 root of those records.
    pub root: Hash,
}

impl Head {
    /// The root as 64 lowercase hex digits.
    pub fn root_hex(&self) -> String {
        hex(&self.root)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits into a hash.
pub fn parse_hash(text: &str) -> Option<Hash> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Reads the anchor of a ledger folder: its `HEAD` (see [`crate::anchor`]). `None` when absent or
/// damaged; [`Source::open`] reports those cases, this is for callers that only want the head.
pub fn read_head(dir: &Path) -> Option<Head> {
    crate::anchor::read(dir).ok().flatten().map(|a| a.head)
}

/// Why the end of a live segment was not clean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset where the committed records end.
    pub committed_len: u64,
    /// Bytes after it.
    pub bytes: u64,
    /// What was found there.
    pub reason: String,
}

/// The result of scanning the live (last, unsealed) segment.
#[derive(Clone, Debug)]
pub struct ActiveScan {
    /// Committed records.
    pub records: u64,
    /// End of the last committed record.
    pub committed_len: u64,
    /// The frontier after the last committed record.
    pub frontier: Frontier,
    /// Sparse offsets of the committed records.
    pub sparse: Vec<u64>,
    /// recorded_at of the last committed record.
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Roots seen at commit points, for the sizes asked for (to check a HEAD).
    pub root_at: Option<(u64, Hash)>,
    /// What was cut off (or would be) after the committed records.
    pub torn: Option<TornTail>,
}

/// The live segment's records on their way into the scan's frontier: bodies waiting to be hashed,
/// leaves hashed but not yet committed. Holds at most [`LeafBatch::BYTES`] of bodies, plus the leaves
/// of the append still open (32 bytes a record, as the sequential scan held).
struct LeafBatch {
    /// Bodies back to back, and the end of each in `bodies`.
    bodies: Vec<u8>,
    ends: Vec<usize>,
    /// Leaf hashes of records after the frontier (committed or not), in order.
    leaves: Vec<Hash>,
    /// Log position of `leaves[0]` (the frontier's size once flushed).
    first: u64,
    /// The log size at the last commit marker read.
    committed: u64,
    /// The anchor's size, and whether it is a commit point (only there is a root recorded).
    anchor: Option<u64>,
    anchor_committed: bool,
}

impl LeafBatch {
    /// Bodies waiting before they are hashed.
    const BYTES: usize = LEAF_BATCH_BYTES;

    fn new(first: u64, anchor: Option<u64>) -> LeafBatch {
        LeafBatch {
            bodies: Vec::new(),
            ends: Vec::new(),
            leaves: Vec::new(),
            first,
            committed: first,
            anchor,
            anchor_committed: false,
        }
    }

    fn push(&mut self, body: &[u8]) {
        self.bodies.extend_from_slice(body);
        self.ends.push(self.bodies.len());
    }

    /// A commit marker: the log is whole at `size`.
    fn commit(&mut self, size: u64) {
        assert!(size > self.committed, "commit points grow");
        self.committed = size;
        if self.anchor == Some(size) {
            self.anchor_committed = true;
        }
    }

    fn is_full(&self) -> bool {
        self.bodies.len() >= Self::BYTES
    }

    /// Hashes the waiting bodies (in parallel) and pushes every committed leaf onto the scan's frontier,
    /// recording the root at the anchor when the anchor is a commit point among them.
    fn flush(&mut self, scan: &mut ActiveScan) {
        let mut start = 0;
        let bodies: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let body = self.bodies.get(start..end).unwrap_or_default();
                start = end;
                body
            })
            .collect();
        self.leaves.extend(leaf_hashes_parallel(&bodies));
        self.bodies.clear();
        self.ends.clear();
        assert!(scan.frontier.size() == self.first, "the frontier ends where the waiting leaves start");
        let ready = usize::try_from(self.committed - self.first).unwrap_or(usize::MAX).min(self.leaves.len());
        let first = self.first;
        let anchor_here = self.anchor.filter(|&a| self.anchor_committed && a > first && a <= first + ready as u64);
        let split = anchor_here.map_or(ready, |a| usize::try_from(a - first).unwrap_or(ready));
        let (before, after) = self.leaves.get(..ready).unwrap_or_default().split_at(split);
        scan.frontier.extend_parallel(before);
        if anchor_here.is_some() {
            scan.root_at = Some((scan.frontier.size(), scan.frontier.root()));
        }
        scan.frontier.extend_parallel(after);
        self.leaves.drain(..ready);
        self.first += ready as u64;
        assert!(scan.frontier.size() == self.first, "the committed leaves joined the frontier");
    }
}

fn rest_is_zero(path: &Path, offset: u64) -> Result<bool, ReadError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| ReadError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(true);
        }
        if buf.iter().take(n).any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Whether the bytes from `offset` to the end of the file are a damaged trailer that nothing follows: a
/// trailer tag (or its first bytes), at most one trailer long, then at most zeros. Sealing writes the
/// trailer right after a commit record and creates the next segment only once it is durable, so this is
/// what a crash while sealing leaves. A trailer holds nothing that the records before it do not give
/// again (count, root, frontier), so cutting it loses nothing.
fn is_torn_trailer(path: &Path, offset: u64) -> Result<bool, ReadError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| ReadError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len <= offset || len - offset > Trailer::encoded_len(crate::segment::MAX_FRONTIER_NODES) as u64 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
    Ok(written > 0 && bytes.iter().take(written.min(4)).all(|b| *b == 0xFF))
}

/// The end of the frame that starts at `offset`, by its length prefix.
fn frame_end(path: &Path, offset: u64) -> Result<u64, ReadError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| ReadError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut len = [0u8; 4];
    file.read_exact(&mut len).map_err(io)?;
    Ok(offset + crate::segment::FRAME_PREFIX_LEN as u64 + u64::from(u32::from_le_bytes(len)))
}

/// Scans a live segment from its header: verifies every frame, decodes every record, checks dense
/// positions, and finds the end of the last committed append.
///
/// `anchor` is the log size the folder's HEAD records (every acknowledged append ends at or before it).
/// Once the committed records reach it, whatever follows is an unacknowledged tail, whatever its bytes
/// (a power cut may leave any mix of written and unwritten sectors of an unsynced write): the scan
/// stops at the last commit record and reports the rest in [`ActiveScan::torn`]. Before the anchor, only
/// a damaged *end* (a frame cut short, a checksum mismatch in the very last frame, zeros, records without
/// a commit marker, a torn trailer) ends the scan, and the caller then finds the log shorter than its
/// anchor; damage followed by intact data is corruption, an error naming the position and offset.
///
/// `start` is the frontier at the segment's first position (from the previous segment's trailer). The
/// root at the anchor's size is reported in [`ActiveScan::root_at`] if it is a commit point here.
pub fn scan_active(path: &Path, start: Frontier, anchor: Option<u64>) -> Result<ActiveScan, ReadError> {
    let mut reader = FrameReader::open(path)?;
    let header = *reader.header();
    if header.first_position != start.size() {
        return Err(ReadError::Corrupt {
            path: path.to_owned(),
            position: header.first_position,
            what: format!(
                "segment starts at position {} but the log before it has {}",
                header.first_position,
                start.size()
            ),
        });
    }
    let mut scan = ActiveScan {
        records: 0,
        committed_len: HEADER_LEN as u64,
        frontier: start,
        sparse: Vec::new(),
        last_recorded_at: None,
        root_at: None,
        torn: None,
    };
    if anchor == Some(scan.frontier.size()) {
        scan.root_at = Some((scan.frontier.size(), scan.frontier.root()));
    }
    // Leaf hashing, the scan's main cost, is deferred: bodies wait in `batch` and are hashed in
    // parallel, and committed leaves join the frontier in whole aligned subtrees (`LeafBatch::flush`).
    let mut batch = LeafBatch::new(header.first_position, anchor);
    let mut pending_sparse: Vec<u64> = Vec::new();
    let mut seen = 0u64;
    let file_len = reader.file_len();
    let torn = |scan: &ActiveScan, reason: String| TornTail {
        committed_len: scan.committed_len,
        bytes: file_len - scan.committed_len,
        reason,
    };
    loop {
        let offset = reader.offset();
        let position = header.first_position + seen;
        // Past the anchor, nothing was acknowledged: any damage ends the log at its last commit.
        let past_anchor = anchor.is_some_and(|a| header.first_position + scan.records >= a);
        let item = match reader.next_item() {
            Ok(item) => item,
            Err(e) if past_anchor => {
                scan.torn = Some(torn(&scan, format!("an unacknowledged tail: {}", describe_format(&e))));
                break;
            }
            Err(FormatError::Incomplete { offset, .. }) => {
                scan.torn = Some(torn(&scan, format!("record frame cut short at offset {offset}")));
                break;
            }
            Err(FormatError::BadChecksum { offset, at_end: true, .. }) => {
                scan.torn = Some(torn(&scan, format!("checksum mismatch in the last frame, at offset {offset}")));
                break;
            }
            // A crash while sealing: the trailer after the last commit record is cut short or damaged.
            Err(FormatError::BadTrailer { offset, .. } | FormatError::BadLength { offset, .. })
                if offset == scan.committed_len && seen == scan.records && is_torn_trailer(path, offset)? =>
            {
                scan.torn = Some(torn(&scan, format!("a trailer cut short at offset {offset}")));
                break;
            }
            Err(e @ (FormatError::BadLength { .. } | FormatError::BadChecksum { .. })) => {
                if rest_is_zero(path, offset)? {
                    scan.torn = Some(torn(&scan, format!("zeros from offset {offset}")));
                    break;
                }
                // A torn write can leave the start of a frame followed by zeros (the file grew, the rest of
                // the data never reached the disk): the frame fails its checksum but nothing follows it.
                if matches!(e, FormatError::BadChecksum { .. }) && rest_is_zero(path, frame_end(path, offset)?)? {
                    scan.torn =
                        Some(torn(&scan, format!("checksum mismatch at offset {offset}, followed only by zeros")));
                    break;
                }
                return Err(ReadError::Frame { position, source: e });
            }
            Err(e) => return Err(ReadError::Frame { position, source: e }),
        };
        let body = match item {
            None => break,
            Some(Item::Trailer { offset, .. }) if past_anchor => {
                scan.torn = Some(torn(&scan, format!("an unacknowledged tail: a trailer at offset {offset}")));
                break;
            }
            Some(Item::Trailer { offset, .. }) => {
                return Err(ReadError::Corrupt {
                    path: path.to_owned(),
                    position,
                    what: format!("unexpected trailer at offset {offset} in the live segment"),
                })
            }
            Some(Item::Record { body, .. }) => body,
        };
        // The borrowed decoding accepts exactly the bodies `decode_record` accepts, without allocating.
        let record = match decode_view(body) {
            Ok(record) if record.position == position => record,
            Ok(record) if !past_anchor => {
                return Err(ReadError::Corrupt {
                    path: path.to_owned(),
                    position,
                    what: format!("offset {offset}: record holds position {}, expected {position}", record.position),
                })
            }
            Err(error) if !past_anchor => return Err(ReadError::Codec { path: path.to_owned(), position, error }),
            Ok(record) => {
                scan.torn = Some(torn(
                    &scan,
                    format!("an unacknowledged tail: offset {offset} holds position {}", record.position),
                ));
                break;
            }
            Err(error) => {
                scan.torn = Some(torn(&scan, format!("an unacknowledged tail: offset {offset}: {error}")));
                break;
            }
        };
        if is_sparse_record(seen) {
            pending_sparse.push(offset);
        }
        seen += 1;
        batch.push(body);
        let (commit, recorded_at_us) = (record.commit, record.recorded_at_us);
        if commit {
            scan.sparse.append(&mut pending_sparse);
            scan.records = seen;
            scan.committed_len = reader.offset();
            scan.last_recorded_at = DateTime::from_timestamp_micros(recorded_at_us);
            batch.commit(header.first_position + seen);
        }
        if batch.is_full() {
            batch.flush(&mut scan);
        }
    }
    batch.flush(&mut scan);
    if scan.torn.is_none() && seen > scan.records {
        scan.torn =
            Some(torn(&scan, format!("{} records of an append without its commit marker", seen - scan.records)));
    }
    assert!(scan.frontier.size() == header.first_position + scan.records, "frontier out of step with the scan");
    assert!(scan.committed_len <= file_len, "the committed end lies inside the file");
    Ok(scan)
}

/// A frame error without its path (the caller names the file).
fn describe_format(e: &FormatError) -> String {
    match e {
        FormatError::Incomplete { offset, .. } => format!("a frame cut short at offset {offset}"),
        FormatError::BadLength { offset, len, .. } => format!("record length {len} at offset {offset}"),
        FormatError::BadChecksum { offset, .. } => format!("a checksum mismatch at offset {offset}"),
        FormatError::BadTrailer { offset, .. } => format!("a damaged trailer at offset {offset}"),
        other => other.to_string(),
    }
}

/// Byte offsets of every [`SPARSE_EVERY_RECORDS`]th record of a file, by a walk along its frames' length
/// fields. Bodies are skipped, not read or CRC-checked: the offsets are only ever used to seek, and every
/// frame read from them goes through the frame reader, CRC included. (A full scan of a 64 MiB segment
/// costs ~25 ms; the walk reads 8 bytes a record.)
pub fn build_sparse(meta: &FileMeta) -> Result<Vec<u64>, ReadError> {
    use std::io::{BufReader, Seek, SeekFrom};
    let io = |source| ReadError::Io { path: meta.path.clone(), source };
    let file = std::fs::File::open(&meta.path).map_err(io)?;
    let end = meta.readable_len.min(file.metadata().map_err(io)?.len());
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(HEADER_LEN as u64)).map_err(io)?;
    let corrupt = |seen: u64, what: String| ReadError::Corrupt {
        path: meta.path.clone(),
        position: meta.first_position() + seen,
        what,
    };
    let mut sparse = Vec::with_capacity(usize::try_from(meta.records / SPARSE_EVERY_RECORDS + 1).unwrap_or(0));
    let mut next = HEADER_LEN as u64;
    let mut seen = 0u64;
    while seen < meta.records {
        if next + FRAME_PREFIX_LEN as u64 > end {
            return Err(corrupt(seen, format!("file ends at offset {end} before record {seen} of {}", meta.records)));
        }
        let mut prefix = [0u8; 4];
        reader.read_exact(&mut prefix).map_err(io)?;
        let len = u32::from_le_bytes(prefix);
        if len == 0 || len as usize > MAX_RECORD_BYTES {
            return Err(corrupt(seen, format!("offset {next}: record length {len} is out of bounds")));
        }
        if is_sparse_record(seen) {
            sparse.push(next);
        }
        seen += 1;
        next += FRAME_PREFIX_LEN as u64 + u64::from(len);
        // Skip the CRC and the body; within the buffer this is a pointer move.
        reader.seek_relative(4 + i64::from(len)).map_err(io)?;
    }
    if next > end {
        return Err(corrupt(seen, format!("the last frame runs past offset {end}")));
    }
    Ok(sparse)
}

/// Lists the segment files of a ledger folder in order, checking their names are contiguous from 0.
pub fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let io = |source| ReadError::Io { path: seg_dir.clone(), source };
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(&seg_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else { continue };
        if let Ok(seq) = stem.parse::<u32>() {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    for (i, seq) in seqs.iter().enumerate() {
        if *seq as usize != i {
            return Err(ReadError::Corrupt {
                path: seg_dir.join(segment_file_name(i as u32)),
                position: 0,
                what: "segment file missing (segment numbers must run 0, 1, 2, ...)".into(),
            });
        }
    }
    Ok(seqs.into_iter().map(|seq| seg_dir.join(segment_file_name(seq))).collect())
}

/// Whether a segment file holds no more than a header that does not decode: what a crash leaves while
/// the segment is being created (its header is written and fsynced before anything else goes in), so
/// nothing can be in it. Only ever the last segment; recovery creates it again, readers skip it.
pub fn is_unwritten_segment(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len != HEADER_LEN as u64 {
        return Ok(len < HEADER_LEN as u64);
    }
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact(&mut bytes)?;
    Ok(Header::decode(&bytes).is_err())
}

/// Checks segment `index`'s header against its place in the chain: kind, number, ledger id, first position.
pub fn check_chain(
    path: &Path,
    header: &Header,
    index: usize,
    ledger_id: &mut Option<u64>,
    expected_first: u64,
) -> Result<(), ReadError> {
    let bad = |what: String| ReadError::Corrupt { path: path.to_owned(), position: expected_first, what };
    if header.kind != FileKind::Segment || header.seq as usize != index {
        return Err(bad(format!("segment {index} has header kind {:?}, number {}", header.kind, header.seq)));
    }
    if *ledger_id.get_or_insert(header.ledger_id) != header.ledger_id {
        return Err(bad("segment belongs to another ledger (ledger id differs)".into()));
    }
    if header.first_position != expected_first {
        return Err(bad(format!("segment starts at position {}, expected {expected_first}", header.first_position)));
    }
    Ok(())
}

/// The root of the log at `size`, a position inside `meta`, from the frontier at the file's start:
/// hashes only that file's records.
fn root_within(meta: &FileMeta, mut frontier: Frontier, size: u64) -> Result<Hash, ReadError> {
    assert_eq!(frontier.size(), meta.first_position(), "the frontier starts where the file does");
    FrameIter::new(vec![meta.clone()], meta.first_position(), size).extend_frontier(&mut frontier)?;
    Ok(frontier.root())
}

/// Bytes of record bodies [`FrameIter::extend_frontier`] holds and hashes at a time.
pub const LEAF_BATCH_BYTES: usize = 8 << 20;

/// A log opened for reading: a ledger folder or a bundle. Opening never writes.
#[derive(Clone, Debug)]
pub struct Source {
    /// The path given.
    pub path: PathBuf,
    /// Bundle or ledger folder.
    pub kind: FileKind,
    /// The files, in position order.
    pub files: Vec<FileMeta>,
    /// The head: size and root of the committed records.
    pub head: Head,
    /// For a folder: the head its HEAD file records (the anchor: the log reaches it, with this root,
    /// or [`Source::open`] refuses the folder).
    pub published_head: Option<Head>,
    /// For a folder: the anchor as read, with what was found in the HEAD file (a damaged slot, format 1).
    pub anchor: Option<crate::anchor::Anchor>,
    /// For a folder: the root the log had at the published head's size, when it could be computed.
    pub root_at_published: Option<Hash>,
    /// For a folder: bytes after the last committed record of the live segment (a write in progress or a torn tail).
    pub torn: Option<TornTail>,
    /// The Merkle frontier at the head (what an appender continues from).
    pub frontier: Frontier,
    /// For a folder: a last segment file whose creation a crash cut short (its header never reached the
    /// disk, so nothing can be in it). Readers skip it; the writer creates it again.
    pub unwritten: Option<PathBuf>,
    /// For a bundle: where the checkpoints it carries are (after its trailer), if it carries any. A
    /// folder's checkpoints are in its `checkpoints/` folder ([`Source::checkpoints`] reads both).
    pub checkpoints: Option<crate::bundle::CheckpointSection>,
}

/// The folder of signed checkpoints in a ledger folder (docs/CHECKPOINTS.md).
pub const CHECKPOINTS_DIR: &str = "checkpoints";

impl Source {
    /// The Merkle frontier of the first `size` records: from the last sealed file's trailer at or
    /// before `size` (checked against its root), then the leaves after it, so its cost is the records
    /// after the last trailer, not the log. At the head it is the frontier [`Source::open`] computed.
    pub fn frontier_at(&self, size: u64) -> Result<Frontier, ReadError> {
        if size > self.head.size {
            return Err(ReadError::OutOfRange { position: size, size: self.head.size });
        }
        if size == self.head.size {
            assert_eq!((self.frontier.size(), self.frontier.root()), (self.head.size, self.head.root));
            return Ok(self.frontier.clone());
        }
        let mut frontier = self
            .files
            .iter()
            .filter_map(|f| f.trailer.as_ref())
            .filter(|t| t.log_size <= size)
            .filter_map(|t| t.checked_frontier())
            .max_by_key(Frontier::size)
            .unwrap_or_default();
        self.frames(frontier.size(), size).extend_frontier(&mut frontier)?;
        assert_eq!(frontier.size(), size, "the frontier covers exactly the records asked for");
        Ok(frontier)
    }

    /// The signed checkpoints the log carries, smallest size first, as unverified note bytes: a
    /// bundle's checkpoint section, or a folder's `checkpoints/<size>.cosigned` (else
    /// `<size>.checkpoint`) files. At most [`crate::bundle::MAX_BUNDLE_CHECKPOINTS`], each at most
    /// [`crate::bundle::MAX_CARRIED_NOTE_BYTES`].
    pub fn checkpoints(&self) -> Result<Vec<crate::bundle::CarriedCheckpoint>, ReadError> {
        use crate::bundle::{
            decode_checkpoint_section, CarriedCheckpoint, MAX_BUNDLE_CHECKPOINTS, MAX_CARRIED_NOTE_BYTES,
        };
        use std::io::{Read as _, Seek as _, SeekFrom};
        let at = |path: &Path| {
            let path = path.to_owned();
            move |source| ReadError::Io { path, source }
        };
        if self.kind == FileKind::Bundle {
            let Some(section) = self.checkpoints else { return Ok(Vec::new()) };
            let mut file = std::fs::File::open(&self.path).map_err(at(&self.path))?;
            file.seek(SeekFrom::Start(section.offset)).map_err(at(&self.path))?;
            let mut bytes = Vec::new();
            file.take(section.len).read_to_end(&mut bytes).map_err(at(&self.path))?;
            return decode_checkpoint_section(&bytes, &section)
                .map_err(|source| ReadError::Checkpoints { path: self.path.clone(), source });
        }
        let folder = self.path.join(CHECKPOINTS_DIR);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ReadError::Io { path: folder, source: e }),
        };
        // Per size, the cosigned note (a superset of the signed one) when there is one.
        let mut by_size: std::collections::BTreeMap<u64, (bool, PathBuf)> = std::collections::BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(at(&folder))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (stem, cosigned) = match (name.strip_suffix(".cosigned"), name.strip_suffix(".checkpoint")) {
                (Some(stem), _) => (stem, true),
                (None, Some(stem)) => (stem, false),
                _ => continue,
            };
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(size) = stem.parse::<u64>() else { continue };
            if by_size.len() >= MAX_BUNDLE_CHECKPOINTS && !by_size.contains_key(&size) {
                return Err(ReadError::Checkpoints {
                    path: folder,
                    source: crate::bundle::CheckpointSectionError::TooMany(by_size.len() + 1),
                });
            }
            let slot = by_size.entry(size).or_insert((cosigned, entry.path()));
            if cosigned && !slot.0 {
                *slot = (true, entry.path());
            }
        }
        let mut out = Vec::with_capacity(by_size.len());
        for (size, (_, path)) in by_size {
            let file = std::fs::File::open(&path).map_err(at(&path))?;
            let mut note = Vec::new();
            file.take(MAX_CARRIED_NOTE_BYTES as u64 + 1).read_to_end(&mut note).map_err(at(&path))?;
            if note.is_empty() || note.len() > MAX_CARRIED_NOTE_BYTES {
                return Err(ReadError::Checkpoints {
                    path,
                    source: crate::bundle::CheckpointSectionError::BadEntry { size },
                });
            }
            out.push(CarriedCheckpoint { size, note });
        }
        Ok(out)
    }

    /// Opens a ledger folder or a bundle file, read-only.
    pub fn open(path: &Path) -> Result<Source, ReadError> {
        let meta = std::fs::metadata(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
        if meta.is_dir() {
            Self::open_dir(path, true)
        } else {
            Self::open_bundle(path)
        }
    }

    fn open_bundle(path: &Path) -> Result<Source, ReadError> {
        let reader = FrameReader::open(path)?;
        let header = *reader.header();
        if header.kind != FileKind::Bundle || header.first_position != 0 {
            return Err(ReadError::Corrupt {
                path: path.to_owned(),
                position: 0,
                what: "not a bundle (a bundle starts at position 0 and has kind bundle)".into(),
            });
        }
        let file_len = reader.file_len();
        let checkpoints = {
            let mut file =
                std::fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
            crate::bundle::read_checkpoint_footer(&mut file, file_len)
                .map_err(|e| ReadError::Checkpoints { path: path.to_owned(), source: e })?
        };
        // The log's part of the file ends with its trailer; carried checkpoints follow it.
        let log_len = checkpoints.map_or(file_len, |c| c.offset);
        let trailer = crate::segment::read_trailer_ending_at(path, Some(log_len))?;
        let readable_len = log_len - crate::segment::Trailer::encoded_len(trailer.frontier.len()) as u64;
        if trailer.record_count != trailer.log_size {
            return Err(ReadError::Corrupt {
                path: path.to_owned(),
                position: trailer.log_size,
                what: "bundle trailer's record count differs from its log size".into(),
            });
        }
        let head = Head { size: trailer.log_size, root: trailer.root };
        let trailer_frontier = trailer.checked_frontier().ok_or_else(|| ReadError::Corrupt {
            path: path.to_owned(),
            position: trailer.log_size,
            what: "bundle trailer's frontier does not hash to its root".into(),
        })?;
        Ok(Source {
            path: path.to_owned(),
            kind: FileKind::Bundle,
            files: vec![FileMeta {
                path: path.to_owned(),
                header,
                records: trailer.record_count,
                readable_len,
                trailer: Some(trailer),
                sparse: None,
            }],
            head,
            published_head: None,
            anchor: None,
            root_at_published: None,
            torn: None,
            frontier: trailer_frontier,
            unwritten: None,
            checkpoints,
        })
    }

    /// Opens a ledger folder read-only *without* its anchor: the committed records as the segments hold
    /// them, whatever HEAD says (or whether it exists). Only for `posledger reanchor`, which an operator
    /// runs to record the end of a log known to be whole after HEAD was lost; every other reader uses
    /// [`Source::open`].
    pub fn open_unanchored(dir: &Path) -> Result<Source, ReadError> {
        Self::open_dir(dir, false)
    }

    fn open_dir(dir: &Path, anchored: bool) -> Result<Source, ReadError> {
        let anchor = if anchored { crate::anchor::read(dir)? } else { None };
        let published = anchor.map(|a| a.head);
        if !dir.join(SEGMENTS_DIR).is_dir() {
            return Err(match published {
                Some(head) if head.size > 0 => ReadError::Cut { path: dir.to_owned(), recorded: head.size, found: 0 },
                _ => ReadError::NotALedger(dir.to_owned()),
            });
        }
        let paths = list_segments(dir)?;
        let mut files: Vec<FileMeta> = Vec::with_capacity(paths.len());
        let mut frontier = Frontier::new();
        let mut ledger_id = None;
        let mut torn = None;
        let mut unwritten = None;
        let mut root_at_published = None;
        for (i, path) in paths.iter().enumerate() {
            let io = |source| ReadError::Io { path: path.clone(), source };
            if i + 1 == paths.len() && is_unwritten_segment(path).map_err(io)? {
                // A crash while it was being created: empty, and its predecessor (if any) is sealed.
                unwritten = Some(path.clone());
                break;
            }
            let reader = FrameReader::open(path)?;
            let header = *reader.header();
            check_chain(path, &header, i, &mut ledger_id, frontier.size())?;
            let bad = |what: String| ReadError::Corrupt { path: path.clone(), position: frontier.size(), what };
            let last = i + 1 == paths.len();
            let sealed = if last { read_trailer_at_end(path).ok() } else { Some(read_trailer_at_end(path)?) };
            if let Some(trailer) = sealed {
                let Some(next) = trailer.checked_frontier() else {
                    return Err(bad("trailer's frontier does not match its root".into()));
                };
                if trailer.log_size != header.first_position + trailer.record_count {
                    return Err(bad("trailer's log size differs from first position + record count".into()));
                }
                let readable_len = reader.file_len() - Trailer::encoded_len(trailer.frontier.len()) as u64;
                let meta = FileMeta {
                    path: path.clone(),
                    header,
                    records: trailer.record_count,
                    readable_len,
                    trailer: Some(trailer),
                    sparse: None,
                };
                if let Some(p) = published {
                    // HEAD may lag the log: its root is found by hashing only the segment it falls in.
                    if p.size > header.first_position && p.size < meta.end_position() {
                        root_at_published = Some(root_within(&meta, frontier.clone(), p.size)?);
                    } else if p.size == header.first_position {
                        root_at_published = Some(frontier.root());
                    }
                }
                files.push(meta);
                frontier = next;
            } else {
                let scan = scan_active(path, frontier.clone(), published.map(|h| h.size))?;
                if let Some((_, root)) = scan.root_at {
                    root_at_published = Some(root);
                }
                torn = scan.torn.clone();
                files.push(FileMeta {
                    path: path.clone(),
                    header,
                    records: scan.records,
                    readable_len: scan.committed_len,
                    trailer: None,
                    sparse: Some(Arc::new(scan.sparse)),
                });
                frontier = scan.frontier;
            }
        }
        match published {
            None if anchored && frontier.size() > 0 => {
                return Err(crate::anchor::AnchorError::Missing { path: dir.join(HEAD_FILE) }.into())
            }
            None => {}
            Some(p) if p.size > frontier.size() => {
                return Err(ReadError::Cut { path: dir.to_owned(), recorded: p.size, found: frontier.size() })
            }
            Some(p) => {
                if p.size == frontier.size() {
                    root_at_published = Some(frontier.root());
                }
                if root_at_published != Some(p.root) {
                    return Err(ReadError::AnchorMismatch {
                        path: dir.to_owned(),
                        size: p.size,
                        recorded: hex(&p.root),
                        found: root_at_published.map_or_else(|| "unknown".to_owned(), |r| hex(&r)),
                    });
                }
            }
        }
        Ok(Source {
            path: dir.to_owned(),
            kind: FileKind::Segment,
            files,
            head: Head { size: frontier.size(), root: frontier.root() },
            published_head: published,
            anchor,
            root_at_published,
            torn,
            frontier,
            unwritten,
            checkpoints: None,
        })
    }

    /// The ledger id of the log's files (`None` for a folder with no written segment yet).
    pub fn ledger_id(&self) -> Option<u64> {
        self.files.first().map(|f| f.header.ledger_id)
    }

    /// Iterates raw frames of positions `from..to` (clamped to the head).
    pub fn frames(&self, from: u64, to: u64) -> FrameIter {
        FrameIter::new(self.files.clone(), from, to.min(self.head.size))
    }

    /// Iterates decoded records of positions `from..` to the head.
    pub fn records(&self, from: u64) -> RecordIter {
        RecordIter { frames: self.frames(from, u64::MAX) }
    }
}

/// Iterates the raw frames (record bodies) of a position range across files, in constant memory.
pub struct FrameIter {
    files: Vec<FileMeta>,
    file: usize,
    reader: Option<FrameReader>,
    next: u64,
    end: u64,
}

impl FrameIter {
    /// Pushes the leaf of every remaining frame onto `frontier` (which must end where the frames
    /// start), hashing batches of up to [`LEAF_BATCH_BYTES`] of bodies on the current rayon pool: the
    /// frontier of pushing them one by one, at the cost of one batch of memory.
    pub fn extend_frontier(&mut self, frontier: &mut Frontier) -> Result<(), ReadError> {
        self.extend_frontier_by(frontier, LEAF_BATCH_BYTES)
    }

    fn extend_frontier_by(&mut self, frontier: &mut Frontier, batch_bytes: usize) -> Result<(), ReadError> {
        assert!(frontier.size() == self.next, "the frontier ends where the frames start");
        loop {
            let (_, leaves) = self.next_leaves(batch_bytes)?;
            if leaves.is_empty() {
                return Ok(());
            }
            frontier.extend_parallel(&leaves);
            assert!(frontier.size() == self.next, "every frame read joined the frontier");
        }
    }

    /// The leaf hashes of the next frames, as many as fit `batch_bytes` of bodies (at least one while
    /// any is left), hashed on the current rayon pool: the position of the first, and the leaves (none
    /// at the end). Holds one batch of bodies.
    pub fn next_leaves(&mut self, batch_bytes: usize) -> Result<(u64, Vec<Hash>), ReadError> {
        let first = self.next;
        let mut bodies: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        while bodies.len() < batch_bytes || ends.is_empty() {
            let Some((_, body, _)) = self.next_frame()? else { break };
            bodies.extend_from_slice(body);
            ends.push(bodies.len());
        }
        let mut start = 0;
        let slices: Vec<&[u8]> = ends
            .iter()
            .map(|&end| {
                let body = bodies.get(start..end).unwrap_or_default();
                start = end;
                body
            })
            .collect();
        let leaves = leaf_hashes_parallel(&slices);
        assert!(first + leaves.len() as u64 == self.next, "one leaf a frame read");
        Ok((first, leaves))
    }

    /// Frames of positions `from..end` of `files` (which must be contiguous).
    pub fn new(files: Vec<FileMeta>, from: u64, end: u64) -> FrameIter {
        let file = files.partition_point(|f| f.end_position() <= from);
        FrameIter { files, file, reader: None, next: from, end }
    }

    /// The position of the next frame.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The path of the file being read (for error messages).
    pub fn current_path(&self) -> Option<&Path> {
        self.files.get(self.file).map(|f| f.path.as_path())
    }

    /// The byte offsets of the current file that positions `next..end` span, as far as its sparse
    /// offsets tell (a bound: from the slot holding `next` to the slot after the one holding `end - 1`;
    /// `None` for the end of the file).
    fn span(&self, meta: &FileMeta) -> (u64, Option<u64>) {
        let first = meta.first_position();
        let Some(sparse) = &meta.sparse else { return (HEADER_LEN as u64, None) };
        let offset = |position: u64| sparse.get(sparse_slot(first, position)).copied();
        let from = offset(self.next.max(first)).unwrap_or(HEADER_LEN as u64);
        let last = self.end.min(meta.end_position()).saturating_sub(1).max(first);
        (from, offset(last + SPARSE_EVERY_RECORDS))
    }

    /// The file being read (`OutOfRange` past the last one: the files end before `end`).
    fn current(&self) -> Result<&FileMeta, ReadError> {
        self.files.get(self.file).ok_or_else(|| ReadError::OutOfRange { position: self.next, size: self.end })
    }

    fn open_file(&mut self) -> Result<(), ReadError> {
        // A buffer no larger than the bytes to read: a reader of a few thousand records (a chunk of a
        // small parallel rebuild) would otherwise read and copy a whole megabyte per refill.
        let meta = self.current()?;
        let (from, to) = self.span(meta);
        let mut reader = FrameReader::open_span(&meta.path, from, to)?;
        reader.limit(meta.readable_len);
        let skip_from = if self.next > meta.first_position() {
            let sparse = match &meta.sparse {
                Some(sparse) => sparse.clone(),
                None => {
                    let sparse = Arc::new(build_sparse(meta)?);
                    if let Some(meta) = self.files.get_mut(self.file) {
                        meta.sparse = Some(sparse.clone());
                    }
                    sparse
                }
            };
            let meta = self.current()?;
            let slot = sparse_slot(meta.first_position(), self.next);
            let Some(offset) = sparse.get(slot) else {
                return Err(ReadError::Corrupt {
                    path: meta.path.clone(),
                    position: self.next,
                    what: "sparse index too short".into(),
                });
            };
            reader.seek_to(*offset)?;
            sparse_slot_start(meta.first_position(), slot)
        } else {
            meta.first_position()
        };
        for position in skip_from..self.next {
            let item = reader.next_item().map_err(|source| ReadError::Frame { position, source })?;
            if !matches!(item, Some(Item::Record { .. })) {
                return Err(ReadError::Corrupt {
                    path: reader.path().to_owned(),
                    position: self.next,
                    what: "record missing".into(),
                });
            }
        }
        self.reader = Some(reader);
        Ok(())
    }

    /// The next frame: its position, its body, and the file it is in.
    pub fn next_frame(&mut self) -> Result<Option<(u64, &[u8], &Path)>, ReadError> {
        if self.next >= self.end {
            return Ok(None);
        }
        loop {
            if self.next >= self.current()?.end_position() {
                self.file += 1;
                self.reader = None;
                continue;
            }
            if self.reader.is_none() {
                self.open_file()?;
            }
            break;
        }
        let position = self.next;
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        match reader.next_item().map_err(|source| ReadError::Frame { position, source })? {
            Some(Item::Record { body, .. }) => {
                self.next += 1;
                let path = self.files.get(self.file).map_or(Path::new(""), |meta| meta.path.as_path());
                Ok(Some((position, body, path)))
            }
            _ => Err(ReadError::Corrupt {
                path: self.files.get(self.file).map(|meta| meta.path.clone()).unwrap_or_default(),
                position,
                what: "file ends before its committed records do".into(),
            }),
        }
    }
}

/// Iterates decoded records, checking each record's position.
pub struct RecordIter {
    frames: FrameIter,
}

impl RecordIter {
    /// Wraps a frame iterator.
    pub fn new(frames: FrameIter) -> RecordIter {
        RecordIter { frames }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.frames.next_frame() {
            Ok(None) => None,
            Err(e) => {
                self.frames.end = 0;
                Some(Err(e))
            }
            Ok(Some((position, body, path))) => {
                let result = decode_record(body)
                    .map_err(|error| ReadError::Codec { path: path.to_owned(), position, error })
                    .and_then(|record| {
                        if record.position == position {
                            Ok(record)
                        } else {
                            Err(ReadError::Corrupt {
                                path: path.to_owned(),
                                position,
                                what: format!("record holds position {}", record.position),
                            })
                        }
                    });
                if result.is_err() {
                    self.frames.end = 0;
                }
                Some(result)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[expect(clippy::disallowed_methods, reason = "the test writes a bundle to read in a temporary folder")]
mod tests {
    use super::*;
    use crate::bundle::BundleStream;
    use crate::codec::{encode_record, flow_record};
    use chrono::{TimeZone, Utc};

    /// A bundle of `n` flow records, opened.
    fn bundle(dir: &Path, n: u64) -> Source {
        let path = dir.join("log.bundle");
        let mut stream = BundleStream::new(Vec::new(), &path, 7).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let mut body = Vec::new();
        for position in 0..n {
            body.clear();
            encode_record(&flow_record(position, position, at, position), &mut body).unwrap();
            stream.push(&body).unwrap();
        }
        let (_, bytes) = stream.finish().unwrap();
        std::fs::write(&path, bytes).unwrap();
        Source::open(&path).unwrap()
    }

    #[test]
    fn extending_a_frontier_in_batches_equals_pushing_each_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let source = bundle(dir.path(), 300);
        for (from, to) in [(0, 300), (0, 1), (1, 300), (37, 129), (128, 256), (299, 300), (300, 300)] {
            let mut one_by_one = Frontier::new();
            let mut frames = source.frames(0, from);
            while let Some((_, body, _)) = frames.next_frame().unwrap() {
                one_by_one.push_leaf(body);
            }
            assert_eq!(source.frontier_at(from).unwrap(), one_by_one, "the frontier at {from}");
            let mut frames = source.frames(from, to);
            while let Some((_, body, _)) = frames.next_frame().unwrap() {
                one_by_one.push_leaf(body);
            }
            // Batches of one body, of a few, and all at once.
            for batch_bytes in [1, 200, 1 << 20] {
                let mut batched = source.frontier_at(from).unwrap();
                source.frames(from, to).extend_frontier_by(&mut batched, batch_bytes).unwrap();
                assert_eq!(batched, one_by_one, "{from}..{to} in batches of {batch_bytes} bytes");
            }
        }
        assert_eq!(source.frontier_at(300).unwrap().root(), source.head.root);
    }
}

//! `replay verify`: re-reads every byte of a log and checks everything the format promises.
//!
//! For every file: the header (kind, segment number, ledger id, first position chained to the previous
//! file); for every frame: its length and CRC32C; for every record: that it decodes (and its fields
//! validate), that its position is the next one (dense positions), that its stream version is the
//! stream's next one (dense versions, tracked per stream), that `recorded_at` never decreases; for
//! every sealed segment and for a bundle: that the file ends on a commit marker, that its trailer counts
//! exactly its records, and that the RFC 6962 root recomputed from the record bytes equals the root and
//! frontier in the trailer; for a ledger folder: that the published HEAD is covered by the log and has
//! the root the log has at that size. The first failure is reported with its file and position.
//!
//! The work is split so that it runs at disk speed: frames are read and CRC-checked sequentially in
//! batches, each batch is hashed (SHA-256 leaf hashes) and decoded in parallel with rayon while the next
//! batch is read, and the order-dependent checks (positions, versions, Merkle frontier) run sequentially
//! over the small per-record results.

use crate::error::{Error, Failure};
use log::codec::{decode_view, CodecError, EventView};
use log::key::InlineSn;
use log::merkle::{aligned_tiles, leaf_hashes_into, perfect_root, Frontier, Hash, TILE_HEIGHT};
use log::segment::{FileKind, FormatError, FrameReader, Item, Trailer};
use log::source::{hex, FileMeta, TornTail};
use log::{Head, Source};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Records per batch (a batch is read, then hashed and decoded in parallel).
const BATCH_RECORDS: usize = 1 << 15;
/// Bytes of record bodies per batch, at most (about).
const BATCH_BYTES: usize = 8 << 20;

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Records checked (the log's size).
    pub records: u64,
    /// The RFC 6962 root recomputed from the records.
    pub root: Hash,
    /// Files read.
    pub files: usize,
    /// Distinct streams (terminals, and the directives stream if present).
    pub streams: usize,
    /// For a ledger folder: the HEAD the writer published, now checked against the log.
    pub published_head: Option<Head>,
    /// For a ledger folder: bytes after the last committed record of the live segment (an append in
    /// progress, or the torn tail of a crash that the next open cuts off). Not part of the log.
    pub torn: Option<TornTail>,
    /// For a ledger folder: the anchor as read from HEAD (a damaged slot, a format-1 HEAD).
    pub anchor: Option<log::anchor::Anchor>,
}

impl Verified {
    /// The root as 64 lowercase hex digits.
    pub fn root_hex(&self) -> String {
        hex(&self.root)
    }
}

/// The per-record facts the sequential checks need, extracted in parallel.
struct Decoded {
    position: u64,
    version: u64,
    recorded_at: i64,
    commit: bool,
    stream: StreamKey,
}

/// A stream, keyed cheaply: an SN of up to 15 bytes is packed, with its length, into a `u128`
/// ([`InlineSn::to_u128`]: exact, no heap, one cache line less per lookup); a longer SN keeps its string.
enum StreamKey {
    Short(u128),
    Long(Box<str>),
    Directives,
}

impl StreamKey {
    fn of(sn: &str) -> StreamKey {
        match InlineSn::<15>::new(sn) {
            Some(short) => StreamKey::Short(short.to_u128()),
            None => StreamKey::Long(sn.into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            StreamKey::Short(packed) => {
                format!("terminal {}", InlineSn::<15>::from_u128(*packed).as_ref().map_or("?", InlineSn::as_str))
            }
            StreamKey::Long(sn) => format!("terminal {sn}"),
            StreamKey::Directives => "the directives stream".to_owned(),
        }
    }
}

impl StreamKey {
    /// The version-check partition of the stream (a fixed hash, never the thread count).
    fn partition(&self) -> usize {
        let h = match self {
            StreamKey::Short(k) => (*k as u64) ^ ((*k >> 64) as u64).rotate_left(29),
            StreamKey::Long(sn) => log::hash::fnv1a(sn.as_bytes()),
            StreamKey::Directives => 0,
        };
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % VERSION_PARTITIONS
    }
}

/// Partitions of the stream-version check (checked in parallel, each in position order).
const VERSION_PARTITIONS: usize = 16;

fn decode(body: &[u8]) -> Result<Decoded, CodecError> {
    // decode_view accepts exactly the bodies decode_record accepts (every field validated), without
    // allocating.
    decode_view(body).map(|record| {
        let stream = match &record.event {
            EventView::Terminal(e) => StreamKey::of(e.device),
            EventView::Directive(_) => StreamKey::Directives,
        };
        Decoded {
            position: record.position,
            version: record.version,
            recorded_at: record.recorded_at_us,
            commit: record.commit,
            stream,
        }
    })
}

/// A batch after the parallel stage: each record's facts, and the Merkle roots of the aligned
/// perfect subtrees that tile the batch's leaf range (cut at `cut`, the published HEAD's size).
struct DecodedBatch {
    first: u64,
    records: Vec<Result<Decoded, CodecError>>,
    subtrees: Vec<(u64, u32, Hash)>,
    /// For each version partition, the indices of its records, in order.
    parts: Vec<Vec<u32>>,
}

/// The tiles of leaves `lo..hi`, split at `cut` when it falls inside (so the root at `cut` can be
/// recomputed from whole tiles).
fn spans_of(lo: u64, hi: u64, cut: Option<u64>) -> Vec<(u64, u32)> {
    let mut spans = Vec::new();
    match cut {
        Some(c) if lo < c && c < hi => {
            spans.extend(aligned_tiles(lo, c, TILE_HEIGHT));
            spans.extend(aligned_tiles(c, hi, TILE_HEIGHT));
        }
        _ => spans.extend(aligned_tiles(lo, hi, TILE_HEIGHT)),
    }
    spans
}

/// Records a task of [`decode_batch`] hashes (together: `leaf_hashes_into`) and decodes.
const DECODE_TASK_RECORDS: usize = 1 << 10;

/// Hashes and decodes a batch in parallel, then hashes its subtrees in parallel.
fn decode_batch(batch: &Batch, cut: Option<u64>) -> DecodedBatch {
    let bodies: Vec<&[u8]> = batch.bodies().collect();
    let mut leaves: Vec<Hash> = vec![[0u8; 32]; bodies.len()];
    let records: Vec<Result<Decoded, CodecError>> = leaves
        .par_chunks_mut(DECODE_TASK_RECORDS)
        .zip(bodies.par_chunks(DECODE_TASK_RECORDS))
        .flat_map_iter(|(leaves, bodies)| {
            leaf_hashes_into(bodies, leaves);
            bodies.iter().map(|body| decode(body))
        })
        .collect();
    assert_eq!(records.len(), leaves.len(), "one decoded record a leaf");
    let (lo, hi) = (batch.first, batch.first + leaves.len() as u64);
    let spans = spans_of(lo, hi, cut);
    let subtrees = spans
        .into_par_iter()
        .map(|(start, height)| {
            let from = (start - lo) as usize;
            let to = from + (1usize << height);
            (start, height, perfect_root(leaves.get(from..to).unwrap_or_default()))
        })
        .collect();
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); VERSION_PARTITIONS];
    for (i, r) in records.iter().enumerate() {
        if let Ok(d) = r {
            if let Some(part) = parts.get_mut(d.stream.partition()) {
                part.push(i as u32);
            }
        }
    }
    DecodedBatch { first: batch.first, records, subtrees, parts }
}

/// One batch of frames read from a file: bodies back to back.
#[derive(Default)]
struct Batch {
    /// Position the first record must hold.
    first: u64,
    bodies: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn bodies(&self) -> impl IndexedParallelIterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).into_par_iter().map(move |i| {
            let start = if i == 0 { 0 } else { self.ends.get(i - 1).copied().unwrap_or(0) };
            let end = self.ends.get(i).copied().unwrap_or(start);
            self.bodies.get(start..end).unwrap_or_default()
        })
    }
}

/// Describes a format error without its path (the failure carries the path).
fn describe(e: &FormatError) -> String {
    match e {
        FormatError::BadHeader { error, .. } => format!("bad file header ({error})"),
        FormatError::Incomplete { offset, .. } => {
            format!("offset {offset}: the file ends inside a record frame (truncated)")
        }
        FormatError::BadLength { offset, len, .. } => format!("offset {offset}: record length {len} is out of bounds"),
        FormatError::BadChecksum { offset, .. } => format!("offset {offset}: record checksum (CRC32C) mismatch"),
        FormatError::BadTrailer { offset, error, .. } => format!("offset {offset}: bad trailer ({error})"),
        FormatError::AfterTrailer { offset, .. } => format!("offset {offset}: data after the trailer"),
        other => other.to_string(),
    }
}

/// Reads one file's frames in batches.
struct FileFrames<'a> {
    meta: &'a FileMeta,
    reader: FrameReader,
    next: u64,
    trailer: Option<(u64, Trailer)>,
    done: bool,
}

impl FileFrames<'_> {
    /// Reads the next batch; a read error ends the batch and is returned beside the frames before it
    /// (they are checked first, so the first failing position is the one reported).
    fn read_batch(&mut self) -> (Batch, Option<Failure>) {
        let mut batch = Batch { first: self.next, ..Batch::default() };
        while !self.done && batch.len() < BATCH_RECORDS && batch.bodies.len() < BATCH_BYTES {
            match self.reader.next_item() {
                Ok(Some(Item::Record { body, .. })) => {
                    batch.bodies.extend_from_slice(body);
                    batch.ends.push(batch.bodies.len());
                    self.next += 1;
                }
                Ok(Some(Item::Trailer { offset, trailer })) => {
                    self.trailer = Some((offset, trailer));
                    // Anything after a trailer is an error: read once more to find out.
                    if let Err(e) = self.reader.next_item() {
                        self.done = true;
                        let failure = fail(&self.meta.path, None, describe(&e));
                        return (batch, Some(failure));
                    }
                    self.done = true;
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return (batch, Some(fail(&self.meta.path, Some(self.next), describe(&e))));
                }
            }
        }
        (batch, None)
    }
}

fn fail(path: &Path, position: Option<u64>, what: impl Into<String>) -> Failure {
    Failure { path: path.to_owned(), position, what: what.into() }
}

/// Stream versions of one partition of the streams.
#[derive(Default)]
struct VersionPart {
    short: HashMap<u128, u64, foldhash::fast::RandomState>,
    long: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
    directives: Option<u64>,
}

impl VersionPart {
    /// Checks the records at `indices` of the batch (all of this partition's streams), in order.
    fn check(&mut self, path: &Path, batch: &DecodedBatch, indices: &[u32]) -> Result<(), Failure> {
        for &i in indices {
            let Some(Ok(d)) = batch.records.get(i as usize) else { continue };
            let slot = match &d.stream {
                StreamKey::Short(key) => self.short.entry(*key).or_insert(0),
                StreamKey::Long(sn) => match self.long.get_mut(sn) {
                    Some(slot) => slot,
                    None => self.long.entry(sn.clone()).or_insert(0),
                },
                StreamKey::Directives => self.directives.get_or_insert(0),
            };
            if d.version != *slot {
                let expected_version = *slot;
                return Err(fail(
                    path,
                    Some(batch.first + u64::from(i)),
                    format!(
                        "record holds version {} of {}, expected {expected_version} (stream versions must be dense)",
                        d.version,
                        d.stream.describe()
                    ),
                ));
            }
            *slot += 1;
        }
        Ok(())
    }

    fn streams(&self) -> usize {
        self.short.len() + self.long.len() + usize::from(self.directives.is_some())
    }
}

/// The checks that depend on the order of the whole log.
struct Sequence {
    next: u64,
    frontier: Frontier,
    last_recorded_at: Option<i64>,
    last_commit: bool,
    published: Option<Head>,
    published_checked: bool,
}

impl Sequence {
    fn check_published(&mut self, path: &Path) -> Result<(), Failure> {
        if let Some(head) = self.published {
            if !self.published_checked && head.size == self.frontier.size() {
                self.published_checked = true;
                let root = self.frontier.root();
                if root != head.root {
                    return Err(fail(
                        path,
                        None,
                        format!(
                            "the published HEAD names {} records with root {}, but the log's root at that size is {}",
                            head.size,
                            hex(&head.root),
                            hex(&root)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, path: &Path, batch: &DecodedBatch) -> Result<(), Failure> {
        for (i, item) in batch.records.iter().enumerate() {
            let expected = batch.first + i as u64;
            let d = item.as_ref().map_err(|e| fail(path, Some(expected), format!("record does not decode: {e}")))?;
            if d.position != expected {
                let hint = if d.position < expected {
                    "a record is duplicated or out of order"
                } else {
                    "a record is missing or out of order"
                };
                return Err(fail(
                    path,
                    Some(expected),
                    format!("record holds position {}, expected {expected} ({hint})", d.position),
                ));
            }
            if let Some(last) = self.last_recorded_at {
                if d.recorded_at < last {
                    return Err(fail(path, Some(expected), "recorded_at is earlier than the previous record's"));
                }
            }
            self.last_recorded_at = Some(d.recorded_at);
            self.last_commit = d.commit;
        }
        for (start, height, root) in &batch.subtrees {
            if *start != self.frontier.size() {
                return Err(fail(path, Some(*start), "internal error: Merkle subtrees out of order"));
            }
            self.frontier.push_subtree(*height, *root);
            self.check_published(path)?;
        }
        self.next = batch.first + batch.records.len() as u64;
        Ok(())
    }
}

/// Every check, its state carried from batch to batch.
struct Checker {
    seq: Sequence,
    versions: Vec<VersionPart>,
}

impl Checker {
    /// Checks one decoded batch: the order-dependent checks and the partitions of the version check
    /// run in parallel; the failure at the smallest position wins.
    fn check_batch(&mut self, path: &Path, batch: DecodedBatch) -> Result<(), Failure> {
        let Checker { seq, versions } = self;
        let (in_order, by_stream) = rayon::join(
            || seq.check(path, &batch),
            || {
                versions
                    .par_iter_mut()
                    .zip(batch.parts.par_iter())
                    .map(|(part, indices)| part.check(path, &batch, indices))
                    .filter_map(Result::err)
                    .min_by_key(|f| f.position.unwrap_or(u64::MAX))
            },
        );
        match (in_order, by_stream) {
            (Ok(()), None) => Ok(()),
            (Err(a), Some(b)) if b.position.unwrap_or(u64::MAX) < a.position.unwrap_or(u64::MAX) => Err(b),
            (Err(a), _) => Err(a),
            (Ok(()), Some(b)) => Err(b),
        }
    }
}

/// Verifies every record of `source` (see the module documentation). `progress` is called with the
/// number of records checked so far.
pub fn verify(source: &Source, progress: &mut dyn FnMut(u64)) -> Result<Verified, Error> {
    let mut checker = Checker {
        seq: Sequence {
            next: 0,
            frontier: Frontier::new(),
            last_recorded_at: None,
            last_commit: true,
            published: source.published_head,
            published_checked: false,
        },
        versions: (0..VERSION_PARTITIONS).map(|_| VersionPart::default()).collect(),
    };
    checker.seq.check_published(&source.path)?;
    let mut ledger_id = None;
    for (i, meta) in source.files.iter().enumerate() {
        verify_file(source, i, meta, &mut checker, &mut ledger_id, progress)?;
    }
    // The checkpoints a bundle carries after its trailer are read whole and checksummed too (their
    // signatures need the log's key: `replay verify --key`).
    if source.checkpoints.is_some() {
        source.checkpoints()?;
    }
    let path = source.files.last().map_or(source.path.clone(), |f| f.path.clone());
    if checker.seq.next != source.head.size {
        return Err(fail(
            &path,
            Some(checker.seq.next),
            format!("the log holds {} records, expected {}", checker.seq.next, source.head.size),
        )
        .into());
    }
    let root = checker.seq.frontier.root();
    if root != source.head.root {
        return Err(fail(
            &path,
            None,
            format!(
                "Merkle root of the {} records is {}, the log's head says {}",
                checker.seq.next,
                hex(&root),
                hex(&source.head.root)
            ),
        )
        .into());
    }
    if let Some(head) = source.published_head {
        if head.size > checker.seq.next {
            return Err(fail(
                &source.path,
                Some(checker.seq.next),
                format!(
                    "the published HEAD names {} records, but the log holds only {} committed records: acknowledged records are missing or damaged",
                    head.size, checker.seq.next
                ),
            )
            .into());
        }
    }
    Ok(Verified {
        records: checker.seq.next,
        root,
        files: source.files.len(),
        streams: checker.versions.iter().map(VersionPart::streams).sum(),
        published_head: source.published_head,
        torn: source.torn.clone(),
        anchor: source.anchor,
    })
}

fn verify_file(
    source: &Source,
    index: usize,
    meta: &FileMeta,
    checker: &mut Checker,
    ledger_id: &mut Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let path: PathBuf = meta.path.clone();
    let mut reader = FrameReader::open(&path).map_err(|e| fail(&path, Some(checker.seq.next), describe(&e)))?;
    if let (FileKind::Bundle, Some(section)) = (source.kind, source.checkpoints) {
        // The checkpoints a bundle carries follow its trailer; the log ends there.
        reader.limit(section.offset);
    }
    let header = *reader.header();
    let expected_kind = source.kind;
    if header.kind != expected_kind
        || (expected_kind == FileKind::Segment && header.seq as usize != index)
        || (expected_kind == FileKind::Bundle && header.seq != 0)
    {
        return Err(fail(
            &path,
            None,
            format!("header says {:?} number {}, expected {:?} number {index}", header.kind, header.seq, expected_kind),
        )
        .into());
    }
    if *ledger_id.get_or_insert(header.ledger_id) != header.ledger_id {
        return Err(
            fail(&path, None, "header names another ledger (ledger id differs from the first segment's)").into()
        );
    }
    if header.first_position != checker.seq.next {
        return Err(fail(
            &path,
            Some(checker.seq.next),
            format!(
                "file starts at position {}, but the files before it end at {}",
                header.first_position, checker.seq.next
            ),
        )
        .into());
    }
    let sealed = meta.trailer.is_some();
    let mut frames = FileFrames { meta, reader, next: checker.seq.next, trailer: None, done: false };
    if !sealed {
        // The live segment: only its committed records are part of the log.
        frames.reader.limit(meta.readable_len);
    }
    // A three-stage pipeline: while batch k is checked (sequential), batch k+1 is hashed and decoded
    // (parallel) and batch k+2 is read (sequential I/O and CRC).
    let (mut batch, mut error) = frames.read_batch();
    let cut = checker.seq.published.map(|h| h.size);
    let mut decoded: Option<DecodedBatch> = None;
    loop {
        if decoded.is_none() && batch.len() == 0 {
            break;
        }
        let can_read = error.is_none() && !frames.done;
        let ((checked, next_decoded), next_batch) = rayon::join(
            || {
                rayon::join(
                    || match decoded.take() {
                        Some(d) => checker.check_batch(&path, d),
                        None => Ok(()),
                    },
                    || (batch.len() > 0).then(|| decode_batch(&batch, cut)),
                )
            },
            || can_read.then(|| frames.read_batch()),
        );
        checked?;
        progress(checker.seq.next);
        decoded = next_decoded;
        match next_batch {
            Some((b, e)) => {
                batch = b;
                error = e;
            }
            None => batch = Batch::default(),
        }
    }
    if let Some(e) = error {
        return Err(e.into());
    }
    let records = checker.seq.next - header.first_position;
    if sealed || source.kind == FileKind::Bundle {
        let Some((offset, trailer)) = frames.trailer.take() else {
            return Err(fail(
                &path,
                Some(checker.seq.next),
                "no trailer after the last record (the file is truncated)",
            )
            .into());
        };
        if records > 0 && !checker.seq.last_commit {
            return Err(fail(
                &path,
                Some(checker.seq.next - 1),
                "the file's last record is not a commit marker (an append was cut)",
            )
            .into());
        }
        if offset != meta.readable_len {
            return Err(
                fail(&path, None, format!("trailer found at offset {offset}, expected {}", meta.readable_len)).into()
            );
        }
        if trailer.record_count != records {
            return Err(fail(
                &path,
                Some(checker.seq.next),
                format!("the file holds {records} records, its trailer says {}", trailer.record_count),
            )
            .into());
        }
        if trailer.log_size != checker.seq.next {
            return Err(fail(
                &path,
                None,
                format!("trailer says the log has {} records here, it has {}", trailer.log_size, checker.seq.next),
            )
            .into());
        }
        let root = checker.seq.frontier.root();
        if trailer.root != root || trailer.frontier != checker.seq.frontier.nodes() {
            return Err(fail(
                &path,
                None,
                format!(
                    "Merkle root of positions 0..{} is {}, the trailer says {}",
                    checker.seq.next,
                    hex(&root),
                    hex(&trailer.root)
                ),
            )
            .into());
        }
    } else if records != meta.records {
        return Err(fail(
            &path,
            Some(checker.seq.next),
            format!("the live segment holds {records} committed records, expected {}", meta.records),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        log::merkle::leaf_hash(&i.to_le_bytes())
    }

    /// Feeding aligned subtrees batch by batch (with cuts) gives the ledger frontier's root and nodes
    /// at every batch boundary and cut.
    #[test]
    fn subtree_frontier_matches_the_ledger_frontier() {
        for (total, batch, cut) in
            [(1u64, 1u64, None), (5000, 1000, Some(2500)), (4099, 4096, Some(4097)), (3000, 333, Some(1))]
        {
            let mut reference = Frontier::new();
            let mut ours = Frontier::new();
            let mut lo = 0;
            while lo < total {
                let hi = (lo + batch).min(total);
                let leaves: Vec<Hash> = (lo..hi).map(leaf).collect();
                let spans = spans_of(lo, hi, cut);
                for (start, height) in spans {
                    assert_eq!(start, ours.size());
                    let from = (start - lo) as usize;
                    ours.push_subtree(height, perfect_root(&leaves[from..from + (1 << height)]));
                    for l in &leaves[from..from + (1 << height)] {
                        reference.push_leaf_hash(*l);
                    }
                    assert_eq!(ours.root(), reference.root(), "size {}", ours.size());
                }
                assert_eq!(ours.nodes(), reference.nodes());
                lo = hi;
            }
        }
    }

    #[test]
    fn stream_keys_are_exact() {
        let a = StreamKey::of("SN000000000001");
        let b = StreamKey::of("SN00000000001");
        assert!(matches!((&a, &b), (StreamKey::Short(x), StreamKey::Short(y)) if x != y));
        assert_eq!(a.describe(), "terminal SN000000000001");
        let long = StreamKey::of("SN0000000000000001");
        assert!(matches!(long, StreamKey::Long(_)));
    }
}

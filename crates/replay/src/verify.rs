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
use ledger::codec::{decode_record, CodecError};
use ledger::merkle::{leaf_hash, Frontier, Hash};
use ledger::segment::{FileKind, FormatError, FrameReader, Item, Trailer};
use ledger::source::{hex, FileMeta, TornTail};
use ledger::{Event, Head, Sn, Source};
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

/// A stream, keyed cheaply: an SN of up to 15 bytes is packed, with its length, into a `u128` (exact,
/// no heap, one cache line less per lookup); a longer SN keeps its string.
enum StreamKey {
    Short(u128),
    Long(Sn),
    Directives,
}

impl StreamKey {
    fn of(sn: Sn) -> StreamKey {
        let bytes = sn.as_str().as_bytes();
        match bytes.len() {
            len @ 0..=15 => {
                let mut packed = [0u8; 16];
                if let Some(slot) = packed.get_mut(..len) {
                    slot.copy_from_slice(bytes);
                }
                packed[15] = len as u8;
                StreamKey::Short(u128::from_le_bytes(packed))
            }
            _ => StreamKey::Long(sn),
        }
    }

    fn describe(&self) -> String {
        match self {
            StreamKey::Short(packed) => {
                let bytes = packed.to_le_bytes();
                let len = usize::from(bytes[15]).min(15);
                format!("terminal {}", String::from_utf8_lossy(bytes.get(..len).unwrap_or_default()))
            }
            StreamKey::Long(sn) => format!("terminal {sn}"),
            StreamKey::Directives => "the directives stream".to_owned(),
        }
    }
}

fn decode(body: &[u8]) -> Result<(Hash, Decoded), CodecError> {
    let leaf = leaf_hash(body);
    let record = decode_record(body)?;
    let stream = match record.event {
        Event::Terminal(e) => StreamKey::of(e.device),
        Event::Directive(_) => StreamKey::Directives,
    };
    Ok((
        leaf,
        Decoded {
            position: record.position,
            version: record.version,
            recorded_at: record.recorded_at.timestamp_micros(),
            commit: record.commit,
            stream,
        },
    ))
}

type DecodeResult = Result<(Hash, Decoded), CodecError>;

/// Hashes and decodes a batch in parallel, in order.
fn decode_batch(batch: &Batch) -> Vec<DecodeResult> {
    batch.bodies().with_min_len(256).map(decode).collect()
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
        FormatError::BadHeader { what, .. } => format!("bad file header ({what})"),
        FormatError::Incomplete { offset, .. } => {
            format!("offset {offset}: the file ends inside a record frame (truncated)")
        }
        FormatError::BadLength { offset, len, .. } => format!("offset {offset}: record length {len} is out of bounds"),
        FormatError::BadChecksum { offset, .. } => format!("offset {offset}: record checksum (CRC32C) mismatch"),
        FormatError::BadTrailer { offset, what, .. } => format!("offset {offset}: bad trailer ({what})"),
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

/// The order-dependent checks.
struct Checker {
    next: u64,
    short: HashMap<u128, u64, foldhash::fast::RandomState>,
    long: HashMap<Sn, u64, foldhash::fast::RandomState>,
    directives: Option<u64>,
    frontier: Frontier,
    last_recorded_at: Option<i64>,
    last_commit: bool,
    published: Option<Head>,
    published_checked: bool,
}

impl Checker {
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

    fn check(&mut self, path: &Path, expected: u64, item: Result<(Hash, Decoded), CodecError>) -> Result<(), Failure> {
        let (leaf, d) = item.map_err(|e| fail(path, Some(expected), format!("record does not decode: {e}")))?;
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
                Some(expected),
                format!(
                    "record holds version {} of {}, expected {expected_version} (stream versions must be dense)",
                    d.version,
                    d.stream.describe()
                ),
            ));
        }
        *slot += 1;
        if let Some(last) = self.last_recorded_at {
            if d.recorded_at < last {
                return Err(fail(path, Some(expected), "recorded_at is earlier than the previous record's"));
            }
        }
        self.last_recorded_at = Some(d.recorded_at);
        self.last_commit = d.commit;
        self.frontier.push_leaf_hash(leaf);
        self.next += 1;
        self.check_published(path)
    }

    fn check_decoded(&mut self, path: &Path, first: u64, decoded: Vec<DecodeResult>) -> Result<(), Failure> {
        for (i, item) in decoded.into_iter().enumerate() {
            self.check(path, first + i as u64, item)?;
        }
        Ok(())
    }
}

/// Verifies every record of `source` (see the module documentation). `progress` is called with the
/// number of records checked so far.
pub fn verify(source: &Source, progress: &mut dyn FnMut(u64)) -> Result<Verified, Error> {
    let mut checker = Checker {
        next: 0,
        short: HashMap::default(),
        long: HashMap::default(),
        directives: None,
        frontier: Frontier::new(),
        last_recorded_at: None,
        last_commit: true,
        published: source.published_head,
        published_checked: false,
    };
    checker.check_published(&source.path)?;
    let mut ledger_id = None;
    for (i, meta) in source.files.iter().enumerate() {
        verify_file(source, i, meta, &mut checker, &mut ledger_id, progress)?;
    }
    let path = source.files.last().map_or(source.path.clone(), |f| f.path.clone());
    if checker.next != source.head.size {
        return Err(fail(
            &path,
            Some(checker.next),
            format!("the log holds {} records, expected {}", checker.next, source.head.size),
        )
        .into());
    }
    let root = checker.frontier.root();
    if root != source.head.root {
        return Err(fail(
            &path,
            None,
            format!(
                "Merkle root of the {} records is {}, the log's head says {}",
                checker.next,
                hex(&root),
                hex(&source.head.root)
            ),
        )
        .into());
    }
    if let Some(head) = source.published_head {
        if head.size > checker.next {
            return Err(fail(
                &source.path,
                Some(checker.next),
                format!(
                    "the published HEAD names {} records, but the log holds only {} committed records: acknowledged records are missing or damaged",
                    head.size, checker.next
                ),
            )
            .into());
        }
    }
    Ok(Verified {
        records: checker.next,
        root,
        files: source.files.len(),
        streams: checker.short.len() + checker.long.len() + usize::from(checker.directives.is_some()),
        published_head: source.published_head,
        torn: source.torn.clone(),
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
    let reader = FrameReader::open(&path).map_err(|e| fail(&path, Some(checker.next), describe(&e)))?;
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
    if header.first_position != checker.next {
        return Err(fail(
            &path,
            Some(checker.next),
            format!(
                "file starts at position {}, but the files before it end at {}",
                header.first_position, checker.next
            ),
        )
        .into());
    }
    let sealed = meta.trailer.is_some();
    let mut frames = FileFrames { meta, reader, next: checker.next, trailer: None, done: false };
    if !sealed {
        // The live segment: only its committed records are part of the log.
        frames.reader.limit(meta.readable_len);
    }
    // A three-stage pipeline: while batch k is checked (sequential), batch k+1 is hashed and decoded
    // (parallel) and batch k+2 is read (sequential I/O and CRC).
    let (mut batch, mut error) = frames.read_batch();
    let mut decoded: Option<(u64, Vec<DecodeResult>)> = None;
    loop {
        if decoded.is_none() && batch.len() == 0 {
            break;
        }
        let can_read = error.is_none() && !frames.done;
        let ((checked, next_decoded), next_batch) = rayon::join(
            || {
                rayon::join(
                    || match decoded.take() {
                        Some((first, items)) => checker.check_decoded(&path, first, items),
                        None => Ok(()),
                    },
                    || (batch.len() > 0).then(|| (batch.first, decode_batch(&batch))),
                )
            },
            || can_read.then(|| frames.read_batch()),
        );
        checked?;
        progress(checker.next);
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
    let records = checker.next - header.first_position;
    if sealed || source.kind == FileKind::Bundle {
        let Some((offset, trailer)) = frames.trailer.take() else {
            return Err(
                fail(&path, Some(checker.next), "no trailer after the last record (the file is truncated)").into()
            );
        };
        if records > 0 && !checker.last_commit {
            return Err(fail(
                &path,
                Some(checker.next - 1),
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
                Some(checker.next),
                format!("the file holds {records} records, its trailer says {}", trailer.record_count),
            )
            .into());
        }
        if trailer.log_size != checker.next {
            return Err(fail(
                &path,
                None,
                format!("trailer says the log has {} records here, it has {}", trailer.log_size, checker.next),
            )
            .into());
        }
        let root = checker.frontier.root();
        if trailer.root != root || trailer.frontier != checker.frontier.nodes() {
            return Err(fail(
                &path,
                None,
                format!(
                    "Merkle root of positions 0..{} is {}, the trailer says {}",
                    checker.next,
                    hex(&root),
                    hex(&trailer.root)
                ),
            )
            .into());
        }
    } else if records != meta.records {
        return Err(fail(
            &path,
            Some(checker.next),
            format!("the live segment holds {records} committed records, expected {}", meta.records),
        )
        .into());
    }
    Ok(())
}

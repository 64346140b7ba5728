//! Evidence for one terminal: its records, each with an RFC 6962 inclusion proof against one signed
//! checkpoint, in a self-contained file that verifies without the log (docs/FORMAT.md, "Evidence for
//! one terminal"). `posledger evidence` writes it ([`build`], [`Evidence::to_bytes`]); `replay evidence
//! check` verifies it ([`check`]) and prints the terminal's history as `replay device` does.
//!
//! The file holds the signed checkpoint note verbatim (with every cosignature it carries), and, in
//! strictly increasing position order, the exact record bodies of:
//! - every record of the terminal's stream in the checkpoint's tree (versions dense from 0);
//! - every directive record a `stopped` event of the terminal names;
//! - the other half of each replacement the terminal takes part in (the `issued` record of the
//!   terminal that replaced it, or the `replaced` record of the terminal it replaces): the one record
//!   of another terminal that names this one, without which the lifecycle rules refuse the replacement.
//!
//! Nothing else of other terminals is in it. What evidence cannot prove: records of the terminal after
//! the checkpoint's size, and that the terminal has no record after the last one included (a builder
//! that leaves out the *end* of a stream is not detectable from inclusion proofs alone; a gap in the
//! middle is, by the dense versions).

use crate::device::{report_of, DeviceReport};
use crate::error::{Error, Failure};
use crate::text::count;
use log::codec::{decode_record, decode_view, EventView, TerminalEventView, MAX_RECORD_BYTES};
use log::merkle::{leaf_hash, verify_inclusion, Hash};
use log::source::hex;
use log::{Event, Record, Sn, Source, TerminalEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use tlog::checkpoint::{Checkpoint, Verified};
use tlog::note::{Note, MAX_NOTE_BYTES};
use tlog::VerifierKey;

/// The first 8 bytes of an evidence file.
pub const MAGIC: [u8; 8] = *b"PLEVIDNC";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The most records (the terminal's, its directives and replacement partners) one evidence file holds.
pub const MAX_EVIDENCE_RECORDS: usize = 100_000;
/// The largest evidence file: 256 MiB.
pub const MAX_EVIDENCE_BYTES: u64 = 256 << 20;
/// The most hashes of one inclusion proof (a tree of up to 2^64 leaves needs at most 64).
pub const MAX_PROOF_HASHES: usize = 64;

/// One record of the evidence: its position, its body exactly as stored (format byte included), and
/// its inclusion proof in the checkpoint's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The record's position (its leaf index).
    pub position: u64,
    /// The record body as stored in the log.
    pub body: Vec<u8>,
    /// The audit path, from the leaf's sibling up.
    pub proof: Vec<Hash>,
}

/// An evidence file's content (framing checked, nothing verified yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The terminal the evidence is about.
    pub device: Sn,
    /// The signed checkpoint note, verbatim.
    pub note: Vec<u8>,
    /// The records, in strictly increasing position order.
    pub entries: Vec<Entry>,
}

/// Why an evidence file does not verify (exit 1), or could not be read (exit 2). Each names the
/// byte offset or the position of the record that fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than any evidence file may be.
    #[error("the file is larger than {limit} bytes, the limit of an evidence file")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The file does not start with the evidence magic.
    #[error("not a posledger evidence file (the first 8 bytes are not PLEVIDNC)")]
    Magic,
    /// A format version this code does not read.
    #[error("evidence format version {0} is not supported (this replay reads version {VERSION})")]
    Version(u16),
    /// The file ends inside a field: it was cut.
    #[error("truncated at byte {offset}: the file ends inside {field}")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
        /// The field.
        field: &'static str,
    },
    /// Bytes after the last record.
    #[error("{extra} bytes after the last record (at byte {offset})")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        extra: usize,
    },
    /// A length or count outside the format's limits, or a field that is not what it must be.
    #[error("byte {offset}: {what}")]
    Field {
        /// Where the field starts.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// The signed checkpoint does not verify with the keys given.
    #[error("the evidence's checkpoint: {0}")]
    Checkpoint(#[source] tlog::CheckpointError),
    /// A record at or past the checkpoint's size.
    #[error("position {position}: not in the checkpoint's tree of {size} records")]
    PastCheckpoint {
        /// The record's position.
        position: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// Positions are not strictly increasing.
    #[error("position {position} follows position {previous}: records must be in strictly increasing position order")]
    Order {
        /// The record's position.
        position: u64,
        /// The position of the record before it.
        previous: u64,
    },
    /// A record's inclusion proof does not reach the checkpoint's root.
    #[error("position {position}: the record is not in the log of the checkpoint (its inclusion proof in the tree of {size} records does not reach the signed root)")]
    Inclusion {
        /// The record's position.
        position: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// A record that does not decode.
    #[error("position {position}: the record does not decode: {source}")]
    Decode {
        /// The record's position.
        position: u64,
        /// Why.
        source: log::codec::CodecError,
    },
    /// A record whose body names another position than the one it is given at.
    #[error("position {position}: the record says it is at position {decoded}")]
    Position {
        /// Where the evidence puts it.
        position: u64,
        /// Where its body says it is.
        decoded: u64,
    },
    /// A record of the terminal's stream is missing: the versions are not dense from 0.
    #[error("position {position}: terminal {device}'s record has version {found}, expected {expected}: a record of its stream is missing before it")]
    VersionGap {
        /// The terminal.
        device: String,
        /// The record's position.
        position: u64,
        /// The version the next record must have.
        expected: u64,
        /// Its version.
        found: u64,
    },
    /// The evidence holds no record of its terminal.
    #[error("the evidence holds no record of terminal {0}")]
    NoRecords(String),
    /// A record the evidence has no reason to hold: another terminal's record that does not take part
    /// in a replacement with this one, or one that its events do not name.
    #[error("position {position}: a record of {what}, which terminal {device}'s records do not name")]
    Foreign {
        /// The record's position.
        position: u64,
        /// What it is.
        what: String,
        /// The evidence's terminal.
        device: String,
    },
    /// A directive record that no event of the terminal names, or one given twice.
    #[error(
        "position {position}: directive {id} is not named by any stopped event of terminal {device}, or is given twice"
    )]
    UnnamedDirective {
        /// The directive's position.
        position: u64,
        /// Its id.
        id: String,
        /// The evidence's terminal.
        device: String,
    },
    /// A `stopped` event names a directive whose record is not in the evidence before it.
    #[error("position {position}: the stop names directive {id}, whose record is not in the evidence before it")]
    MissingDirective {
        /// The stop's position.
        position: u64,
        /// The directive's id.
        id: String,
    },
    /// A replacement whose other half is not in the evidence.
    #[error("position {position}: the {event} event names terminal {partner}, whose {partner_event} record naming {device} is not in the evidence")]
    MissingPartner {
        /// The position of the terminal's event.
        position: u64,
        /// Its type.
        event: &'static str,
        /// The other terminal.
        partner: String,
        /// The record type expected of it.
        partner_event: &'static str,
        /// The evidence's terminal.
        device: String,
    },
    /// A record could not be rendered for output.
    #[error("cannot render the history: {0}")]
    Render(String),
}

impl EvidenceError {
    /// Whether this is a failure of the evidence (exit 1) rather than of reading it or of the keys
    /// given (exit 2).
    pub fn is_data(&self) -> bool {
        !matches!(
            self,
            EvidenceError::Io { .. }
                | EvidenceError::Render(_)
                | EvidenceError::Checkpoint(tlog::CheckpointError::KeyType(_))
        )
    }

    /// The position of the record that fails, when the error names one.
    pub fn position(&self) -> Option<u64> {
        match self {
            EvidenceError::PastCheckpoint { position, .. }
            | EvidenceError::Order { position, .. }
            | EvidenceError::Inclusion { position, .. }
            | EvidenceError::Decode { position, .. }
            | EvidenceError::Position { position, .. }
            | EvidenceError::VersionGap { position, .. }
            | EvidenceError::Foreign { position, .. }
            | EvidenceError::UnnamedDirective { position, .. }
            | EvidenceError::MissingDirective { position, .. }
            | EvidenceError::MissingPartner { position, .. } => Some(*position),
            _ => None,
        }
    }
}

/// A cursor over the file's bytes that names the field a cut falls in.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EvidenceError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(slice) = end.and_then(|e| self.bytes.get(self.at..e)) else {
            return Err(EvidenceError::Truncated { offset: self.at, field });
        };
        self.at += n;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EvidenceError> {
        let slice = self.take(N, field)?;
        slice.try_into().map_err(|_| EvidenceError::Truncated { offset: self.at, field })
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, EvidenceError> {
        Ok(u8::from_le_bytes(self.array(field)?))
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, EvidenceError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, EvidenceError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, EvidenceError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// A length field in `1..=max`.
    fn len(&mut self, field: &'static str, width: u8, max: usize) -> Result<usize, EvidenceError> {
        let offset = self.at;
        let n = match width {
            2 => u64::from(self.u16(field)?),
            _ => u64::from(self.u32(field)?),
        };
        if n == 0 || n > max as u64 {
            return Err(EvidenceError::Field { offset, what: format!("{field} is {n}, outside 1 to {max}") });
        }
        Ok(n as usize)
    }
}

impl Evidence {
    /// The file's bytes (docs/FORMAT.md, "Evidence for one terminal").
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let sn = self.device.as_str().as_bytes();
        out.extend_from_slice(&(sn.len() as u16).to_le_bytes());
        out.extend_from_slice(sn);
        out.extend_from_slice(&(self.note.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.note);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&(e.body.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.body);
            out.push(e.proof.len() as u8);
            for h in &e.proof {
                out.extend_from_slice(h);
            }
        }
        out
    }

    /// The length of [`Evidence::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        let entries: usize = self.entries.iter().map(|e| 8 + 4 + e.body.len() + 1 + 32 * e.proof.len()).sum();
        8 + 2 + 2 + self.device.as_str().len() + 4 + self.note.len() + 4 + entries
    }

    /// Parses an evidence file: the framing and every limit of the format. Nothing is verified.
    pub fn parse(bytes: &[u8]) -> Result<Evidence, EvidenceError> {
        if bytes.len() as u64 > MAX_EVIDENCE_BYTES {
            return Err(EvidenceError::TooLarge { limit: MAX_EVIDENCE_BYTES });
        }
        let mut r = Reader { bytes, at: 0 };
        if r.take(8, "the magic").map_err(|_| EvidenceError::Magic)? != MAGIC {
            return Err(EvidenceError::Magic);
        }
        let version = r.u16("the version")?;
        if version != VERSION {
            return Err(EvidenceError::Version(version));
        }
        let sn_at = r.at;
        let sn_len = r.len("the SN length", 2, log::model::MAX_ID_LEN)?;
        let sn = r.take(sn_len, "the SN")?;
        let device = std::str::from_utf8(sn)
            .ok()
            .and_then(|s| Sn::parse(s).ok())
            .ok_or_else(|| EvidenceError::Field { offset: sn_at + 2, what: "the SN is not a valid SN".into() })?;
        let note_len = r.len("the checkpoint length", 4, MAX_NOTE_BYTES)?;
        let note = r.take(note_len, "the checkpoint")?.to_vec();
        let count = r.len("the record count", 4, MAX_EVIDENCE_RECORDS)?;
        let mut entries = Vec::with_capacity(count.min(1 << 12));
        for _ in 0..count {
            let position = r.u64("a record's position")?;
            let body_len = r.len("a record's length", 4, MAX_RECORD_BYTES)?;
            let body = r.take(body_len, "a record's body")?.to_vec();
            let at = r.at;
            let hashes = usize::from(r.u8("a proof's length")?);
            if hashes > MAX_PROOF_HASHES {
                return Err(EvidenceError::Field {
                    offset: at,
                    what: format!("position {position}: a proof of {hashes} hashes, more than {MAX_PROOF_HASHES}"),
                });
            }
            let mut proof = Vec::with_capacity(hashes);
            for _ in 0..hashes {
                proof.push(r.array::<32>("a proof's hashes")?);
            }
            entries.push(Entry { position, body, proof });
        }
        if r.at != bytes.len() {
            return Err(EvidenceError::TrailingBytes { offset: r.at, extra: bytes.len() - r.at });
        }
        Ok(Evidence { device, note, entries })
    }
}

/// Reads an evidence file, bounded by [`MAX_EVIDENCE_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, EvidenceError> {
    let io = |source| EvidenceError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_EVIDENCE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_EVIDENCE_BYTES {
        return Err(EvidenceError::TooLarge { limit: MAX_EVIDENCE_BYTES });
    }
    Ok(bytes)
}

/// What [`build`] made.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Built {
    /// The evidence.
    pub evidence: Evidence,
    /// The checkpoint it is proven against (parsed from the note; not verified with a key).
    pub checkpoint: Checkpoint,
    /// Records of the terminal's stream.
    pub records: u64,
    /// The directives its stops name, with their positions.
    pub directives: Vec<(String, u64)>,
    /// The other halves of its replacements: the other terminal and the position.
    pub partners: Vec<(String, u64)>,
}

/// The other half of a replacement, as a record of another terminal names this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Half {
    /// `issued` with `replaces` = this terminal.
    IssuedReplacing,
    /// `replaced` with `by` = this terminal.
    ReplacedBy,
}

/// Builds the evidence of terminal `sn` against the signed checkpoint `note` (its bytes as stored):
/// one pass over the checkpoint's records finds the terminal's records, the directives they name and
/// the other halves of its replacements; a second pass hashes the subtree roots of every inclusion
/// proof at once ([`log::proof::inclusions`]). The checkpoint must be of this log: its root must be
/// the log's root at its size. Every proof is checked before it is returned. `progress` is called with
/// the records read, up to twice the checkpoint's size.
pub fn build(source: &Source, sn: &Sn, note: &[u8], progress: &mut dyn FnMut(u64)) -> Result<Built, Error> {
    let failure = |position: Option<u64>, what: String| Failure { path: source.path.clone(), position, what };
    let parsed = Note::parse(note).map_err(|e| EvidenceError::Checkpoint(e.into()))?;
    let checkpoint = Checkpoint::parse(parsed.text()).map_err(EvidenceError::Checkpoint)?;
    let size = checkpoint.size;
    if size > source.head.size {
        return Err(failure(
            None,
            format!(
                "the checkpoint is of {}, but the log holds {}: it is not a checkpoint of this log",
                count(size, "record", "records"),
                count(source.head.size, "record", "records")
            ),
        )
        .into());
    }
    let device = sn.as_str();
    let mut own: Vec<(u64, Vec<u8>)> = Vec::new();
    // What the terminal's events name: directives (id -> the first stop naming it) and replacement
    // partners (other SN, the half expected of it).
    let mut named_directives: BTreeMap<String, u64> = BTreeMap::new();
    let mut named_partners: HashSet<(String, Half)> = HashSet::new();
    let mut directive_at: HashMap<String, u64> = HashMap::new();
    let mut candidates: Vec<(u64, String, Half, Vec<u8>)> = Vec::new();
    let mut frames = source.frames(0, size);
    while let Some((position, body, _)) = frames.next_frame()? {
        if position.is_multiple_of(log::proof::PROGRESS_EVERY_RECORDS) {
            progress(position);
        }
        let view = decode_view(body)
            .map_err(|error| Error::Read(log::ReadError::Codec { path: source.path.clone(), position, error }))?;
        match &view.event {
            EventView::Directive(d) => {
                directive_at.entry(d.id.to_owned()).or_insert(position);
            }
            EventView::Terminal(t) if t.device == device => {
                if own.len() >= MAX_EVIDENCE_RECORDS {
                    return Err(Error::Usage(format!(
                        "terminal {sn} has more than {} records: more than one evidence file holds",
                        count(MAX_EVIDENCE_RECORDS as u64, "record", "records")
                    )));
                }
                match t.event {
                    TerminalEventView::Stopped { directive: Some(id), .. } => {
                        named_directives.entry(id.to_owned()).or_insert(position);
                    }
                    TerminalEventView::Replaced { by } => {
                        named_partners.insert((by.to_owned(), Half::IssuedReplacing));
                    }
                    TerminalEventView::Issued(issued) => {
                        if let Some(old) = issued.replaces {
                            named_partners.insert((old.to_owned(), Half::ReplacedBy));
                        }
                    }
                    _ => {}
                }
                own.push((position, body.to_vec()));
            }
            EventView::Terminal(t) => {
                let half = match t.event {
                    TerminalEventView::Issued(issued) if issued.replaces == Some(device) => Some(Half::IssuedReplacing),
                    TerminalEventView::Replaced { by } if by == device => Some(Half::ReplacedBy),
                    _ => None,
                };
                if let Some(half) = half {
                    candidates.push((position, t.device.to_owned(), half, body.to_vec()));
                }
            }
        }
    }
    progress(size);
    if own.is_empty() {
        return Err(failure(
            None,
            format!("terminal {sn} does not appear in the checkpoint's {}", count(size, "record", "records")),
        )
        .into());
    }
    let mut records: BTreeMap<u64, Vec<u8>> = own.iter().cloned().collect();
    let mut directives = Vec::new();
    for (id, stop) in &named_directives {
        let Some(&position) = directive_at.get(id).filter(|p| **p < *stop) else {
            return Err(failure(
                Some(*stop),
                format!("the stop names directive {id}, which is not recorded before it"),
            )
            .into());
        };
        let mut frames = source.frames(position, position + 1);
        let Some((_, body, _)) = frames.next_frame()? else {
            return Err(Error::Read(log::ReadError::OutOfRange { position, size }));
        };
        records.insert(position, body.to_vec());
        directives.push((id.clone(), position));
    }
    let mut partners = Vec::new();
    for (position, other, half, body) in candidates {
        if named_partners.remove(&(other.clone(), half)) {
            records.insert(position, body);
            partners.push((other, position));
        }
    }
    if let Some((other, _)) = named_partners.into_iter().next() {
        return Err(failure(
            None,
            format!("terminal {sn}'s replacement names {other}, whose half of it is not in the log"),
        )
        .into());
    }
    if records.len() > MAX_EVIDENCE_RECORDS {
        return Err(Error::Usage(format!(
            "the evidence of terminal {sn} would hold {}, more than the {} one file holds",
            count(records.len() as u64, "record", "records"),
            MAX_EVIDENCE_RECORDS
        )));
    }
    let positions: Vec<u64> = records.keys().copied().collect();
    let proofs =
        log::proof::inclusions(&positions, size, |from, to| source.frames(from, to), &mut |n| progress(size + n))?;
    if proofs.root != checkpoint.root {
        return Err(failure(
            None,
            format!(
                "the checkpoint's root at size {size} is {}, but this log's is {}: it is not a checkpoint of this log",
                hex(&checkpoint.root),
                hex(&proofs.root)
            ),
        )
        .into());
    }
    let mut entries = Vec::with_capacity(records.len());
    for ((position, body), (proof, leaf)) in records.into_iter().zip(proofs.proofs.into_iter().zip(proofs.leaves)) {
        if leaf != leaf_hash(&body)
            || !verify_inclusion(&leaf, position as usize, size as usize, &proof, &checkpoint.root)
        {
            return Err(failure(Some(position), "the computed inclusion proof does not verify".into()).into());
        }
        entries.push(Entry { position, body, proof });
    }
    let evidence = Evidence { device: sn.clone(), note: note.to_vec(), entries };
    if evidence.encoded_len() as u64 > MAX_EVIDENCE_BYTES {
        return Err(Error::Usage(format!(
            "the evidence of terminal {sn} would take {} bytes, more than the {MAX_EVIDENCE_BYTES} one file holds",
            evidence.encoded_len()
        )));
    }
    Ok(Built { evidence, checkpoint, records: own.len() as u64, directives, partners })
}

/// A directive record the evidence holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectiveRecord {
    /// Its position.
    pub position: u64,
    /// The record.
    pub record: Record,
}

/// Evidence that verified.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Checked {
    /// The checkpoint, with the witnesses whose cosignatures verified.
    pub verified: Verified,
    /// The terminal's history with the state after each event, as `replay device` reports it.
    pub report: DeviceReport,
    /// The directive records its stops name.
    pub directives: Vec<DirectiveRecord>,
    /// The other halves of its replacements: the other terminal and the position.
    pub partners: Vec<(String, u64)>,
}

/// Verifies evidence offline: the checkpoint's signature with `log_key` (and at least `min_witnesses`
/// cosignatures of `witnesses`), every record's inclusion proof against the signed root, that every
/// record decodes, is at the position it is given at and in strictly increasing order, that the
/// terminal's versions are dense from 0, and that every other record is a directive or replacement
/// half the terminal's events name (and each one they name is there). Then folds the terminal's
/// history with the lifecycle rules ([`projections::history_of`]).
pub fn check(
    bytes: &[u8],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    min_witnesses: usize,
) -> Result<Checked, EvidenceError> {
    let evidence = Evidence::parse(bytes)?;
    let verified = tlog::checkpoint::verify(&evidence.note, log_key, witnesses, min_witnesses)
        .map_err(EvidenceError::Checkpoint)?;
    let (size, root) = (verified.checkpoint.size, verified.checkpoint.root);
    let sn = &evidence.device;
    let device = sn.to_string();
    let mut previous: Option<u64> = None;
    let mut records = Vec::with_capacity(evidence.entries.len());
    for e in &evidence.entries {
        let position = e.position;
        if position >= size {
            return Err(EvidenceError::PastCheckpoint { position, size });
        }
        if let Some(previous) = previous.filter(|p| *p >= position) {
            return Err(EvidenceError::Order { position, previous });
        }
        previous = Some(position);
        if !verify_inclusion(&leaf_hash(&e.body), position as usize, size as usize, &e.proof, &root) {
            return Err(EvidenceError::Inclusion { position, size });
        }
        let record = decode_record(&e.body).map_err(|source| EvidenceError::Decode { position, source })?;
        if record.position != position {
            return Err(EvidenceError::Position { position, decoded: record.position });
        }
        records.push(record);
    }
    // The terminal's own records: dense versions from 0; what they name.
    let mut version = 0u64;
    let mut stops: Vec<(u64, String)> = Vec::new();
    let mut named_partners: Vec<(u64, &'static str, String, Half)> = Vec::new();
    for r in &records {
        let Event::Terminal(t) = &r.event else { continue };
        if t.device != *sn {
            continue;
        }
        if r.version != version {
            return Err(EvidenceError::VersionGap {
                device: device.clone(),
                position: r.position,
                expected: version,
                found: r.version,
            });
        }
        version += 1;
        match &t.event {
            TerminalEvent::Stopped { directive: Some(id), .. } => stops.push((r.position, id.to_string())),
            TerminalEvent::Replaced { by } => {
                named_partners.push((r.position, "replaced", by.to_string(), Half::IssuedReplacing))
            }
            TerminalEvent::Issued(issued) => {
                if let Some(old) = &issued.replaces {
                    named_partners.push((r.position, "issued", old.to_string(), Half::ReplacedBy));
                }
            }
            _ => {}
        }
    }
    if version == 0 {
        return Err(EvidenceError::NoRecords(device));
    }
    // Every other record: a directive a stop names (once), or the other half of a named replacement.
    let named_ids: HashSet<&str> = stops.iter().map(|(_, id)| id.as_str()).collect();
    let mut directive_at: HashMap<String, u64> = HashMap::new();
    let mut directives = Vec::new();
    let mut partners_found: HashSet<(String, Half)> = HashSet::new();
    let mut partners = Vec::new();
    for r in &records {
        match &r.event {
            Event::Terminal(t) if t.device == *sn => {}
            Event::Directive(d) => {
                let id = d.id.to_string();
                if !named_ids.contains(id.as_str()) || directive_at.contains_key(&id) {
                    return Err(EvidenceError::UnnamedDirective { position: r.position, id, device });
                }
                directive_at.insert(id, r.position);
                directives.push(DirectiveRecord { position: r.position, record: r.clone() });
            }
            Event::Terminal(t) => {
                let half = match &t.event {
                    TerminalEvent::Issued(issued) if issued.replaces.as_ref() == Some(sn) => {
                        Some(Half::IssuedReplacing)
                    }
                    TerminalEvent::Replaced { by } if by == sn => Some(Half::ReplacedBy),
                    _ => None,
                };
                let other = t.device.to_string();
                let named = half.filter(|h| named_partners.iter().any(|(_, _, o, nh)| *o == other && nh == h));
                if named.filter(|h| partners_found.insert((other.clone(), *h))).is_none() {
                    return Err(EvidenceError::Foreign {
                        position: r.position,
                        what: format!("terminal {other} ({})", t.event.type_name()),
                        device,
                    });
                }
                partners.push((other, r.position));
            }
        }
    }
    for (position, id) in &stops {
        if directive_at.get(id).is_none_or(|at| at >= position) {
            return Err(EvidenceError::MissingDirective { position: *position, id: id.clone() });
        }
    }
    for (position, event, partner, half) in named_partners {
        if !partners_found.contains(&(partner.clone(), half)) {
            let partner_event = match half {
                Half::IssuedReplacing => "issued",
                Half::ReplacedBy => "replaced",
            };
            return Err(EvidenceError::MissingPartner { position, event, partner, partner_event, device });
        }
    }
    let entries = projections::history_of(records, sn);
    let report = report_of(sn, entries).map_err(|e| EvidenceError::Render(e.to_string()))?;
    Ok(Checked { verified, report, directives, partners })
}

//! Checkpoints (c2sp.org/tlog-checkpoint): a signed note whose text is
//! `<origin>\n<decimal size>\n<base64 root>\n[<extension line>\n...]`.
//!
//! [`verify`] is what a regulator runs: the log's signature must verify, the origin must be the log
//! key's name, and at least `min_witnesses` distinct known witnesses must have cosigned.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use log::merkle::Hash;

use crate::ed25519::PlainSigner;
use crate::key::{KeyType, SigningKey, VerifierKey};
use crate::note::{Note, NoteError, NoteVerifier};

/// Most extension lines accepted.
pub const MAX_EXTENSION_LINES: usize = 16;

/// A checkpoint text that is not well-formed, or a checkpoint that does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Line `line` (1-based) of the checkpoint text is wrong.
    #[error("checkpoint line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The note around it is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The log's key verified the note but names another log.
    #[error("the checkpoint's origin {origin:?} is not the log key's name {key:?}")]
    Origin {
        /// The checkpoint's origin line.
        origin: String,
        /// The log key's name.
        key: String,
    },
    /// The log's key did not sign it (only witnesses did).
    #[error("the log's key {0} did not sign the checkpoint")]
    NotSignedByLog(String),
    /// Fewer witnesses cosigned than required.
    #[error("{found} of the required {required} witnesses cosigned the checkpoint")]
    Witnesses {
        /// Distinct known witnesses whose cosignatures verified.
        found: usize,
        /// The minimum asked for.
        required: usize,
    },
    /// A key given as the log's key is a cosignature key, or a witness key is not one.
    #[error("wrong key type: {0}")]
    KeyType(&'static str),
}

/// The text of a checkpoint: a log's tree head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line).
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root of those leaves.
    pub root: Hash,
    /// Opaque extension lines (posledger writes none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Checkpoint {
        Checkpoint { origin: origin.to_owned(), size, root, extensions: Vec::new() }
    }

    /// Parses a checkpoint text (the note text, final newline included).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let Some(body) = text.strip_suffix('\n') else {
            return Err(CheckpointError::Line { line: 1, reason: "the text does not end in a newline" });
        };
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(CheckpointError::Line { line: 1, reason: "the origin is empty" });
        }
        let size_text = lines.next().ok_or(CheckpointError::Line { line: 2, reason: "no tree size" })?;
        let size = parse_size(size_text).ok_or(CheckpointError::Line {
            line: 2,
            reason: "the tree size is not a decimal number without leading zeroes",
        })?;
        let root_text = lines.next().ok_or(CheckpointError::Line { line: 3, reason: "no root hash" })?;
        let root = parse_hash_b64(root_text)
            .ok_or(CheckpointError::Line { line: 3, reason: "the root hash is not the base64 of 32 bytes" })?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(CheckpointError::Line { line: 4 + i, reason: "an extension line is empty" });
            }
            if i >= MAX_EXTENSION_LINES {
                return Err(CheckpointError::Line { line: 4 + i, reason: "too many extension lines" });
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint { origin: origin.to_owned(), size, root, extensions })
    }

    /// The checkpoint text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The checkpoint signed by the log's key, as a note's bytes.
    pub fn sign(&self, log_key: &SigningKey) -> Result<Vec<u8>, CheckpointError> {
        let signer =
            PlainSigner::new(log_key).ok_or(CheckpointError::KeyType("a log signs with a note key (type 0x01)"))?;
        if self.origin != log_key.name() {
            return Err(CheckpointError::Origin { origin: self.origin.clone(), key: log_key.name().to_owned() });
        }
        let mut note = Note::unsigned(&self.to_text())?;
        note.sign(&signer)?;
        Ok(note.to_bytes())
    }
}

/// A checkpoint that verified, with who vouched for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The witnesses whose cosignatures verified: name and the cosignature's timestamp (POSIX s).
    pub witnesses: Vec<(String, u64)>,
    /// The note as parsed, to pass on with every signature it carries.
    pub note: Note,
}

/// Verifies a signed checkpoint: the note is well-formed, `log_key` signed it, its origin is the log
/// key's name, and at least `min_witnesses` of `witnesses` cosigned it. Signatures of other keys are
/// ignored, as the note spec requires.
pub fn verify(
    bytes: &[u8],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    min_witnesses: usize,
) -> Result<Verified, CheckpointError> {
    if log_key.key_type() != KeyType::Note {
        return Err(CheckpointError::KeyType("the log's key is a note key (type 0x01)"));
    }
    if witnesses.iter().any(|w| w.key_type() != KeyType::Cosignature) {
        return Err(CheckpointError::KeyType("a witness key is a cosignature key (type 0x04)"));
    }
    let note = Note::parse(bytes)?;
    let mut known: Vec<&dyn NoteVerifier> = vec![log_key];
    known.extend(witnesses.iter().map(|w| w as &dyn NoteVerifier));
    let opened = note.open(&known)?;
    let checkpoint = Checkpoint::parse(&opened.text)?;
    if !opened.verified.iter().any(|(name, id, _)| name == log_key.name() && *id == log_key.key_id()) {
        return Err(CheckpointError::NotSignedByLog(log_key.to_string()));
    }
    if checkpoint.origin != log_key.name() {
        return Err(CheckpointError::Origin { origin: checkpoint.origin, key: log_key.name().to_owned() });
    }
    let cosigned: Vec<(String, u64)> =
        opened.verified.iter().filter_map(|(name, _, what)| what.timestamp_s.map(|t| (name.clone(), t))).collect();
    if cosigned.len() < min_witnesses {
        return Err(CheckpointError::Witnesses { found: cosigned.len(), required: min_witnesses });
    }
    Ok(Verified { checkpoint, witnesses: cosigned, note })
}

/// A decimal `u64` with no leading zeroes (`0` alone for zero), no sign, no spaces.
pub fn parse_size(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// The standard base64 of exactly 32 bytes, canonical (padded, no trailing bits).
pub fn parse_hash_b64(text: &str) -> Option<Hash> {
    let bytes = STANDARD.decode(text).ok()?;
    bytes.as_slice().try_into().ok()
}

/// The standard base64 of a hash.
pub fn hash_b64(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

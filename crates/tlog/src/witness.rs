//! The witness protocol (c2sp.org/tlog-witness): the `add-checkpoint` request body and the witness's
//! decision, as pure functions. The HTTP server (`posledger-witness`) and the client (`posledger
//! checkpoint --witness`) only move bytes; every rule is here.
//!
//! Request body: `old <size>\n`, zero to 63 lines of one base64 hash each (the RFC 6962 consistency
//! proof from the old size), a blank line, then the signed checkpoint. The witness answers:
//! 200 with its cosignature lines; 400 for a malformed request or an old size above the checkpoint's;
//! 403 when no trusted key of the origin signed it, or one's signature fails; 404 for an unknown
//! origin; 409 with its own size (`text/x.tlog.size`) when the old size is not the size it last
//! cosigned; 422 when the proof does not verify or an empty tree has a non-empty root.

use log::merkle::Hash;

use crate::checkpoint::{hash_b64, parse_hash_b64, parse_size, Checkpoint};
use crate::ed25519::Cosigner;
use crate::key::{KeyType, SigningKey, VerifierKey};
use crate::note::{Note, NoteError, NoteVerifier, Signature, MAX_NOTE_BYTES};
use crate::proof::{check_consistency, ConsistencyError, MAX_PROOF_HASHES};

/// Largest `add-checkpoint` body accepted (bytes): the old-size line, 63 proof lines and a note.
pub const MAX_REQUEST_BYTES: usize = 32 + MAX_PROOF_HASHES * 46 + 1 + MAX_NOTE_BYTES;
/// The content type of a 409 response body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A parsed `add-checkpoint` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the previous checkpoint the client believes the witness holds.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint's bytes.
    pub checkpoint: Vec<u8>,
}

/// A malformed `add-checkpoint` body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Above [`MAX_REQUEST_BYTES`].
    #[error("the request body is {size} bytes, above the limit of {MAX_REQUEST_BYTES}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Line `line` (1-based) is wrong.
    #[error("request line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl AddCheckpoint {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, RequestError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge { size: body.len() });
        }
        let mut rest = body;
        let mut line_no = 0usize;
        let mut next_line = |rest: &mut &[u8]| -> Result<(usize, Vec<u8>), RequestError> {
            line_no += 1;
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return Err(RequestError::Line { line: line_no, reason: "no newline" });
            };
            let (line, tail) = rest.split_at(end);
            *rest = tail.get(1..).unwrap_or_default();
            Ok((line_no, line.to_vec()))
        };
        let (n, old) = next_line(&mut rest)?;
        let old_size = std::str::from_utf8(&old)
            .ok()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_size)
            .ok_or(RequestError::Line { line: n, reason: "expected `old <size>`" })?;
        let mut proof = Vec::new();
        loop {
            let (n, line) = next_line(&mut rest)?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(RequestError::Line { line: n, reason: "more than 63 consistency proof lines" });
            }
            let hash = std::str::from_utf8(&line)
                .ok()
                .and_then(parse_hash_b64)
                .ok_or(RequestError::Line { line: n, reason: "a proof line is not the base64 of 32 bytes" })?;
            proof.push(hash);
        }
        Ok(AddCheckpoint { old_size, proof, checkpoint: rest.to_vec() })
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&hash_b64(hash));
            out.push('\n');
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.checkpoint);
        bytes
    }
}

/// A log the witness cosigns for: its origin and the keys trusted to sign its checkpoints.
#[derive(Clone, Debug)]
pub struct LogPolicy {
    /// The checkpoint origin.
    pub origin: String,
    /// Note keys (type `0x01`) of the log.
    pub keys: Vec<VerifierKey>,
}

/// What a witness keeps per log: the latest checkpoint it cosigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    /// Its size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
}

/// Why a witness refuses to cosign, with the HTTP status the protocol gives it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// 400: the body or the checkpoint is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403: no trusted key signed, or a trusted key's signature fails.
    #[error("forbidden: {0}")]
    Forbidden(NoteError),
    /// 404: the origin is not a log this witness knows.
    #[error("unknown origin {0:?}")]
    UnknownOrigin(String),
    /// 409: the old size is not the size the witness last cosigned (which is given).
    #[error("the witness holds size {0}")]
    Conflict(u64),
    /// 422: the checkpoint is not consistent with what the witness holds.
    #[error("inconsistent: {0}")]
    Inconsistent(ConsistencyError),
}

impl Refusal {
    /// The HTTP status code of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownOrigin(_) => 404,
            Refusal::Conflict(_) => 409,
            Refusal::Inconsistent(_) => 422,
        }
    }

    /// The response body: the witness's size for a 409, a one-line reason otherwise.
    pub fn body(&self) -> String {
        match self {
            Refusal::Conflict(size) => format!("{size}\n"),
            other => format!("{other}\n"),
        }
    }
}

/// A checkpoint the witness accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The witness's cosignature line(s), the 200 response body.
    pub cosignatures: Vec<Signature>,
    /// The checkpoint with the log's verified signatures and the witness's cosignature: what the
    /// witness serves as its latest view of the log.
    pub note: Vec<u8>,
}

impl Accepted {
    /// The 200 response body.
    pub fn body(&self) -> String {
        self.cosignatures.iter().map(Signature::line).collect()
    }

    /// What the witness must persist before answering.
    pub fn latest(&self) -> Latest {
        Latest { size: self.checkpoint.size, root: self.checkpoint.root }
    }
}

/// The witness's decision on one request: `latest` is what it holds for the request's origin (`None`
/// when it never cosigned one), `key` its cosignature key, `now_s` the POSIX time it cosigns at. The
/// caller holds the per-origin state locked from reading `latest` until it persisted
/// [`Accepted::latest`], so that two requests can never roll the state back.
pub fn decide(
    logs: &[LogPolicy],
    latest: &dyn Fn(&str) -> Option<Latest>,
    body: &[u8],
    key: &SigningKey,
    now_s: u64,
) -> Result<Accepted, Refusal> {
    let request = AddCheckpoint::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let note = Note::parse(&request.checkpoint).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let checkpoint = Checkpoint::parse(note.text()).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let policy = logs
        .iter()
        .find(|log| log.origin == checkpoint.origin)
        .ok_or_else(|| Refusal::UnknownOrigin(checkpoint.origin.clone()))?;
    let known: Vec<&dyn NoteVerifier> =
        policy.keys.iter().filter(|k| k.key_type() == KeyType::Note).map(|k| k as &dyn NoteVerifier).collect();
    let opened = note.open(&known).map_err(Refusal::Forbidden)?;
    if request.old_size > checkpoint.size {
        return Err(Refusal::BadRequest(format!(
            "the old size {} is above the checkpoint's size {}",
            request.old_size, checkpoint.size
        )));
    }
    let held = latest(&checkpoint.origin);
    let held_size = held.as_ref().map_or(0, |l| l.size);
    if request.old_size != held_size {
        return Err(Refusal::Conflict(held_size));
    }
    let held_root = held.map_or_else(log::merkle::empty_root, |l| l.root);
    check_consistency(request.old_size, &held_root, checkpoint.size, &checkpoint.root, &request.proof)
        .map_err(Refusal::Inconsistent)?;
    let cosigner = Cosigner::new(key, now_s)
        .ok_or_else(|| Refusal::BadRequest("the witness's key or clock cannot cosign".to_owned()))?;
    // Keep only the log's signatures that verified, then add the cosignature.
    let mut kept = Note::unsigned(note.text()).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    for signature in note.signatures() {
        if opened.verified.iter().any(|(name, id, _)| name == signature.name() && *id == signature.key_id()) {
            kept.add(signature.clone());
        }
    }
    kept.sign(&cosigner).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let cosignatures =
        kept.signatures().iter().filter(|s| s.name() == key.name() && s.key_id() == key.key_id()).cloned().collect();
    Ok(Accepted { checkpoint, cosignatures, note: kept.to_bytes() })
}

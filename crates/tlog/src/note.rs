//! Signed notes (c2sp.org/signed-note): a text ending in a newline, a blank line, then one or more
//! signature lines `— <key name> <base64(4-byte key ID ‖ signature)>\n` (U+2014 EM DASH).
//!
//! [`Note::parse`] checks the syntax (UTF-8, no control characters but newline, the last blank line
//! separates text and signatures, names valid, at most [`MAX_SIGNATURES`], at most [`MAX_NOTE_BYTES`]);
//! [`Note::open`] checks signatures against known keys as the spec requires: signatures from unknown
//! keys are ignored, a known key's signature must verify (else the whole note is refused), and at
//! least one known key must have signed. The signature algorithm sits behind [`NoteVerifier`] and
//! [`NoteSigner`], so another one (the cosignature spec's ML-DSA-44) is one more implementation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::key::is_valid_name;

/// Largest note accepted (bytes): room for the spec's minimum of 16 signatures even at post-quantum
/// sizes (about 5 kB each), and far more than any checkpoint needs.
pub const MAX_NOTE_BYTES: usize = 128 * 1024;
/// Most signature lines accepted in one note (Go's `note.Open` stops at 100 too).
pub const MAX_SIGNATURES: usize = 100;
/// The signature line prefix: U+2014 EM DASH and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
const _: () = assert!(MAX_SIGNATURES >= 16, "c2sp.org/signed-note: verifiers MUST accept at least 16 signatures");

/// A note that is not well-formed or does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    /// More than [`MAX_NOTE_BYTES`].
    #[error("the note is {size} bytes, above the limit of {MAX_NOTE_BYTES}")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// Not UTF-8, at byte `offset`.
    #[error("the note is not UTF-8 (byte {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// An ASCII control character other than newline, at byte `offset`.
    #[error("the note holds a control character at byte {offset}")]
    ControlCharacter {
        /// Its byte offset.
        offset: usize,
    },
    /// No blank line between text and signatures, or no signature, or no final newline.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// Signature line `line` (1-based, counted from the first signature line) is malformed.
    #[error("malformed signature line {line}")]
    SignatureLine {
        /// 1-based index among the signature lines.
        line: usize,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// Two known keys share a name and key ID: the configuration is ambiguous.
    #[error("two known keys are named {name} with key ID {key_id:08x}")]
    AmbiguousKey {
        /// The shared name.
        name: String,
        /// The shared key ID.
        key_id: u32,
    },
    /// A known key's signature does not verify: the whole note is refused.
    #[error("the signature of {name}+{key_id:08x} does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
        /// The key's ID.
        key_id: u32,
    },
    /// No known key signed the note.
    #[error("no known key signed the note")]
    Unverified,
    /// A signer whose name is not a valid key name, or a text without its final newline, given to sign.
    #[error("cannot sign: {0}")]
    Sign(&'static str),
}

/// What a verifier learned from a signature beyond its validity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// The POSIX timestamp a cosignature signs, in seconds; `None` for plain signatures.
    pub timestamp_s: Option<u64>,
}

/// A key that checks signatures on a note's text. The algorithm seam: Ed25519 note keys and Ed25519
/// cosignature keys implement it; another algorithm is another implementation.
pub trait NoteVerifier {
    /// The key's name.
    fn name(&self) -> &str;
    /// The key's ID.
    fn key_id(&self) -> u32;
    /// Checks `signature` (without the 4-byte key ID) over the note text `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> Option<Verification>;
}

/// A key that signs a note's text.
pub trait NoteSigner {
    /// The key's name.
    fn name(&self) -> &str;
    /// The key's ID.
    fn key_id(&self) -> u32;
    /// The signature (without the 4-byte key ID) over the note text `text`.
    fn sign(&self, text: &[u8]) -> Vec<u8>;
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl Signature {
    /// The signer's key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signer's key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes, after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line as the note holds it, newline included.
    pub fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    /// Parses one signature line (without its newline).
    pub fn parse_line(line: &str) -> Option<Signature> {
        let rest = line.strip_prefix(SIGNATURE_PREFIX)?;
        let (name, b64) = rest.split_once(' ')?;
        if !is_valid_name(name) || b64.is_empty() {
            return None;
        }
        let raw = STANDARD.decode(b64).ok()?;
        if raw.len() < 5 {
            return None;
        }
        let (id, signature) = raw.split_first_chunk::<4>()?;
        Some(Signature { name: name.to_owned(), key_id: u32::from_be_bytes(*id), signature: signature.to_vec() })
    }
}

/// A parsed note: its text and its signature lines, in order. Nothing in it is trusted until
/// [`Note::open`] has verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<Signature>,
}

/// A note that [`Note::open`] verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The note text (trusted: a known key signed it).
    pub text: String,
    /// The known keys whose signatures verified, as (name, key ID, what the verifier learned), in
    /// the note's order, each key once.
    pub verified: Vec<(String, u32, Verification)>,
    /// Signature lines from unknown keys, kept (deduplicated) so the note can be passed on whole.
    pub unverified: Vec<Signature>,
}

impl Note {
    /// Parses a signed note's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { size: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| NoteError::NotUtf8 { offset: e.valid_up_to() })?;
        if let Some(offset) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::ControlCharacter { offset });
        }
        // The last blank line separates the text (with its final newline) from the signatures.
        let split = text.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (body, signature_block) = (text.get(..split + 1), text.get(split + 2..));
        let (Some(body), Some(signature_block)) = (body, signature_block) else {
            return Err(NoteError::Malformed("no blank line before the signatures"));
        };
        if signature_block.is_empty() {
            return Err(NoteError::Malformed("no signature"));
        }
        let Some(lines) = signature_block.strip_suffix('\n') else {
            return Err(NoteError::Malformed("the last signature line does not end in a newline"));
        };
        let mut signatures = Vec::new();
        for (index, line) in lines.split('\n').enumerate() {
            if index >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(Signature::parse_line(line).ok_or(NoteError::SignatureLine { line: index + 1 })?);
        }
        Ok(Note { text: body.to_owned(), signatures })
    }

    /// The note text (untrusted until opened).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Verifies the note against `known` keys: unknown signatures are ignored, every known key's
    /// signature must verify, and at least one must.
    pub fn open(&self, known: &[&dyn NoteVerifier]) -> Result<Opened, NoteError> {
        for (i, a) in known.iter().enumerate() {
            if known.iter().skip(i + 1).any(|b| a.name() == b.name() && a.key_id() == b.key_id()) {
                return Err(NoteError::AmbiguousKey { name: a.name().to_owned(), key_id: a.key_id() });
            }
        }
        let mut verified: Vec<(String, u32, Verification)> = Vec::new();
        let mut unverified: Vec<Signature> = Vec::new();
        for signature in &self.signatures {
            let Some(key) = known.iter().find(|k| k.name() == signature.name && k.key_id() == signature.key_id) else {
                if !unverified.contains(signature) {
                    unverified.push(signature.clone());
                }
                continue;
            };
            if verified.iter().any(|(name, id, _)| *name == signature.name && *id == signature.key_id) {
                continue;
            }
            let Some(what) = key.verify(self.text.as_bytes(), &signature.signature) else {
                return Err(NoteError::BadSignature { name: signature.name.clone(), key_id: signature.key_id });
            };
            verified.push((signature.name.clone(), signature.key_id, what));
        }
        if verified.is_empty() {
            return Err(NoteError::Unverified);
        }
        Ok(Opened { text: self.text.clone(), verified, unverified })
    }

    /// A note of `text` with no signature yet (signatures are added with [`Note::add`] or
    /// [`Note::sign`]).
    pub fn unsigned(text: &str) -> Result<Note, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::Sign("the note text must end in a newline"));
        }
        Ok(Note { text: text.to_owned(), signatures: Vec::new() })
    }

    /// Signs the text with `signer` and adds the signature, replacing an earlier one of the same key
    /// (as Go's `note.Sign` does).
    pub fn sign(&mut self, signer: &dyn NoteSigner) -> Result<(), NoteError> {
        if !is_valid_name(signer.name()) {
            return Err(NoteError::Sign("the signer's name is not a valid key name"));
        }
        let signature = signer.sign(self.text.as_bytes());
        self.add(Signature { name: signer.name().to_owned(), key_id: signer.key_id(), signature });
        Ok(())
    }

    /// Adds a signature line (one already made, e.g. a witness's cosignature), replacing an earlier
    /// one of the same key.
    pub fn add(&mut self, signature: Signature) {
        self.signatures.retain(|s| !(s.name == signature.name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// The note's bytes: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.text.len() + 1 + self.signatures.len() * 100);
        out.push_str(&self.text);
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
        }
        out.into_bytes()
    }
}

/// Parses a block of signature lines (e.g. a witness's `add-checkpoint` response body): each line
/// `— name base64\n`, at most [`MAX_SIGNATURES`].
pub fn parse_signature_lines(block: &[u8]) -> Result<Vec<Signature>, NoteError> {
    if block.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { size: block.len() });
    }
    let text = std::str::from_utf8(block).map_err(|e| NoteError::NotUtf8 { offset: e.valid_up_to() })?;
    if let Some(offset) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter { offset });
    }
    let Some(lines) = text.strip_suffix('\n') else {
        return Err(NoteError::Malformed("the last signature line does not end in a newline"));
    };
    let mut out = Vec::new();
    for (index, line) in lines.split('\n').enumerate() {
        if index >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        out.push(Signature::parse_line(line).ok_or(NoteError::SignatureLine { line: index + 1 })?);
    }
    Ok(out)
}

/// Reads a note file: at most [`MAX_NOTE_BYTES`] + 1 bytes, so that a larger file is refused by
/// [`Note::parse`] as [`NoteError::TooLarge`] instead of being read whole. The one bounded reader of
/// checkpoint files (the ledger's, the witness's state, `replay`'s `--checkpoint`).
pub fn read_note_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_NOTE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

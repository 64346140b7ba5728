//! The Ed25519 signatures of the two key types behind the [`NoteVerifier`]/[`NoteSigner`] seam:
//! plain note signatures (type `0x01`, c2sp.org/signed-note) and `cosignature/v1` timestamped
//! cosignatures (type `0x04`, c2sp.org/tlog-cosignature), whose signature bytes are
//! `timestamp (u64, big-endian) ‖ Ed25519(cosignature/v1\ntime <timestamp>\n ‖ note text)`.

use crate::key::{KeyType, SigningKey, VerifierKey};
use crate::note::{NoteSigner, NoteVerifier, Verification};

/// The first line of the message a `cosignature/v1` signs.
pub const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// Largest timestamp a cosignature may carry (the spec's 2^63 - 1).
pub const MAX_COSIGNATURE_TIMESTAMP_S: u64 = i64::MAX as u64;
const SIGNATURE_BYTES: usize = 64;

/// The message a `cosignature/v1` signs for `text` at `timestamp_s`.
pub fn cosigned_message(text: &[u8], timestamp_s: u64) -> Vec<u8> {
    let header = format!("{COSIGNATURE_HEADER}time {timestamp_s}\n");
    let mut message = Vec::with_capacity(header.len() + text.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(text);
    message
}

impl NoteVerifier for VerifierKey {
    fn name(&self) -> &str {
        VerifierKey::name(self)
    }

    fn key_id(&self) -> u32 {
        VerifierKey::key_id(self)
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> Option<Verification> {
        match self.key_type() {
            KeyType::Note => (signature.len() == SIGNATURE_BYTES && self.verify_raw(text, signature))
                .then_some(Verification::default()),
            KeyType::Cosignature => {
                let (timestamp, signature) = signature.split_first_chunk::<8>()?;
                let timestamp_s = u64::from_be_bytes(*timestamp);
                if signature.len() != SIGNATURE_BYTES || timestamp_s > MAX_COSIGNATURE_TIMESTAMP_S {
                    return None;
                }
                self.verify_raw(&cosigned_message(text, timestamp_s), signature)
                    .then_some(Verification { timestamp_s: Some(timestamp_s) })
            }
        }
    }
}

/// Signs notes with a [`KeyType::Note`] key. Built by [`PlainSigner::new`], which refuses a
/// cosignature key, so a log never signs its checkpoint with a witness's key type.
#[derive(Debug)]
pub struct PlainSigner<'k> {
    key: &'k SigningKey,
}

impl<'k> PlainSigner<'k> {
    /// A signer for `key`, or `None` when `key` is not a [`KeyType::Note`] key.
    pub fn new(key: &'k SigningKey) -> Option<PlainSigner<'k>> {
        (key.key_type() == KeyType::Note).then_some(PlainSigner { key })
    }
}

impl NoteSigner for PlainSigner<'_> {
    fn name(&self) -> &str {
        self.key.name()
    }

    fn key_id(&self) -> u32 {
        self.key.key_id()
    }

    fn sign(&self, text: &[u8]) -> Vec<u8> {
        self.key.sign_raw(text).to_vec()
    }
}

/// Cosigns notes at one timestamp with a [`KeyType::Cosignature`] key.
#[derive(Debug)]
pub struct Cosigner<'k> {
    key: &'k SigningKey,
    timestamp_s: u64,
}

impl<'k> Cosigner<'k> {
    /// A cosigner for `key` at `timestamp_s` (POSIX seconds), or `None` when `key` is not a
    /// [`KeyType::Cosignature`] key or the timestamp is zero or above 2^63 - 1 (tlog-witness: a
    /// cosignature MUST NOT omit its timestamp).
    pub fn new(key: &'k SigningKey, timestamp_s: u64) -> Option<Cosigner<'k>> {
        (key.key_type() == KeyType::Cosignature && timestamp_s > 0 && timestamp_s <= MAX_COSIGNATURE_TIMESTAMP_S)
            .then_some(Cosigner { key, timestamp_s })
    }
}

impl NoteSigner for Cosigner<'_> {
    fn name(&self) -> &str {
        self.key.name()
    }

    fn key_id(&self) -> u32 {
        self.key.key_id()
    }

    fn sign(&self, text: &[u8]) -> Vec<u8> {
        let signature = self.key.sign_raw(&cosigned_message(text, self.timestamp_s));
        let mut out = Vec::with_capacity(8 + SIGNATURE_BYTES);
        out.extend_from_slice(&self.timestamp_s.to_be_bytes());
        out.extend_from_slice(&signature);
        out
    }
}

//! Ed25519 keys in the text encodings of c2sp.org/signed-note: verifier keys
//! (`<name>+<hex key id>+<base64(type ‖ public key)>`) and private keys as Go's
//! `golang.org/x/mod/sumdb/note` writes them (`PRIVATE+KEY+<name>+<hex key id>+<base64(type ‖ seed)>`).
//!
//! Two signature types are supported, each with its own key-ID byte:
//! - [`KeyType::Note`] (`0x01`): plain Ed25519 note signatures, used by the log for its checkpoints;
//! - [`KeyType::Cosignature`] (`0x04`): timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature),
//!   used by witnesses.
//!
//! A private key never leaves this module in clear except through [`SigningKey::private_key_text`], which
//! returns a zeroizing buffer for the key file writer; `Debug` prints the name and key ID only.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Longest key name accepted (bytes). Names are schema-less URLs; a bound keeps every parser finite.
pub const MAX_KEY_NAME_BYTES: usize = 255;
/// Longest encoded key accepted (bytes), private or verifier.
pub const MAX_KEY_TEXT_BYTES: usize = MAX_KEY_NAME_BYTES + 128;
const ED25519_KEY_BYTES: usize = 32;

/// Which signature a key makes: the signature type byte of c2sp.org/signed-note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// `0x01`: Ed25519 over the note text.
    Note,
    /// `0x04`: timestamped Ed25519 checkpoint cosignature (`cosignature/v1`).
    Cosignature,
}

impl KeyType {
    /// The signature type identifier byte.
    pub fn byte(self) -> u8 {
        match self {
            KeyType::Note => 0x01,
            KeyType::Cosignature => 0x04,
        }
    }

    fn from_byte(byte: u8) -> Option<KeyType> {
        match byte {
            0x01 => Some(KeyType::Note),
            0x04 => Some(KeyType::Cosignature),
            _ => None,
        }
    }
}

/// A key text that could not be used. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not `name+id+key` (or `PRIVATE+KEY+name+id+key`), bad hex or base64, or a wrong length.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// A name that is empty, too long, or holds a space or a plus.
    #[error("invalid key name (it must be 1 to {MAX_KEY_NAME_BYTES} bytes with no spaces and no '+')")]
    Name,
    /// A signature type this implementation does not support.
    #[error("unsupported signature type 0x{0:02x}")]
    UnsupportedType(u8),
    /// The key ID in the text is not the one its name and public key give.
    #[error("the key ID {found:08x} does not match the key (expected {expected:08x})")]
    KeyId {
        /// The ID written in the key text.
        found: u32,
        /// The ID computed from the name and public key.
        expected: u32,
    },
    /// The public key is not a valid Ed25519 point.
    #[error("the public key is not a valid Ed25519 key")]
    PublicKey,
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Whether `name` is a valid key name: non-empty, at most [`MAX_KEY_NAME_BYTES`], no Unicode space and
/// no `+` (c2sp.org/signed-note, "Key names").
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_KEY_NAME_BYTES && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, key_type: KeyType, public_key: &[u8]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', key_type.byte()]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(id)
}

/// A public key with its name and type: what a regulator is handed to verify signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_type: KeyType,
    key_id: u32,
    public: ed25519_dalek::VerifyingKey,
}

impl std::fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierKey({})", self)
    }
}

impl std::fmt::Display for VerifierKey {
    /// The vkey text: `<name>+<hex id>+<base64(type ‖ key)>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut material = Vec::with_capacity(1 + ED25519_KEY_BYTES);
        material.push(self.key_type.byte());
        material.extend_from_slice(self.public.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(material))
    }
}

impl VerifierKey {
    /// Parses a vkey text (surrounding whitespace, e.g. a file's final newline, is ignored).
    pub fn parse(text: &str) -> Result<VerifierKey, KeyError> {
        let text = text.trim();
        if text.len() > MAX_KEY_TEXT_BYTES {
            return Err(KeyError::Malformed("too long"));
        }
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected name+id+key"));
        };
        let (key_type, bytes) = parse_material(name, id_hex, material)?;
        let public = public_key(&bytes)?;
        let key = VerifierKey::new(name, key_type, public)?;
        check_id(id_hex, key.key_id)?;
        Ok(key)
    }

    fn new(name: &str, key_type: KeyType, public: ed25519_dalek::VerifyingKey) -> Result<VerifierKey, KeyError> {
        if !is_valid_name(name) {
            return Err(KeyError::Name);
        }
        let key_id = key_id(name, key_type, public.as_bytes());
        Ok(VerifierKey { name: name.to_owned(), key_type, key_id, public })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (first four bytes of the key hash).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Verifies an Ed25519 signature over `message` (no prefix, no key ID).
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.public.verify_strict(message, &signature).is_ok()
    }
}

/// An Ed25519 private key with its name and type. `Debug` never shows the key.
pub struct SigningKey {
    name: String,
    key_type: KeyType,
    key_id: u32,
    secret: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}+{:08x}, private key not shown)", self.name, self.key_id)
    }
}

impl SigningKey {
    /// A new key from the system's random number generator.
    pub fn generate(name: &str, key_type: KeyType) -> Result<SigningKey, KeyError> {
        let mut seed = Zeroizing::new([0u8; ED25519_KEY_BYTES]);
        getrandom::fill(seed.as_mut()).map_err(|_| KeyError::Random)?;
        SigningKey::from_seed(name, key_type, &seed)
    }

    /// The key of a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, key_type: KeyType, seed: &[u8; ED25519_KEY_BYTES]) -> Result<SigningKey, KeyError> {
        if !is_valid_name(name) {
            return Err(KeyError::Name);
        }
        let secret = ed25519_dalek::SigningKey::from_bytes(seed);
        let key_id = key_id(name, key_type, secret.verifying_key().as_bytes());
        Ok(SigningKey { name: name.to_owned(), key_type, key_id, secret })
    }

    /// Parses a private key text as Go's `note.NewSigner` does.
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let text = text.trim();
        if text.len() > MAX_KEY_TEXT_BYTES {
            return Err(KeyError::Malformed("too long"));
        }
        let Some(rest) = text.strip_prefix("PRIVATE+KEY+") else {
            return Err(KeyError::Malformed("a private key starts with PRIVATE+KEY+"));
        };
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected PRIVATE+KEY+name+id+key"));
        };
        let (key_type, bytes) = parse_material(name, id_hex, material)?;
        let seed: Zeroizing<[u8; ED25519_KEY_BYTES]> = Zeroizing::new(
            bytes.as_slice().try_into().map_err(|_| KeyError::Malformed("an Ed25519 seed is 32 bytes"))?,
        );
        let key = SigningKey::from_seed(name, key_type, &seed)?;
        check_id(id_hex, key.key_id)?;
        Ok(key)
    }

    /// The private key text, for the key file writer only (zeroized when dropped).
    pub fn private_key_text(&self) -> Zeroizing<String> {
        let mut material = Zeroizing::new(Vec::with_capacity(1 + ED25519_KEY_BYTES));
        material.push(self.key_type.byte());
        material.extend_from_slice(self.secret.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(material.as_slice())
        ))
    }

    /// The matching verifier key.
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_type: self.key_type,
            key_id: self.key_id,
            public: self.secret.verifying_key(),
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// An Ed25519 signature over `message`.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.secret.sign(message).to_bytes()
    }
}

/// Splits the shared `id+base64(type ‖ key)` tail; returns the type and the key bytes.
fn parse_material(name: &str, id_hex: &str, material: &str) -> Result<(KeyType, Zeroizing<Vec<u8>>), KeyError> {
    if !is_valid_name(name) {
        return Err(KeyError::Name);
    }
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed("the key ID is 8 hex digits"));
    }
    let bytes = Zeroizing::new(STANDARD.decode(material).map_err(|_| KeyError::Malformed("the key is not base64"))?);
    let Some((&type_byte, key)) = bytes.split_first() else {
        return Err(KeyError::Malformed("the key is empty"));
    };
    let key_type = KeyType::from_byte(type_byte).ok_or(KeyError::UnsupportedType(type_byte))?;
    if key.len() != ED25519_KEY_BYTES {
        return Err(KeyError::Malformed("an Ed25519 key is 32 bytes"));
    }
    Ok((key_type, Zeroizing::new(key.to_vec())))
}

fn public_key(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    let array: [u8; ED25519_KEY_BYTES] =
        bytes.try_into().map_err(|_| KeyError::Malformed("an Ed25519 key is 32 bytes"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&array).map_err(|_| KeyError::PublicKey)
}

fn check_id(id_hex: &str, expected: u32) -> Result<(), KeyError> {
    let found = u32::from_str_radix(id_hex, 16).map_err(|_| KeyError::Malformed("the key ID is 8 hex digits"))?;
    if found != expected {
        return Err(KeyError::KeyId { found, expected });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The known-answer keys of Go's golang.org/x/mod/sumdb/note documentation and tests.
    const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    #[test]
    fn the_go_known_answer_keys_round_trip() -> Result<(), KeyError> {
        let signer = SigningKey::parse(PETER_SKEY)?;
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.verifier_key().to_string(), PETER_VKEY);
        assert_eq!(signer.private_key_text().as_str(), PETER_SKEY);
        let verifier = VerifierKey::parse(PETER_VKEY)?;
        assert_eq!(verifier, signer.verifier_key());
        Ok(())
    }

    #[test]
    fn the_signed_note_spec_example_key_parses() -> Result<(), KeyError> {
        let key = VerifierKey::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")?;
        assert_eq!(key.key_id(), 0x530d903a);
        Ok(())
    }

    #[test]
    fn bad_key_texts_are_refused_with_their_reason() {
        assert_eq!(
            VerifierKey::parse("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(KeyError::KeyId { found: 0xc74f20a4, expected: 0xc74f20a3 })
        );
        assert_eq!(
            VerifierKey::parse("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(KeyError::Name)
        );
        assert!(matches!(VerifierKey::parse("PeterNeumann+c74f20a3"), Err(KeyError::Malformed(_))));
        assert!(matches!(VerifierKey::parse("PeterNeumann+c74f20a3+AQ=="), Err(KeyError::Malformed(_))));
        assert_eq!(VerifierKey::parse("PeterNeumann+c74f20a3+Ag=="), Err(KeyError::UnsupportedType(2)));
        assert!(matches!(SigningKey::parse(PETER_VKEY), Err(KeyError::Malformed(_))));
        assert!(matches!(SigningKey::parse(&"x".repeat(1000)), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn debug_never_shows_the_private_key() -> Result<(), KeyError> {
        let signer = SigningKey::parse(PETER_SKEY)?;
        let shown = format!("{signer:?}");
        assert!(!shown.contains("AYEKFALVFGyNhPJEMzD1QIDr"), "{shown}");
        assert!(shown.contains("PeterNeumann+c74f20a3"));
        Ok(())
    }

    #[test]
    fn the_same_key_has_another_id_per_type() -> Result<(), KeyError> {
        let seed = [7u8; 32];
        let note = SigningKey::from_seed("w.example/1", KeyType::Note, &seed)?;
        let cosig = SigningKey::from_seed("w.example/1", KeyType::Cosignature, &seed)?;
        assert_ne!(note.key_id(), cosig.key_id());
        assert_eq!(VerifierKey::parse(&cosig.verifier_key().to_string())?.key_type(), KeyType::Cosignature);
        Ok(())
    }
}

//! # posledger-tlog: transparency-log formats, byte for byte
//!
//! What a processor hands a regulator so that it cannot later cut or rewrite its log unnoticed, in
//! the formats transparency logs share (Certificate Transparency's successors, Go's checksum
//! database, Sigsum, Tessera), so that their tools verify posledger's checkpoints and posledger's
//! verifiers check theirs:
//! - [`key`]: Ed25519 keys and their text encodings (c2sp.org/signed-note vkeys, Go's private keys);
//! - [`note`]: signed notes (c2sp.org/signed-note), behind a signature-algorithm seam
//!   ([`note::NoteVerifier`], [`note::NoteSigner`]);
//! - [`ed25519`]: the two Ed25519 signature types, plain (`0x01`) and `cosignature/v1` (`0x04`,
//!   c2sp.org/tlog-cosignature);
//! - [`checkpoint`]: c2sp.org/tlog-checkpoint, and [`checkpoint::verify`] with a witness quorum;
//! - [`proof`]: the typed consistency check between two tree heads;
//! - [`witness`]: c2sp.org/tlog-witness `add-checkpoint`, its body and the witness's decision;
//! - [`keyfile`]: key files (0600, never overwritten, loose ones refused).
//!
//! `docs/CHECKPOINTS.md` gives every format byte by byte and the trust model.
//!
//! ## Invariants, written as absences
//! - No private key is ever formatted by `Debug` or `Display`, written into an error, or returned
//!   except to the key file writer (as a zeroizing buffer).
//! - No parser reads more than its limit ([`note::MAX_NOTE_BYTES`], [`witness::MAX_REQUEST_BYTES`],
//!   [`key::MAX_KEY_TEXT_BYTES`], [`proof::MAX_PROOF_HASHES`]).
//! - No verifier answers `bool`: each returns the typed reason a check failed.

#![deny(unsafe_code)]
#![deny(clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod ed25519;
pub mod key;
pub mod keyfile;
pub mod note;
pub mod proof;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError, Verified};
pub use key::{KeyError, KeyType, SigningKey, VerifierKey};
pub use keyfile::KeyFileError;
pub use note::{Note, NoteError};
pub use proof::ConsistencyError;
pub use witness::{AddCheckpoint, Refusal};

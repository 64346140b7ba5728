//! # posledger-log: the log, read side
//!
//! The read-only definition of a posledger log: the validated model ([`model`]), the one lifecycle state
//! machine ([`lifecycle`]), the record codec ([`codec`]), segment and bundle files ([`segment`]), the
//! RFC 6962 Merkle tree and its proofs ([`merkle`]), reading a ledger folder or a bundle in constant
//! memory with its torn-tail rules ([`source`]), and the anchor that records a folder's committed end
//! ([`anchor`]). The writer (`posledger-ledger`) and every reader (`projections`, `replay`) build on it;
//! it has no write path, so a crate that depends on it alone cannot change a log.
//!
//! ## Invariants, written as absences
//! - This crate opens no file for writing, creates, renames or removes none (`clippy.toml`'s
//!   `disallowed-methods` holds it to that).
//! - It knows nothing of sled, of appends, of any CLI, of JSON, CSV or terminal output.
//! - No code path that input can reach calls `unwrap`, `expect` or indexes without a bound; no decoder
//!   allocates more than its limit.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod anchor;
pub mod bundle;
pub mod codec;
pub mod error;
pub mod hash;
pub mod key;
pub mod lifecycle;
pub mod merkle;
pub mod model;
pub mod proof;
pub mod segment;
pub mod source;

pub use error::ReadError;
pub use model::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, EventId, FlagReason, Issued,
    MerchantId, ModelCode, ProviderId, Record, RegionCode, Sn, StopReason, StreamId, TerminalEvent, Text,
};
pub use source::{Head, RecordIter, Source};

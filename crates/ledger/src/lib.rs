//! # posledger-ledger: the log
//!
//! The append-only, tamper-evident lifecycle log of a POS terminal fleet. Payment processors embed
//! this crate: [`Ledger`] appends terminal events and emergency-stop directives, validated by the one
//! lifecycle state machine ([`lifecycle`]), into checksummed segment files ([`segment`]) that are the
//! source of truth, keeps an RFC 6962 Merkle frontier ([`merkle`]) so the head digest is known after every
//! append, and derives its indexes into sled ([`index`]).
//!
//! ## Invariants, written as absences
//! - This crate knows nothing of projections, of any CLI, of JSON, CSV or terminal output.
//! - There is no API that rewrites or deletes a record: segments are append-only and sealed segments are
//!   never opened for writing again.
//! - The sled index holds nothing that cannot be rebuilt from the segment files.
//! - No append is acknowledged before its records are fsynced (in the default, durable mode), and no
//!   reader sees a record that has not been published.
//! - No code path that input can reach calls `unwrap`, `expect` or indexes without a bound.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod anchor;
mod anchor_writer;
mod apply;
pub mod bundle;
pub mod error;
pub mod import;
pub mod index;
mod indexer;
mod ledger;
mod lock;

// The read side, re-exported: the writer and its users see one definition of the log.
pub use log::{codec, lifecycle, merkle, model, segment, source};

pub use error::{AppendError, OpenError, ReadError};
pub use import::{Import, ImportError, Imported};
pub use ledger::{
    Appended, CloseError, Closed, DiskOp, Durability, FaultInjector, Ledger, Options, StopModelsOutcome, Subscription,
    MAX_APPEND_EVENTS,
};
pub use lock::DirLock;
pub use model::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, EventId, FlagReason, Issued,
    MerchantId, ModelCode, ProviderId, Record, RegionCode, Sn, StopReason, StreamId, TerminalEvent, Text,
};
pub use source::{Head, RecordIter, Source};

//! # posledger-ledger: the log
//!
//! The append-only, tamper-evident lifecycle log of a POS terminal fleet. Payment processors embed
//! this crate: [`Ledger`] appends terminal events and emergency-stop directives, validated by the one
//! lifecycle state machine ([`lifecycle`]), into checksummed segment files ([`segment`]) that are the
//! source of truth, keeps an RFC 6962 Merkle frontier ([`merkle`]) so the head digest is known after every
//! append, and derives its indexes into sled (an internal detail: it can be deleted and is rebuilt).
//!
//! ## The API
//! Every module is private; what an embedder uses is re-exported here: the [`Ledger`] and its
//! [`Options`], appends ([`AppendEvent`] and the model), imports ([`Import`], [`Imported`]), reads
//! ([`Subscription`], [`Source`], [`RecordIter`]), the folder lock ([`DirLock`]), bundles
//! ([`BundleWriter`]), restores from record bodies ([`Restore`]), the operator's [`reanchor`], and the errors, one enum per operation family. The
//! read side's modules (`codec`, `lifecycle`, `merkle`, `model`, `segment`, `source`, `anchor`,
//! `bundle`) are `log`'s, re-exported, so `ledger::model::Sn` and `log::model::Sn` are one type.
//!
//! ## The test hook
//! [`testing`] (hidden from the docs) holds the fault seam ([`testing::FaultInjector`],
//! [`testing::DiskOp`], set through `Options::faults`) and the index page types that tests damage. It is
//! a module, not a cargo feature, on purpose: a feature would add or remove a field of [`Options`]
//! depending on what any crate in the build enables (feature unification), so an embedder's
//! `Options { .. }` literal would compile or not depending on its dev-dependencies. The hook is always
//! compiled (without an injector it does nothing) and kept to those few items.
//!
//! ## Invariants, written as absences
//! - This crate knows nothing of projections, of any CLI, of JSON, CSV or terminal output.
//! - There is no API that rewrites or deletes a record: segments are append-only and sealed segments are
//!   never opened for writing again.
//! - The sled index holds nothing that cannot be rebuilt from the segment files.
//! - No append is acknowledged before its records are fsynced (in the default, durable mode), and no
//!   reader sees a record that has not been published.
//! - No code path that input can reach calls `unwrap`, `expect` or indexes without a bound
//!   (`clippy::indexing_slicing` is denied; the few proven bounds say why).
//! - No lock poisoned by a panic is used as if nothing happened: taking it is an error.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)]

mod anchor_writer;
mod apply;
mod bundle_writer;
mod error;
mod faults;
mod guard;
mod import;
mod index;
mod indexer;
mod ledger;
mod lock;
pub mod recall;
mod restore;
#[doc(hidden)]
pub mod testing;

// The read side, re-exported: the writer and its users see one definition of the log.
pub use log::{anchor, bundle, codec, lifecycle, merkle, model, segment, source};

pub use anchor_writer::{reanchor, ReanchorError};
pub use apply::ApplyError;
pub use bundle_writer::BundleWriter;
pub use error::{AppendError, CloseError, LockPoisoned, OpenError, ReadError, WriterFailure};
pub use import::{Import, ImportError, Imported, IMPORT_CHUNK_EVENTS, IMPORT_MAX_CHUNK_EVENTS};
pub use index::{PositionsError, SnapshotError, StoreError};
pub use indexer::{IndexStop, IndexUnavailable};
pub use ledger::{
    Appended, Closed, Durability, Ledger, Options, StopModelsOutcome, Subscription, DEFAULT_SEGMENT_BYTES, INDEX_WAIT,
    MAX_APPEND_EVENTS, SHUTDOWN_WAIT,
};
pub use lock::{DirLock, LOCK_WAIT};
pub use log::bundle::{BundleError, BundleStream, Written};
pub use model::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, EventId, FlagReason, Issued,
    MerchantId, ModelCode, ProviderId, Record, RegionCode, Sn, StopReason, StreamId, TerminalEvent, Text,
};
pub use restore::{
    Restore, RestoreError, Restored, RESTORE_CHUNK_BYTES, RESTORE_MAX_CHUNK_BYTES, RESTORE_STAGING_SUFFIX,
};
pub use source::{Head, RecordIter, Source};

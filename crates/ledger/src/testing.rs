//! The test hook: the fault seam and the few index internals that tests of recovery need. Not part of
//! the embedding API (hidden from the docs; see the crate documentation for why it is a module and not a
//! cargo feature).
//!
//! - [`FaultInjector`] and [`DiskOp`]: set `Options::faults` to fail writes and fsyncs, or to watch every
//!   operation on the ledger's files (the io-fault, model and power-cut tests).
//! - [`index`]: the sled page types, so tests can damage a persisted index and check it is rebuilt.

pub use crate::faults::{DiskOp, FaultInjector};

/// The persisted index's page types and format number (for tests that damage a sled index).
pub mod index {
    pub use crate::index::{bucket_of, Positions, TerminalMem, SNAPSHOT_FORMAT};
}

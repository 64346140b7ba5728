//! # posledger
//!
//! An embedded, event-sourced lifecycle ledger for POS terminal fleets. This facade re-exports the
//! three library crates; the `posledger` binary (the operator CLI) lives beside it.
//!
//! - [`ledger`]: the append-only, tamper-evident log (append, read, prove).
//! - [`projections`]: read models folded from the log (fleet state, audit findings).
//! - [`replay`]: the regulators' read-only tool.
//! - [`tiles`]: the log published as C2SP tlog-tiles (crate `posledger-tiles`).
//! - [`sim`]: the deterministic fleet simulator (crate `posledger-sim`: the demo's data, benches, tests).
//! - [`fleet`]: the operator CLI's interim fleet summary.
//! - [`ops`]: the operator CLI's operations (NDJSON input, bundle export, demo folder).
//!
//! Invariants, as absences: the library knows nothing of terminals, colours or clap; only the binary
//! prints. The simulator never reads the wall clock.

#![deny(unsafe_code)]

pub mod checkpoints;
pub mod fleet;
pub mod ops;
pub mod restore;
pub mod witness_client;

pub use interchange;
pub use ledger;
pub use projections;
pub use replay;
pub use sim;
pub use tiles;
pub use tlog;

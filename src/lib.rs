//! # posledger
//!
//! An embedded, event-sourced lifecycle ledger for POS terminal fleets. This facade re-exports the
//! three library crates; the `posledger` binary (the operator CLI) lives beside it.
//!
//! - [`ledger`]: the append-only, tamper-evident log (append, read, prove).
//! - [`projections`]: read models folded from the log (fleet state, audit findings).
//! - [`replay`]: the regulators' read-only tool.

#![deny(unsafe_code)]

pub use ledger;
pub use projections;
pub use replay;

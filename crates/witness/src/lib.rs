//! # posledger-witness: a C2SP tlog-witness
//!
//! A witness is a third party (a regulator, an industry body) that cosigns a log's checkpoints after
//! checking that each one extends the last it cosigned, and never cosigns a rollback or a fork. With
//! its cosignatures, a regulator holding a checkpoint knows that everyone who trusts the witness saw
//! the same log. The protocol and every decision are `tlog::witness`'s; this crate keeps the state
//! durably ([`state`]) and serves HTTP ([`server`]). docs/CHECKPOINTS.md describes it.
//!
//! ## Invariants, written as absences
//! - No answer 200 is sent before the new state is durable (fsynced file and folder).
//! - No request is read without a bound on its size and on the time it takes.
//! - No state file that does not verify is ever ignored: the witness stops instead.

#![deny(unsafe_code)]
#![deny(clippy::indexing_slicing)]
#![warn(missing_docs)]

pub mod server;
pub mod state;

//! replay: the regulators' tool; has no write path.
//!
//! The library behind the `replay` binary: [`verify`] (every CRC, decode, dense positions and stream
//! versions, commit markers, header chain, Merkle roots), [`fleet`], [`device`] and [`audit`] (read
//! models folded by `projections`), [`export`] (NDJSON in the docs/NDJSON.md schema, or CSV),
//! [`columnar`] (Parquet), [`many`] (several sources at once, and the audit rule across them),
//! [`prove`] (inclusion and consistency proofs), [`evidence`] (one terminal's records with their proofs
//! against a signed checkpoint, checked offline) and [`report`] (the audit report: one self-contained
//! HTML file with charts). SOURCE is a ledger folder or a bundle file, opened with
//! [`log::Source::open`].
//!
//! ## Invariants, written as absences
//! - replay has no write path: it never opens a file of the source for writing, never creates, renames
//!   or deletes one, and never opens the sled index (sled has no read-only mode and locks its folder).
//!   The library writes only to a `Write` it is handed (the binary's standard output) or to an `--out`
//!   path through [`output`], which refuses any path inside the source (and a symbolic link), writes a
//!   character device or FIFO in place, and replaces a regular file atomically.
//! - No check is skipped for speed: every record of the log is CRC-checked, hashed and decoded by
//!   `verify`, whatever the trailers and HEAD claim.
//! - No audit finding is an error and no error is a finding; no library function prints.
//! - No code path that input can reach calls `unwrap`, `expect` or indexes without a bound.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod audit;
pub mod checkpoint;
pub mod columnar;
pub mod device;
pub mod error;
pub mod evidence;
pub mod export;
pub mod fleet;
pub mod many;
pub mod prove;
pub mod published;
pub mod report;
pub mod verify;

// The interchange formats live below both CLIs; re-exported so `replay::ndjson` keeps its path.
pub use interchange::{ndjson, output, text};

use std::path::Path;

/// Opens SOURCE, a ledger folder or a bundle file, read-only. A folder without `segments/` is refused
/// as [`error::Error::NotASource`] (rather than as the missing `segments/` inside it), unless its HEAD
/// records records: then its segments were lost, and that is what the error says.
pub fn open(path: &Path) -> Result<log::Source, error::Error> {
    log::Source::open(path).map_err(|e| match e {
        log::ReadError::NotALedger(path) => error::Error::NotASource(path),
        other => error::Error::from(other),
    })
}

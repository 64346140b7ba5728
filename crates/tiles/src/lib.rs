//! posledger-tiles: the log published as C2SP tlog-tiles (docs/TILES.md), byte for byte.
//!
//! - [`layout`]: tile and entry-bundle paths and which tiles a tree size has;
//! - [`builder`]: tiles built from a stream of leaves, keeping only the right edge (the one copy of
//!   what a tile holds, for the publisher and the verifier);
//! - [`publish`]: the incremental, crash-safe writer of a publication folder;
//! - [`fetch`]: reading a publication from a folder or an `http(s)://` prefix, bounded in size and time;
//! - [`reader`]: proofs read through tiles (a hash reader that fetches only the tiles a proof needs);
//! - [`verify`]: the checkpoint, every tile and every entry checked against each other and the root.
//!
//! ## Invariants, written as absences
//! - No tile, bundle or checkpoint a server sends is trusted before it has been checked against a
//!   signed root; no read is unbounded (tiles 8 KiB, bundles 16 MiB, checkpoints 128 KiB), no request
//!   is without a timeout.
//! - The publisher never rewrites a tile or bundle, never deletes a file, and never writes into a
//!   folder that is neither empty nor a publication of the same log.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod builder;
pub mod fetch;
pub mod layout;
pub mod publish;
pub mod reader;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use fetch::{DirFetch, Fetch, FetchError, HttpFetch};
pub use layout::{Kind, Tile};
pub use publish::{publish, read_marker, Marker, PublishError, Published};
pub use reader::{TileError, TileHashes};
pub use verify::{read_checkpoint, walk, Policy, SignedHead, VerifyError, Walked};

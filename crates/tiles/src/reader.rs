//! Proofs read through tiles: a hash reader over the tiles of one tree size (the checkpoint's), which
//! answers the Merkle Tree Hash of any subtree the RFC 6962 proof algorithms of `log::merkle` ask for,
//! fetching only the tiles it needs (each once). Nothing read here is trusted: a proof built from it is
//! verified against the signed root, so a wrong tile makes the proof fail, never pass.

use crate::builder::{parse_tile, subtree_hash};
use crate::fetch::{Fetch, FetchError};
use crate::layout::{hashes_at, tile_for, Tile, FULL_TILE_BYTES, TILE_HEIGHT};
use log::merkle::{consistency_proof_with, inclusion_proof_with, Hash};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a tile could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// It could not be read.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It is not as long as its width says.
    #[error("{location}: {len} bytes, a tile of {width} hashes has {}", usize::from(*width) * 32)]
    Length {
        /// The file or URL.
        location: String,
        /// Its length.
        len: usize,
        /// Its width.
        width: u16,
    },
    /// The tree has no such subtree (a range the proof algorithms never ask for).
    #[error("the tree of {size} leaves has no subtree [{start}, {end})")]
    NoSubtree {
        /// Tree size.
        size: u64,
        /// First leaf.
        start: u64,
        /// One past the last leaf.
        end: u64,
    },
}

/// Most tiles a reader keeps (a proof needs at most a few per level; 1,024 tiles are 8 MiB).
pub const MAX_CACHED_TILES: usize = 1_024;

/// Reads hashes from the tiles of a tree of `size` leaves.
pub struct TileHashes<'a> {
    fetch: &'a dyn Fetch,
    size: u64,
    cache: Mutex<HashMap<Tile, Arc<Vec<Hash>>>>,
}

impl<'a> TileHashes<'a> {
    /// The hash reader for the tree of `size` leaves served by `fetch`.
    pub fn new(fetch: &'a dyn Fetch, size: u64) -> TileHashes<'a> {
        TileHashes { fetch, size, cache: Mutex::new(HashMap::new()) }
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hashes of `tile`, fetched (or from the cache) and checked for length.
    pub fn tile(&self, tile: Tile) -> Result<Arc<Vec<Hash>>, TileError> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&tile) {
            return Ok(Arc::clone(hit));
        }
        let path = tile.path();
        let bytes = self.fetch.fetch(&path, FULL_TILE_BYTES as u64)?;
        let hashes = parse_tile(&bytes, tile.width).ok_or_else(|| TileError::Length {
            location: self.fetch.location(&path),
            len: bytes.len(),
            width: tile.width,
        })?;
        let hashes = Arc::new(hashes);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_TILES {
            cache.clear();
        }
        cache.insert(tile, Arc::clone(&hashes));
        Ok(hashes)
    }

    /// The Merkle Tree Hash of the perfect subtree of height `height` (2^height leaves) with index
    /// `index`, from the one tile that holds its hashes.
    pub fn perfect(&self, height: u32, index: u64) -> Result<Hash, TileError> {
        let start = index.checked_shl(height).unwrap_or(u64::MAX);
        let none = || TileError::NoSubtree { size: self.size, start, end: start.saturating_add(1 << height.min(63)) };
        let level = u8::try_from(height / TILE_HEIGHT).map_err(|_| none())?;
        let within = height % TILE_HEIGHT;
        let first = index.checked_shl(within).ok_or_else(none)?;
        let count = 1u64 << within;
        if first + count > hashes_at(self.size, level) {
            return Err(none());
        }
        let tile = tile_for(self.size, level, first).ok_or_else(none)?;
        let hashes = self.tile(tile)?;
        let offset = (first - tile.index * crate::layout::TILE_WIDTH) as usize;
        let slice = hashes.get(offset..offset + count as usize).ok_or_else(none)?;
        Ok(subtree_hash(slice))
    }

    /// The Merkle Tree Hash of leaves `[start, end)`, a subtree of the RFC 6962 split structure (`start`
    /// a multiple of the smallest power of two at least `end - start`) or a prefix `[0, end)`: the
    /// perfect subtrees covering it, largest first, folded from the right.
    pub fn range_root(&self, start: u64, end: u64) -> Result<Hash, TileError> {
        let bad = || TileError::NoSubtree { size: self.size, start, end };
        if start >= end || end > self.size {
            return Err(bad());
        }
        let mut nodes = Vec::new();
        let mut at = start;
        while at < end {
            let mut height = if at == 0 { 63 } else { at.trailing_zeros() };
            while height > 0 && at + (1u64 << height) > end {
                height -= 1;
            }
            nodes.push(self.perfect(height, at >> height)?);
            at += 1u64 << height;
        }
        let mut rev = nodes.into_iter().rev();
        let last = rev.next().ok_or_else(bad)?;
        Ok(rev.fold(last, |acc, left| log::merkle::node_hash(&left, &acc)))
    }

    /// The tree's root.
    pub fn root(&self) -> Result<Hash, TileError> {
        if self.size == 0 {
            return Ok(log::merkle::empty_root());
        }
        self.range_root(0, self.size)
    }

    /// The inclusion proof of leaf `index` (RFC 6962 §2.1.1), read through the tiles.
    pub fn inclusion(&self, index: u64) -> Result<Vec<Hash>, TileError> {
        inclusion_proof_with(index, self.size, &mut |a, b| self.range_root(a, b))
    }

    /// The consistency proof from the tree of `old` leaves to this one (RFC 6962 §2.1.2).
    pub fn consistency(&self, old: u64) -> Result<Vec<Hash>, TileError> {
        consistency_proof_with(old, self.size, &mut |a, b| self.range_root(a, b))
    }

    /// The leaf hash at `index` (from its level-0 tile).
    pub fn leaf(&self, index: u64) -> Result<Hash, TileError> {
        self.perfect(0, index)
    }
}

//! Tiles built from a stream of leaves: the one copy of "which tiles a tree has and what they hold",
//! used by the publisher (to write them) and by the verifier (to compare what a server sends with what
//! the entries imply).
//!
//! [`Builder`] keeps only the right edge of the tree: at each tile level the hashes of the tile not
//! yet full (under 256 per level, at most 64 levels), so memory is bounded whatever the log's size. A
//! full tile is handed to the sink the moment its 256th hash arrives, and its subtree hash becomes the
//! next hash of the level above. [`Builder::partial_tiles`] gives the partial tiles of the current
//! size (those the spec requires for every published checkpoint).

use crate::layout::{Tile, HASH_BYTES, MAX_ENTRY_BYTES, MAX_LEVEL, TILE_WIDTH};
use log::merkle::{Frontier, Hash};

/// The right edge of a tree, by tile level.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    size: u64,
    /// `levels[l]`: the hashes of the not-yet-full tile of level `l` (fewer than 256).
    levels: Vec<Vec<Hash>>,
}

/// The Merkle Tree Hash of `hashes` taken as leaf hashes (a tile's subtree hash when 256 wide).
pub fn subtree_hash(hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for h in hashes {
        frontier.push_leaf_hash(*h);
    }
    frontier.root()
}

/// A tile's bytes: its hashes concatenated.
pub fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.iter().copied()).collect()
}

/// A tile's hashes from its bytes, which must be exactly `width` hashes (`None` otherwise).
pub fn parse_tile(bytes: &[u8], width: u16) -> Option<Vec<Hash>> {
    if bytes.len() != usize::from(width) * HASH_BYTES {
        return None;
    }
    Some(bytes.chunks_exact(HASH_BYTES).filter_map(|c| <Hash>::try_from(c).ok()).collect())
}

impl Builder {
    /// The builder of the empty tree.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Resumes at `size` from the hashes of the tree's partial tiles at that size, lowest level first
    /// (`partials[l]` must hold exactly `hashes_at(size, l) % 256` hashes). `None` when they do not
    /// fit `size`. The hashes themselves are checked by the caller, against a root: every one of them
    /// goes into [`Builder::root`].
    pub fn resume(size: u64, partials: Vec<Vec<Hash>>) -> Option<Builder> {
        let levels = crate::layout::levels(size);
        if partials.len() > usize::from(levels) {
            return None;
        }
        for level in 0..levels {
            let want = crate::layout::hashes_at(size, level) % TILE_WIDTH;
            let got = partials.get(usize::from(level)).map_or(0, Vec::len) as u64;
            if want != got {
                return None;
            }
        }
        Some(Builder { size, levels: partials })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf hash; every tile it completes goes to `full`, lowest level first.
    pub fn push(&mut self, leaf: Hash, full: &mut dyn FnMut(Tile, &[Hash])) {
        assert!(self.size < u64::MAX, "tree size overflow");
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::with_capacity(TILE_WIDTH as usize));
            }
            let Some(hashes) = self.levels.get_mut(level) else { unreachable!("level pushed above") };
            hashes.push(hash);
            if hashes.len() as u64 != TILE_WIDTH {
                break;
            }
            assert!(level < usize::from(MAX_LEVEL), "tile level overflow");
            let index = crate::layout::hashes_at(self.size, level as u8) / TILE_WIDTH;
            full(Tile::hashes(level as u8, index, TILE_WIDTH as u16), hashes);
            hash = subtree_hash(hashes);
            hashes.clear();
            level += 1;
        }
        self.size += 1;
    }

    /// The partial tiles of the current size with their hashes, lowest level first.
    pub fn partial_tiles(&self) -> Vec<(Tile, &[Hash])> {
        let mut tiles = Vec::new();
        for (level, hashes) in self.levels.iter().enumerate() {
            if hashes.is_empty() {
                continue;
            }
            let index = crate::layout::hashes_at(self.size, level as u8) / TILE_WIDTH;
            tiles.push((Tile::hashes(level as u8, index, hashes.len() as u16), hashes.as_slice()));
        }
        tiles
    }

    /// The tree's frontier (its perfect subtrees, largest first), from the right edge.
    pub fn frontier(&self) -> Frontier {
        let mut nodes = Vec::new();
        for hashes in self.levels.iter().rev() {
            // Within a tile, the hashes not yet full split into perfect subtrees by the set bits of
            // their count, largest first.
            let mut start = 0usize;
            for bit in (0..TILE_WIDTH.trailing_zeros()).rev() {
                let len = 1usize << bit;
                if hashes.len() & len != 0 {
                    if let Some(chunk) = hashes.get(start..start + len) {
                        nodes.push(subtree_hash(chunk));
                    }
                    start += len;
                }
            }
        }
        let Some(frontier) = Frontier::from_parts(self.size, nodes) else {
            unreachable!("one perfect subtree per set bit of the size")
        };
        frontier
    }

    /// The tree's root.
    pub fn root(&self) -> Hash {
        self.frontier().root()
    }
}

/// Entry bundles built from a stream of entries: full bundles as they complete, and the partial one.
#[derive(Clone, Debug, Default)]
pub struct Bundler {
    size: u64,
    bytes: Vec<u8>,
    count: u16,
}

/// Why an entry cannot go into a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry {position} is {len} bytes; a tlog-tiles entry holds 1 to {MAX_ENTRY_BYTES}")]
pub struct EntryTooLarge {
    /// Its position in the log.
    pub position: u64,
    /// Its length.
    pub len: usize,
}

impl Bundler {
    /// Resumes at `size` with the entries of the partial bundle (`size % 256` of them).
    pub fn resume(size: u64, partial: &[&[u8]]) -> Result<Bundler, EntryTooLarge> {
        assert_eq!(partial.len() as u64, size % TILE_WIDTH, "the partial bundle of this size");
        let mut bundler = Bundler { size: size - size % TILE_WIDTH, bytes: Vec::new(), count: 0 };
        for entry in partial {
            bundler.push(entry, &mut |_, _| unreachable!("a partial bundle never fills"))?;
        }
        Ok(bundler)
    }

    /// Adds the next entry; a bundle it completes goes to `full`.
    pub fn push(&mut self, entry: &[u8], full: &mut dyn FnMut(Tile, &[u8])) -> Result<(), EntryTooLarge> {
        let Ok(len) = u16::try_from(entry.len()) else {
            return Err(EntryTooLarge { position: self.size, len: entry.len() });
        };
        if len == 0 {
            return Err(EntryTooLarge { position: self.size, len: 0 });
        }
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(entry);
        self.count += 1;
        self.size += 1;
        if u64::from(self.count) == TILE_WIDTH {
            full(Tile::entries((self.size - 1) / TILE_WIDTH, TILE_WIDTH as u16), &self.bytes);
            self.bytes.clear();
            self.count = 0;
        }
        Ok(())
    }

    /// The partial bundle of the current size, if any.
    pub fn partial(&self) -> Option<(Tile, &[u8])> {
        (self.count > 0).then(|| (Tile::entries(self.size / TILE_WIDTH, self.count), self.bytes.as_slice()))
    }
}

/// The entries of a bundle of `width` entries; `None` when the bytes are not exactly that many
/// length-prefixed, non-empty entries.
pub fn parse_bundle(bytes: &[u8], width: u16) -> Option<Vec<&[u8]>> {
    let mut entries = Vec::with_capacity(usize::from(width));
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 || tail.len() < len {
            return None;
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
        if entries.len() > usize::from(width) {
            return None;
        }
    }
    (entries.len() == usize::from(width)).then_some(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use log::merkle::leaf_hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn the_root_from_the_right_edge_is_the_merkle_root_at_every_size() {
        let mut builder = Builder::new();
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves(70_000).into_iter().enumerate() {
            builder.push(leaf, &mut |_, _| {});
            frontier.push_leaf_hash(leaf);
            if i % 997 == 0 || (i + 1) % 256 == 0 {
                assert_eq!(builder.root(), frontier.root(), "size {}", i + 1);
            }
        }
        assert_eq!(builder.frontier(), frontier);
    }

    #[test]
    fn a_resumed_builder_goes_on_as_the_one_that_never_stopped() {
        let all = leaves(66_000);
        let mut whole = Builder::new();
        let mut full_whole = Vec::new();
        for leaf in &all {
            whole.push(*leaf, &mut |t, h| full_whole.push((t, h.to_vec())));
        }
        let mut first = Builder::new();
        let mut full_split = Vec::new();
        for leaf in &all[..65_790] {
            first.push(*leaf, &mut |t, h| full_split.push((t, h.to_vec())));
        }
        let partials = first.levels.clone();
        let mut resumed = Builder::resume(65_790, partials).unwrap();
        for leaf in &all[65_790..] {
            resumed.push(*leaf, &mut |t, h| full_split.push((t, h.to_vec())));
        }
        assert_eq!(full_split, full_whole);
        assert_eq!(resumed.root(), whole.root());
        assert!(Builder::resume(65_790, vec![vec![[0; 32]; 3]]).is_none());
    }

    #[test]
    fn bundles_round_trip_and_refuse_what_does_not_fit() {
        let mut b = Bundler::default();
        let mut fulls = Vec::new();
        for i in 0..300u32 {
            b.push(&i.to_be_bytes()[..(i % 4 + 1) as usize], &mut |t, bytes| fulls.push((t, bytes.to_vec()))).unwrap();
        }
        assert_eq!(fulls.len(), 1);
        let entries = parse_bundle(&fulls[0].1, 256).unwrap();
        assert_eq!(entries[5], &5u32.to_be_bytes()[..2]);
        let (tile, bytes) = b.partial().unwrap();
        assert_eq!(tile, Tile::entries(1, 44));
        assert_eq!(parse_bundle(bytes, 44).unwrap().len(), 44);
        assert!(parse_bundle(bytes, 43).is_none());
        assert!(parse_bundle(&bytes[..bytes.len() - 1], 44).is_none());
        assert_eq!(b.push(&vec![0; 65_536], &mut |_, _| {}), Err(EntryTooLarge { position: 300, len: 65_536 }));
        assert!(b.push(&vec![0; 65_535], &mut |_, _| {}).is_ok());
    }
}

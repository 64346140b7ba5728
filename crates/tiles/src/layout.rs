//! The geometry and paths of c2sp.org/tlog-tiles (docs/TILES.md, "Layout").
//!
//! A tile at level `L` holds up to 256 consecutive Merkle Tree Hashes of tree level `8·L`: the `i`-th
//! hash of tile `N` is `MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L])`. Level 0 holds leaf hashes.
//! An entry bundle `N` holds the entries of level-0 tile `N`, each as a big-endian `u16` length and
//! the entry's bytes (here: one record body exactly as stored, the Merkle leaf data).

/// Tree levels a tile spans (the spec fixes it at 8).
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile, and entries in a full bundle.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Bytes of one hash.
pub const HASH_BYTES: usize = 32;
/// Bytes of a full tile.
pub const FULL_TILE_BYTES: usize = TILE_WIDTH as usize * HASH_BYTES;
/// Highest tile level the spec allows.
pub const MAX_LEVEL: u8 = 63;
/// Longest entry an entry bundle can carry (its length prefix is a `u16`).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
/// Longest entry bundle: 256 entries of the longest length with their prefixes.
pub const MAX_BUNDLE_BYTES: usize = TILE_WIDTH as usize * (2 + MAX_ENTRY_BYTES);
/// Path of the signed checkpoint, relative to the prefix.
pub const CHECKPOINT_PATH: &str = "checkpoint";

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Merkle Tree Hashes at a tile level (0 = leaf hashes).
    Hashes(u8),
    /// An entry bundle.
    Entries,
}

/// One tile or entry bundle: what it holds, its index within its level and its width (1..=256; 256 is
/// a full tile, anything less a partial one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Hashes of a level, or entries.
    pub kind: Kind,
    /// Index within the level.
    pub index: u64,
    /// Hashes or entries in it (1..=256).
    pub width: u16,
}

impl Tile {
    /// A hash tile. `level` at most [`MAX_LEVEL`], `width` in 1..=256.
    pub fn hashes(level: u8, index: u64, width: u16) -> Tile {
        assert!(level <= MAX_LEVEL && (1..=TILE_WIDTH as u16).contains(&width), "tile out of range");
        Tile { kind: Kind::Hashes(level), index, width }
    }

    /// An entry bundle, `width` in 1..=256.
    pub fn entries(index: u64, width: u16) -> Tile {
        assert!((1..=TILE_WIDTH as u16).contains(&width), "entry bundle out of range");
        Tile { kind: Kind::Entries, index, width }
    }

    /// Whether it is full (256 wide).
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The path relative to the log's prefix: `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`,
    /// `<N>` in 3-digit elements, all but the last prefixed with `x` (1234067 is `x001/x234/067`).
    pub fn path(&self) -> String {
        let level = match self.kind {
            Kind::Hashes(level) => level.to_string(),
            Kind::Entries => "entries".to_owned(),
        };
        let mut path = format!("tile/{level}/{}", index_path(self.index));
        if !self.is_full() {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a path written by [`Tile::path`]; anything else (leading zeros, a width of 0 or 256, an
    /// index element out of range) is `None`.
    pub fn parse(path: &str) -> Option<Tile> {
        let rest = path.strip_prefix("tile/")?;
        let (level, rest) = rest.split_once('/')?;
        let kind = if level == "entries" {
            Kind::Entries
        } else {
            let l: u8 = level.parse().ok()?;
            if l > MAX_LEVEL || l.to_string() != level {
                return None;
            }
            Kind::Hashes(l)
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((index, w)) => {
                let width: u16 = w.parse().ok()?;
                if width == 0 || u64::from(width) >= TILE_WIDTH || width.to_string() != w {
                    return None;
                }
                (index, width)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let mut index: u64 = 0;
        let elements: Vec<&str> = index_part.split('/').collect();
        let last = elements.len().checked_sub(1)?;
        for (i, element) in elements.iter().enumerate() {
            let digits = if i < last { element.strip_prefix('x')? } else { element };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let value: u64 = digits.parse().ok()?;
            index = index.checked_mul(1000)?.checked_add(value)?;
        }
        let tile = Tile { kind, index, width };
        (tile.path() == path).then_some(tile)
    }
}

/// `<N>` of a tile path.
fn index_path(mut n: u64) -> String {
    let mut path = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        path = format!("x{:03}/{path}", n % 1000);
    }
    path
}

/// Hashes stored at tile level `level` for a tree of `size` leaves (`size / 256^level`).
pub fn hashes_at(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * TILE_HEIGHT;
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}

/// Tile levels a tree of `size` leaves has (the levels with at least one hash).
pub fn levels(size: u64) -> u8 {
    let mut level = 0u8;
    while level <= MAX_LEVEL && hashes_at(size, level) > 0 {
        level += 1;
    }
    level
}

/// The tile at `level` holding hash `index` of that level, as wide as the tree of `size` leaves has it
/// (`None` when the tree has no such hash).
pub fn tile_for(size: u64, level: u8, index: u64) -> Option<Tile> {
    let count = hashes_at(size, level);
    if index >= count {
        return None;
    }
    let n = index / TILE_WIDTH;
    let width = (count - n * TILE_WIDTH).min(TILE_WIDTH) as u16;
    Some(Tile::hashes(level, n, width))
}

/// The hash tiles a tree of `new` leaves needs that a tree of `old` leaves did not have (every tile
/// when `old` is 0): new full tiles and the new partial tiles, level by level, lowest first.
pub fn new_tiles(old: u64, new: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for level in 0..levels(new) {
        let old_n = hashes_at(old, level);
        let new_n = hashes_at(new, level);
        if old_n == new_n {
            continue;
        }
        for index in (old_n / TILE_WIDTH)..(new_n / TILE_WIDTH) {
            tiles.push(Tile::hashes(level, index, TILE_WIDTH as u16));
        }
        let width = new_n % TILE_WIDTH;
        if width > 0 {
            tiles.push(Tile::hashes(level, new_n / TILE_WIDTH, width as u16));
        }
    }
    tiles
}

/// The entry bundles a tree of `new` leaves needs that a tree of `old` leaves did not have.
pub fn new_bundles(old: u64, new: u64) -> Vec<Tile> {
    new_tiles(old, new)
        .into_iter()
        .filter(|t| t.kind == Kind::Hashes(0))
        .map(|t| Tile::entries(t.index, t.width))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_spec_examples() {
        assert_eq!(Tile::hashes(0, 1_234_067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(Tile::hashes(1, 0, 17).path(), "tile/1/000.p/17");
        assert_eq!(Tile::entries(1_000, 3).path(), "tile/entries/x001/000.p/3");
        for path in ["tile/0/x001/x234/067", "tile/1/000.p/17", "tile/entries/x001/000.p/3", "tile/63/999"] {
            assert_eq!(Tile::parse(path).unwrap().path(), path);
        }
        for bad in [
            "tile/0/1234067",
            "tile/00/000",
            "tile/64/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/017",
            "tile/0/x000",
            "tile/0/001/002",
            "tile/x/000",
            "tiles/0/000",
            "tile/0/x18446744073709551/615",
        ] {
            assert_eq!(Tile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_tree_of_70000_has_the_tiles_the_spec_lists() {
        let tiles = new_tiles(0, 70_000);
        let level0: Vec<_> = tiles.iter().filter(|t| t.kind == Kind::Hashes(0)).collect();
        assert_eq!(level0.len(), 274);
        assert_eq!(level0.iter().filter(|t| t.is_full()).count(), 273);
        assert_eq!(level0.last().unwrap().width, 112);
        let level1: Vec<_> = tiles.iter().filter(|t| t.kind == Kind::Hashes(1)).collect();
        assert_eq!(level1.iter().map(|t| t.width).collect::<Vec<_>>(), [256, 17]);
        let level2: Vec<_> = tiles.iter().filter(|t| t.kind == Kind::Hashes(2)).collect();
        assert_eq!(level2.iter().map(|t| t.width).collect::<Vec<_>>(), [1]);
        assert_eq!(new_tiles(0, 256), [Tile::hashes(0, 0, 256), Tile::hashes(1, 0, 1)]);
        assert!(new_tiles(0, 0).is_empty());
        assert!(new_tiles(300, 300).is_empty());
    }
}

//! Verifying a published log: the signed checkpoint, every tile against the entries and the root, every
//! entry against its level-0 hash; or, from an older checkpoint, only what is new plus the consistency
//! of the two. The verifier rebuilds the tiles from the entries with the publisher's [`Builder`] and
//! compares them with what the server sends, so "what a tile must hold" has one copy.
//!
//! Entries are fetched and checked in parallel, a window of bundles at a time, and handed to the
//! caller in position order (the caller may fold or copy them; it must not act on them as verified
//! until the walk has returned `Ok`: the root is only known to match at the end).

use crate::builder::{parse_bundle, parse_tile, tile_bytes, Builder};
use crate::fetch::{Fetch, FetchError};
use crate::layout::{
    hashes_at, levels, tile_for, Kind, Tile, CHECKPOINT_PATH, FULL_TILE_BYTES, MAX_BUNDLE_BYTES, TILE_WIDTH,
};
use crate::reader::{TileError, TileHashes};
use log::merkle::{leaf_hash, Hash};
use rayon::prelude::*;
use tlog::checkpoint::{Checkpoint, CheckpointError};
use tlog::VerifierKey;

/// Bundles fetched and checked together (in parallel).
pub const WINDOW_BUNDLES: usize = 64;
/// Requests in flight by default.
pub const DEFAULT_FETCH_THREADS: usize = 8;

/// Which keys a checkpoint must verify with.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'k> {
    /// The log's key.
    pub key: &'k VerifierKey,
    /// Witnesses whose cosignatures count.
    pub witnesses: &'k [VerifierKey],
    /// How many of them must have cosigned.
    pub min_witnesses: usize,
}

/// A verified signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHead {
    /// Origin, size and root.
    pub checkpoint: Checkpoint,
    /// The note exactly as served.
    pub note: Vec<u8>,
    /// Witnesses that cosigned it, with their timestamps.
    pub witnesses: Vec<(String, u64)>,
}

/// Why a published log failed to verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A resource could not be read.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A checkpoint does not verify.
    #[error("{location}: {source}")]
    Checkpoint {
        /// The file or URL.
        location: String,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// A tile is malformed or missing.
    #[error(transparent)]
    Tile(#[from] TileError),
    /// A tile holds other hashes than the entries imply.
    #[error("{location}: the tile does not match the entries below it")]
    TileMismatch {
        /// The file or URL.
        location: String,
    },
    /// An entry bundle is not the length-prefixed entries its width says.
    #[error("{location}: not an entry bundle of {width} entries")]
    Bundle {
        /// The file or URL.
        location: String,
        /// Entries it should hold.
        width: u16,
    },
    /// An entry does not hash to its level-0 hash: the entry or the hash was changed.
    #[error("{location}: entry {position} does not match its hash in the level-0 tile {tile}")]
    Entry {
        /// The bundle's file or URL.
        location: String,
        /// The entry's position.
        position: u64,
        /// The level-0 tile's file or URL.
        tile: String,
    },
    /// An entry is not a record of this position.
    #[error("{location}: entry {position} is not a posledger record of that position: {reason}")]
    Record {
        /// The bundle's file or URL.
        location: String,
        /// The entry's position.
        position: u64,
        /// Why.
        reason: String,
    },
    /// The tiles give another root than the checkpoint signs.
    #[error("{location}: the tiles give root {computed} for {size} records, the checkpoint signs {signed}")]
    Root {
        /// The checkpoint's file or URL.
        location: String,
        /// Tree size.
        size: u64,
        /// The root from the tiles (hex).
        computed: String,
        /// The signed root (hex).
        signed: String,
    },
    /// The older checkpoint is larger than the served one: the log was cut.
    #[error(
        "the published checkpoint has {new} records, fewer than the {old} of the older checkpoint: the log was cut"
    )]
    Shorter {
        /// The older size.
        old: u64,
        /// The served size.
        new: u64,
    },
    /// The served log does not extend the older checkpoint: it was rewritten.
    #[error("the published log does not extend the older checkpoint of {old} records: its first {old} records were rewritten")]
    Fork {
        /// The older size.
        old: u64,
    },
    /// The fetch threads could not be started.
    #[error("cannot start {threads} fetch threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Why.
        reason: String,
    },
    /// The caller's consumer of the entries failed.
    #[error(transparent)]
    Consumer(Box<dyn std::error::Error + Send + Sync>),
}

impl VerifyError {
    /// Whether the publication itself is at fault (a tile, bundle, entry or checkpoint that is missing,
    /// malformed or does not verify), as opposed to the network, the OS, the caller's key or the
    /// consumer of the entries. Commands exit 1 for the first, 2 for the rest (docs/CLI.md).
    pub fn is_data(&self) -> bool {
        use crate::{FetchError, TileError};
        !matches!(
            self,
            VerifyError::Fetch(FetchError::Io { .. } | FetchError::Status { .. })
                | VerifyError::Tile(TileError::Fetch(FetchError::Io { .. } | FetchError::Status { .. }))
                | VerifyError::Threads { .. }
                | VerifyError::Consumer(_)
                | VerifyError::Checkpoint { source: tlog::CheckpointError::KeyType(_), .. }
        )
    }
}

/// Reads and verifies the checkpoint at `path` (usually [`CHECKPOINT_PATH`]).
pub fn read_checkpoint(fetch: &dyn Fetch, path: &str, policy: &Policy<'_>) -> Result<SignedHead, VerifyError> {
    let note = fetch.fetch(path, tlog::note::MAX_NOTE_BYTES as u64)?;
    verify_note(note, &fetch.location(path), policy)
}

/// Verifies a checkpoint note read from `location`.
pub fn verify_note(note: Vec<u8>, location: &str, policy: &Policy<'_>) -> Result<SignedHead, VerifyError> {
    let verified = tlog::checkpoint::verify(&note, policy.key, policy.witnesses, policy.min_witnesses)
        .map_err(|source| VerifyError::Checkpoint { location: location.to_owned(), source })?;
    Ok(SignedHead { checkpoint: verified.checkpoint, note, witnesses: verified.witnesses })
}

/// What a walk checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    /// Records checked (from the older checkpoint's size, or 0, to the served size).
    pub records: u64,
    /// Hash tiles compared.
    pub tiles: u64,
    /// Entry bundles read.
    pub bundles: u64,
    /// Bytes fetched.
    pub bytes: u64,
}

/// Walks the published log of `head` (verified): from `since` (an older verified checkpoint of the
/// same log) or from the start, fetches every entry bundle and hash tile the new records need,
/// checks each entry against its level-0 hash and that it decodes as the record of its position,
/// rebuilds the tiles above from them and compares each with the served one, and checks the root. With
/// `since`, the right edge of the older tree is read from the served tiles and must give the older
/// root, so the served log extends it. `entry` gets every new record body in position order;
/// `progress` the position reached after each window.
pub fn walk(
    fetch: &dyn Fetch,
    head: &SignedHead,
    since: Option<&SignedHead>,
    threads: usize,
    progress: &mut dyn FnMut(u64),
    entry: &mut dyn FnMut(u64, &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> Result<Walked, VerifyError> {
    let size = head.checkpoint.size;
    let reader = TileHashes::new(fetch, size);
    let from = since.map_or(0, |s| s.checkpoint.size);
    if from > size {
        return Err(VerifyError::Shorter { old: from, new: size });
    }
    let mut builder = match since {
        None => Builder::new(),
        Some(old) => resume(&reader, &old.checkpoint)?,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("posledger-tiles-fetch-{i}"))
        .build()
        .map_err(|e| VerifyError::Threads { threads, reason: e.to_string() })?;
    let mut walked = Walked { records: size - from, tiles: 0, bundles: 0, bytes: 0 };
    let first_bundle = from / TILE_WIDTH;
    let end_bundle = size.div_ceil(TILE_WIDTH);
    let mut next = first_bundle;
    while next < end_bundle {
        let window_end = (next + WINDOW_BUNDLES as u64).min(end_bundle);
        let checked: Vec<Result<Checked, VerifyError>> =
            pool.install(|| (next..window_end).into_par_iter().map(|n| check_bundle(fetch, size, n)).collect());
        let mut emitted: Vec<(Tile, Vec<u8>)> = Vec::new();
        for result in checked {
            let bundle = result?;
            walked.bundles += 1;
            walked.bytes += bundle.bytes;
            for (i, (leaf, body)) in bundle.leaves.iter().zip(&bundle.entries).enumerate() {
                let position = bundle.first + i as u64;
                if position < from {
                    continue;
                }
                builder.push(*leaf, &mut |tile, hashes| {
                    if tile.kind != Kind::Hashes(0) {
                        emitted.push((tile, tile_bytes(hashes)));
                    }
                });
                entry(position, body).map_err(VerifyError::Consumer)?;
            }
        }
        walked.tiles += compare_tiles(fetch, &pool, &emitted)?;
        walked.bytes += emitted.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        progress(window_end.saturating_mul(TILE_WIDTH).min(size));
        next = window_end;
    }
    let partials: Vec<(Tile, Vec<u8>)> = builder
        .partial_tiles()
        .into_iter()
        .filter(|(t, _)| t.kind != Kind::Hashes(0))
        .map(|(t, h)| (t, tile_bytes(h)))
        .collect();
    walked.tiles += compare_tiles(fetch, &pool, &partials)?;
    walked.bytes += partials.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let computed = builder.root();
    if computed != head.checkpoint.root {
        return Err(VerifyError::Root {
            location: fetch.location(CHECKPOINT_PATH),
            size,
            computed: log::source::hex(&computed),
            signed: log::source::hex(&head.checkpoint.root),
        });
    }
    assert_eq!(builder.size(), size, "the walk covered every record");
    Ok(walked)
}

/// The builder at the older checkpoint's size, from the served tiles' hashes of its right edge,
/// checked against the older root.
fn resume(reader: &TileHashes<'_>, old: &Checkpoint) -> Result<Builder, VerifyError> {
    let builder = right_edge(reader, old.size).map_err(|e| match e {
        TileError::NoSubtree { .. } => VerifyError::Fork { old: old.size },
        other => VerifyError::Tile(other),
    })?;
    if builder.root() != old.root {
        return Err(VerifyError::Fork { old: old.size });
    }
    Ok(builder)
}

/// The builder at `size` from the right edge of the tree `reader` serves (the hashes of the partial
/// tiles of `size`, read from the served tiles, which are at least as wide). Unchecked: the caller
/// compares its root with a signed one.
pub(crate) fn right_edge(reader: &TileHashes<'_>, size: u64) -> Result<Builder, TileError> {
    let mut partials = Vec::new();
    let none = || TileError::NoSubtree { size: reader.size(), start: 0, end: size };
    for level in 0..levels(size) {
        let count = hashes_at(size, level) % TILE_WIDTH;
        if count == 0 {
            partials.push(Vec::new());
            continue;
        }
        let first = hashes_at(size, level) - count;
        let tile = tile_for(reader.size(), level, first).ok_or_else(none)?;
        let hashes = reader.tile(tile)?;
        partials.push(hashes.get(..count as usize).ok_or_else(none)?.to_vec());
    }
    Builder::resume(size, partials).ok_or_else(none)
}

/// One bundle, checked.
struct Checked {
    first: u64,
    leaves: Vec<Hash>,
    entries: Vec<Vec<u8>>,
    bytes: u64,
}

/// Fetches bundle `n` and its level-0 tile of the tree of `size`, and checks every entry's hash and
/// record.
fn check_bundle(fetch: &dyn Fetch, size: u64, n: u64) -> Result<Checked, VerifyError> {
    let first = n * TILE_WIDTH;
    let Some(tile) = tile_for(size, 0, first) else { unreachable!("bundle {n} is inside the tree of {size}") };
    let tile_path = tile.path();
    let tile_data = fetch.fetch(&tile_path, FULL_TILE_BYTES as u64)?;
    let leaves = parse_tile(&tile_data, tile.width).ok_or_else(|| {
        VerifyError::Tile(TileError::Length {
            location: fetch.location(&tile_path),
            len: tile_data.len(),
            width: tile.width,
        })
    })?;
    let bundle = Tile::entries(n, tile.width);
    let bundle_path = bundle.path();
    let data = fetch.fetch(&bundle_path, MAX_BUNDLE_BYTES as u64)?;
    let location = || fetch.location(&bundle_path);
    let entries = parse_bundle(&data, bundle.width)
        .ok_or_else(|| VerifyError::Bundle { location: location(), width: bundle.width })?;
    let mut owned = Vec::with_capacity(entries.len());
    for (i, (body, leaf)) in entries.iter().zip(&leaves).enumerate() {
        let position = first + i as u64;
        if leaf_hash(body) != *leaf {
            return Err(VerifyError::Entry { location: location(), position, tile: fetch.location(&tile_path) });
        }
        match log::codec::decode_record(body) {
            Ok(record) if record.position == position => {}
            Ok(record) => {
                return Err(VerifyError::Record {
                    location: location(),
                    position,
                    reason: format!("it says position {}", record.position),
                })
            }
            Err(e) => return Err(VerifyError::Record { location: location(), position, reason: e.to_string() }),
        }
        owned.push(body.to_vec());
    }
    Ok(Checked { first, leaves, entries: owned, bytes: (tile_data.len() + data.len()) as u64 })
}

/// Fetches each tile and compares it with the bytes the entries imply; the count compared.
fn compare_tiles(fetch: &dyn Fetch, pool: &rayon::ThreadPool, tiles: &[(Tile, Vec<u8>)]) -> Result<u64, VerifyError> {
    pool.install(|| {
        tiles.par_iter().try_for_each(|(tile, want)| {
            let path = tile.path();
            let got = fetch.fetch(&path, FULL_TILE_BYTES as u64)?;
            if got.len() != want.len() {
                return Err(VerifyError::Tile(TileError::Length {
                    location: fetch.location(&path),
                    len: got.len(),
                    width: tile.width,
                }));
            }
            if got != *want {
                return Err(VerifyError::TileMismatch { location: fetch.location(&path) });
            }
            Ok(())
        })
    })?;
    Ok(tiles.len() as u64)
}

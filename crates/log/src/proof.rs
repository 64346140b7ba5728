//! RFC 6962 proofs over a log streamed from disk: the one copy of "which subtree roots a proof needs,
//! hashed in one pass over the frames, then assembled".
//!
//! A proof needs the Merkle roots of O(log n) leaf ranges. They are found first (by running the proof
//! algorithm of [`crate::merkle`] with a callback that only records which ranges it asks for), then
//! hashed together in a single pass over the frames (one [`Frontier`] per range open at a position),
//! then the algorithm is run again with the roots. Memory is O(log n); the log is read once, from the
//! first range's start. `replay prove`/`consistency` use it over a [`Source`](crate::Source); anything
//! that yields a [`FrameIter`] can.

use crate::error::ReadError;
use crate::merkle::{consistency_proof_with, empty_root, inclusion_proof_with, leaf_hash, Frontier, Hash};
use crate::source::FrameIter;
use std::collections::HashMap;

/// Positions between two calls of the progress callback.
pub const PROGRESS_EVERY_RECORDS: u64 = 65_536;

/// Roots of leaf ranges `[a, b)`, keyed by range.
pub type RangeRoots = HashMap<(u64, u64), Hash>;

/// Roots of leaf ranges `[a, b)` of a log of `size` records, computed in one pass over the frames of
/// positions `min a .. max b` that `frames(from, to)` yields. An empty range has the empty root. A
/// range past `size`, or frames that end early, is [`ReadError::OutOfRange`]. `progress` is called
/// with the position reached every [`PROGRESS_EVERY_RECORDS`] records and at the end.
pub fn range_roots(
    size: u64,
    ranges: &[(u64, u64)],
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
) -> Result<RangeRoots, ReadError> {
    let mut wanted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(a, b)| a < b).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut roots: RangeRoots = ranges.iter().filter(|(a, b)| a >= b).map(|r| (*r, empty_root())).collect();
    let Some(from) = wanted.first().map(|r| r.0) else { return Ok(roots) };
    let to = wanted.iter().map(|r| r.1).max().unwrap_or(from);
    if to > size {
        return Err(ReadError::OutOfRange { position: to, size });
    }
    let mut pending = wanted.into_iter().peekable();
    let mut active: Vec<((u64, u64), Frontier)> = Vec::new();
    let mut frames = frames(from, to);
    while let Some((position, body, _)) = frames.next_frame()? {
        while let Some(range) = pending.next_if(|r| r.0 == position) {
            active.push((range, Frontier::new()));
        }
        let leaf = leaf_hash(body);
        for (_, frontier) in &mut active {
            frontier.push_leaf_hash(leaf);
        }
        let end = position + 1;
        active.retain(|(range, frontier)| {
            if range.1 == end {
                roots.insert(*range, frontier.root());
                false
            } else {
                true
            }
        });
        if position.is_multiple_of(PROGRESS_EVERY_RECORDS) {
            progress(position);
        }
    }
    progress(to);
    if let Some(((_, end), _)) = active.first() {
        return Err(ReadError::OutOfRange { position: *end, size });
    }
    if let Some((_, end)) = pending.next() {
        return Err(ReadError::OutOfRange { position: end, size });
    }
    Ok(roots)
}

/// A proof algorithm of [`crate::merkle`] over a subtree-root callback.
type ProofOf<'p> = &'p dyn Fn(&mut dyn FnMut(u64, u64) -> Result<Hash, ReadError>) -> Result<Vec<Hash>, ReadError>;

/// Runs `proof` once to learn which subtree roots it asks for, hashes those and the two `extra`
/// ranges in one pass ([`range_roots`]), and runs it again with the roots: the proof and the roots of
/// the `extra` ranges.
fn streamed(
    size: u64,
    extra: [(u64, u64); 2],
    proof: ProofOf<'_>,
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<Hash>, [Hash; 2]), ReadError> {
    let mut ranges = Vec::new();
    proof(&mut |a, b| {
        ranges.push((a, b));
        Ok([0u8; 32])
    })?;
    ranges.extend(extra);
    let roots = range_roots(size, &ranges, frames, progress)?;
    let mut root_of = lookup(&roots, size);
    let path = proof(&mut root_of)?;
    let [(a0, b0), (a1, b1)] = extra;
    Ok((path, [root_of(a0, b0)?, root_of(a1, b1)?]))
}

/// The root of range `a..b` in `roots`: every range a proof asks for was computed by [`range_roots`],
/// which refuses one past `size`.
fn lookup(roots: &RangeRoots, size: u64) -> impl FnMut(u64, u64) -> Result<Hash, ReadError> + '_ {
    move |a, b| roots.get(&(a, b)).copied().ok_or(ReadError::OutOfRange { position: b, size })
}

/// A streamed inclusion proof, with the leaf and the root it is for (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inclusion {
    /// The audit path, from the leaf's sibling up.
    pub proof: Vec<Hash>,
    /// The leaf hash of the record.
    pub leaf: Hash,
    /// The root of the log of `size` records.
    pub root: Hash,
}

/// The inclusion proof of leaf `index` in the first `size` records, in one pass over the frames
/// `frames(from, to)` yields. Requires `index < size`; `size` must not exceed the log's size, else
/// [`ReadError::OutOfRange`].
pub fn inclusion(
    index: u64,
    size: u64,
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
) -> Result<Inclusion, ReadError> {
    if index >= size {
        return Err(ReadError::OutOfRange { position: index, size });
    }
    let (proof, [leaf, root]) = streamed(
        size,
        [(index, index + 1), (0, size)],
        &|subtree| inclusion_proof_with(index, size, subtree),
        frames,
        progress,
    )?;
    Ok(Inclusion { proof, leaf, root })
}

/// Streamed inclusion proofs of several leaves of one tree, with their leaves and the root (not yet
/// verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inclusions {
    /// The audit path of each index, in the order the indices were given.
    pub proofs: Vec<Vec<Hash>>,
    /// The leaf hash of each index, in the same order.
    pub leaves: Vec<Hash>,
    /// The root of the log of `size` records.
    pub root: Hash,
}

/// The inclusion proofs of every leaf of `indices` in the first `size` records, in **one** pass over
/// the frames `frames(from, to)` yields: the subtree roots all the proofs ask for are hashed together
/// ([`range_roots`]), so proving a terminal's whole stream costs one read of the log, not one per
/// record. Requires every index `< size`, else [`ReadError::OutOfRange`].
pub fn inclusions(
    indices: &[u64],
    size: u64,
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
) -> Result<Inclusions, ReadError> {
    if let Some(index) = indices.iter().find(|i| **i >= size) {
        return Err(ReadError::OutOfRange { position: *index, size });
    }
    let mut ranges = vec![(0, size)];
    for index in indices {
        ranges.push((*index, index + 1));
        inclusion_proof_with(*index, size, &mut |a, b| {
            ranges.push((a, b));
            Ok::<Hash, ReadError>([0u8; 32])
        })?;
    }
    let roots = range_roots(size, &ranges, frames, progress)?;
    let mut root_of = lookup(&roots, size);
    let mut proofs = Vec::with_capacity(indices.len());
    let mut leaves = Vec::with_capacity(indices.len());
    for index in indices {
        proofs.push(inclusion_proof_with(*index, size, &mut root_of)?);
        leaves.push(root_of(*index, index + 1)?);
    }
    Ok(Inclusions { proofs, leaves, root: root_of(0, size)? })
}

/// A streamed consistency proof, with the two roots it links (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The proof from `old_size` to `size` (empty when `old_size` is 0 or equals `size`).
    pub proof: Vec<Hash>,
    /// The root of the first `old_size` records.
    pub old_root: Hash,
    /// The root of the first `size` records.
    pub root: Hash,
}

/// The consistency proof between the first `old_size` and the first `size` records, in one pass over
/// the frames `frames(from, to)` yields. Requires `old_size <= size`, else [`ReadError::OutOfRange`].
pub fn consistency(
    old_size: u64,
    size: u64,
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
) -> Result<ConsistencyProof, ReadError> {
    if old_size > size {
        return Err(ReadError::OutOfRange { position: old_size, size });
    }
    let (proof, [old_root, root]) = streamed(
        size,
        [(0, old_size), (0, size)],
        &|subtree| consistency_proof_with(old_size, size, subtree),
        frames,
        progress,
    )?;
    Ok(ConsistencyProof { proof, old_root, root })
}

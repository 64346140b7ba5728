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
use crate::merkle::{consistency_proof_with, empty_root, inclusion_proof_with, Frontier, Hash};
use crate::source::{FrameIter, LEAF_BATCH_BYTES};
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
    range_roots_by(size, ranges, frames, progress, LEAF_BATCH_BYTES)
}

/// [`range_roots`], hashing `batch_bytes` of bodies at a time.
fn range_roots_by(
    size: u64,
    ranges: &[(u64, u64)],
    frames: impl FnOnce(u64, u64) -> FrameIter,
    progress: &mut dyn FnMut(u64),
    batch_bytes: usize,
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
    // A batch of leaves at a time, hashed in parallel; each range open in the batch takes its part.
    loop {
        let (first, leaves) = frames.next_leaves(batch_bytes)?;
        if leaves.is_empty() {
            break;
        }
        let end = first + leaves.len() as u64;
        while let Some(range) = pending.next_if(|r| r.0 < end) {
            assert!(range.0 >= first, "a range opens at or after the batch it starts in");
            active.push((range, Frontier::new()));
        }
        for ((a, b), frontier) in &mut active {
            let (lo, hi) = ((*a).max(first), (*b).min(end));
            let part = usize::try_from(lo - first).unwrap_or(usize::MAX)..usize::try_from(hi - first).unwrap_or(0);
            let part = leaves.get(part);
            // lo..hi lies within first..end, the batch: anything else is a bug, and extending by an
            // empty slice would give a well-formed wrong root (the assert below would catch it too).
            assert!(part.is_some_and(|p| p.len() as u64 == hi - lo), "a range's part lies within the batch");
            frontier.extend_parallel(part.unwrap_or_default());
            assert!(frontier.size() == hi - *a, "a range's frontier covers its leaves read so far");
        }
        active.retain(|(range, frontier)| {
            if range.1 <= end {
                roots.insert(*range, frontier.root());
                false
            } else {
                true
            }
        });
        let mut at = first.next_multiple_of(PROGRESS_EVERY_RECORDS);
        while at < end {
            progress(at);
            at += PROGRESS_EVERY_RECORDS;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
#[expect(clippy::disallowed_methods, reason = "the test writes a bundle to read in a temporary folder")]
mod tests {
    use super::*;
    use crate::bundle::BundleStream;
    use crate::codec::{encode_record, flow_record};
    use crate::source::Source;
    use chrono::{TimeZone, Utc};

    #[test]
    fn range_roots_in_batches_equal_the_roots_of_the_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.bundle");
        let mut stream = BundleStream::new(Vec::new(), &path, 7).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let mut bodies = Vec::new();
        for position in 0..300u64 {
            let mut body = Vec::new();
            encode_record(&flow_record(position, position, at, position), &mut body).unwrap();
            stream.push(&body).unwrap();
            bodies.push(body);
        }
        let (_, bytes) = stream.finish().unwrap();
        std::fs::write(&path, bytes).unwrap();
        let source = Source::open(&path).unwrap();
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let ranges = [(0, 300), (0, 1), (5, 5), (7, 8), (37, 129), (100, 300), (128, 256), (255, 257), (299, 300)];
        // Batches of one body, of a few, and all at once.
        for batch_bytes in [0, 1, 150, 1 << 20] {
            let mut reported = Vec::new();
            let roots =
                range_roots_by(300, &ranges, |a, b| source.frames(a, b), &mut |p| reported.push(p), batch_bytes)
                    .unwrap();
            for &(a, b) in &ranges {
                let want = crate::merkle::root(&slices[a as usize..b as usize]);
                assert_eq!(roots[&(a, b)], want, "range {a}..{b}, batches of {batch_bytes} bytes");
            }
            assert_eq!(reported, [0, 300], "progress at the first position and at the end");
        }
        for (index, size) in [(0, 1), (0, 300), (17, 300), (299, 300), (100, 129)] {
            let streamed = inclusion(index, size, |a, b| source.frames(a, b), &mut |_| {}).unwrap();
            let in_memory = crate::merkle::inclusion_proof(&slices[..size as usize], index as usize);
            assert_eq!(streamed.proof, in_memory, "inclusion of {index} in {size}");
        }
        for (old, size) in [(1, 300), (128, 300), (200, 257), (299, 300)] {
            let streamed = consistency(old, size, |a, b| source.frames(a, b), &mut |_| {}).unwrap();
            assert_eq!(streamed.proof, crate::merkle::consistency_proof(&slices[..size as usize], old as usize));
        }
        assert!(matches!(
            range_roots(300, &[(10, 301)], |a, b| source.frames(a, b), &mut |_| {}),
            Err(ReadError::OutOfRange { .. })
        ));
    }
}

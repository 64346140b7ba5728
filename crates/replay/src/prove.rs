//! `replay prove` and `replay consistency`: RFC 6962 inclusion and consistency proofs computed from the
//! record bytes as stored, in one streaming pass over the log and O(log n) memory.
//!
//! A proof needs the Merkle roots of O(log n) leaf ranges. They are found first (by running the proof
//! algorithm of [`log::merkle`] with a callback that only records which ranges it asks for), then
//! hashed together in a single pass over the frames, then the algorithm is run again with the roots.
//! Every proof is checked with [`log::merkle::verify_inclusion`] / [`verify_consistency`] before it
//! is returned, and a root recomputed at a size the log states a root for (the head, a sealed
//! segment's trailer, the published HEAD) must equal it.

use crate::error::{Error, Failure};
use crate::text::count;
use log::merkle::{
    consistency_proof_with, empty_root, inclusion_proof_with, leaf_hash, verify_consistency, verify_inclusion,
    Frontier, Hash,
};
use log::source::hex;
use log::Source;
use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;

/// An inclusion proof: record `position` is leaf `position` of the log of `size` records with `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InclusionProof {
    /// The record's position (its leaf index).
    pub position: u64,
    /// The size of the log the proof is for.
    pub size: u64,
    /// RFC 6962 leaf hash of the record's bytes as stored: SHA-256(0x00 ‖ body).
    pub leaf_hash: Hash,
    /// Root of the log of `size` records.
    pub root: Hash,
    /// The audit path, from the leaf's sibling up.
    pub proof: Vec<Hash>,
}

/// The outcome of a consistency check between a stated old head and this log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Consistency {
    /// The old size stated.
    pub old_size: u64,
    /// The old root stated.
    pub old_root: Hash,
    /// The root this log has at `old_size` (`None` when the log is shorter).
    pub actual_old_root: Option<Hash>,
    /// This log's size.
    pub size: u64,
    /// This log's root.
    pub root: Hash,
    /// The consistency proof from `old_size` to `size` (empty when the log is shorter).
    pub proof: Vec<Hash>,
    /// Whether the log's first `old_size` records have `old_root` and the proof verifies.
    pub consistent: bool,
}

/// Roots of leaf ranges `[a, b)` of the log, computed in one pass over positions `min a .. max b`.
pub fn range_roots(
    source: &Source,
    ranges: &[(u64, u64)],
    progress: &mut dyn FnMut(u64),
) -> Result<HashMap<(u64, u64), Hash>, Error> {
    let mut wanted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(a, b)| a < b).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut roots: HashMap<(u64, u64), Hash> =
        ranges.iter().filter(|(a, b)| a >= b).map(|r| (*r, empty_root())).collect();
    let Some(from) = wanted.first().map(|r| r.0) else { return Ok(roots) };
    let to = wanted.iter().map(|r| r.1).max().unwrap_or(from);
    if to > source.head.size {
        return Err(Error::Usage(format!("position {to} is past the end of the log ({} records)", source.head.size)));
    }
    let mut pending = wanted.into_iter().peekable();
    let mut active: Vec<((u64, u64), Frontier)> = Vec::new();
    let mut frames = source.frames(from, to);
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
        if position.is_multiple_of(65_536) {
            progress(position);
        }
    }
    progress(to);
    if let Some((range, _)) = active.first() {
        return Err(Error::Usage(format!(
            "position {} is past the end of the log ({} records)",
            range.1, source.head.size
        )));
    }
    Ok(roots)
}

/// The ranges a proof algorithm asks for.
fn ranges_of(run: impl FnOnce(&mut dyn FnMut(u64, u64) -> Result<Hash, Infallible>)) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    run(&mut |a, b| {
        ranges.push((a, b));
        Ok([0u8; 32])
    });
    ranges
}

fn lookup(roots: &HashMap<(u64, u64), Hash>) -> impl FnMut(u64, u64) -> Result<Hash, Error> + '_ {
    |a, b| roots.get(&(a, b)).copied().ok_or_else(|| Error::Usage(format!("no root computed for range {a}..{b}")))
}

/// A root the log itself states for `size` records, and where: the head, a sealed segment's or a
/// bundle's trailer, or the published HEAD.
fn stated_root(source: &Source, size: u64) -> Vec<(Hash, PathBuf)> {
    let mut stated = Vec::new();
    if size == source.head.size {
        stated.push((source.head.root, source.path.clone()));
    }
    for file in &source.files {
        if let Some(trailer) = &file.trailer {
            if trailer.log_size == size {
                stated.push((trailer.root, file.path.clone()));
            }
        }
    }
    if let Some(head) = source.published_head {
        if head.size == size {
            stated.push((head.root, source.path.join(log::source::HEAD_FILE)));
        }
    }
    stated
}

fn check_stated(source: &Source, size: u64, root: &Hash) -> Result<(), Failure> {
    for (stated, path) in stated_root(source, size) {
        if stated != *root {
            return Err(Failure {
                path,
                position: None,
                what: format!(
                    "the root recomputed from the records at size {size} is {}, but the log states {}",
                    hex(root),
                    hex(&stated)
                ),
            });
        }
    }
    Ok(())
}

/// The inclusion proof of record `position` in the log of `size` records (default: the whole log).
pub fn prove(
    source: &Source,
    position: u64,
    size: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<InclusionProof, Error> {
    let head = source.head.size;
    let size = size.unwrap_or(head);
    if size > head {
        return Err(Error::Usage(format!(
            "--size {size} is past the end of the log ({})",
            count(head, "record", "records")
        )));
    }
    if position >= size {
        let holds = match size {
            0 => "the log of size 0 has no records".to_owned(),
            1 => "the log of size 1 holds position 0 only".to_owned(),
            _ => format!("the log of size {size} holds positions 0 to {}", size - 1),
        };
        return Err(Error::Usage(format!("position {position} is not in the log: {holds}")));
    }
    let mut ranges = ranges_of(|f| {
        let _ = inclusion_proof_with(position, size, f);
    });
    ranges.push((0, size));
    ranges.push((position, position + 1));
    let roots = range_roots(source, &ranges, progress)?;
    let proof = inclusion_proof_with(position, size, &mut lookup(&roots))?;
    let root = lookup(&roots)(0, size)?;
    let leaf = lookup(&roots)(position, position + 1)?;
    check_stated(source, size, &root)?;
    if !verify_inclusion(&leaf, position as usize, size as usize, &proof, &root) {
        return Err(Failure {
            path: source.path.clone(),
            position: Some(position),
            what: "the computed inclusion proof does not verify".into(),
        }
        .into());
    }
    Ok(InclusionProof { position, size, leaf_hash: leaf, root, proof })
}

/// Checks that this log extends the log of `old_size` records with root `old_root`, with the
/// consistency proof. A log that does not is a result (`consistent: false`), not an error; damage met
/// while reading is an error.
pub fn consistency(
    source: &Source,
    old_size: u64,
    old_root: Hash,
    progress: &mut dyn FnMut(u64),
) -> Result<Consistency, Error> {
    let size = source.head.size;
    if old_size > size {
        return Ok(Consistency {
            old_size,
            old_root,
            actual_old_root: None,
            size,
            root: source.head.root,
            proof: Vec::new(),
            consistent: false,
        });
    }
    let mut ranges = ranges_of(|f| {
        let _ = consistency_proof_with(old_size, size, f);
    });
    ranges.push((0, size));
    ranges.push((0, old_size));
    let roots = range_roots(source, &ranges, progress)?;
    let proof = consistency_proof_with(old_size, size, &mut lookup(&roots))?;
    let root = lookup(&roots)(0, size)?;
    let actual_old = lookup(&roots)(0, old_size)?;
    check_stated(source, size, &root)?;
    check_stated(source, old_size, &actual_old)?;
    let consistent = if old_size == 0 {
        old_root == empty_root()
    } else {
        actual_old == old_root && verify_consistency(old_size as usize, size as usize, &old_root, &root, &proof)
    };
    if old_size > 0 && actual_old == old_root && !consistent {
        return Err(Failure {
            path: source.path.clone(),
            position: None,
            what: "the computed consistency proof does not verify".into(),
        }
        .into());
    }
    Ok(Consistency { old_size, old_root, actual_old_root: Some(actual_old), size, root, proof, consistent })
}

/// The consistency proof from `old_size` to `new_size` (`0 < old_size <= new_size <= source size`;
/// empty otherwise), from the record bytes in one pass, checked against the roots it proves.
pub fn consistency_between(
    source: &Source,
    old_size: u64,
    new_size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Hash>, Error> {
    if old_size == 0 || old_size > new_size || new_size > source.head.size {
        return Ok(Vec::new());
    }
    let mut ranges = ranges_of(|f| {
        let _ = consistency_proof_with(old_size, new_size, f);
    });
    ranges.push((0, new_size));
    ranges.push((0, old_size));
    let roots = range_roots(source, &ranges, progress)?;
    let proof = consistency_proof_with(old_size, new_size, &mut lookup(&roots))?;
    let (old_root, new_root) = (lookup(&roots)(0, old_size)?, lookup(&roots)(0, new_size)?);
    if !verify_consistency(old_size as usize, new_size as usize, &old_root, &new_root, &proof) {
        return Err(Failure {
            path: source.path.clone(),
            position: None,
            what: "the computed consistency proof does not verify".into(),
        }
        .into());
    }
    Ok(proof)
}

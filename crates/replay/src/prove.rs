//! `replay prove` and `replay consistency`: RFC 6962 inclusion and consistency proofs computed from the
//! record bytes as stored, in one streaming pass over the log and O(log n) memory.
//!
//! The proofs are streamed by [`log::proof`] (the subtree roots a proof needs, hashed in a single
//! pass over the frames). Every proof is checked with [`log::merkle::verify_inclusion`] / [`verify_consistency`] before it
//! is returned, and a root recomputed at a size the log states a root for (the head, a sealed
//! segment's trailer, the published HEAD) must equal it.

use crate::error::{Error, Failure};
use crate::text::count;
use log::merkle::{empty_root, verify_consistency, verify_inclusion, Hash};
use log::source::hex;
use log::Source;
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

impl InclusionProof {
    pub(crate) fn new(position: u64, size: u64, leaf_hash: Hash, root: Hash, proof: Vec<Hash>) -> InclusionProof {
        InclusionProof { position, size, leaf_hash, root, proof }
    }
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
    let log::proof::Inclusion { proof, leaf, root } =
        log::proof::inclusion(position, size, |from, to| source.frames(from, to), progress)?;
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
    let log::proof::ConsistencyProof { proof, old_root: actual_old, root } =
        log::proof::consistency(old_size, size, |from, to| source.frames(from, to), progress)?;
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
    let log::proof::ConsistencyProof { proof, old_root, root } =
        log::proof::consistency(old_size, new_size, |from, to| source.frames(from, to), progress)?;
    if !verify_consistency(old_size as usize, new_size as usize, &old_root, &root, &proof) {
        return Err(Failure {
            path: source.path.clone(),
            position: None,
            what: "the computed consistency proof does not verify".into(),
        }
        .into());
    }
    Ok(proof)
}

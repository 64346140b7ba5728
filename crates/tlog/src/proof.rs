//! Consistency between two tree heads (RFC 6962 §2.1.2), with a typed verdict: the proof checks are
//! `log::merkle`'s, the one implementation of the tree in this workspace.

use log::merkle::{self, Hash};

/// Why a consistency proof does not show that one tree head extends another.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsistencyError {
    /// The old size is above the new size.
    #[error("the old size {old} is above the new size {new}")]
    OldAboveNew {
        /// The old tree size.
        old: u64,
        /// The new tree size.
        new: u64,
    },
    /// A tree of size zero whose root is not the empty tree's.
    #[error("a tree of size 0 must have the empty tree's root")]
    EmptyRoot,
    /// A proof given from the empty tree (which every tree extends, so no proof is needed).
    #[error("a consistency proof from size 0 must be empty")]
    ProofFromEmpty,
    /// Two heads of the same size with different roots.
    #[error("two heads of size {size} have different roots")]
    SameSizeRoots {
        /// The shared size.
        size: u64,
    },
    /// The proof does not verify.
    #[error("the consistency proof from size {old} to size {new} does not verify")]
    Proof {
        /// The old tree size.
        old: u64,
        /// The new tree size.
        new: u64,
    },
    /// Too many proof hashes to be a proof for these sizes.
    #[error("the proof has {0} hashes, more than any tree of 2^64 leaves needs")]
    TooLong(usize),
}

/// Most hashes any consistency proof of a tree of up to 2^64 leaves has (tlog-witness: "MUST NOT send
/// more than 63 consistency proof lines").
pub const MAX_PROOF_HASHES: usize = 63;

/// Checks that `proof` shows the tree `(old_size, old_root)` is a prefix of `(new_size, new_root)`.
pub fn check_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ConsistencyError> {
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ConsistencyError::TooLong(proof.len()));
    }
    if old_size > new_size {
        return Err(ConsistencyError::OldAboveNew { old: old_size, new: new_size });
    }
    let empty = merkle::empty_root();
    if (old_size == 0 && *old_root != empty) || (new_size == 0 && *new_root != empty) {
        return Err(ConsistencyError::EmptyRoot);
    }
    if old_size == 0 {
        return if proof.is_empty() { Ok(()) } else { Err(ConsistencyError::ProofFromEmpty) };
    }
    if old_size == new_size && old_root != new_root {
        return Err(ConsistencyError::SameSizeRoots { size: old_size });
    }
    let (Ok(old), Ok(new)) = (usize::try_from(old_size), usize::try_from(new_size)) else {
        return Err(ConsistencyError::Proof { old: old_size, new: new_size });
    };
    if merkle::verify_consistency(old, new, old_root, new_root, proof) {
        Ok(())
    } else {
        Err(ConsistencyError::Proof { old: old_size, new: new_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
    }

    #[test]
    fn every_prefix_of_a_small_tree_is_consistent_and_a_changed_hash_is_not() {
        let data = leaves(20);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        for new in 0..=refs.len() {
            let new_root = merkle::root(refs.get(..new).unwrap_or_default());
            for old in 0..=new {
                let old_root = merkle::root(refs.get(..old).unwrap_or_default());
                let proof = merkle::consistency_proof(refs.get(..new).unwrap_or_default(), old);
                assert_eq!(check_consistency(old as u64, &old_root, new as u64, &new_root, &proof), Ok(()));
                let mut bad = proof.clone();
                if let Some(first) = bad.first_mut() {
                    *first = merkle::leaf_hash(first);
                    assert!(check_consistency(old as u64, &old_root, new as u64, &new_root, &bad).is_err());
                }
            }
        }
    }

    #[test]
    fn the_edge_cases_have_their_own_verdicts() {
        let empty = merkle::empty_root();
        let other = merkle::leaf_hash(b"x");
        assert_eq!(check_consistency(3, &other, 2, &other, &[]), Err(ConsistencyError::OldAboveNew { old: 3, new: 2 }));
        assert_eq!(check_consistency(0, &other, 2, &other, &[]), Err(ConsistencyError::EmptyRoot));
        assert_eq!(check_consistency(0, &empty, 2, &other, &[other]), Err(ConsistencyError::ProofFromEmpty));
        assert_eq!(check_consistency(2, &empty, 2, &other, &[]), Err(ConsistencyError::SameSizeRoots { size: 2 }));
        assert_eq!(check_consistency(0, &empty, 0, &empty, &[]), Ok(()));
        assert_eq!(check_consistency(1, &other, 2, &other, &[other; 64]), Err(ConsistencyError::TooLong(64)));
    }
}

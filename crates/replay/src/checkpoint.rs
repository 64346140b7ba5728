//! `replay verify --checkpoint` and `replay consistency --from --to`: a source against signed
//! checkpoints (docs/CHECKPOINTS.md).
//!
//! A checkpoint a regulator kept says "the log of `size` records has `root`", signed by the log's key
//! (and cosigned by witnesses). Against it a source either **extends** it (its first `size` records
//! have that root), is **shorter** (records after the source's end were lost or cut), or **differs**
//! (a fork: the log was rewritten). With several checkpoints the verdict names the largest signed
//! size the source agrees with and the smallest it differs from, which bounds where the rewrite is.

use crate::error::Error;
use crate::prove::consistency;
use log::merkle::Hash;
use log::Source;
use tlog::checkpoint::{self, Checkpoint, Verified};
use tlog::witness::AddCheckpoint;
use tlog::VerifierKey;

/// How a source stands against one signed checkpoint. The three cases are all there are (a tree
/// either has the signed root at the signed size, or is too short to have one, or has another), so
/// the enum is exhaustive on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The source's first `checkpoint.size` records have the checkpoint's root.
    Extends,
    /// The source holds fewer records than the checkpoint.
    Shorter {
        /// The source's size.
        size: u64,
    },
    /// The source's root at the checkpoint's size is another one.
    Differs {
        /// The source's root at the checkpoint's size.
        actual_root: Hash,
    },
}

/// One checkpoint's verification and the source's standing against it.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The checkpoint file's name, as given.
    pub name: String,
    /// The verified checkpoint (signatures checked).
    pub verified: Verified,
    /// The source against it.
    pub standing: Standing,
}

/// Why a checkpoint file could not be used: its name and the reason. A checkpoint that does not
/// verify is a data failure (exit 1): someone handed the regulator a note the log did not sign.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {source}")]
pub struct BadCheckpoint {
    /// The file.
    pub name: String,
    /// Why.
    #[source]
    pub source: tlog::CheckpointError,
}

/// Verifies `note` (the bytes of file `name`) with the log's key and the witness quorum, then the
/// source against it ([`check_all`] of one).
pub fn check(
    source: &Source,
    name: &str,
    note: &[u8],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    min_witnesses: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Checked, Error> {
    let notes = [(name.to_owned(), note.to_vec())];
    let mut checked = check_all(source, &notes, log_key, witnesses, min_witnesses, progress)?;
    checked.pop().ok_or_else(|| Error::Usage("no checkpoint was checked".into()))
}

/// Verifies every note of `notes` (name, bytes) with the log's key and the witness quorum, then the
/// source against all of them in **one** pass over its records (the roots at every signed size at
/// once), so a bundle carrying thousands of checkpoints costs one read, not one per checkpoint.
pub fn check_all(
    source: &Source,
    notes: &[(String, Vec<u8>)],
    log_key: &VerifierKey,
    witnesses: &[VerifierKey],
    min_witnesses: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<Checked>, Error> {
    let mut verified = Vec::with_capacity(notes.len());
    for (name, note) in notes {
        let v = checkpoint::verify(note, log_key, witnesses, min_witnesses)
            .map_err(|source| Error::Checkpoint(BadCheckpoint { name: name.clone(), source }))?;
        verified.push((name.clone(), v));
    }
    let sizes: Vec<u64> = verified.iter().map(|(_, v)| v.checkpoint.size).filter(|s| *s <= source.head.size).collect();
    let roots = prefix_roots(source, &sizes, progress)?;
    Ok(verified
        .into_iter()
        .map(|(name, verified)| {
            let cp = &verified.checkpoint;
            let standing = match roots.get(&cp.size) {
                None => Standing::Shorter { size: source.head.size },
                Some(root) if *root == cp.root => Standing::Extends,
                Some(root) => Standing::Differs { actual_root: *root },
            };
            Checked { name, verified, standing }
        })
        .collect())
}

/// The roots of the source's first `size` records for every size in `sizes` (each at most the
/// source's size), in one pass with one frontier.
fn prefix_roots(
    source: &Source,
    sizes: &[u64],
    progress: &mut dyn FnMut(u64),
) -> Result<std::collections::HashMap<u64, Hash>, Error> {
    let mut wanted: Vec<u64> = sizes.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut roots = std::collections::HashMap::with_capacity(wanted.len());
    let mut frontier = log::merkle::Frontier::new();
    let mut pending = wanted.iter().copied().peekable();
    while let Some(size) = pending.next_if(|s| *s == 0) {
        roots.insert(size, frontier.root());
    }
    let end = wanted.last().copied().unwrap_or(0);
    let mut frames = source.frames(0, end);
    while let Some((position, body, _)) = frames.next_frame()? {
        frontier.push_leaf(body);
        if (position + 1).is_multiple_of(log::proof::PROGRESS_EVERY_RECORDS) {
            progress(position + 1);
        }
        while let Some(size) = pending.next_if(|s| *s == position + 1) {
            roots.insert(size, frontier.root());
        }
    }
    progress(frontier.size());
    if let Some(missing) = pending.next() {
        return Err(Error::Read(log::ReadError::OutOfRange { position: missing, size: frontier.size() }));
    }
    Ok(roots)
}

/// The bounds a set of checks puts on a rewrite: the largest signed size the source agrees with and
/// the smallest it differs from.
pub fn fork_bounds(checked: &[Checked]) -> (Option<u64>, Option<u64>) {
    let agrees = checked.iter().filter(|c| c.standing == Standing::Extends).map(|c| c.verified.checkpoint.size).max();
    let differs = checked
        .iter()
        .filter(|c| matches!(c.standing, Standing::Differs { .. }))
        .map(|c| c.verified.checkpoint.size)
        .min();
    (agrees, differs)
}

/// Two signed checkpoints of one log, and the proof from SOURCE that the newer extends the older.
#[derive(Clone, Debug)]
pub struct Extension {
    /// The older checkpoint.
    pub from: Checkpoint,
    /// The newer checkpoint.
    pub to: Checkpoint,
    /// The RFC 6962 consistency proof from `from.size` to `to.size`.
    pub proof: Vec<Hash>,
    /// The newer checkpoint's note as given (for a witness request).
    pub to_note: Vec<u8>,
}

impl Extension {
    /// The tlog-witness `add-checkpoint` body that submits `to` from `from`'s size.
    pub fn witness_request(&self) -> Vec<u8> {
        AddCheckpoint { old_size: self.from.size, proof: self.proof.clone(), checkpoint: self.to_note.clone() }
            .to_bytes()
    }
}

/// Proves with SOURCE that checkpoint `to` extends checkpoint `from`: both verify with the log's key,
/// SOURCE holds both (its roots at their sizes are theirs), and the consistency proof from SOURCE
/// checks against the two signed roots alone.
pub fn extension(
    source: &Source,
    (from_name, from_note): (&str, &[u8]),
    (to_name, to_note): (&str, &[u8]),
    log_key: &VerifierKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Result<Extension, String>, Error> {
    let from = checkpoint::verify(from_note, log_key, &[], 0).map_err(|source| bad(from_name, source))?.checkpoint;
    let to = checkpoint::verify(to_note, log_key, &[], 0).map_err(|source| bad(to_name, source))?.checkpoint;
    if from.size > to.size {
        return Err(Error::Usage(format!(
            "--from {from_name} has size {}, above --to {to_name}'s {}: give the older checkpoint first",
            from.size, to.size
        )));
    }
    let at_to = consistency(source, to.size, to.root, progress)?;
    if !at_to.consistent {
        return Ok(Err(format!("the source does not hold --to {to_name} (size {}): {}", to.size, why(&at_to))));
    }
    let at_from = consistency(source, from.size, from.root, progress)?;
    if !at_from.consistent {
        return Ok(Err(format!(
            "the two checkpoints are inconsistent: the source holds --to {to_name} but its root at size {} is not --from {from_name}'s (the log signed a fork)",
            from.size
        )));
    }
    let proof = crate::prove::consistency_between(source, from.size, to.size, progress)?;
    tlog::proof::check_consistency(from.size, &from.root, to.size, &to.root, &proof)
        .map_err(|e| Error::Usage(format!("the consistency proof computed from the source does not verify: {e}")))?;
    Ok(Ok(Extension { from, to, proof, to_note: to_note.to_vec() }))
}

fn bad(name: &str, source: tlog::CheckpointError) -> Error {
    Error::Checkpoint(BadCheckpoint { name: name.to_owned(), source })
}

fn why(c: &crate::prove::Consistency) -> String {
    match c.actual_old_root {
        None => format!("the source holds only {} records", c.size),
        Some(_) => "its root at that size is another one".to_owned(),
    }
}

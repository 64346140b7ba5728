//! Checkpoints: a fleet saved with the position it covers and the log's Merkle root there, so a later
//! rebuild folds only the newer records.
//!
//! A checkpoint also keeps the Merkle frontier at its position. Catching up pushes the leaf hashes of
//! the new records onto that frontier; the result must be the root of the log being read. So the check
//! that the checkpoint belongs to *this* log (same records before its position) costs time in
//! proportion to the new records only, like the fold itself. A checkpoint past the end of the log, of
//! another log, or damaged is refused with a [`CheckpointError`]; [`rebuild_from_checkpoint`] then falls
//! back to a full fold and says why.
//!
//! File: `PLPROJ03` | payload length u64 LE | payload (postcard 1.x) | SHA-256(payload).
//! Saving writes a temporary file, syncs it and renames it into place: a crash leaves the old
//! checkpoint or the new one, never half of one. This is the only file projections ever write, and
//! only when asked; it is never inside the ledger's `segments/` folder.

use crate::audit::{AuditConfig, Finding};
use crate::fleet::{partition_of, DirectiveInfo, Directives, Fleet, Partition, Terminal, PARTITIONS};
use crate::fold;
use crate::intern::{Names, NamesImage};
use crate::rebuild::{fold_parallel, in_pool, prepare_range, rebuild, resolve_cut, Cut, Options, RebuildError};
use log::merkle::{Frontier, Hash};
use log::segment::FileKind;
use log::source::hex;
use log::{ReadError, Source};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of a checkpoint file.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"PLPROJ03";
/// A loaded partition has room for 1/this more terminals than it holds (see `partition_from_image`).
const CATCH_UP_ROOM_DIVISOR: usize = 16;
/// The folder, inside a ledger folder, that holds projection checkpoints.
pub const CHECKPOINT_DIR: &str = "projections";
/// The fleet checkpoint's file name.
pub const CHECKPOINT_FILE: &str = "fleet.checkpoint";

/// Why a checkpoint could not be saved, loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a checkpoint, damaged, or from an incompatible version.
    #[error("{path}: not a valid fleet checkpoint: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Only a fleet at an append boundary can be saved (a cut inside an append is not resumable).
    #[error("the fleet at position {position} is inside an append; only append boundaries can be checkpointed")]
    NotAtCommit {
        /// The fleet's position.
        position: u64,
    },
    /// The checkpoint covers more records than the log has.
    #[error("checkpoint at position {position} is past the end of the log ({size} records)")]
    PastEnd {
        /// The checkpoint's position.
        position: u64,
        /// Records in the log.
        size: u64,
    },
    /// The log's records before the checkpoint's position are not the ones the checkpoint was built from.
    #[error("checkpoint at position {position} belongs to another log: its root {checkpoint_root} does not extend to this log's head root {log_root}")]
    RootMismatch {
        /// The checkpoint's position.
        position: u64,
        /// The root the checkpoint recorded at its position.
        checkpoint_root: String,
        /// The root of the log being read.
        log_root: String,
    },
    /// The cut asked for is before the checkpoint.
    #[error("cut at position {cut} is before the checkpoint at position {position}")]
    CutBeforeCheckpoint {
        /// The cut.
        cut: u64,
        /// The checkpoint's position.
        position: u64,
    },
    /// The checkpoint was built with other audit settings than asked for.
    #[error("checkpoint was built with audit settings {checkpoint:?}, asked for {asked:?}")]
    AuditDiffers {
        /// The checkpoint's.
        checkpoint: Option<AuditConfig>,
        /// Asked for.
        asked: Option<AuditConfig>,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Folding the new records failed.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
}

/// A loaded checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    root: Hash,
    frontier: Frontier,
    fleet: Fleet,
}

impl Checkpoint {
    /// Records covered.
    pub fn position(&self) -> u64 {
        self.fleet.position()
    }
    /// The log's Merkle root at that position.
    pub fn root(&self) -> Hash {
        self.root
    }
    /// The fleet as saved.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }
    /// The fleet, taken.
    pub fn into_fleet(self) -> Fleet {
        self.fleet
    }
}

/// The payload. Strings are borrowed from the file's bytes when loading (an SN string a terminal was a
/// fifth of a load's profile: its allocation, copy and free); postcard writes `&str` and `String` alike.
#[derive(Serialize, Deserialize)]
struct Image<'a> {
    position: u64,
    root: Hash,
    frontier: Vec<Hash>,
    end_at: Option<i64>,
    last_recorded_at: Option<i64>,
    illegal: u64,
    #[serde(borrow)]
    names: NamesImage<'a>,
    directives: Vec<DirectiveInfo>,
    /// Per partition, terminals in slot order.
    #[serde(borrow)]
    partitions: Vec<Vec<(&'a str, Terminal)>>,
    audit: Option<(AuditConfig, Vec<Finding>)>,
}

/// Where the fleet checkpoint of `source` goes by default: `<ledger>/projections/fleet.checkpoint` for a
/// ledger folder, `<bundle>.fleet.checkpoint` beside a bundle.
pub fn default_path(source: &Source) -> PathBuf {
    match source.kind {
        FileKind::Segment => source.path.join(CHECKPOINT_DIR).join(CHECKPOINT_FILE),
        FileKind::Bundle => {
            let mut name = source.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push(".fleet.checkpoint");
            source.path.with_file_name(name)
        }
    }
}

/// The Merkle frontier of the first `size` records: from the last sealed file's trailer at or before
/// `size`, then the leaves after it.
pub fn frontier_at(source: &Source, size: u64) -> Result<Frontier, CheckpointError> {
    if size > source.head.size {
        return Err(CheckpointError::PastEnd { position: size, size: source.head.size });
    }
    Ok(source.frontier_at(size)?)
}

/// Saves `fleet`, which must have been folded from `source`, to `path`.
#[expect(
    clippy::disallowed_methods,
    reason = "the one file projections write: a checkpoint at a path the caller names, by temp file and rename"
)]
pub fn save(fleet: &Fleet, source: &Source, path: &Path) -> Result<(), CheckpointError> {
    if !fleet.at_commit_boundary() {
        return Err(CheckpointError::NotAtCommit { position: fleet.position() });
    }
    let frontier = frontier_at(source, fleet.position())?;
    let image = Image {
        position: fleet.position,
        root: frontier.root(),
        frontier: frontier.nodes().to_vec(),
        end_at: fleet.end_at,
        last_recorded_at: fleet.last_recorded_at,
        illegal: fleet.illegal,
        names: fleet.names.to_image(),
        directives: fleet.directives.list.clone(),
        partitions: fleet
            .partitions
            .iter()
            .map(|p| p.sns_by_slot().into_iter().zip(p.terminals.iter().cloned()).collect())
            .collect(),
        audit: fleet.audit.as_ref().map(|a| (a.config, a.findings.clone())),
    };
    let invalid = |what: String| CheckpointError::Invalid { path: path.to_owned(), what };
    let payload = postcard::to_stdvec(&image).map_err(|e| invalid(e.to_string()))?;
    let io = |source| CheckpointError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        file.write_all(CHECKPOINT_MAGIC).map_err(io)?;
        file.write_all(&(payload.len() as u64).to_le_bytes()).map_err(io)?;
        file.write_all(&payload).map_err(io)?;
        file.write_all(&Sha256::digest(&payload)).map_err(io)?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Loads and checks a checkpoint file (its checksum and every internal invariant; not yet the log).
///
/// Runs on the current rayon pool: the checksum beside the decoding, then the partitions in parallel
/// ([`rebuild_from_checkpoint`] runs it in the pool of its options' thread count). When a forged file
/// breaks several invariants, which one is reported may differ from run to run; that it is refused
/// does not. A loaded partition keeps room for 1/16 more terminals than it holds (a catch-up's new
/// terminals then do not regrow it), so a loaded fleet's [`Fleet::memory`] is a little above the same
/// fleet folded from scratch until a catch-up's `finalize` gives the room back.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_owned(), source })?;
    let invalid = |what: &str| CheckpointError::Invalid { path: path.to_owned(), what: what.to_owned() };
    let rest = bytes.strip_prefix(CHECKPOINT_MAGIC.as_slice()).ok_or_else(|| invalid("bad magic"))?;
    let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(|| invalid("truncated"))?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| invalid("payload length out of range"))?;
    if rest.len() != len.saturating_add(32) {
        return Err(invalid("file length does not match the payload length"));
    }
    let (payload, sum) = rest.split_at(len);
    // The checksum is computed on one core while the other decodes; a mismatch is reported as such,
    // whatever the decoding of the damaged bytes gave.
    let (sum_ok, image) = rayon::join(
        || Sha256::digest(payload).as_slice() == sum,
        || -> Result<Checkpoint, String> {
            let (image, rest): (Image<'_>, &[u8]) = postcard::take_from_bytes(payload).map_err(|e| e.to_string())?;
            if !rest.is_empty() {
                return Err("trailing bytes after the payload".to_owned());
            }
            from_image(image).map_err(str::to_owned)
        },
    );
    if !sum_ok {
        return Err(invalid("checksum mismatch"));
    }
    image.map_err(|what| CheckpointError::Invalid { path: path.to_owned(), what })
}

fn from_image(image: Image<'_>) -> Result<Checkpoint, &'static str> {
    let frontier = Frontier::from_parts(image.position, image.frontier).ok_or("frontier does not match its size")?;
    if frontier.root() != image.root {
        return Err("frontier does not match the root");
    }
    let names = Names::from_image(image.names).ok_or("a name table repeats a value")?;
    let directives = Directives::from_list(image.directives).ok_or("a directive id repeats")?;
    if image.partitions.len() != PARTITIONS {
        return Err("wrong number of partitions");
    }
    // Partitions are independent: they are rebuilt on both cores.
    let partitions = {
        use rayon::prelude::*;
        image
            .partitions
            .into_par_iter()
            .enumerate()
            .map(|(p, terminals)| partition_from_image(p, terminals, &names))
            .collect::<Result<Vec<Partition>, &'static str>>()?
    };
    let mut fleet = Fleet::new(None);
    fleet.partitions = partitions;
    fleet.names = names;
    fleet.directives = directives;
    fleet.position = image.position;
    fleet.at_commit = true;
    fleet.end_at = image.end_at;
    fleet.last_recorded_at = image.last_recorded_at;
    fleet.illegal = image.illegal;
    fleet.audit = image.audit.map(|(config, findings)| crate::fleet::AuditLog { config, findings });
    Ok(Checkpoint { root: image.root, frontier, fleet })
}

/// Partition `p` from its terminals in slot order, each checked: in the right partition, once, with a
/// valid SN, naming only interned ids that exist.
fn partition_from_image(p: usize, terminals: Vec<(&str, Terminal)>, names: &Names) -> Result<Partition, &'static str> {
    let mut part = Partition::default();
    // Room for the terminals a catch-up issues: without it, the first new terminal of a partition
    // regrows (copies, rehashes) everything loaded, and a catch-up costs in proportion to the fleet.
    let room = terminals.len() + terminals.len() / CATCH_UP_ROOM_DIVISOR + 16;
    part.index.reserve(room);
    part.terminals.reserve_exact(room);
    for (sn, t) in terminals {
        if log::Sn::check(sn).is_err() || partition_of(sn) != p {
            return Err("a terminal has an invalid SN or is in another SN's partition");
        }
        let in_range = (t.model as usize) < names.models.len()
            && (t.provider as usize) < names.providers.len()
            && (t.region as usize) < names.regions.len()
            && (t.merchant as usize) < names.merchants.len();
        if !in_range {
            return Err("a terminal names an unknown interned id");
        }
        if !part.try_insert(crate::fleet::SnKey::new(sn), t) {
            return Err("a terminal is repeated");
        }
    }
    Ok(part)
}

/// Checks that `checkpoint` belongs to `source`'s log: its frontier, extended by the leaves of every
/// newer record, must give the log's head root. Costs time in proportion to the newer records.
pub fn verify(checkpoint: &Checkpoint, source: &Source) -> Result<(), CheckpointError> {
    let position = checkpoint.position();
    let size = source.head.size;
    if position > size {
        return Err(CheckpointError::PastEnd { position, size });
    }
    let mut frontier = checkpoint.frontier.clone();
    source.frames(position, size).extend_frontier(&mut frontier)?;
    if frontier.size() != size || frontier.root() != source.head.root {
        return Err(CheckpointError::RootMismatch {
            position,
            checkpoint_root: hex(&checkpoint.root),
            log_root: source.head.root_hex(),
        });
    }
    Ok(())
}

/// Catches `checkpoint` up to `cut` of `source`, folding only the records after it (in parallel).
pub fn catch_up(
    checkpoint: Checkpoint,
    source: &Source,
    cut: Cut,
    options: &Options,
) -> Result<Fleet, CheckpointError> {
    if checkpoint.fleet.audit_config() != options.audit.as_ref() {
        return Err(CheckpointError::AuditDiffers {
            checkpoint: checkpoint.fleet.audit_config().copied(),
            asked: options.audit,
        });
    }
    in_pool(options.threads, || Ok(verify(&checkpoint, source)))??;
    let position = checkpoint.position();
    let to = resolve_cut(source, cut)?;
    if to < position {
        return Err(CheckpointError::CutBeforeCheckpoint { cut: to, position });
    }
    let mut fleet = checkpoint.fleet;
    in_pool(options.threads, || {
        let source = prepare_range(source, position, to)?;
        fold_parallel(&mut fleet, &source, to, options, &mut crate::rebuild::Phases::default())
    })?;
    fold::finalize(&mut fleet);
    Ok(fleet)
}

/// How [`rebuild_from_checkpoint`] started.
#[derive(Debug)]
#[non_exhaustive]
pub enum Start {
    /// Caught up from a checkpoint at this position.
    Checkpoint {
        /// The checkpoint's position.
        position: u64,
    },
    /// Folded from position 0, because the checkpoint was refused (or absent).
    Scratch {
        /// Why the checkpoint was not used.
        refused: CheckpointError,
    },
}

/// Rebuilds as of `cut` from the checkpoint at `path` when it is usable, else with a full fold.
pub fn rebuild_from_checkpoint(
    path: &Path,
    source: &Source,
    cut: Cut,
    options: &Options,
) -> Result<(Fleet, Start), RebuildError> {
    let resumed = in_pool(options.threads, || Ok(load(path)))?.and_then(|cp| {
        let position = cp.position();
        catch_up(cp, source, cut, options).map(|fleet| (fleet, position))
    });
    match resumed {
        Ok((fleet, position)) => Ok((fleet, Start::Checkpoint { position })),
        Err(CheckpointError::Rebuild(e)) => Err(e),
        Err(refused) => Ok((rebuild(source, cut, options)?, Start::Scratch { refused })),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
#[expect(clippy::disallowed_methods, reason = "tests damage and forge checkpoints in a temporary folder")]
mod tests {
    use super::*;
    use crate::rebuild::Cut;
    use crate::testing::{flow, issued, write_bundle, LogBuilder};

    /// A checkpoint of a small fleet (terminals A, B, C) and the source it was saved from.
    fn saved(dir: &Path) -> (PathBuf, Source) {
        let mut log = LogBuilder::new();
        log.append(vec![issued("A", 0, "M1", None), issued("B", 0, "M1", None), issued("C", 0, "M2", None)]);
        log.append(vec![flow("A", 1, 10_000)]);
        let bundle = dir.join("log.bundle");
        write_bundle(&bundle, log.records(), 1).unwrap();
        let source = Source::open(&bundle).unwrap();
        let fleet = rebuild(&source, Cut::Head, &Options::default()).unwrap();
        let path = dir.join("fleet.checkpoint");
        save(&fleet, &source, &path).unwrap();
        (path, source)
    }

    /// Rewrites the checkpoint at `path` with `change` applied to its payload, under a valid checksum
    /// (what a forger, not a disk error, would write).
    fn forge(path: &Path, change: impl FnOnce(&mut Image<'_>)) {
        let bytes = std::fs::read(path).unwrap();
        let payload = &bytes[16..bytes.len() - 32];
        let mut image: Image<'_> = postcard::from_bytes(payload).unwrap();
        change(&mut image);
        let payload = postcard::to_stdvec(&image).unwrap();
        let mut out = CHECKPOINT_MAGIC.to_vec();
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&Sha256::digest(&payload));
        std::fs::write(path, out).unwrap();
    }

    fn refusal(path: &Path) -> String {
        match load(path) {
            Err(CheckpointError::Invalid { what, .. }) => what,
            other => panic!("expected an invalid checkpoint, got {other:?}"),
        }
    }

    fn part_of(image: &Image<'_>, sn: &str) -> usize {
        image.partitions.iter().position(|p| p.iter().any(|(s, _)| *s == sn)).unwrap()
    }

    #[test]
    fn a_saved_checkpoint_loads_as_the_fleet_with_room_to_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source) = saved(dir.path());
        let loaded = load(&path).unwrap();
        let fleet = rebuild(&source, Cut::Head, &Options::default()).unwrap();
        assert_eq!(loaded.fleet().digest_hex(), fleet.digest_hex());
        assert_eq!(loaded.fleet().len(), 3);
        for part in &loaded.fleet().partitions {
            let room = part.terminals.len() / CATCH_UP_ROOM_DIVISOR + 16;
            assert!(part.terminals.capacity() >= part.terminals.len() + room, "room for new terminals");
            assert!(part.index.capacity() >= part.terminals.len() + room, "room in the index too");
        }
    }

    #[test]
    fn a_forged_checkpoint_repeating_a_terminal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = saved(dir.path());
        forge(&path, |image| {
            let p = part_of(image, "A");
            let copy = image.partitions[p].iter().find(|(s, _)| *s == "A").cloned().unwrap();
            image.partitions[p].push(copy);
        });
        assert_eq!(refusal(&path), "a terminal is repeated");
    }

    #[test]
    fn a_forged_checkpoint_with_a_terminal_in_another_partition_or_a_bad_sn_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = saved(dir.path());
        forge(&path, |image| {
            let p = part_of(image, "B");
            let entry = image.partitions[p].pop().unwrap();
            image.partitions[(p + 1) % PARTITIONS].push(entry);
        });
        assert_eq!(refusal(&path), "a terminal has an invalid SN or is in another SN's partition");
        let (path, _) = saved(dir.path());
        forge(&path, |image| {
            let p = part_of(image, "C");
            let entry = image.partitions[p].iter_mut().find(|(s, _)| *s == "C").unwrap();
            entry.0 = "C!";
        });
        assert_eq!(refusal(&path), "a terminal has an invalid SN or is in another SN's partition");
    }

    #[test]
    fn a_damaged_payload_is_reported_as_a_checksum_mismatch_not_by_what_it_decodes_to() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = saved(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        // A byte of the root: the payload still decodes (and would be refused for its root), but the
        // damage is what is reported.
        bytes[20] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(refusal(&path), "checksum mismatch");
    }
}

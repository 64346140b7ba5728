//! A log published as C2SP tlog-tiles (docs/TILES.md), read from a folder or an `http(s)://` prefix:
//! verified (`replay verify-tiles`), proved from the tiles a proof needs (`replay prove`), or copied,
//! verified, into a temporary bundle that the other commands read as they read any bundle.
//!
//! The temporary bundle is the one file replay writes that the user did not name: it lives in the
//! system's temporary folder (`TMPDIR`), holds what the published log's entries hold, carries the
//! verified checkpoint, and is removed when the command ends. Nothing in it is read before the whole
//! published log has verified against the signed checkpoint.

use crate::error::Error;
use crate::prove::InclusionProof;
use log::bundle::{BundleStream, CarriedCheckpoint};
use log::merkle::{leaf_hash, verify_inclusion};
use log::Source;
use std::io::BufWriter;
use std::path::Path;
use tiles::layout::{tile_for, Tile, CHECKPOINT_PATH, MAX_BUNDLE_BYTES, TILE_WIDTH};
use tiles::verify::{verify_note, Policy, SignedHead, Walked};
use tiles::{Fetch, TileHashes};
use tlog::VerifierKey;

/// Requests in flight while fetching a published log.
pub const FETCH_THREADS: usize = tiles::verify::DEFAULT_FETCH_THREADS;

/// The keys a published log's checkpoint must verify with.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The log's key.
    pub key: VerifierKey,
    /// Witnesses whose cosignatures count.
    pub witnesses: Vec<VerifierKey>,
    /// How many must have cosigned.
    pub min_witnesses: usize,
}

impl Keys {
    fn policy(&self) -> Policy<'_> {
        Policy { key: &self.key, witnesses: &self.witnesses, min_witnesses: self.min_witnesses }
    }
}

/// Whether SOURCE names a published log: an `http(s)://` prefix, or a folder holding `checkpoint` and
/// `tile/` (and no `segments/`).
pub fn is_published(source: &Path) -> bool {
    let text = source.to_string_lossy();
    if tiles::fetch::is_url(&text) {
        return true;
    }
    source.join(CHECKPOINT_PATH).is_file() && source.join("tile").is_dir() && !source.join("segments").exists()
}

fn fetcher(source: &Path) -> Box<dyn Fetch> {
    tiles::fetch::open(&source.to_string_lossy())
}

/// The published log's checkpoint, verified.
pub fn checkpoint(source: &Path, keys: &Keys) -> Result<SignedHead, Error> {
    let fetch = fetcher(source);
    Ok(tiles::read_checkpoint(fetch.as_ref(), CHECKPOINT_PATH, &keys.policy())?)
}

/// `replay verify-tiles`: the checkpoint, then every tile and entry (or, with `since`, an older
/// checkpoint of the same log, only what is new and that the log extends it).
pub fn verify(
    source: &Path,
    keys: &Keys,
    since: Option<(&Path, Vec<u8>)>,
    progress: &mut dyn FnMut(u64),
) -> Result<(SignedHead, Walked), Error> {
    let fetch = fetcher(source);
    let head = tiles::read_checkpoint(fetch.as_ref(), CHECKPOINT_PATH, &keys.policy())?;
    let old = match since {
        None => None,
        Some((path, note)) => Some(verify_note(note, &path.display().to_string(), &keys.policy())?),
    };
    let walked = tiles::walk(fetch.as_ref(), &head, old.as_ref(), FETCH_THREADS, progress, &mut |_, _| Ok(()))?;
    Ok((head, walked))
}

/// A published log copied, verified, into a temporary bundle.
pub struct Mirror {
    /// The bundle, opened.
    pub source: Source,
    /// The checkpoint it verified against.
    pub head: SignedHead,
    /// What the walk checked.
    pub walked: Walked,
    _dir: tempfile::TempDir,
}

/// Fetches and verifies the published log at `source` into a temporary bundle and opens it.
pub fn mirror(source: &Path, keys: &Keys, progress: &mut dyn FnMut(u64, u64)) -> Result<Mirror, Error> {
    let fetch = fetcher(source);
    let head = tiles::read_checkpoint(fetch.as_ref(), CHECKPOINT_PATH, &keys.policy())?;
    let dir = tempfile::Builder::new()
        .prefix("replay-published-")
        .tempdir()
        .map_err(|e| Error::Output { path: std::env::temp_dir(), source: e })?;
    let path = dir.path().join("published.plb");
    let io = |e: std::io::Error| Error::Output { path: path.clone(), source: e };
    #[expect(
        clippy::disallowed_methods,
        reason = "the one file replay creates unasked: the temporary copy of a published log, in the system's temporary folder, removed with it"
    )]
    let file = std::fs::File::create(&path).map_err(io)?;
    let bundle_error = |e: log::bundle::BundleError| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) };
    let mut stream = BundleStream::new(BufWriter::with_capacity(1 << 20, file), &path, 0)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let size = head.checkpoint.size;
    let walked =
        tiles::walk(fetch.as_ref(), &head, None, FETCH_THREADS, &mut |n| progress(n, size), &mut |_, body| {
            stream.push(body).map_err(bundle_error)
        })?;
    let carried = CarriedCheckpoint { size, note: head.note.clone() };
    let (written, _) =
        stream.finish_with_checkpoints(&[carried]).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    assert_eq!((written.records, written.root), (size, head.checkpoint.root), "the walk verified these records");
    let source = crate::open(&path)?;
    Ok(Mirror { source, head, walked, _dir: dir })
}

/// `replay prove` on a published log: the inclusion proof of `position` in the checkpoint's tree, read
/// from the tiles it needs, with the record's entry checked against its leaf hash and the proof
/// against the signed root. `size` must be the checkpoint's (a publication serves proofs for it).
pub fn prove(source: &Path, keys: &Keys, position: u64, size: Option<u64>) -> Result<InclusionProof, Error> {
    let fetch = fetcher(source);
    let head = tiles::read_checkpoint(fetch.as_ref(), CHECKPOINT_PATH, &keys.policy())?;
    let tree = head.checkpoint.size;
    if size.is_some_and(|s| s != tree) {
        return Err(Error::Usage(format!(
            "a published log proves inclusion in its checkpoint's tree of {tree} records; --size must be {tree} or left out"
        )));
    }
    if position >= tree {
        return Err(Error::Usage(format!("position {position} is past the published log's {tree} records")));
    }
    let reader = TileHashes::new(fetch.as_ref(), tree);
    let leaf = reader.leaf(position).map_err(tiles::VerifyError::from)?;
    let Some(level0) = tile_for(tree, 0, position) else { unreachable!("position {position} < {tree}") };
    let bundle = Tile::entries(level0.index, level0.width);
    let bundle_path = bundle.path();
    let data = fetch.fetch(&bundle_path, MAX_BUNDLE_BYTES as u64).map_err(tiles::VerifyError::from)?;
    let location = fetch.location(&bundle_path);
    let entries = tiles::builder::parse_bundle(&data, bundle.width)
        .ok_or(tiles::VerifyError::Bundle { location: location.clone(), width: bundle.width })?;
    let entry = entries.get((position % TILE_WIDTH) as usize).copied().unwrap_or_default();
    if leaf_hash(entry) != leaf {
        return Err(tiles::VerifyError::Entry { location, position, tile: fetch.location(&level0.path()) }.into());
    }
    let proof = reader.inclusion(position).map_err(tiles::VerifyError::from)?;
    if !verify_inclusion(&leaf, position as usize, tree as usize, &proof, &head.checkpoint.root) {
        return Err(tiles::VerifyError::Root {
            location: fetch.location(CHECKPOINT_PATH),
            size: tree,
            computed: "(the tiles' inclusion proof does not reach it)".into(),
            signed: log::source::hex(&head.checkpoint.root),
        }
        .into());
    }
    Ok(InclusionProof::new(position, tree, leaf, head.checkpoint.root, proof))
}

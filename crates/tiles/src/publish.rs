//! Publishing a ledger as C2SP tlog-tiles in a folder any static server can serve (docs/TILES.md).
//!
//! Incremental and crash-safe:
//! - a run writes only the tiles and bundles that the new checkpoint needs and the published one did
//!   not (the right edge is taken from the published partial tiles, checked against the published
//!   root, which must be the ledger's root at that size);
//! - a file is never rewritten: one that exists must hold exactly the bytes this run would write (a
//!   leftover of an interrupted run), or the run stops;
//! - partial tiles of every published size stay (the spec requires them for each checkpoint);
//! - every tile and bundle is durable (one `syncfs`) before the new `checkpoint` replaces the old by
//!   rename, so a reader never sees a checkpoint whose tiles are missing. A run killed at any point
//!   leaves the layout verifying at the previous checkpoint, and the next run completes it.

use crate::builder::{tile_bytes, Builder, Bundler, EntryTooLarge};
use crate::fetch::DirFetch;
use crate::layout::{Tile, CHECKPOINT_PATH, MAX_BUNDLE_BYTES, TILE_WIDTH};
use crate::reader::{TileError, TileHashes};
use log::merkle::leaf_hash;
use log::{ReadError, Source};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use tlog::checkpoint::Checkpoint;
use tlog::note::Note;

/// The file that marks a folder as a posledger publication (so an interrupted first run can go on,
/// and a folder that is something else is never written into).
pub const MARKER_PATH: &str = ".posledger-tiles";
/// Records between two calls of the progress callback.
pub const PROGRESS_EVERY_RECORDS: u64 = 65_536;

/// Why a publish failed. Nothing is ever deleted; the published checkpoint is replaced only at the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The ledger could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The checkpoint to publish is not a checkpoint.
    #[error("the checkpoint to publish: {0}")]
    Checkpoint(String),
    /// The checkpoint to publish is not of this ledger.
    #[error("the checkpoint of {size} records signs root {signed}, the ledger's root at that size is {ledger}")]
    NotThisLedger {
        /// Its size.
        size: u64,
        /// Its root (hex).
        signed: String,
        /// The ledger's (hex).
        ledger: String,
    },
    /// The checkpoint is past the ledger's end.
    #[error("the checkpoint has {size} records, the ledger {ledger}")]
    PastEnd {
        /// Its size.
        size: u64,
        /// The ledger's.
        ledger: u64,
    },
    /// The folder is not empty and not a publication.
    #[error("{path}: not empty and not a posledger publication (no {MARKER_PATH}): refusing to write into it")]
    NotALayout {
        /// The folder.
        path: PathBuf,
    },
    /// The folder publishes another log.
    #[error("{path}: {reason}")]
    Foreign {
        /// The folder or file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The folder publishes more records than the checkpoint.
    #[error("{path}: already publishes {published} records, more than the {size} of the checkpoint to publish")]
    Ahead {
        /// The folder.
        path: PathBuf,
        /// Published size.
        published: u64,
        /// The checkpoint's.
        size: u64,
    },
    /// The published tiles are damaged.
    #[error("{path}: the published tiles are damaged: {source}")]
    Damaged {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: TileError,
    },
    /// A file exists with other bytes than this run writes.
    #[error("{path}: exists with other contents; a published tile is never rewritten")]
    Conflict {
        /// The file.
        path: PathBuf,
    },
    /// A record is longer than an entry can be.
    #[error("record {position} is {len} bytes; a tlog-tiles entry holds at most 65,535 (records written since the tiles format was adopted are capped there; this ledger is older)")]
    EntryTooLarge {
        /// Its position.
        position: u64,
        /// Its length.
        len: usize,
    },
}

impl From<EntryTooLarge> for PublishError {
    fn from(e: EntryTooLarge) -> Self {
        PublishError::EntryTooLarge { position: e.position, len: e.len }
    }
}

/// What a publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Records published before.
    pub old_size: u64,
    /// Records published now.
    pub size: u64,
    /// Files written (tiles, bundles, the checkpoint).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files that an interrupted run had already written (same bytes, kept).
    pub kept: u64,
}

/// Publishes `source` up to the signed checkpoint `note` (a checkpoint of this ledger) into `out`.
pub fn publish(
    source: &Source,
    note: &[u8],
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Published, PublishError> {
    let checkpoint = parse_checkpoint(note).map_err(PublishError::Checkpoint)?;
    let size = checkpoint.size;
    if size > source.head.size {
        return Err(PublishError::PastEnd { size, ledger: source.head.size });
    }
    let ledger_root = source.frontier_at(size)?.root();
    if ledger_root != checkpoint.root {
        return Err(PublishError::NotThisLedger {
            size,
            signed: log::source::hex(&checkpoint.root),
            ledger: log::source::hex(&ledger_root),
        });
    }
    let published = open_out(out, &checkpoint.origin, source.ledger_id())?;
    let old_size = published.as_ref().map_or(0, |c| c.size);
    if let Some(old) = &published {
        if old.size > size {
            return Err(PublishError::Ahead { path: out.to_owned(), published: old.size, size });
        }
        if old.size == size {
            if old.root != ledger_root {
                return Err(foreign_log(out, old.size));
            }
            return Ok(Published { old_size, size, ..Published::default() });
        }
    }
    let mut writer = Writer { out: out.to_owned(), done: Published { old_size, size, ..Published::default() } };
    let mut builder = match &published {
        None => Builder::new(),
        Some(old) => {
            let fetch = DirFetch::new(out);
            let reader = TileHashes::new(&fetch, old.size);
            let damaged = |source| PublishError::Damaged { path: out.to_owned(), source };
            let builder = crate::verify::right_edge(&reader, old.size).map_err(damaged)?;
            if builder.root() != old.root {
                return Err(PublishError::Foreign {
                    path: out.to_owned(),
                    reason: format!(
                        "its partial tiles do not give the root its checkpoint of {} records signs",
                        old.size
                    ),
                });
            }
            // The published tree extended by this ledger's new records must be the ledger's tree (the
            // checkpoint's): then, trees of one size with one root, the published records are the
            // ledger's. A pass over the new records only, before anything is written.
            let mut probe = builder.clone();
            let mut frames = source.frames(old.size, size);
            while let Some((_, body, _)) = frames.next_frame()? {
                probe.push(leaf_hash(body), &mut |_, _| {});
            }
            if probe.root() != ledger_root {
                return Err(foreign_log(out, old.size));
            }
            builder
        }
    };
    let bundle_start = old_size - old_size % TILE_WIDTH;
    let mut partial = Vec::new();
    let mut frames = source.frames(bundle_start, old_size);
    while let Some((_, body, _)) = frames.next_frame()? {
        partial.push(body.to_vec());
    }
    let refs: Vec<&[u8]> = partial.iter().map(Vec::as_slice).collect();
    let mut bundler = Bundler::resume(old_size, &refs)?;
    let mut frames = source.frames(old_size, size);
    let mut failed: Option<PublishError> = None;
    while let Some((position, body, _)) = frames.next_frame()? {
        bundler.push(body, &mut |tile, bytes| keep_first(&mut failed, writer.write(tile, bytes)))?;
        builder.push(leaf_hash(body), &mut |tile, hashes| {
            keep_first(&mut failed, writer.write(tile, &tile_bytes(hashes)))
        });
        if let Some(e) = failed.take() {
            return Err(e);
        }
        if (position + 1) % PROGRESS_EVERY_RECORDS == 0 {
            progress(position + 1);
        }
    }
    assert_eq!(builder.size(), size, "every record of the checkpoint was read");
    if let Some((tile, bytes)) = bundler.partial() {
        writer.write(tile, bytes)?;
    }
    for (tile, hashes) in builder.partial_tiles() {
        // A level whose hash count did not change has the same partial tile as the published size.
        let crate::layout::Kind::Hashes(level) = tile.kind else { continue };
        if crate::layout::hashes_at(old_size, level) != crate::layout::hashes_at(size, level) {
            writer.write(tile, &tile_bytes(hashes))?;
        }
    }
    assert_eq!(builder.root(), checkpoint.root, "the tiles give the root the ledger gave");
    writer.sync_all()?;
    writer.replace_checkpoint(note)?;
    progress(size);
    Ok(writer.done)
}

fn foreign_log(out: &Path, old_size: u64) -> PublishError {
    PublishError::Foreign {
        path: out.join(CHECKPOINT_PATH),
        reason: format!("publishes another log: its first {old_size} records are not this ledger's"),
    }
}

fn keep_first(slot: &mut Option<PublishError>, result: Result<(), PublishError>) {
    if let (None, Err(e)) = (&slot, result) {
        *slot = Some(e);
    }
}

fn parse_checkpoint(note: &[u8]) -> Result<Checkpoint, String> {
    let note = Note::parse(note).map_err(|e| e.to_string())?;
    Checkpoint::parse(note.text()).map_err(|e| e.to_string())
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io { path: path.to_owned(), source }
}

/// What the marker file says: the origin the folder publishes and, since it was added, the ledger id
/// (docs/TILES.md). Unsigned: it names the log; the signed checkpoint and the root prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The checkpoint origin (the log key's name).
    pub origin: String,
    /// The id of the ledger the records come from (`docs/FORMAT.md`), when the marker says.
    pub ledger_id: Option<u64>,
}

/// The marker's first line.
const MARKER_HEADER: &str = "posledger tlog-tiles publication";
/// The longest marker read.
pub const MAX_MARKER_BYTES: u64 = 4096;

impl Marker {
    /// The marker's bytes.
    pub fn encode(&self) -> String {
        let mut text = format!("{MARKER_HEADER}\norigin {}\n", self.origin);
        if let Some(id) = self.ledger_id {
            text.push_str(&format!("ledger {id:016x}\n"));
        }
        text
    }

    /// Parses a marker; `None` if it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(bytes).ok()?;
        let body = text.strip_suffix('\n')?;
        let mut lines = body.split('\n');
        if lines.next()? != MARKER_HEADER {
            return None;
        }
        let origin = lines.next()?.strip_prefix("origin ")?.to_owned();
        let ledger_id = match lines.next() {
            None => None,
            Some(line) => {
                let hex = line.strip_prefix("ledger ")?;
                if hex.len() != 16 {
                    return None;
                }
                Some(u64::from_str_radix(hex, 16).ok()?)
            }
        };
        if lines.next().is_some() {
            return None;
        }
        let marker = Marker { origin, ledger_id };
        (marker.encode().as_bytes() == bytes).then_some(marker)
    }
}

/// The marker a publication serves, if it serves one that parses (a publication copied without its
/// dot-files, or one an older posledger wrote elsewhere, may have none).
pub fn read_marker(fetch: &dyn crate::Fetch) -> Result<Option<Marker>, crate::FetchError> {
    match fetch.fetch(MARKER_PATH, MAX_MARKER_BYTES) {
        Ok(bytes) => Ok(Marker::parse(&bytes)),
        Err(crate::FetchError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens (or creates) the publication folder; the checkpoint it publishes, if any. A folder whose
/// marker names the origin but no ledger id (written before the marker said it) is accepted as it is.
fn open_out(out: &Path, origin: &str, ledger_id: Option<u64>) -> Result<Option<Checkpoint>, PublishError> {
    let marker = out.join(MARKER_PATH);
    let marker_text = Marker { origin: origin.to_owned(), ledger_id }.encode();
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(io_at(out))?;
            write_new(&marker, marker_text.as_bytes())?;
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            sync_dir(out)?;
            return Ok(None);
        }
        Err(e) => return Err(PublishError::Io { path: out.to_owned(), source: e }),
        Ok(meta) if !meta.is_dir() => return Err(PublishError::NotALayout { path: out.to_owned() }),
        Ok(_) => {}
    }
    match read_small(&marker, MAX_MARKER_BYTES)? {
        Some(text) => match Marker::parse(&text) {
            Some(found) if found.origin == origin && (found.ledger_id.is_none() || found.ledger_id == ledger_id) => {}
            Some(found) if found.origin == origin => {
                return Err(PublishError::Foreign {
                    path: marker,
                    reason: format!(
                        "publishes the ledger {:016x} of origin {origin}, not this ledger ({})",
                        found.ledger_id.unwrap_or_default(),
                        ledger_id.map_or_else(|| "without an id".to_owned(), |id| format!("{id:016x}"))
                    ),
                })
            }
            _ => {
                return Err(PublishError::Foreign {
                    path: marker,
                    reason: format!("publishes another log, not {origin}"),
                })
            }
        },
        None => {
            let empty = fs::read_dir(out).map_err(io_at(out))?.next().is_none();
            if !empty {
                return Err(PublishError::NotALayout { path: out.to_owned() });
            }
            write_new(&marker, marker_text.as_bytes())?;
            sync_dir(out)?;
        }
    }
    let path = out.join(CHECKPOINT_PATH);
    let Some(note) = read_small(&path, tlog::note::MAX_NOTE_BYTES as u64)? else { return Ok(None) };
    let published = parse_checkpoint(&note).map_err(|reason| PublishError::Foreign { path: path.clone(), reason })?;
    if published.origin != origin {
        return Err(PublishError::Foreign {
            path,
            reason: format!("publishes the log {:?}, not {origin:?}", published.origin),
        });
    }
    Ok(Some(published))
}

/// The bytes of a file (at most `limit`), `None` when it does not exist.
fn read_small(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, PublishError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PublishError::Io { path: path.to_owned(), source: e }),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io_at(path))?;
    if bytes.len() as u64 > limit {
        return Err(PublishError::Conflict { path: path.to_owned() });
    }
    Ok(Some(bytes))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io_at(path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_at(path))
}

fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

struct Writer {
    out: PathBuf,
    done: Published,
}

impl Writer {
    /// Writes an immutable tile or bundle: by temporary file and link, never over an existing file.
    fn write(&mut self, tile: Tile, bytes: &[u8]) -> Result<(), PublishError> {
        let path = self.out.join(tile.path());
        if let Some(existing) = read_small(&path, MAX_BUNDLE_BYTES as u64)? {
            if existing != bytes {
                return Err(PublishError::Conflict { path });
            }
            self.done.kept += 1;
            return Ok(());
        }
        let Some(parent) = path.parent() else { return Err(PublishError::Conflict { path }) };
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(io_at(parent))?;
        temp.write_all(bytes).map_err(io_at(temp.path()))?;
        temp.persist_noclobber(&path).map_err(|e| PublishError::Io { path: path.clone(), source: e.error })?;
        self.done.files += 1;
        self.done.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Makes every file written durable, with one `syncfs` of the folder's file system.
    fn sync_all(&self) -> Result<(), PublishError> {
        let dir = fs::File::open(&self.out).map_err(io_at(&self.out))?;
        rustix::fs::syncfs(&dir).map_err(|e| PublishError::Io { path: self.out.clone(), source: e.into() })
    }

    /// Replaces `checkpoint` (temporary file, fsync, rename, fsync of the folder).
    fn replace_checkpoint(&mut self, note: &[u8]) -> Result<(), PublishError> {
        let path = self.out.join(CHECKPOINT_PATH);
        let mut temp = tempfile::NamedTempFile::new_in(&self.out).map_err(io_at(&self.out))?;
        temp.write_all(note).and_then(|()| temp.as_file().sync_all()).map_err(io_at(temp.path()))?;
        temp.persist(&path).map_err(|e| PublishError::Io { path: path.clone(), source: e.error })?;
        sync_dir(&self.out)?;
        self.done.files += 1;
        self.done.bytes += note.len() as u64;
        Ok(())
    }
}

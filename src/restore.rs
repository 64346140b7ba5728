//! `posledger restore`: a ledger rebuilt in a new folder from a bundle, a ledger folder, or a log
//! published as tiles (docs/TILES.md), every record through the writer's own checks
//! ([`ledger::Restore`]). Where the records come from is a [`RecordBodies`]; the restore itself is one
//! loop ([`restore`]).

use ledger::bundle::CarriedCheckpoint;
use ledger::{ReadError, Source};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use tiles::{Fetch, SignedHead, VerifyError, Walked};

/// Why an origin could not give its records: a damaged or unreadable bundle or folder, or a published
/// log that does not verify (named by its tile, bundle or entry) or cannot be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// A bundle or ledger folder.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A published log.
    #[error(transparent)]
    Tiles(#[from] VerifyError),
}

impl OriginError {
    /// Whether the origin's data is at fault (exit 1), not the OS or the network (exit 2).
    pub fn is_data(&self) -> bool {
        match self {
            OriginError::Read(e) => !matches!(e, ReadError::Io { .. }),
            OriginError::Tiles(e) => e.is_data(),
        }
    }
}

/// Where `posledger restore` reads a log from: the record bodies in position order, as stored
/// (format byte included), with what the restored log must match. A ledger folder or a bundle
/// ([`SourceBodies`]) is one, a published log ([`TileBodies`]) another.
pub trait RecordBodies {
    /// What the origin is, for messages (a path, a URL).
    fn name(&self) -> String;
    /// The head the restored log must have: the source's head, or its signed checkpoint's size and root.
    fn expected(&self) -> ledger::Head;
    /// The ledger id the log's files carry, if they say.
    fn ledger_id(&self) -> Option<u64>;
    /// The signed checkpoints the origin carries (unverified note bytes).
    fn checkpoints(&self) -> Result<Vec<CarriedCheckpoint>, OriginError>;
    /// The next body and its position; `None` after the last, and only once the whole origin has
    /// checked (frame CRCs for a bundle or folder; entries, tiles and the signed root for a
    /// publication). An error names the position and the file or URL.
    fn next_body(&mut self) -> Result<Option<(u64, &[u8])>, OriginError>;
}

/// A bundle or ledger folder as [`RecordBodies`].
pub struct SourceBodies {
    source: Source,
    frames: ledger::source::FrameIter,
}

impl SourceBodies {
    /// Reads every committed record of `source`.
    pub fn new(source: Source) -> SourceBodies {
        let frames = source.frames(0, source.head.size);
        SourceBodies { source, frames }
    }
}

impl RecordBodies for SourceBodies {
    fn name(&self) -> String {
        self.source.path.display().to_string()
    }
    fn expected(&self) -> ledger::Head {
        self.source.head
    }
    fn ledger_id(&self) -> Option<u64> {
        self.source.ledger_id()
    }
    fn checkpoints(&self) -> Result<Vec<CarriedCheckpoint>, OriginError> {
        Ok(self.source.checkpoints()?)
    }
    fn next_body(&mut self) -> Result<Option<(u64, &[u8])>, OriginError> {
        Ok(self.frames.next_frame()?.map(|(position, body, _)| (position, body)))
    }
}

/// Entries handed from the walk to the restore in one message (one entry bundle's worth).
const CHUNK_ENTRIES: usize = tiles::layout::TILE_WIDTH as usize;
/// Chunks in flight between the walk and the restore: at most 64 × 256 entries of at most 65,535
/// bytes (about 1 GiB in the worst case, a few MiB for a fleet's records).
const CHUNKS_IN_FLIGHT: usize = 64;

type Chunk = Vec<(u64, Vec<u8>)>;

/// A log published as tiles (docs/TILES.md), read from a folder or an `http(s)://` prefix: its signed
/// checkpoint verified first, then every entry checked against its level-0 hash and every tile above
/// rebuilt and compared ([`tiles::walk`], on its own thread, a bounded channel away), and the root
/// against the signed one before the last body is reported.
pub struct TileBodies {
    name: String,
    head: SignedHead,
    ledger_id: Option<u64>,
    chunks: Receiver<Chunk>,
    walk: Option<JoinHandle<Result<Walked, VerifyError>>>,
    chunk: std::vec::IntoIter<(u64, Vec<u8>)>,
    current: Vec<u8>,
}

impl TileBodies {
    /// Starts reading the publication `fetch` serves, whose checkpoint `head` has verified. The ledger id
    /// is the one its marker names for the checkpoint's origin, if it names one.
    pub fn start(name: String, fetch: Box<dyn Fetch + Send>, head: SignedHead) -> Result<TileBodies, OriginError> {
        let ledger_id = tiles::read_marker(fetch.as_ref())
            .map_err(VerifyError::from)?
            .filter(|marker| marker.origin == head.checkpoint.origin)
            .and_then(|marker| marker.ledger_id);
        let (send, chunks) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let walk_head = head.clone();
        let walk = std::thread::Builder::new()
            .name("posledger-restore-walk".into())
            .spawn(move || walk_into(fetch.as_ref(), &walk_head, &send))
            .map_err(|e| VerifyError::Threads { threads: 1, reason: e.to_string() })?;
        Ok(TileBodies {
            name,
            head,
            ledger_id,
            chunks,
            walk: Some(walk),
            chunk: Vec::new().into_iter(),
            current: Vec::new(),
        })
    }

    /// The verified checkpoint the restore is checked against.
    pub fn head(&self) -> &SignedHead {
        &self.head
    }
}

/// The walk, sending its entries in chunks; a restore that stopped reading (its end of the channel
/// dropped) stops the walk.
fn walk_into(fetch: &dyn Fetch, head: &SignedHead, send: &SyncSender<Chunk>) -> Result<Walked, VerifyError> {
    let mut chunk: Chunk = Vec::with_capacity(CHUNK_ENTRIES);
    let mut stopped = false;
    let walked =
        tiles::walk(fetch, head, None, tiles::verify::DEFAULT_FETCH_THREADS, &mut |_| {}, &mut |position, body| {
            chunk.push((position, body.to_vec()));
            if chunk.len() == CHUNK_ENTRIES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ENTRIES));
                if send.send(full).is_err() {
                    stopped = true;
                    return Err("the restore stopped reading".into());
                }
            }
            Ok(())
        })?;
    if !chunk.is_empty() && send.send(chunk).is_err() {
        stopped = true;
    }
    if stopped {
        return Err(VerifyError::Consumer("the restore stopped reading".into()));
    }
    Ok(walked)
}

impl RecordBodies for TileBodies {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn expected(&self) -> ledger::Head {
        ledger::Head { size: self.head.checkpoint.size, root: self.head.checkpoint.root }
    }
    fn ledger_id(&self) -> Option<u64> {
        self.ledger_id
    }
    fn checkpoints(&self) -> Result<Vec<CarriedCheckpoint>, OriginError> {
        Ok(vec![CarriedCheckpoint { size: self.head.checkpoint.size, note: self.head.note.clone() }])
    }
    fn next_body(&mut self) -> Result<Option<(u64, &[u8])>, OriginError> {
        loop {
            if let Some((position, body)) = self.chunk.next() {
                self.current = body;
                return Ok(Some((position, &self.current)));
            }
            match self.chunks.recv() {
                Ok(chunk) => self.chunk = chunk.into_iter(),
                // The walk ended: every entry sent, and its result says whether all of it verified
                // (the root is checked after the last entry).
                Err(mpsc::RecvError) => {
                    let Some(walk) = self.walk.take() else { return Ok(None) };
                    return match walk.join() {
                        Ok(Ok(_)) => Ok(None),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err(VerifyError::Consumer("the walk of the published log panicked".into()).into()),
                    };
                }
            }
        }
    }
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The new ledger.
    pub restored: ledger::Restored,
    /// Signed checkpoints kept in its `checkpoints/` folder.
    pub checkpoints: usize,
}

/// Why [`restore`] failed. The target folder is as it was (the staging folder is removed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreFailure {
    /// The origin could not be read, or a record in it is damaged (named by position and file).
    #[error("{name}: {error}")]
    Read {
        /// The origin.
        name: String,
        /// What failed.
        #[source]
        error: OriginError,
    },
    /// The ledger refused or failed the restore.
    #[error("{0}")]
    Restore(#[from] ledger::RestoreError),
    /// A carried checkpoint could not be kept, or does not match the log.
    #[error(transparent)]
    Checkpoints(#[from] crate::checkpoints::CheckpointStoreError),
}

impl RestoreFailure {
    /// Whether the origin's data was refused (exit 1), not the OS, the network or the usage (exit 2).
    pub fn is_data(&self) -> bool {
        match self {
            RestoreFailure::Read { error, .. } => error.is_data(),
            RestoreFailure::Restore(error) => error.is_refusal(),
            RestoreFailure::Checkpoints(error) => !matches!(error, crate::checkpoints::CheckpointStoreError::Io { .. }),
        }
    }
}

/// Rebuilds a ledger in the new folder `dir` from `bodies`: every record goes through the writer's
/// checks ([`ledger::Restore`]), the restored head must be `bodies.expected()`, and the signed
/// checkpoints the origin carries are checked against the restored log and kept in
/// `dir/checkpoints/`. The folder appears only once all of it is durable. `progress` gets the
/// records restored.
pub fn restore(
    bodies: &mut dyn RecordBodies,
    dir: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreReport, RestoreFailure> {
    let name = bodies.name();
    let read = |error: OriginError| RestoreFailure::Read { name: name.clone(), error };
    // Read before anything is created: a bundle whose checkpoint section is damaged is refused early.
    let carried = bodies.checkpoints().map_err(read)?;
    let expected = bodies.expected();
    let mut restore = ledger::Restore::create(dir, bodies.ledger_id(), ledger::Options::default())?;
    while let Some((position, body)) = bodies.next_body().map_err(read)? {
        assert_eq!(position, restore.pushed(), "bodies come in position order");
        restore.push(body)?;
        if restore.pushed().is_multiple_of(65_536) {
            progress(restore.pushed());
        }
    }
    let carried: Vec<_> = carried.into_iter().filter(|c| c.size <= restore.pushed()).collect();
    let staging = restore.staging_dir().to_owned();
    let kept = crate::checkpoints::store_carried(&staging, restore.pushed(), &carried, &mut |size| {
        restore.root_at(size).map_err(|e| e.to_string())
    })?;
    let restored = restore.finish(expected)?;
    progress(restored.head.size);
    Ok(RestoreReport { restored, checkpoints: kept })
}

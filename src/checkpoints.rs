//! Signed checkpoints of a ledger (docs/CHECKPOINTS.md): signing the head, keeping every signed
//! checkpoint in the ledger folder, and collecting witnesses' cosignatures.
//!
//! Layout: `<ledger>/checkpoints/<size, 20 digits>.checkpoint` holds the log-signed note of that size,
//! written once (temp file, fsync, link into place, fsync the folder) and never changed;
//! `<size>.cosigned` holds the same note with the witnesses' cosignatures added, replaced only by a
//! superset of itself. **The log never signs two inconsistent checkpoints**: before signing, the head
//! must extend the latest signed checkpoint (same origin, a size at least as large, the same root at
//! that size, and its own consistency proof from there checks).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ledger::{Head, Ledger, ReadError};
use tlog::checkpoint::Checkpoint;
use tlog::note::{Note, NoteVerifier};
use tlog::{SigningKey, VerifierKey};

/// The folder of signed checkpoints inside a ledger folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Most checkpoint files read from the folder (a bound on a folder anyone could fill).
pub const MAX_CHECKPOINT_FILES: usize = 1 << 20;

/// Why a checkpoint could not be signed, stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointStoreError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A stored checkpoint that is not a checkpoint this key signed.
    #[error("{path}: {reason}")]
    Stored {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log holds fewer records than a checkpoint it signed: records were cut.
    #[error("refused to sign: the log holds {size} records but it signed a checkpoint of {signed} ({path}); records after {size} were lost or cut")]
    Cut {
        /// The current size.
        size: u64,
        /// The signed size.
        signed: u64,
        /// The signed checkpoint.
        path: PathBuf,
    },
    /// The log's tree at a signed size has another root: the log was rewritten.
    #[error(
        "refused to sign: the log's root at size {signed} is not the one it signed ({path}); the log was rewritten"
    )]
    Rewritten {
        /// The signed size.
        signed: u64,
        /// The signed checkpoint.
        path: PathBuf,
    },
    /// The key names another log than the one this ledger's checkpoints name.
    #[error("refused to sign: this ledger's checkpoints name the log {origin:?}, the key is {key:?}")]
    Origin {
        /// The origin of the stored checkpoints.
        origin: String,
        /// The key's name.
        key: String,
    },
    /// The key or note could not be used.
    #[error(transparent)]
    Checkpoint(#[from] tlog::CheckpointError),
    /// The log could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointStoreError + '_ {
    move |source| CheckpointStoreError::Io { path: path.to_owned(), source }
}

/// A checkpoint the ledger signed.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note's bytes (the log's signature only).
    pub note: Vec<u8>,
    /// Where it is kept.
    pub path: PathBuf,
    /// False when this exact checkpoint was already stored (same size, same bytes).
    pub new: bool,
}

/// The file name of the signed checkpoint of `size`.
pub fn checkpoint_file_name(size: u64) -> String {
    format!("{size:020}.checkpoint")
}

/// The file name of the cosigned checkpoint of `size`.
pub fn cosigned_file_name(size: u64) -> String {
    format!("{size:020}.cosigned")
}

/// The file name of the Merkle frontier kept beside the checkpoint of `size`.
pub fn frontier_file_name(size: u64) -> String {
    format!("{size:020}.frontier")
}

/// The frontier kept beside `checkpoint_path`, if it is there and hashes to the signed root.
fn read_frontier(checkpoint_path: &Path, signed: &Checkpoint) -> Option<ledger::merkle::Frontier> {
    let path = checkpoint_path.with_file_name(frontier_file_name(signed.size));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(path).ok()?, 64 * 32 + 1), &mut bytes)
        .ok()?;
    if bytes.len() > 64 * 32 || bytes.len() % 32 != 0 {
        return None;
    }
    let nodes = bytes.chunks_exact(32).map(|c| c.try_into().ok()).collect::<Option<Vec<ledger::merkle::Hash>>>()?;
    let frontier = ledger::merkle::Frontier::from_parts(signed.size, nodes)?;
    (frontier.root() == signed.root).then_some(frontier)
}

/// The signed checkpoint files of a ledger folder, smallest size first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointStoreError> {
    let folder = dir.join(CHECKPOINTS_DIR);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointStoreError::Io { path: folder, source: e }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&folder))?;
        let name = entry.file_name();
        let Some(size) = name.to_str().and_then(|n| n.strip_suffix(".checkpoint")).and_then(|n| {
            (n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse::<u64>().ok()).flatten()
        }) else {
            continue;
        };
        if out.len() == MAX_CHECKPOINT_FILES {
            return Err(CheckpointStoreError::Stored {
                path: folder,
                reason: format!("more than {MAX_CHECKPOINT_FILES} checkpoint files"),
            });
        }
        out.push((size, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Reads and verifies a stored checkpoint with `key`.
fn read_stored(path: &Path, key: &VerifierKey) -> Result<Checkpoint, CheckpointStoreError> {
    let bytes = read_bounded(path)?;
    tlog::checkpoint::verify(&bytes, key, &[], 0)
        .map(|v| v.checkpoint)
        .map_err(|e| CheckpointStoreError::Stored { path: path.to_owned(), reason: e.to_string() })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CheckpointStoreError> {
    tlog::note::read_note_file(path).map_err(io(path))
}

/// The latest signed checkpoint of the ledger folder, verified with `key`, or `None`.
pub fn latest(dir: &Path, key: &VerifierKey) -> Result<Option<(Checkpoint, PathBuf)>, CheckpointStoreError> {
    let Some((_, path)) = list(dir)?.pop() else { return Ok(None) };
    Ok(Some((read_stored(&path, key)?, path)))
}

/// Signs the ledger's current head with `key` and keeps it in the ledger folder, after checking that
/// the head extends the latest checkpoint the ledger signed (never two inconsistent checkpoints).
pub fn sign_head(ledger: &Ledger, key: &SigningKey) -> Result<Signed, CheckpointStoreError> {
    let head = ledger.head();
    if let Some((_, path)) = list(ledger.dir())?.pop() {
        // The newest checkpoint names the log this ledger is; a key of another name is another log.
        let bytes = read_bounded(&path)?;
        let origin = Note::parse(&bytes)
            .ok()
            .and_then(|n| Checkpoint::parse(n.text()).ok())
            .map(|c| c.origin)
            .unwrap_or_default();
        if origin != key.name() {
            return Err(CheckpointStoreError::Origin { origin, key: key.name().to_owned() });
        }
        let last = read_stored(&path, &key.verifier_key())?;
        check_extends(ledger, &head, &last, &path)?;
    }
    let checkpoint = Checkpoint::new(key.name(), head.size, head.root);
    let note = checkpoint.sign(key)?;
    let folder = ledger.dir().join(CHECKPOINTS_DIR);
    let path = folder.join(checkpoint_file_name(head.size));
    // The frontier at the head, for the next signature's check (written first: a checkpoint never
    // lacks it because of a crash between the two).
    let source = ledger.source();
    if source.frontier.size() == head.size && source.frontier.root() == head.root {
        let bytes: Vec<u8> = source.frontier.nodes().iter().flatten().copied().collect();
        write_once(&folder, &folder.join(frontier_file_name(head.size)), &bytes)?;
    }
    let new = write_once(&folder, &path, &note)?;
    Ok(Signed { checkpoint, note, path, new })
}

/// Checks that the log of `head` extends the signed `last`: the log's frontier at `last.size` hashes
/// to the signed root, and the same frontier, continued with the records from there to the head,
/// hashes to the head's root. That is the consistency of the two (the first `last.size` records of
/// this log are the signed ones), checked without a proof.
///
/// Cost: the records since the last checkpoint. The frontier resumes from the one kept beside the
/// last checkpoint (`<size>.frontier`, used only if it hashes to the signed root), else from the
/// nearest sealed segment's trailer at or before `last.size` (the ledger's own, CRC-checked, its
/// frontier checked against its root), so signing after every append stays cheap on a log of
/// millions of records. A record before `last.size` that changed since the signature changes the
/// head's root (the ledger computes it from the records), so the continuation cannot match it.
fn check_extends(ledger: &Ledger, head: &Head, last: &Checkpoint, path: &Path) -> Result<(), CheckpointStoreError> {
    if last.size > head.size {
        return Err(CheckpointStoreError::Cut { size: head.size, signed: last.size, path: path.to_owned() });
    }
    let rewritten = || CheckpointStoreError::Rewritten { signed: last.size, path: path.to_owned() };
    let source = ledger.source();
    let stored = read_frontier(path, last);
    let mut frontier = stored.unwrap_or_else(|| {
        source
            .files
            .iter()
            .filter_map(|f| f.trailer.as_ref())
            .rfind(|t| t.log_size <= last.size)
            .and_then(|t| t.checked_frontier())
            .unwrap_or_default()
    });
    let mut frames = source.frames(frontier.size(), head.size);
    let mut at_last = (frontier.size() == last.size).then(|| frontier.root());
    while let Some((position, body, _)) = frames.next_frame()? {
        frontier.push_leaf(body);
        if position + 1 == last.size {
            at_last = Some(frontier.root());
        }
    }
    if at_last != Some(last.root) {
        return Err(rewritten());
    }
    if frontier.size() != head.size || frontier.root() != head.root {
        return Err(rewritten());
    }
    Ok(())
}

/// Writes `bytes` to `path` unless it holds them already: a temporary file, fsync, a hard link into
/// place (which never replaces a file), fsync of the folder. `Ok(false)` when it was there already.
fn write_once(folder: &Path, path: &Path, bytes: &[u8]) -> Result<bool, CheckpointStoreError> {
    if let Ok(existing) = tlog::note::read_note_file(path) {
        if existing == bytes {
            return Ok(false);
        }
        return Err(CheckpointStoreError::Stored {
            path: path.to_owned(),
            reason: "another checkpoint of this size is stored (the log was rewritten?)".into(),
        });
    }
    create_dir_durably(folder)?;
    let tmp = temporary_beside(folder, path);
    write_synced(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(io(path))?;
    sync_dir(folder)?;
    Ok(true)
}

/// The temporary file a write of `path` goes through, in `folder` (this process's own name).
fn temporary_beside(folder: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    folder.join(format!(".tmp-{}-{name}", std::process::id()))
}

/// Replaces `path` by `bytes` atomically (temp, fsync, rename, fsync the folder).
fn replace(folder: &Path, path: &Path, bytes: &[u8]) -> Result<(), CheckpointStoreError> {
    create_dir_durably(folder)?;
    let tmp = temporary_beside(folder, path);
    write_synced(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CheckpointStoreError::Io { path: path.to_owned(), source: e });
    }
    sync_dir(folder)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointStoreError> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path))?;
    let result = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = result {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CheckpointStoreError::Io { path: path.to_owned(), source: e });
    }
    Ok(())
}

fn create_dir_durably(folder: &Path) -> Result<(), CheckpointStoreError> {
    match std::fs::create_dir(folder) {
        Ok(()) => {
            if let Some(parent) = folder.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CheckpointStoreError::Io { path: folder.to_owned(), source: e }),
    }
}

fn sync_dir(folder: &Path) -> Result<(), CheckpointStoreError> {
    std::fs::File::open(folder).and_then(|d| d.sync_all()).map_err(io(folder))
}

/// Adds verified cosignatures to the stored cosigned checkpoint of `signed`'s size (created from the
/// signed note when absent; an existing one is only ever replaced by a superset of itself). Returns
/// its path.
pub fn store_cosigned(
    dir: &Path,
    signed: &Signed,
    cosignatures: &[tlog::note::Signature],
) -> Result<PathBuf, CheckpointStoreError> {
    let folder = dir.join(CHECKPOINTS_DIR);
    let path = folder.join(cosigned_file_name(signed.checkpoint.size));
    let mut note = match tlog::note::read_note_file(&path) {
        Ok(bytes) => {
            let stored = Note::parse(&bytes)
                .map_err(|e| CheckpointStoreError::Stored { path: path.clone(), reason: e.to_string() })?;
            if stored.text() != signed.checkpoint.to_text() {
                return Err(CheckpointStoreError::Stored { path, reason: "holds another checkpoint".into() });
            }
            stored
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Note::parse(&signed.note)
            .map_err(|e| CheckpointStoreError::Stored { path: path.clone(), reason: e.to_string() })?,
        Err(e) => return Err(CheckpointStoreError::Io { path, source: e }),
    };
    for cosignature in cosignatures {
        note.add(cosignature.clone());
    }
    replace(&folder, &path, &note.to_bytes())?;
    Ok(path)
}

/// Checks a witness's response body against its key: the cosignature lines of `witness` over the
/// checkpoint, verified. Lines of other keys are ignored (tlog-witness: "MUST ignore").
pub fn verify_cosignatures(
    signed: &Signed,
    body: &[u8],
    witness: &VerifierKey,
) -> Result<Vec<tlog::note::Signature>, tlog::NoteError> {
    let lines = tlog::note::parse_signature_lines(body)?;
    let text = signed.checkpoint.to_text();
    let mut out = Vec::new();
    for line in lines {
        if line.name() != witness.name() || line.key_id() != witness.key_id() {
            continue;
        }
        if NoteVerifier::verify(witness, text.as_bytes(), line.signature()).is_none() {
            return Err(tlog::NoteError::BadSignature { name: line.name().to_owned(), key_id: line.key_id() });
        }
        out.push(line);
    }
    if out.is_empty() {
        return Err(tlog::NoteError::Unverified);
    }
    Ok(out)
}

/// Keeps in the ledger folder `dir` the signed checkpoints a source carried (a bundle's section, a
/// folder's `checkpoints/`), after checking each against the log in `dir`: its note parses as a
/// checkpoint of the size it is carried as, at most `size` (the log's), whose root is the log's root at
/// that size (`root_at`). The log's own signature lines (those named as the checkpoint's origin, which
/// is the log key's name) make `<size>.checkpoint`; a note that also holds other (witnesses')
/// signatures is kept whole as `<size>.cosigned`. Signatures are not verified here (no key is known):
/// `posledger checkpoint` verifies the latest with the log's key before it signs again. Returns how
/// many were kept.
pub fn store_carried(
    dir: &Path,
    size: u64,
    carried: &[ledger::bundle::CarriedCheckpoint],
    root_at: &mut dyn FnMut(u64) -> Result<ledger::merkle::Hash, String>,
) -> Result<usize, CheckpointStoreError> {
    let folder = dir.join(CHECKPOINTS_DIR);
    for c in carried {
        let path = folder.join(checkpoint_file_name(c.size));
        let bad = |reason: String| CheckpointStoreError::Stored { path: path.clone(), reason };
        let note = Note::parse(&c.note).map_err(|e| bad(format!("carried checkpoint of size {}: {e}", c.size)))?;
        let checkpoint = Checkpoint::parse(note.text())?;
        if checkpoint.size != c.size || checkpoint.size > size {
            return Err(bad(format!(
                "carried as size {} but the note is of size {} (the log holds {size})",
                c.size, checkpoint.size
            )));
        }
        let root = root_at(c.size).map_err(bad)?;
        if root != checkpoint.root {
            return Err(bad(format!("the log's root at size {} is not the one this checkpoint signs", c.size)));
        }
        let mut own = Note::unsigned(note.text()).map_err(|e| bad(e.to_string()))?;
        let mut others = 0usize;
        for signature in note.signatures() {
            if signature.name() == checkpoint.origin {
                own.add(signature.clone());
            } else {
                others += 1;
            }
        }
        if own.signatures().is_empty() {
            return Err(bad(format!("carried checkpoint of size {} holds no signature of its log", c.size)));
        }
        write_once(&folder, &path, &own.to_bytes())?;
        if others > 0 {
            replace(&folder, &folder.join(cosigned_file_name(c.size)), &c.note)?;
        }
    }
    Ok(carried.len())
}

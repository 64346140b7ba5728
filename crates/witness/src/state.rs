//! The witness's durable state: per log origin, the latest checkpoint it cosigned, as one file
//! `<hex SHA-256 of the origin>.checkpoint` holding the note with the log's signatures and the
//! witness's cosignature (what `GET /<origin hash>/checkpoint` serves).
//!
//! A new state is written to a temporary file, fsynced, renamed over the old one, and the folder is
//! fsynced, all before the witness answers: a crash at any point leaves either the old or the new
//! state, never a rollback and never half a file. On start every state file is verified (the log's
//! signature and the witness's own cosignature); a damaged one stops the witness instead of being
//! forgotten, since forgetting a state is exactly the rollback a witness exists to prevent.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tlog::checkpoint::Checkpoint;
use tlog::note::{Note, NoteVerifier};
use tlog::witness::{Accepted, Latest, LogPolicy};
use tlog::VerifierKey;

/// Most state files read on start.
pub const MAX_STATE_FILES: usize = 100_000;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file or the folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A state file that does not verify: the witness refuses to start rather than forget it.
    #[error(
        "{path}: {reason} (the witness will not start without its state: restore the file or retire this witness)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_owned(), source }
}

/// The hex SHA-256 of an origin: its state file's stem and its monitoring URL's segment.
pub fn origin_hash(origin: &str) -> String {
    Sha256::digest(origin.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The latest cosigned checkpoint of every log, in memory and on disk.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    logs: HashMap<String, (Latest, Vec<u8>)>,
}

impl State {
    /// Opens (or creates) the state folder and verifies every state file of a configured log with the
    /// log's keys and the witness's own key.
    pub fn open(dir: &Path, logs: &[LogPolicy], own: &VerifierKey) -> Result<State, StateError> {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                sync_dir(parent)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StateError::Io { path: dir.to_owned(), source: e }),
        }
        let mut state = State { dir: dir.to_owned(), logs: HashMap::new() };
        for policy in logs {
            let path = state.path_of(&policy.origin);
            let bytes = match read_bounded(&path) {
                Ok(bytes) => bytes,
                Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let latest = verify_state(&path, &bytes, policy, own)?;
            state.logs.insert(policy.origin.clone(), (latest, bytes));
        }
        state.remove_temporaries()?;
        Ok(state)
    }

    fn path_of(&self, origin: &str) -> PathBuf {
        self.dir.join(format!("{}.checkpoint", origin_hash(origin)))
    }

    /// Temporary files are the witness's own, left by a crash before their rename: never a state.
    fn remove_temporaries(&self) -> Result<(), StateError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for (i, entry) in entries.enumerate() {
            if i >= MAX_STATE_FILES {
                break;
            }
            let entry = entry.map_err(io(&self.dir))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(())
    }

    /// The latest checkpoint cosigned for `origin`.
    pub fn latest(&self, origin: &str) -> Option<Latest> {
        self.logs.get(origin).map(|(latest, _)| latest.clone())
    }

    /// The stored note for the origin whose hash is `hash` (the monitoring API).
    pub fn note_by_hash(&self, hash: &str) -> Option<&[u8]> {
        self.logs.iter().find(|(origin, _)| origin_hash(origin) == hash).map(|(_, (_, note))| note.as_slice())
    }

    /// Persists `accepted` durably, then makes it the latest in memory.
    pub fn persist(&mut self, accepted: &Accepted) -> Result<(), StateError> {
        let origin = &accepted.checkpoint.origin;
        let path = self.path_of(origin);
        let tmp = self.dir.join(format!(".tmp-{}-{}", std::process::id(), origin_hash(origin)));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io(&tmp))?;
        let written = file.write_all(&accepted.note).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StateError::Io { path, source: e });
        }
        sync_dir(&self.dir)?;
        self.logs.insert(origin.clone(), (accepted.latest(), accepted.note.clone()));
        Ok(())
    }
}

fn verify_state(path: &Path, bytes: &[u8], policy: &LogPolicy, own: &VerifierKey) -> Result<Latest, StateError> {
    let damaged = |reason: String| StateError::Damaged { path: path.to_owned(), reason };
    let note = Note::parse(bytes).map_err(|e| damaged(e.to_string()))?;
    let mut known: Vec<&dyn NoteVerifier> = policy.keys.iter().map(|k| k as &dyn NoteVerifier).collect();
    known.push(own);
    let opened = note.open(&known).map_err(|e| damaged(e.to_string()))?;
    let has = |key: &VerifierKey| opened.verified.iter().any(|(n, id, _)| n == key.name() && *id == key.key_id());
    if !has(own) {
        return Err(damaged("it does not carry this witness's cosignature".into()));
    }
    if !policy.keys.iter().any(has) {
        return Err(damaged("it does not carry the log's signature".into()));
    }
    let checkpoint = Checkpoint::parse(note.text()).map_err(|e| damaged(e.to_string()))?;
    if checkpoint.origin != policy.origin {
        return Err(damaged(format!("it holds a checkpoint of {:?}", checkpoint.origin)));
    }
    Ok(Latest { size: checkpoint.size, root: checkpoint.root })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, StateError> {
    tlog::note::read_note_file(path).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

//! Key files. A private key file holds one private key text and a newline; it is created with mode
//! 0600, never over an existing file, and refused on load when group or others can read or write it
//! (as ssh refuses a loose identity file). Errors name the file, never its contents.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::key::{KeyError, SigningKey, VerifierKey, MAX_KEY_TEXT_BYTES};

/// A key file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be opened, read, created or synced.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A private key file that group or others may access.
    #[error(
        "{path}: the private key file has mode {mode:04o}; it must not be accessible by group or others (chmod 600 it)"
    )]
    LoosePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists: a key is never overwritten.
    #[error("{path}: already exists (a key file is never overwritten)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than any key.
    #[error("{path}: larger than any key file ({MAX_KEY_TEXT_BYTES} bytes)")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file's text is not a key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with the key text.
        #[source]
        source: KeyError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_owned(), source }
}

fn read_bounded(path: &Path, file: std::fs::File) -> Result<Zeroizing<String>, KeyFileError> {
    let mut text = Zeroizing::new(String::new());
    let limit = MAX_KEY_TEXT_BYTES as u64 + 2;
    file.take(limit).read_to_string(&mut text).map_err(io(path))?;
    if text.len() as u64 >= limit {
        return Err(KeyFileError::TooLarge { path: path.to_owned() });
    }
    Ok(text)
}

/// Loads a private key file, refusing one that group or others can access.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mode = file.metadata().map_err(io(path))?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::LoosePermissions { path: path.to_owned(), mode });
    }
    let text = read_bounded(path, file)?;
    SigningKey::parse(&text).map_err(|source| KeyFileError::Key { path: path.to_owned(), source })
}

/// Loads a verifier key: a file holding one vkey, or, when `arg` is not a file, the vkey text itself.
pub fn load_verifier_key(arg: &str) -> Result<VerifierKey, KeyFileError> {
    let path = Path::new(arg);
    let text = match std::fs::File::open(path) {
        Ok(file) => read_bounded(path, file)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && arg.contains('+') => Zeroizing::new(arg.to_owned()),
        Err(e) => return Err(KeyFileError::Io { path: path.to_owned(), source: e }),
    };
    VerifierKey::parse(&text).map_err(|source| KeyFileError::Key { path: path.to_owned(), source })
}

/// Writes `key`'s private key text to a new file of mode 0600 (never over an existing one), syncs it
/// and its folder.
pub fn create_private(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let text = key.private_key_text();
    create_new(path, 0o600, text.as_bytes())
}

/// Writes a verifier key to a new file of mode 0644 (never over an existing one).
pub fn create_public(path: &Path, key: &VerifierKey) -> Result<(), KeyFileError> {
    create_new(path, 0o644, key.to_string().as_bytes())
}

fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), KeyFileError> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists { path: path.to_owned() }
        } else {
            KeyFileError::Io { path: path.to_owned(), source: e }
        }
    })?;
    let written = file.write_all(contents).and_then(|()| file.write_all(b"\n")).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        // The file is ours (create_new): do not leave half a key behind.
        let _ = std::fs::remove_file(path);
        return Err(KeyFileError::Io { path: path.to_owned(), source: e });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyType;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_key_file_is_private_is_never_overwritten_and_loose_ones_are_refused() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.key");
        let key = SigningKey::generate("example.com/log", KeyType::Note)?;
        create_private(&path, &key)?;
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert!(matches!(create_private(&path, &key), Err(KeyFileError::Exists { .. })));
        let loaded = load_signing_key(&path)?;
        assert_eq!(loaded.verifier_key(), key.verifier_key());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
        let err = load_signing_key(&path).err().ok_or("a loose key file was loaded")?;
        assert!(matches!(err, KeyFileError::LoosePermissions { mode: 0o640, .. }), "{err}");
        assert!(!err.to_string().contains(key.private_key_text().as_str()));
        Ok(())
    }

    #[test]
    fn a_verifier_key_is_read_from_a_file_or_given_inline() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = SigningKey::generate("example.com/log", KeyType::Note)?.verifier_key();
        let path = dir.path().join("log.vkey");
        create_public(&path, &key)?;
        assert_eq!(load_verifier_key(&path.to_string_lossy())?, key);
        assert_eq!(load_verifier_key(&key.to_string())?, key);
        assert!(load_verifier_key(&dir.path().join("missing").to_string_lossy()).is_err());
        Ok(())
    }
}

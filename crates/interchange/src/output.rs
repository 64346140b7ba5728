//! Where an `--out` path is written: the one helper behind `replay export --out` and `posledger export
//! --out`.
//!
//! What the path names decides how it is written ([`Output::create`]):
//!
//! - **nothing, or a regular file**: a temporary file `.NAME.tmp-PID` beside it is filled, flushed and
//!   fsynced, renamed over NAME, and the folder fsynced ([`Output::commit`]), so a crash never leaves a
//!   half-written file under the final name. An output dropped without a commit removes its temporary
//!   file. Temporary files of the same NAME left by a process that no longer runs (`kill -9` during an
//!   export) are removed first; nothing else is.
//! - **a character device or a FIFO** (`/dev/null`, a terminal, a named pipe): opened for writing and
//!   written directly, never created, truncated, renamed or replaced.
//! - **a symbolic link**: refused. Following it would write wherever it points, replacing it would
//!   destroy it; neither is what someone who typed the link's name can be assumed to want, so the
//!   error asks for the target's own name.
//! - **a folder, a socket or a block device**: refused.
//!
//! [`check_source`] refuses an output inside the source: any path under a ledger folder (compared by
//! canonical parent folder, so `..`, symbolic links to folders and relative paths do not get around
//! it), and the source bundle file itself (by canonical path or by inode, so a hard link is the same
//! file).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why an output path was refused or could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The path is a symbolic link.
    #[error("{}: is a symbolic link; refusing to follow or replace it (name the file it points to)", path.display())]
    Symlink {
        /// The output path.
        path: PathBuf,
    },
    /// The path names something that is not written to: a folder, a socket, a block device.
    #[error("{}: is a {kind}; the output must be a regular file, a character device or a FIFO", path.display())]
    Unsupported {
        /// The output path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The path is inside the source ledger folder.
    #[error("{}: is inside the source ledger {}; refusing to write there", path.display(), source_path.display())]
    InsideSource {
        /// The output path.
        path: PathBuf,
        /// The ledger folder (canonical).
        source_path: PathBuf,
    },
    /// The path is the source bundle file.
    #[error("{}: is the source bundle itself; refusing to replace it", path.display())]
    IsSource {
        /// The output path.
        path: PathBuf,
    },
    /// The path does not end in a file name (`/`, `..`).
    #[error("{}: does not name a file", path.display())]
    NotAFileName {
        /// The output path.
        path: PathBuf,
    },
    /// A folder output (a Parquet export) names something that is not a folder.
    #[error("{}: exists and is not a folder; the output must be a new or empty folder", path.display())]
    NotAFolder {
        /// The output path.
        path: PathBuf,
    },
    /// A folder output names a folder that is not empty.
    #[error("{}: is a folder that is not empty; refusing to mix an export with what is there (name a new or empty folder)", path.display())]
    NotEmpty {
        /// The output path.
        path: PathBuf,
    },
    /// The OS refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl OutputError {
    /// Whether the path was refused (a usage error) rather than failing while written (an I/O error).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, OutputError::Io { .. })
    }

    /// Whether the reader of a FIFO went away (not an error for a command-line tool).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, OutputError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.to_owned();
    move |source| OutputError::Io { path, source }
}

/// The folder an output path is in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Refuses `out` when writing it could change `source`: a path inside a source folder, or the source
/// file itself. `out` must not be `-` (standard output is the caller's business).
pub fn check_source(source: &Path, out: &Path) -> Result<(), OutputError> {
    let canonical_source = fs::canonicalize(source).map_err(io_at(source))?;
    let parent = parent_of(out);
    let canonical_parent = fs::canonicalize(&parent).map_err(io_at(&parent))?;
    let name = match out.file_name() {
        Some(name) => name,
        None => return Err(OutputError::NotAFileName { path: out.to_owned() }),
    };
    let target = canonical_parent.join(name);
    if canonical_source.is_dir() {
        if target.starts_with(&canonical_source) {
            return Err(OutputError::InsideSource { path: out.to_owned(), source_path: canonical_source });
        }
        return Ok(());
    }
    let same_inode = match (fs::metadata(&canonical_source), fs::symlink_metadata(out)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if target == canonical_source || same_inode {
        return Err(OutputError::IsSource { path: out.to_owned() });
    }
    Ok(())
}

/// `.NAME.tmp-PID`: the temporary file an output is filled in before it is renamed to NAME.
fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.tmp-{pid}")
}

/// The PID in a temporary file name of exactly NAME's pattern, if `file` is one.
fn temp_pid(file: &str, name: &str) -> Option<u32> {
    let digits = file.strip_prefix('.')?.strip_prefix(name)?.strip_prefix(".tmp-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes the temporary files of NAME in `folder` (`.NAME.tmp-PID`, regular files only) whose process
/// no longer runs (no `/proc/PID`). Never another name, never a live PID, never this process's own,
/// and nothing at all where `/proc` cannot tell. Returns the paths removed. Best effort: a file that
/// cannot be removed is left (the export does not depend on it).
pub fn remove_stale_temps(folder: &Path, name: &str) -> Vec<PathBuf> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(folder) else { return Vec::new() };
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| temp_pid(f, name)) else { continue };
        if pid == own || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        let regular = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if regular && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

enum Target {
    /// A character device or FIFO, written as it is.
    Direct,
    /// A temporary file renamed over `path` at the commit; `None` once renamed.
    Replace { tmp: Option<PathBuf> },
}

/// An open output: write to it, then [`Output::commit`]. Buffered (1 MiB).
pub struct Output {
    path: PathBuf,
    writer: BufWriter<File>,
    target: Target,
}

impl Output {
    /// Opens `path` for an export (see the module documentation for what each kind of path gets).
    pub fn create(path: &Path) -> Result<Output, OutputError> {
        let name = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) => name.to_owned(),
            None => return Err(OutputError::NotAFileName { path: path.to_owned() }),
        };
        let unsupported = |kind| OutputError::Unsupported { path: path.to_owned(), kind };
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(path)(e)),
            Ok(meta) => {
                let kind = meta.file_type();
                if kind.is_symlink() {
                    return Err(OutputError::Symlink { path: path.to_owned() });
                }
                if kind.is_char_device() || kind.is_fifo() {
                    // No create, no truncate: a FIFO blocks here until its reader opens it.
                    let file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
                    let now = file.metadata().map_err(io_at(path))?.file_type();
                    if !(now.is_char_device() || now.is_fifo()) {
                        return Err(unsupported("file that changed while it was opened"));
                    }
                    return Ok(Output::new(path, file, Target::Direct));
                }
                if kind.is_dir() {
                    return Err(unsupported("folder"));
                }
                if kind.is_block_device() {
                    return Err(unsupported("block device"));
                }
                if !kind.is_file() {
                    return Err(unsupported("socket or other special file"));
                }
            }
        }
        let folder = parent_of(path);
        remove_stale_temps(&folder, &name);
        let tmp = path.with_file_name(temp_name(&name, std::process::id()));
        let file = File::create(&tmp).map_err(io_at(&tmp))?;
        Ok(Output::new(path, file, Target::Replace { tmp: Some(tmp) }))
    }

    fn new(path: &Path, file: File, target: Target) -> Output {
        Output { path: path.to_owned(), writer: BufWriter::with_capacity(1 << 20, file), target }
    }

    /// The output path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the output is written in place (a character device or FIFO) rather than replaced.
    pub fn is_direct(&self) -> bool {
        matches!(self.target, Target::Direct)
    }

    /// Flushes everything written; a regular file is then fsynced, renamed into place and its folder
    /// fsynced.
    pub fn commit(mut self) -> Result<(), OutputError> {
        self.writer.flush().map_err(io_at(&self.path))?;
        let Target::Replace { tmp } = &mut self.target else { return Ok(()) };
        let Some(from) = tmp.clone() else { return Ok(()) };
        self.writer.get_ref().sync_all().map_err(io_at(&from))?;
        fs::rename(&from, &self.path).map_err(io_at(&self.path))?;
        *tmp = None;
        let folder = parent_of(&self.path);
        File::open(&folder).and_then(|dir| dir.sync_all()).map_err(io_at(&folder))
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // An output that was not committed leaves nothing behind under any name.
        if let Target::Replace { tmp: Some(tmp) } = &self.target {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// A folder output (`replay export --format parquet`): filled as a temporary sibling folder
/// `.NAME.tmp-PID`, then fsynced and renamed to NAME by [`OutputDir::commit`] (an existing empty folder
/// NAME is replaced). Dropped without a commit, it removes the temporary folder and everything in it,
/// so no partial export is ever found under NAME. The caller checks NAME first
/// ([`check_source`], and that it is new or an empty folder).
pub struct OutputDir {
    path: PathBuf,
    tmp: Option<PathBuf>,
}

impl OutputDir {
    /// Creates the temporary folder for the output folder `path`.
    pub fn create(path: &Path) -> Result<OutputDir, OutputError> {
        let name = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) => name.to_owned(),
            None => return Err(OutputError::NotAFileName { path: path.to_owned() }),
        };
        let tmp = path.with_file_name(temp_name(&name, std::process::id()));
        fs::create_dir(&tmp).map_err(io_at(&tmp))?;
        Ok(OutputDir { path: path.to_owned(), tmp: Some(tmp) })
    }

    /// The temporary folder being filled.
    pub fn root(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    /// Creates a folder (and its parents) inside the output; `dir` must be under [`OutputDir::root`].
    pub fn create_dir(&self, dir: &Path) -> Result<(), OutputError> {
        self.inside(dir)?;
        fs::create_dir_all(dir).map_err(io_at(dir))
    }

    /// Creates a new file inside the output (never one that exists).
    pub fn create_file(&self, file: &Path) -> Result<File, OutputError> {
        self.inside(file)?;
        File::create_new(file).map_err(io_at(file))
    }

    fn inside(&self, path: &Path) -> Result<(), OutputError> {
        if path.starts_with(self.root()) && !path.components().any(|c| c == std::path::Component::ParentDir) {
            return Ok(());
        }
        Err(OutputError::Unsupported { path: path.to_owned(), kind: "path outside the output folder" })
    }

    /// fsyncs the temporary folder, renames it to the output's name and fsyncs the parent folder. The
    /// caller has fsynced every file and sub-folder inside.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let Some(tmp) = self.tmp.clone() else { return Ok(()) };
        File::open(&tmp).and_then(|d| d.sync_all()).map_err(io_at(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_at(&self.path))?;
        self.tmp = None;
        let folder = parent_of(&self.path);
        File::open(&folder).and_then(|dir| dir.sync_all()).map_err(io_at(&folder))
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_the_exact_pattern_are_temporary_files_of_name() {
        assert_eq!(temp_pid(".a.plb.tmp-123", "a.plb"), Some(123));
        for other in
            [".a.plb.tmp-", ".a.plb.tmp-12x", "a.plb.tmp-123", ".b.plb.tmp-123", ".a.plb.partial-1", ".xa.plb.tmp-1"]
        {
            assert_eq!(temp_pid(other, "a.plb"), None, "{other}");
        }
        assert_eq!(temp_name("a.plb", 7), ".a.plb.tmp-7");
    }

    #[test]
    fn an_uncommitted_output_leaves_nothing_and_a_committed_one_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, "old").unwrap();
        let mut out = Output::create(&path).unwrap();
        out.write_all(b"new").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut out = Output::create(&path).unwrap();
        assert!(!out.is_direct());
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

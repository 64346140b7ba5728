//! The one error type of the replay library, and how each error maps to an exit class.
//!
//! Errors are never findings: an audit finding is data ([`projections::Finding`]); an [`Error`] means
//! the command could not do what was asked, either because the log failed a check ([`Class::Data`]),
//! because the request was wrong ([`Class::Usage`]), or because the OS refused ([`Class::Io`]).

use log::segment::FormatError;
use log::ReadError;
use projections::RebuildError;
use std::path::PathBuf;

/// What kind of failure an [`Error`] is; the binary maps it to an exit code (1 for data, 2 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// The data failed a check: damaged, tampered, truncated, inconsistent (exit 1).
    Data,
    /// The request is impossible: a position past the end, an unknown rule, a bad argument (exit 2).
    Usage,
    /// The OS refused: a missing file, no permission, a full disk (exit 2).
    Io,
}

/// A check the log failed, with the file and (when known) the first failing position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{what}", path.display(), position.map(|p| format!("position {p}: ")).unwrap_or_default())]
pub struct Failure {
    /// The file (or folder) where it was found.
    pub path: PathBuf,
    /// The first failing position, when the failure belongs to one record.
    pub position: Option<u64>,
    /// What failed.
    pub what: String,
}

/// Why a replay command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log failed a check.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// Reading the log failed (damage found by the reader, or the OS refused).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Folding the log failed.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    /// The request cannot be served by this log.
    #[error("{0}")]
    Usage(String),
    /// SOURCE is a folder without a `segments/` folder: neither a ledger nor a bundle.
    #[error("{}: not a posledger ledger (no segments/ folder) and not a bundle", .0.display())]
    NotASource(PathBuf),
    /// The `--out` path was refused or could not be written.
    #[error(transparent)]
    Out(#[from] crate::output::OutputError),
    /// A signed checkpoint that does not verify (exit 1).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::BadCheckpoint),
    /// A report could not be made.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// A published log (tlog-tiles) failed to verify, or could not be read.
    #[error(transparent)]
    Tiles(#[from] tiles::VerifyError),
    /// Evidence for one terminal that does not verify (exit 1) or could not be read (exit 2).
    #[error(transparent)]
    Evidence(#[from] crate::evidence::EvidenceError),
    /// Writing a Parquet file failed.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file (or table folder).
        path: PathBuf,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// One of several sources failed (the error names it: its place, path and ledger id).
    #[error("source {index} of {of} ({}{}): {error}", source_path.display(), ledger_id.as_ref().map(|l| format!(", ledger {l}")).unwrap_or_default())]
    InSource {
        /// The source's path, as given.
        source_path: PathBuf,
        /// Its place on the command line, from 1.
        index: usize,
        /// How many sources were given.
        of: usize,
        /// Its ledger id, when it was read.
        ledger_id: Option<String>,
        /// What failed.
        error: Box<Error>,
    },
    /// Writing the output failed.
    #[error("{}: {source}", path.display())]
    Output {
        /// The output (`-` for standard output).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn format_class(e: &FormatError) -> Class {
    match e {
        FormatError::Io { source, .. } if source.kind() != std::io::ErrorKind::UnexpectedEof => Class::Io,
        _ => Class::Data,
    }
}

fn read_class(e: &ReadError) -> Class {
    match e {
        ReadError::Io { source, .. } if source.kind() != std::io::ErrorKind::UnexpectedEof => Class::Io,
        ReadError::Format(f) | ReadError::Frame { source: f, .. } => format_class(f),
        ReadError::Anchor(log::anchor::AnchorError::Io { .. }) => Class::Io,
        ReadError::NotALedger(_) => Class::Usage,
        ReadError::OutOfRange { .. } => Class::Usage,
        ReadError::Index(_) => Class::Io,
        ReadError::Checkpoints { source: log::bundle::CheckpointSectionError::Io(_), .. } => Class::Io,
        _ => Class::Data,
    }
}

fn tiles_class(e: &tiles::VerifyError) -> Class {
    match e {
        tiles::VerifyError::Checkpoint { source: tlog::CheckpointError::KeyType(_), .. } => Class::Usage,
        e if e.is_data() => Class::Data,
        _ => Class::Io,
    }
}

impl Error {
    /// The class of failure, for the exit code.
    pub fn class(&self) -> Class {
        match self {
            Error::Failed(_) => Class::Data,
            Error::Checkpoint(bad) if matches!(bad.source, tlog::CheckpointError::KeyType(_)) => Class::Usage,
            Error::Checkpoint(_) => Class::Data,
            Error::Read(e) => read_class(e),
            Error::Rebuild(RebuildError::Read(e)) => read_class(e),
            Error::Rebuild(RebuildError::PastEnd { .. }) => Class::Usage,
            Error::Rebuild(_) => Class::Io,
            Error::Usage(_) | Error::NotASource(_) | Error::Report(_) => Class::Usage,
            Error::Output { .. } | Error::Parquet { .. } => Class::Io,
            Error::Tiles(e) => tiles_class(e),
            Error::Evidence(e) if e.is_data() => Class::Data,
            Error::Evidence(crate::evidence::EvidenceError::Io { .. }) => Class::Io,
            Error::Evidence(_) => Class::Usage,
            Error::Out(e) if e.is_refusal() => Class::Usage,
            Error::Out(_) => Class::Io,
            Error::InSource { error, .. } => error.class(),
        }
    }

    /// Whether this is a broken pipe on the output (a reader such as `head` stopped reading): not an
    /// error for a command-line tool.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Output { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
            Error::Out(e) => e.is_broken_pipe(),
            Error::InSource { error, .. } => error.is_broken_pipe(),
            _ => false,
        }
    }

    /// The first failing position, when the error names one.
    pub fn position(&self) -> Option<u64> {
        let read = |e: &ReadError| match e {
            ReadError::Codec { position, .. }
            | ReadError::Corrupt { position, .. }
            | ReadError::Frame { position, .. } => Some(*position),
            // The first record that is missing.
            ReadError::Cut { found, .. } => Some(*found),
            _ => None,
        };
        match self {
            Error::Failed(f) => f.position,
            Error::Evidence(e) => e.position(),
            Error::Read(e) | Error::Rebuild(RebuildError::Read(e)) => read(e),
            Error::InSource { error, .. } => error.position(),
            _ => None,
        }
    }
}

/// Wraps an output error with its path.
pub fn output(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Output { path, source }
}

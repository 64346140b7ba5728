//! The operator CLI's operations as library code: reading an NDJSON input, mapping an append's
//! refusal back to its input line, writing a bundle, preparing the demo folder. The binary only parses
//! arguments, draws progress bars and prints.

use interchange::ndjson::{self, MAX_LINE_BYTES};
use interchange::output::{Output, OutputError};
use interchange::text::{count, thousands};
use ledger::bundle::BundleStream;
use ledger::{AppendError, AppendEvent, ReadError, Source, MAX_APPEND_EVENTS};
use std::fs;
use std::io::{self, BufRead, Read};
use std::path::Path;

/// The most lines [`read_ndjson`] (a whole input held in memory) may hold: 2,000,000, the ledger's
/// limit for one append ([`MAX_APPEND_EVENTS`]). Blank lines count. [`import_ndjson`], which
/// `posledger append` uses, streams any number of lines.
pub const MAX_INPUT_LINES: usize = MAX_APPEND_EVENTS;
/// The most bytes [`read_ndjson`] may read: 1 GiB (it holds the parsed events in memory).
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// A refused input: the file name (or `<stdin>`), the 1-based line, and why. Displays as `FILE:LINE: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}:{line}: {reason}")]
pub struct InputError {
    /// The input's name as the user gave it.
    pub name: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Why reading an input failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadInputError {
    /// A line was refused (exit 1).
    #[error(transparent)]
    Bad(#[from] InputError),
    /// The input could not be read (exit 2).
    #[error("{name}: {source}")]
    Io {
        /// The input's name.
        name: String,
        /// The error.
        source: io::Error,
    },
}

/// A parsed input: the events, and the line each came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Input {
    /// Events in input order.
    pub events: Vec<AppendEvent>,
    /// `lines[i]` is the 1-based line of `events[i]`.
    pub lines: Vec<usize>,
}

/// Reads and validates a whole NDJSON input into memory, within [`MAX_INPUT_LINES`],
/// [`MAX_INPUT_BYTES`] and [`MAX_LINE_BYTES`]. Blank lines are skipped. `progress` gets the bytes read.
pub fn read_ndjson(
    reader: &mut dyn BufRead,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Input, ReadInputError> {
    let mut input = Input::default();
    let bad = |line: usize, reason: String| InputError { name: name.to_owned(), line, reason };
    let limits = |line: usize, bytes: u64| {
        if line > MAX_INPUT_LINES {
            return Err(bad(
                line,
                format!("input has more than {} lines (the limit of one append)", thousands(MAX_INPUT_LINES as u64)),
            ));
        }
        if bytes > MAX_INPUT_BYTES {
            return Err(bad(line, format!("input is larger than {} bytes", thousands(MAX_INPUT_BYTES))));
        }
        Ok(())
    };
    each_ndjson_line::<ReadInputError>(reader, name, progress, &mut |event, line, bytes| {
        limits(line, bytes).map_err(ReadInputError::Bad)?;
        input.events.push(event);
        input.lines.push(line);
        Ok(())
    })?;
    Ok(input)
}

/// Reads an NDJSON input line by line in constant memory (one line, within [`MAX_LINE_BYTES`]), and
/// hands each event to `each` with its 1-based line and the bytes read so far. Blank lines are skipped.
pub fn each_ndjson_line<E: From<ReadInputError>>(
    reader: &mut dyn BufRead,
    name: &str,
    progress: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(AppendEvent, usize, u64) -> Result<(), E>,
) -> Result<(), E> {
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut bytes = 0u64;
    let bad = |line: usize, reason: String| ReadInputError::Bad(InputError { name: name.to_owned(), line, reason });
    loop {
        buf.clear();
        // `take` bounds the line even when it never ends: one byte past the limit is enough to refuse it.
        let n = (&mut *reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReadInputError::Io { name: name.to_owned(), source })?;
        if n == 0 {
            break;
        }
        line += 1;
        bytes += n as u64;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(bad(
                line,
                format!("line is longer than the limit of {} bytes", thousands(MAX_LINE_BYTES as u64)),
            )
            .into());
        }
        if line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
            // Refused, not skipped: the input is not what an export writes, and saying so is clearer
            // than guessing what else a tool that adds a byte-order mark may have changed.
            return Err(bad(line, "the input starts with a UTF-8 byte-order mark; remove it".into()).into());
        }
        let text = std::str::from_utf8(&buf).map_err(|e| bad(line, format!("not UTF-8: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let event = ndjson::parse_line(text).map_err(|e| bad(line, e.to_string()))?;
        each(event, line, bytes)?;
        if line.is_multiple_of(16_384) {
            progress(bytes);
        }
    }
    progress(bytes);
    Ok(())
}

/// Why [`import_ndjson`] failed. Nothing of the input is in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// A line could not be read or parsed.
    #[error(transparent)]
    Input(#[from] ReadInputError),
    /// The ledger refused or failed the import.
    #[error(transparent)]
    Append(AppendRefusal),
}

/// Imports a whole NDJSON input as one atomic append of any length ([`ledger::Import`]): each line is
/// parsed and handed to the import as it is read, so memory is bounded by the import's chunks, not by
/// the input. A bad line, a refused event or a failure leaves the ledger's log exactly as it was.
///
/// Parsing and appending run on two threads: this one reads and parses, a second one holds the import
/// (and the writer lock) and checks and writes the events, fed batches of [`IMPORT_BATCH_LINES`] parsed
/// lines through a channel of [`IMPORT_QUEUE_BATCHES`] (so memory holds at most that many batches
/// besides the import's chunks). The outcome is the one of parsing and appending in turn: the import
/// sees the events in input order, and a line that does not parse ends the input where the sequential
/// loop would have stopped, unless the import had already refused an earlier event, which is then the
/// error, as it would have been.
pub fn import_ndjson(
    ledger: &ledger::Ledger,
    reader: &mut dyn BufRead,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<ledger::Imported, ImportFailure> {
    let (feed, batches) = std::sync::mpsc::sync_channel::<Feed>(IMPORT_QUEUE_BATCHES);
    std::thread::scope(|scope| {
        let importer = scope.spawn(move || import_batches(ledger, name, &batches));
        let mut batch = Vec::with_capacity(IMPORT_BATCH_LINES);
        let read = each_ndjson_line::<Feeding>(reader, name, progress, &mut |event, line, _| {
            batch.push((event, line as u64));
            if batch.len() >= IMPORT_BATCH_LINES {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH_LINES));
                feed.send(Feed::Events(full)).map_err(|_| Feeding::Stopped)?;
            }
            Ok(())
        });
        if read.is_ok() {
            // The importer may have stopped on an error; then sending fails and its result says why.
            let _ = feed.send(Feed::Events(batch)).and_then(|()| feed.send(Feed::End));
        }
        // Without `End`, the importer drops (aborts) its import when the channel closes.
        drop(feed);
        let imported = importer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (read, imported) {
            (_, Err(refused)) => Err(refused),
            (Err(Feeding::Input(bad)), Ok(_)) => Err(ImportFailure::Input(bad)),
            (_, Ok(Some(imported))) => Ok(imported),
            (_, Ok(None)) => Err(ImportFailure::Append(AppendRefusal::Failed(format!(
                "{name}: the import stopped before the end of the input"
            )))),
        }
    })
}

/// Parsed lines per batch handed from the parsing thread to the import ([`import_ndjson`]).
pub const IMPORT_BATCH_LINES: usize = 4_096;
/// Batches that may wait between the parsing thread and the import.
pub const IMPORT_QUEUE_BATCHES: usize = 24;

/// What the parsing thread of [`import_ndjson`] sends the import.
enum Feed {
    /// Events in input order, each with its 1-based line.
    Events(Vec<(AppendEvent, u64)>),
    /// The input ended with every line parsed: commit.
    End,
}

/// Why the parsing thread of [`import_ndjson`] stopped early.
enum Feeding {
    /// A line could not be read or parsed.
    Input(ReadInputError),
    /// The import stopped (its result says why).
    Stopped,
}

impl From<ReadInputError> for Feeding {
    fn from(e: ReadInputError) -> Feeding {
        Feeding::Input(e)
    }
}

/// The import thread of [`import_ndjson`]: pushes every batch, and commits on [`Feed::End`]. `None`
/// when the channel closed without it (the import is aborted).
fn import_batches(
    ledger: &ledger::Ledger,
    name: &str,
    batches: &std::sync::mpsc::Receiver<Feed>,
) -> Result<Option<ledger::Imported>, ImportFailure> {
    let refused = |e: ledger::ImportError| {
        ImportFailure::Append(refusal_at(name, &|_| e.tag.and_then(|t| usize::try_from(t).ok()), &e.error))
    };
    let mut import = ledger.begin_import(None).map_err(|e| ImportFailure::Append(refusal_at(name, &|_| None, &e)))?;
    while let Ok(feed) = batches.recv() {
        match feed {
            Feed::Events(events) => {
                for (event, line) in events {
                    import.push(event, line).map_err(refused)?;
                }
            }
            Feed::End => return import.commit().map(Some).map_err(refused),
        }
    }
    Ok(None)
}

/// How an append's error maps onto the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendRefusal {
    /// The input was refused (exit 1): `FILE:LINE: reason`, or `FILE: reason` for the input as a whole.
    #[error("{0}")]
    Data(String),
    /// The ledger failed (exit 2).
    #[error("{0}")]
    Failed(String),
}

/// Maps `AppendError { index, .. }` back to the input line that caused it.
pub fn refusal(name: &str, input: &Input, err: &AppendError) -> AppendRefusal {
    refusal_at(name, &|index| input.lines.get(index).copied(), err)
}

/// Maps an append error onto the input: `line_of(index)` gives the line of the event it names.
pub fn refusal_at(name: &str, line_of: &dyn Fn(usize) -> Option<usize>, err: &AppendError) -> AppendRefusal {
    let at = |index: usize| format!("{name}:{}", line_of(index).unwrap_or(0));
    match err {
        AppendError::Field { index, error } => AppendRefusal::Data(format!("{}: {error}", at(*index))),
        AppendError::Rule { index, stream, event, violation } => {
            AppendRefusal::Data(format!("{}: illegal {event} on {stream}: {violation}", at(*index)))
        }
        AppendError::WrongExpectedVersion { index, stream, expected, actual } => AppendRefusal::Data(format!(
            "{}: wrong expected_version: {stream} holds {}, the line expects {expected}",
            at(*index),
            count(*actual, "event", "events")
        )),
        AppendError::IdempotencyConflict { index, event_id, position } => AppendRefusal::Data(format!(
            "{}: event_id {event_id} was already used at position {position} for a different event",
            at(*index)
        )),
        AppendError::DuplicateEventId { index, event_id } => {
            AppendRefusal::Data(format!("{}: event_id {event_id} appears twice in the input", at(*index)))
        }
        AppendError::Codec { index, error } => AppendRefusal::Data(format!("{}: {error}", at(*index))),
        AppendError::EntryTooLarge { index, len, max } => AppendRefusal::Data(format!(
            "{}: the record of this line would take {} bytes, over the limit of {} bytes for one log entry \
             (list fewer models per directive, or use stop-models, which splits a long list)",
            at(*index),
            thousands(*len as u64),
            thousands(*max as u64)
        )),
        AppendError::ImportEndsWithRetries => AppendRefusal::Data(format!("{name}: {err}")),
        AppendError::TooMany { len, max } => AppendRefusal::Data(format!(
            "{name}: {} exceed the limit of {} for one append",
            count(*len as u64, "event", "events"),
            thousands(*max as u64)
        )),
        other => AppendRefusal::Failed(other.to_string()),
    }
}

/// What [`export_bundle`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Records in the bundle.
    pub records: u64,
    /// The bundle's Merkle root (equal to the source's head root).
    pub root: ledger::merkle::Hash,
    /// Bytes written.
    pub bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the log failed or found it damaged.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the bundle failed.
    #[error(transparent)]
    Write(#[from] ledger::bundle::BundleError),
    /// The output path was refused, or could not be opened or committed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The frames read do not hash to the source's head (the log changed or is damaged).
    #[error("the records read hash to another root than the head's ({records} records read, head has {head})")]
    RootMismatch {
        /// Records read.
        records: u64,
        /// The head's size.
        head: u64,
    },
}

/// Writes a bundle of every record of `source` to `out`: a header of kind bundle at position 0, every
/// record's frame byte for byte (the CRC32C is recomputed over the same body, so the bytes are the
/// same), then a trailer with the record count, log size, root and frontier. `out` is opened by
/// [`interchange::output::Output`]: a regular file is written to a temporary file beside it, fsynced, then
/// renamed over it (and the folder fsynced), so a crash never leaves a half bundle under the final
/// name; a character device or FIFO is written directly; a symbolic link is refused. Whether `out` may
/// be written at all (not inside the source) is the caller's check ([`interchange::output::check_source`]).
/// `progress` gets the records written.
pub fn export_bundle(source: &Source, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Exported, ExportError> {
    let ledger_id = source.files.first().map_or(0, |f| f.header.ledger_id);
    let mut writer = BundleStream::new(Output::create(out)?, out, ledger_id)?;
    let mut frames = source.frames(0, source.head.size);
    while let Some((_, body, _)) = frames.next_frame()? {
        writer.push(body)?;
        if writer.records().is_multiple_of(65_536) {
            progress(writer.records());
        }
    }
    // The copy must be the log the source describes: same size, same root. Dropping the output
    // removes the unfinished file.
    if writer.records() != source.head.size || writer.root() != source.head.root {
        return Err(ExportError::RootMismatch { records: writer.records(), head: source.head.size });
    }
    // Every signed checkpoint the ledger keeps travels with the bundle (docs/FORMAT.md, "Checkpoints
    // in a bundle"), so a regulator holding an old one can check it against this very file.
    let checkpoints: Vec<_> = source.checkpoints()?.into_iter().filter(|c| c.size <= source.head.size).collect();
    let (written, output) = writer.finish_with_checkpoints(&checkpoints)?;
    output.commit()?;
    progress(written.records);
    Ok(Exported { records: written.records, root: written.root, bytes: written.bytes })
}

/// Whether `dir` holds a posledger ledger (it has a `segments/` folder).
pub fn is_ledger(dir: &Path) -> bool {
    dir.join(ledger::source::SEGMENTS_DIR).is_dir()
}

/// The file the demo leaves in a folder it created, so that it only ever recreates its own folders.
pub const DEMO_MARKER: &str = ".posledger-demo";

/// The demo's log key (private, mode 0600) in its folder.
pub const DEMO_KEY: &str = "demo-log.key";
/// The demo's audit report (`replay report` of its bundle), in the demo folder.
pub const DEMO_REPORT: &str = "report.html";
/// The demo's verifier key file.
pub const DEMO_VKEY: &str = "demo-log.key.vkey";

/// What the demo makes in its folder (besides [`DEMO_MARKER`]): the ledger's files, its key and
/// checkpoints, the bundle and its audit report.
fn made_by_the_demo(name: &str) -> bool {
    matches!(
        name,
        "segments"
            | "index"
            | "HEAD"
            | "HEAD.tmp"
            | "LOCK"
            | "bundle.plb"
            | "checkpoints"
            | DEMO_KEY
            | DEMO_VKEY
            | DEMO_REPORT
    ) || name.starts_with(".bundle.plb.tmp-")
        || name.starts_with(".report.html.tmp-")
}

/// Makes `dir` a fresh folder for the demo and returns it locked (the ledger lock, which the demo's
/// ledger then opens with): creates a missing or empty folder and marks it as the demo's
/// ([`DEMO_MARKER`]); empties a folder that carries the mark, under the lock, after checking that it
/// holds nothing the demo did not make. Refuses, without touching anything, a file, a folder without the
/// mark (a real ledger, someone's files), one that holds other files, and one that is in use.
pub fn prepare_demo_dir(dir: &Path) -> Result<ledger::DirLock, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.display());
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir).map_err(|e| at(&e))?,
        Err(e) => return Err(at(&e)),
        Ok(meta) if !meta.is_dir() => return Err(at(&"exists and is not a folder; refusing to touch it")),
        Ok(_) => {}
    }
    let lock = ledger::DirLock::acquire(dir).map_err(|e| match e {
        ledger::OpenError::Locked(_) => at(&"in use by another posledger process; refusing to touch it"),
        other => other.to_string(),
    })?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| at(&e))? {
        entries.push(entry.map_err(|e| at(&e))?.file_name());
    }
    let marked = entries.iter().any(|name| name == DEMO_MARKER);
    if !entries.is_empty() && !marked {
        return Err(at(&format!(
            "not empty and not a folder the demo made (no {DEMO_MARKER} mark); refusing to touch it"
        )));
    }
    let foreign: Vec<String> = entries
        .iter()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name != DEMO_MARKER && !made_by_the_demo(name))
        .collect();
    if !foreign.is_empty() {
        return Err(at(&format!("holds files the demo did not make ({}); refusing to touch it", foreign.join(", "))));
    }
    for name in &entries {
        if name == DEMO_MARKER {
            continue;
        }
        let path = dir.join(name);
        let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.map_err(|e| format!("{}: cannot remove the old demo: {e}", path.display()))?;
    }
    if !marked {
        fs::write(dir.join(DEMO_MARKER), b"made by `posledger demo`, which may recreate this folder\n")
            .map_err(|e| at(&e))?;
    }
    Ok(lock)
}

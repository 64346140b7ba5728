//! `posledger`: the operator CLI. Thin: it parses arguments, draws progress bars (only on a terminal)
//! and prints; the work is library code (`posledger::{sim, ops, fleet}` and the ledger).
//!
//! Exit codes (docs/CLI.md): 0 success; 1 the data failed (input rejected, duplicate directive, a
//! damaged log); 2 usage or I/O error. Errors are one line on stderr naming the file, line or position.
//! A broken pipe on stdout (`posledger head | head -c1`) ends the program quietly with 0.

#![deny(unsafe_code)]

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use posledger::fleet::{fleet_summary, FleetSummary};
use posledger::interchange::text::{count, thousands};
use posledger::ledger::{
    self, AppendError, Directive, DirectiveId, Durability, Ledger, ModelCode, OpenError, Options, Source, Text,
};
use posledger::ops::{self, AppendRefusal, ReadInputError};
use posledger::restore;
use posledger::sim::{self, Config, Report};
use posledger::tiles;
use posledger::tlog::keyfile as vkeyfile;
use std::collections::HashSet;
use std::fmt::Display;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Operator CLI of posledger, the event-sourced lifecycle ledger for POS terminal fleets.
#[derive(Parser)]
#[command(
    name = "posledger",
    version,
    after_help = "Start here:\n  posledger demo                      # simulate 100,000 terminals, export, summarize\n  posledger head --dir posledger-demo --json\n\nExit codes: 0 success, 1 data rejected or damaged, 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a realistic fleet into a fresh demo ledger, export a bundle, print a summary.
    #[command(
        after_help = "Example:\n  posledger demo                                # 100,000 terminals, 24 months\n  posledger demo --dir /tmp/small --devices 2000 --seed 7\n\nThe folder is recreated on every run; a non-empty folder that is not a posledger ledger is refused."
    )]
    Demo(DemoArgs),
    /// Simulate a fleet deterministically into a new, empty ledger (same arguments, same Merkle root).
    #[command(after_help = "Example:\n  posledger simulate --dir fleet --devices 10000 --seed 1 --months 12")]
    Simulate(SimulateArgs),
    /// Append NDJSON events (docs/NDJSON.md) as one atomic append of any length.
    #[command(
        after_help = "Example:\n  posledger append --dir ledger events.ndjson\n  replay export old.plb --format ndjson --out fleet.ndjson && posledger append --dir new fleet.ndjson\n  generate-events | posledger append --dir ledger -\n\nThe whole input is one atomic append of any length, streamed (1 MiB per line at most).\nA missing DIR becomes a new, empty ledger. Any bad line: exit 1, `FILE:LINE: reason` on stderr,\nand the ledger is unchanged (a DIR this run created is removed)."
    )]
    Append(AppendArgs),
    /// Record an emergency-stop directive and stop every running terminal of its models, atomically.
    #[command(
        after_help = "Example:\n  posledger stop-models --dir ledger --directive D-2026-07 --models recalled.txt \\\n      --reason \"certificates revoked\" --deadline 2026-08-01T00:00:00Z\n\nFILE holds one model code a line (blank lines and lines starting with # are skipped)."
    )]
    StopModels(StopModelsArgs),
    /// Export the whole log as one bundle file (segment format plus a trailer with count and root).
    #[command(after_help = "Example:\n  posledger export --dir ledger --out fleet.plb\n  replay verify fleet.plb")]
    Export(ExportArgs),
    /// Rebuild a ledger in a new folder from a bundle, a ledger folder or a published log, checked.
    #[command(
        after_help = "Example:\n  posledger restore --from fleet.plb --dir restored\n  posledger restore --from /mnt/backup/ledger --dir restored\n  posledger restore --from https://tiles.example/log --key log.vkey --dir restored\n\nA published log (docs/TILES.md: an http(s):// prefix or a publication folder) needs --key: its\ncheckpoint must verify, and every entry and tile is checked against it before the restore ends.\nEvery record is checked as the writer checks a new append (positions, versions, recorded-at,\ncommit markers, the lifecycle rules), the restored root must equal the source's head, and the\nsigned checkpoints the source carries are kept in DIR/checkpoints. DIR must not exist or be empty;\nit appears only once the whole ledger is durable. A damaged or refused record: exit 1, naming its\nposition, and DIR is left as it was."
    )]
    Restore(RestoreArgs),
    /// Print the ledger's head: record count and Merkle root.
    #[command(
        after_help = "Example:\n  posledger head --dir ledger --json     # {\"size\": 42, \"root\": \"<64 hex>\"}"
    )]
    Head(HeadArgs),
    /// Record the log's end in a new HEAD after HEAD was lost or damaged (docs/FORMAT.md, "HEAD").
    #[command(
        after_help = "Without HEAD, no command can tell a whole log from one whose last records were cut, so every\ncommand refuses the folder. If you know the log is whole (its size from a bundle, a signed\ncheckpoint or your records), say its size: HEAD is written only if the segments hold exactly that\nmany committed records. A whole HEAD is never replaced.\n\nExample:\n  posledger reanchor --dir ledger --size 1963643"
    )]
    Reanchor(ReanchorArgs),
    /// Signing keys: `key generate` writes a new Ed25519 key pair (docs/CHECKPOINTS.md).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign the ledger's head as a C2SP checkpoint, keep it in DIR/checkpoints, and ask witnesses to cosign.
    #[command(
        after_help = "Example:\n  posledger checkpoint --dir ledger --key log.key\n  posledger checkpoint --dir ledger --key log.key --witness http://127.0.0.1:7380 --witness-key w1.vkey\n\nThe head must extend the last checkpoint this ledger signed (same origin, the same root at its\nsize, a consistency proof from there): a cut or rewritten log is refused (exit 1) and nothing is signed.\nEach --witness URL is paired, in order, with a --witness-key; cosignatures that verify are kept in\nDIR/checkpoints/<size>.cosigned. A witness that refuses or cannot be reached: exit 1 (the signed\ncheckpoint is kept)."
    )]
    Checkpoint(CheckpointArgs),
    /// Publish the log as C2SP tlog-tiles in a folder any static web server can serve.
    #[command(
        after_help = "Example:\n  posledger checkpoint --dir ledger --key log.key\n  posledger publish --dir ledger --out /srv/www/posledger\n  (cd /srv/www/posledger && python3 -m http.server 8080)\n  replay verify-tiles http://127.0.0.1:8080 --key log.key.vkey\n\n\
Publishes up to the ledger's latest signed checkpoint (its .cosigned file when witnesses cosigned it),\n\
or --checkpoint FILE. Incremental: writes only the tiles and entry bundles that are new, never rewrites\n\
one, and replaces OUT/checkpoint last, after every tile is durable. OUT must be empty, missing, or an\n\
earlier publication of the same log (docs/TILES.md)."
    )]
    Publish(PublishArgs),
    /// Write one terminal's evidence: its records with an inclusion proof each against a signed checkpoint.
    #[command(
        after_help = "Example:\n  posledger checkpoint --dir ledger --key log.key\n  posledger evidence --dir ledger --device SN00000042 --out SN00000042.evidence\n  replay evidence check SN00000042.evidence --key log.key.vkey\n\n\
A self-contained file (docs/FORMAT.md, \"Evidence for one terminal\") that verifies without the log:\n\
the signed checkpoint verbatim (the ledger's latest, its .cosigned file when witnesses cosigned it, or\n\
--checkpoint FILE), every record of the terminal's stream up to the checkpoint's size, the directive\n\
records its stops name and the other half of each replacement it takes part in, each with an RFC 6962\n\
inclusion proof; nothing else of other terminals. Reads the ledger without the lock (two passes over\n\
the checkpoint's records). A terminal not in the checkpoint's records, or a checkpoint of another log:\n\
exit 1. At most 100,000 records and 256 MiB a file: exit 2 beyond (docs/CLI.md)."
    )]
    Evidence(EvidenceArgs),
}

#[derive(Args)]
struct EvidenceArgs {
    /// Ledger folder (read only).
    #[arg(long)]
    dir: PathBuf,
    /// The terminal's serial number.
    #[arg(long)]
    device: String,
    /// The evidence file to write (replaced atomically; a path inside DIR or a symbolic link is refused).
    #[arg(long)]
    out: PathBuf,
    /// The signed checkpoint to prove against (default: the ledger's latest).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Generate a key: FILE gets the private key (mode 0600, never overwritten, never printed), FILE.vkey
    /// the verifier key to hand to regulators (also printed).
    #[command(
        after_help = "Example:\n  posledger key generate --name acquirer.example/posledger/prod --out log.key\n  posledger key generate --name regulator.example/witness --out w1.key --witness\n\nThe log's key name is the checkpoints' origin: choose it once per ledger (a URL-like name, no\nspaces, no '+')."
    )]
    Generate(KeyGenerateArgs),
}

#[derive(Args)]
struct KeyGenerateArgs {
    /// The key's name: for a log's key, the origin of its checkpoints.
    #[arg(long)]
    name: String,
    /// The private key file to create (FILE.vkey gets the verifier key).
    #[arg(long)]
    out: PathBuf,
    /// Make a witness's cosignature key (type 0x04) instead of a log's note key (type 0x01).
    #[arg(long)]
    witness: bool,
}

#[derive(Args)]
struct CheckpointArgs {
    /// Ledger folder.
    #[arg(long)]
    dir: PathBuf,
    /// The log's private key file (mode 0600).
    #[arg(long)]
    key: PathBuf,
    /// A witness's submission URL (repeatable; paired in order with --witness-key).
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// A witness's verifier key, a file or the vkey text (repeatable).
    #[arg(long = "witness-key")]
    witness_keys: Vec<String>,
}

#[derive(Args)]
struct PublishArgs {
    /// Ledger folder (read only).
    #[arg(long)]
    dir: PathBuf,
    /// The publication folder.
    #[arg(long)]
    out: PathBuf,
    /// The signed checkpoint to publish (default: the ledger's latest).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
}

#[derive(Args)]
struct ReanchorArgs {
    /// Ledger folder.
    #[arg(long)]
    dir: PathBuf,
    /// The number of records the log is known to hold.
    #[arg(long)]
    size: u64,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder of the demo ledger (recreated on every run).
    #[arg(long, default_value = "posledger-demo")]
    dir: PathBuf,
    /// Terminals to issue (replacements come on top).
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Months to simulate.
    #[arg(long, default_value_t = 24)]
    months: u32,
}

#[derive(Args)]
struct SimulateArgs {
    /// Ledger folder (created if missing; must hold no records).
    #[arg(long)]
    dir: PathBuf,
    /// Terminals to issue (replacements come on top).
    #[arg(long)]
    devices: u64,
    /// Seed of the simulation.
    #[arg(long)]
    seed: u64,
    /// Months to simulate.
    #[arg(long, default_value_t = 24)]
    months: u32,
    /// Shape of the fleet: `standard` (the demo's, about 19 events a terminal over 24 months) or
    /// `issue-heavy` (many terminals with about 6 events each, a third of them flags and clears with
    /// notes of their own).
    #[arg(long, value_enum, default_value_t = FleetShape::Standard)]
    shape: FleetShape,
}

/// `posledger simulate --shape`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FleetShape {
    Standard,
    IssueHeavy,
}

impl From<FleetShape> for sim::Shape {
    fn from(shape: FleetShape) -> sim::Shape {
        match shape {
            FleetShape::Standard => sim::Shape::Standard,
            FleetShape::IssueHeavy => sim::Shape::IssueHeavy,
        }
    }
}

#[derive(Args)]
struct AppendArgs {
    /// Ledger folder (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// NDJSON input; `-` or nothing reads stdin.
    #[arg(default_value = "-")]
    file: String,
    /// After the append is committed, sign the new head with this key (as `posledger checkpoint`).
    #[arg(long)]
    sign_with: Option<PathBuf>,
}

#[derive(Args)]
struct StopModelsArgs {
    /// Ledger folder.
    #[arg(long)]
    dir: PathBuf,
    /// The directive's id (never reused), e.g. D-2026-07.
    #[arg(long)]
    directive: String,
    /// File of model codes, one a line.
    #[arg(long)]
    models: PathBuf,
    /// Why the models are stopped.
    #[arg(long)]
    reason: String,
    /// By when every terminal must be stopped (RFC 3339).
    #[arg(long)]
    deadline: Option<String>,
}

#[derive(Args)]
struct ExportArgs {
    /// Ledger folder.
    #[arg(long)]
    dir: PathBuf,
    /// Bundle file to write: a regular file is replaced atomically; a character device or FIFO is
    /// written directly; a symbolic link or a path inside DIR is refused.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    /// What to restore from: a bundle file, a ledger folder (read-only), or a published log (an
    /// http(s):// prefix or a publication folder, docs/TILES.md).
    #[arg(long)]
    from: String,
    /// The published log's verifier key (a file, or the vkey text); required for a published log,
    /// refused otherwise.
    #[arg(long, value_name = "VKEY")]
    key: Option<String>,
    /// A witness's verifier key whose cosignature the published checkpoint must carry (repeatable).
    #[arg(long = "witness", value_name = "VKEY", requires = "key")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned (default: all of them).
    #[arg(long, value_name = "K", requires = "key")]
    min_witnesses: Option<usize>,
    /// The new ledger folder (must not exist, or be empty).
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args)]
struct HeadArgs {
    /// Ledger folder.
    #[arg(long)]
    dir: PathBuf,
    /// Print `{"size": N, "root": "<hex>"}`.
    #[arg(long)]
    json: bool,
}

/// How a command ends when it does not succeed.
enum Failure {
    /// Exit 1: the data was rejected or is damaged.
    Data(String),
    /// Exit 2: usage or I/O.
    Usage(String),
    /// stdout was closed by the reader: stop quietly, exit 0.
    BrokenPipe,
}

type Outcome = Result<(), Failure>;

fn usage(e: impl Display) -> Failure {
    Failure::Usage(e.to_string())
}

/// Writes to stdout; a broken pipe ends the program quietly.
struct Out(io::StdoutLock<'static>);

impl Out {
    fn new() -> Out {
        Out(io::stdout().lock())
    }
    fn line(&mut self, text: impl Display) -> Outcome {
        writeln!(self.0, "{text}").map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::BrokenPipe,
            _ => Failure::Usage(format!("stdout: {e}")),
        })
    }
    fn flush(&mut self) -> Outcome {
        self.0.flush().map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::BrokenPipe,
            _ => Failure::Usage(format!("stdout: {e}")),
        })
    }
}

/// A progress bar on stderr, only when both stdout and stderr are terminals.
fn bar(len: u64, template: &str) -> ProgressBar {
    if !(io::stderr().is_terminal() && io::stdout().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn open_error(dir: &Path, e: OpenError) -> Failure {
    match e {
        OpenError::Corrupt { .. } | OpenError::Format(_) | OpenError::Read(_) => Failure::Data(e.to_string()),
        OpenError::Locked(_)
        | OpenError::NotALedger(_)
        | OpenError::NotAFolder(_)
        | OpenError::Io { .. }
        | OpenError::Index { .. } => usage(e),
        other => Failure::Usage(format!("{}: {other}", dir.display())),
    }
}

/// Refuses a `--dir` that names something other than a folder (a missing one is fine: the callers
/// that need it to exist say so themselves).
fn check_dir(dir: &Path) -> Outcome {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Failure::Usage(format!("{}: exists and is not a folder", dir.display()))),
        _ => Ok(()),
    }
}

/// Opens an existing ledger read-only (no lock: works while a processor holds it open).
fn open_source(dir: &Path) -> Result<Source, Failure> {
    check_dir(dir)?;
    if !dir.is_dir() {
        return Err(Failure::Usage(format!("{}: not a folder", dir.display())));
    }
    Source::open(dir).map_err(|e| match e {
        posledger::ledger::ReadError::NotALedger(_) => Failure::Usage(e.to_string()),
        posledger::ledger::ReadError::Io { .. }
        | posledger::ledger::ReadError::Anchor(posledger::ledger::anchor::AnchorError::Io { .. }) => usage(e),
        other => Failure::Data(other.to_string()),
    })
}

/// Closes a ledger. Its records are durable once the append returned: an index that cannot be
/// persisted is a warning on stderr (the next open rebuilds it from the log), never a failure.
fn close_ledger(ledger: Ledger, dir: &Path) -> Result<ledger::Closed, Failure> {
    let closed = ledger.close().map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
    if let Some(why) = &closed.index_warning {
        eprintln!(
            "warning: {}: the records are durable, but the index snapshot could not be written ({why}); the next open rebuilds it from the log",
            dir.display()
        );
    }
    Ok(closed)
}

fn simulate_into(
    dir: &Path,
    lock: Option<ledger::DirLock>,
    config: &Config,
) -> Result<(Report, ledger::Head, Duration), Failure> {
    check_dir(dir)?;
    let started = Instant::now();
    // Relaxed durability with one flush at the end: a simulation is rerun, not recovered.
    let options = Options { durability: Durability::Relaxed, ..Options::default() };
    let ledger = match lock {
        Some(lock) => Ledger::open_locked(lock, options),
        None => Ledger::open_with(dir, options),
    }
    .map_err(|e| open_error(dir, e))?;
    let progress = bar(u64::from(config.months), "{spinner} simulating month {pos}/{len} [{bar:30}] {msg}");
    let report = sim::run(&ledger, config, &mut |p| {
        progress.set_position(u64::from(p.month));
        progress.set_message(format!("{} events", thousands(p.events)));
    })
    .map_err(|e| match e {
        sim::SimError::Config(_) | sim::SimError::NotEmpty(_) => Failure::Usage(format!("{}: {e}", dir.display())),
        other => Failure::Usage(format!("{}: {other}", dir.display())),
    })?;
    progress.finish_and_clear();
    let head = ledger.flush().map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
    close_ledger(ledger, dir)?;
    Ok((report, head, started.elapsed()))
}

fn simulate(args: SimulateArgs) -> Outcome {
    let config = Config {
        devices: args.devices,
        months: args.months,
        seed: args.seed,
        shape: args.shape.into(),
        ..Config::default()
    };
    config.validate().map_err(usage)?;
    let (report, head, elapsed) = simulate_into(&args.dir, None, &config)?;
    let mut out = Out::new();
    out.line(format!(
        "simulated {} ({}, {}, seed {}) in {:.1} s",
        count(report.events, "event", "events"),
        count(report.terminals, "terminal", "terminals"),
        count(u64::from(config.months), "month", "months"),
        config.seed,
        elapsed.as_secs_f64()
    ))?;
    out.line(format!("head: size {} root {}", thousands(head.size), head.root_hex()))?;
    out.flush()
}

fn export_to(source: &Source, out_path: &Path) -> Result<ops::Exported, Failure> {
    let progress = bar(source.head.size, "{spinner} exporting [{bar:30}] {pos}/{len} records");
    let exported = ops::export_bundle(source, out_path, &mut |n| progress.set_position(n)).map_err(|e| match e {
        ops::ExportError::Write(_) | ops::ExportError::Output(_) => usage(e),
        other => Failure::Data(other.to_string()),
    })?;
    progress.finish_and_clear();
    Ok(exported)
}

fn export(args: ExportArgs) -> Outcome {
    let source = open_source(&args.dir)?;
    posledger::interchange::output::check_source(&args.dir, &args.out).map_err(usage)?;
    let exported = export_to(&source, &args.out)?;
    let mut out = Out::new();
    out.line(format!("exported {} to {}", count(exported.records, "record", "records"), args.out.display()))?;
    out.line(format!("root {}", ledger::source::hex(&exported.root)))?;
    out.flush()
}

/// Opens what `restore --from` names as a stream of record bodies.
fn restore_origin(args: &RestoreArgs) -> Result<Box<dyn restore::RecordBodies>, Failure> {
    let from = &args.from;
    if replay::published::is_published(Path::new(from)) {
        return published_origin(args);
    }
    if args.key.is_some() {
        return Err(Failure::Usage(format!(
            "{from}: --key is for a published log (an http(s):// prefix or a publication folder, docs/TILES.md)"
        )));
    }
    let path = Path::new(from);
    let source = Source::open(path).map_err(|e| match e {
        posledger::ledger::ReadError::NotALedger(_) | posledger::ledger::ReadError::Io { .. } => usage(e),
        other => Failure::Data(format!("{from}: {other}")),
    })?;
    Ok(Box::new(restore::SourceBodies::new(source)))
}

/// Exit 1 for refused data, 2 for the rest (docs/CLI.md).
fn data_or_usage(data: bool, message: String) -> Failure {
    if data {
        Failure::Data(message)
    } else {
        Failure::Usage(message)
    }
}

/// A published log as the origin of a restore: its checkpoint verified with --key (and witnesses).
fn published_origin(args: &RestoreArgs) -> Result<Box<dyn restore::RecordBodies>, Failure> {
    let from = &args.from;
    let Some(key) = &args.key else {
        return Err(Failure::Usage(format!(
            "{from} is a published log: give its verifier key with --key (docs/TILES.md)"
        )));
    };
    let load = |k: &str, what: &str| vkeyfile::load_verifier_key(k).map_err(|e| Failure::Usage(format!("{what}: {e}")));
    let log_key = load(key, "--key")?;
    let witnesses = args.witnesses.iter().map(|w| load(w, "--witness")).collect::<Result<Vec<_>, _>>()?;
    let min_witnesses = args.min_witnesses.unwrap_or(witnesses.len());
    if min_witnesses > witnesses.len() {
        return Err(Failure::Usage(format!(
            "--min-witnesses {min_witnesses} but only {} --witness keys",
            witnesses.len()
        )));
    }
    let fetch: Box<dyn tiles::Fetch + Send> = if tiles::fetch::is_url(from) {
        Box::new(tiles::HttpFetch::new(from))
    } else {
        Box::new(tiles::DirFetch::new(from))
    };
    let policy = tiles::Policy { key: &log_key, witnesses: &witnesses, min_witnesses };
    let failure = |e: restore::OriginError| data_or_usage(e.is_data(), format!("restore: {from}: {e}"));
    let head = tiles::read_checkpoint(fetch.as_ref(), tiles::layout::CHECKPOINT_PATH, &policy)
        .map_err(|e| failure(e.into()))?;
    let bodies = restore::TileBodies::start(from.clone(), fetch, head).map_err(failure)?;
    Ok(Box::new(bodies))
}

fn restore(args: RestoreArgs) -> Outcome {
    let started = Instant::now();
    let mut origin = restore_origin(&args)?;
    let id_given = origin.ledger_id().is_some();
    let progress = bar(origin.expected().size, "{spinner} restoring [{bar:30}] {pos}/{len} records");
    let report = restore::restore(origin.as_mut(), &args.dir, &mut |n| progress.set_position(n))
        .map_err(|e| data_or_usage(e.is_data(), format!("restore: {e}")))?;
    progress.finish_and_clear();
    if let Some(why) = &report.restored.index_warning {
        eprintln!(
            "warning: {}: the index snapshot could not be written ({why}); the next open rebuilds it",
            args.dir.display()
        );
    }
    let mut out = Out::new();
    out.line(format!(
        "restored {} from {} into {} in {:.1} s",
        count(report.restored.head.size, "record", "records"),
        args.from,
        report.restored.dir.display(),
        started.elapsed().as_secs_f64()
    ))?;
    out.line(format!("root {}", report.restored.head.root_hex()))?;
    out.line(format!(
        "ledger id {:016x}{}",
        report.restored.ledger_id,
        if id_given { "" } else { " (new: the origin does not name its ledger id)" }
    ))?;
    out.line(format!("checkpoints: {} kept", thousands(report.checkpoints as u64)))?;
    out.flush()
}

fn reanchor(args: ReanchorArgs) -> Outcome {
    use posledger::ledger::ReanchorError;
    check_dir(&args.dir)?;
    let head = posledger::ledger::reanchor(&args.dir, args.size).map_err(|e| match e {
        ReanchorError::Open(open) => open_error(&args.dir, open),
        e @ (ReanchorError::SizeDiffers { .. } | ReanchorError::Read(_) | ReanchorError::HeadIsWhole(_)) => {
            Failure::Data(format!("{}: {e}", args.dir.display()))
        }
        other => Failure::Usage(format!("{}: {other}", args.dir.display())),
    })?;
    let mut out = Out::new();
    out.line(format!("HEAD now records {} with root {}", count(head.size, "record", "records"), head.root_hex()))?;
    out.flush()
}

fn head(args: HeadArgs) -> Outcome {
    let source = open_source(&args.dir)?;
    let mut out = Out::new();
    if args.json {
        out.line(format!("{{\"size\": {}, \"root\": \"{}\"}}", source.head.size, source.head.root_hex()))?;
    } else {
        out.line(format!("size {}", thousands(source.head.size)))?;
        out.line(format!("root {}", source.head.root_hex()))?;
    }
    out.flush()
}

fn append(args: AppendArgs) -> Outcome {
    // A missing folder becomes a new, empty ledger (so an export can be loaded into a fresh one); if the
    // input is refused, the folder this run created is removed again.
    check_dir(&args.dir)?;
    let created = first_missing(&args.dir);
    let ledger = Ledger::open(&args.dir).map_err(|e| open_error(&args.dir, e))?;
    let (name, mut reader, len): (String, Box<dyn BufRead>, u64) = if args.file == "-" {
        ("<stdin>".into(), Box::new(BufReader::with_capacity(1 << 20, io::stdin().lock())), 0)
    } else {
        let file = match std::fs::File::open(&args.file) {
            Ok(file) => file,
            Err(e) => {
                drop(ledger);
                remove_created(created.as_deref());
                return Err(Failure::Usage(format!("{}: {e}", args.file)));
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (args.file.clone(), Box::new(BufReader::with_capacity(1 << 20, file)), len)
    };
    let progress = bar(len, "{spinner} appending [{bar:30}] {bytes}/{total_bytes}");
    // One atomic append of the whole input, streamed (docs/NDJSON.md): nothing is kept unless all is.
    let imported = ops::import_ndjson(&ledger, &mut *reader, &name, &mut |n| progress.set_position(n));
    progress.finish_and_clear();
    let imported = match imported {
        Ok(imported) => imported,
        Err(e) => {
            drop(ledger);
            remove_created(created.as_deref());
            return Err(match e {
                ops::ImportFailure::Input(ReadInputError::Bad(bad)) => Failure::Data(bad.to_string()),
                ops::ImportFailure::Input(io @ ReadInputError::Io { .. }) => usage(io),
                ops::ImportFailure::Append(AppendRefusal::Data(why)) => Failure::Data(why),
                ops::ImportFailure::Append(AppendRefusal::Failed(why)) => {
                    Failure::Usage(format!("{}: {why}", args.dir.display()))
                }
            });
        }
    };
    let signed = args.sign_with.as_deref().map(|key| sign_after_append(&ledger, key));
    let closed = close_ledger(ledger, &args.dir)?;
    let mut out = Out::new();
    if imported.retried > 0 {
        out.line(format!(
            "appended {} ({} already present: idempotent retry)",
            count(imported.written, "event", "events"),
            thousands(imported.retried)
        ))?;
    } else {
        out.line(format!("appended {}", count(imported.written, "event", "events")))?;
    }
    out.line(format!("head: size {} root {}", thousands(closed.head.size), closed.head.root_hex()))?;
    match signed {
        None => {}
        Some(Ok(signed)) => out.line(format!("signed checkpoint: {}", signed.path.display()))?,
        Some(Err(why)) => {
            out.flush()?;
            return Err(Failure::Usage(format!("the append is committed, but signing failed: {why}")));
        }
    }
    out.flush()
}

/// The demo's signing step: a new key for this ledger (its origin names the ledger id), kept in the
/// demo folder, and a signed checkpoint of the head.
fn demo_sign(dir: &Path) -> Result<posledger::checkpoints::Signed, Failure> {
    use posledger::tlog::{keyfile, KeyType, SigningKey};
    let ledger = Ledger::open(dir).map_err(|e| open_error(dir, e))?;
    let origin = format!("demo.posledger.example/ledger/{:016x}", ledger.ledger_id());
    let key = SigningKey::generate(&origin, KeyType::Note).map_err(usage)?;
    keyfile::create_private(&dir.join(ops::DEMO_KEY), &key).map_err(usage)?;
    keyfile::create_public(&dir.join(ops::DEMO_VKEY), &key.verifier_key()).map_err(usage)?;
    let signed = posledger::checkpoints::sign_head(&ledger, &key).map_err(usage)?;
    close_ledger(ledger, dir)?;
    Ok(signed)
}

fn sign_after_append(ledger: &Ledger, key: &Path) -> Result<posledger::checkpoints::Signed, String> {
    let key = posledger::tlog::keyfile::load_signing_key(key).map_err(|e| e.to_string())?;
    posledger::checkpoints::sign_head(ledger, &key).map_err(|e| e.to_string())
}

fn key_generate(args: KeyGenerateArgs) -> Outcome {
    use posledger::tlog::{keyfile, KeyType, SigningKey};
    let key_type = if args.witness { KeyType::Cosignature } else { KeyType::Note };
    let key = SigningKey::generate(&args.name, key_type)
        .map_err(|e| Failure::Usage(format!("--name {:?}: {e}", args.name)))?;
    let mut vkey_path = args.out.clone().into_os_string();
    vkey_path.push(".vkey");
    let vkey_path = PathBuf::from(vkey_path);
    if vkey_path.exists() {
        return Err(Failure::Usage(format!(
            "{}: already exists (a key file is never overwritten)",
            vkey_path.display()
        )));
    }
    keyfile::create_private(&args.out, &key).map_err(usage)?;
    keyfile::create_public(&vkey_path, &key.verifier_key()).map_err(usage)?;
    let mut out = Out::new();
    out.line(format!("private key: {} (mode 0600; keep it secret, never share it)", args.out.display()))?;
    out.line(format!("verifier key: {}", vkey_path.display()))?;
    out.line(key.verifier_key())?;
    out.flush()
}

/// The signed checkpoint a command works against: `--checkpoint FILE`, or the ledger's latest (its
/// cosigned note when there is one), as `publish` and `evidence` pick it.
fn chosen_checkpoint(source: &Source, dir: &Path, checkpoint: Option<&Path>, what: &str) -> Result<Vec<u8>, Failure> {
    Ok(match checkpoint {
        Some(path) => posledger::tlog::note::read_note_file(path).map_err(|e| usage(format!("{}: {e}", path.display())))?,
        None => match source.checkpoints().map_err(|e| Failure::Data(e.to_string()))?.pop() {
            Some(carried) => carried.note,
            None => {
                return Err(Failure::Usage(format!(
                    "{}: the ledger has no signed checkpoint to {what}: sign one with `posledger checkpoint --dir {} --key KEY`",
                    dir.display(),
                    dir.display()
                )))
            }
        },
    })
}

fn evidence(args: EvidenceArgs) -> Outcome {
    let sn = ledger::model::Sn::parse(&args.device)
        .map_err(|e| Failure::Usage(format!("--device {:?}: {e}", args.device)))?;
    let source = open_source(&args.dir)?;
    posledger::interchange::output::check_source(&args.dir, &args.out).map_err(usage)?;
    let note = chosen_checkpoint(&source, &args.dir, args.checkpoint.as_deref(), "prove evidence against")?;
    let bar = bar(source.head.size.saturating_mul(2), "{spinner} collecting evidence [{bar:30}] {pos}/{len} records");
    let built = replay::evidence::build(&source, &sn, &note, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let built = built.map_err(|e| match e.class() {
        replay::error::Class::Data => Failure::Data(e.to_string()),
        _ => usage(e),
    })?;
    let bytes = built.evidence.to_bytes();
    let mut file = replay::output::Output::create(&args.out).map_err(usage)?;
    file.write_all(&bytes).map_err(|e| Failure::Usage(format!("{}: {e}", args.out.display())))?;
    file.commit().map_err(usage)?;
    let mut out = Out::new();
    let extra = {
        let mut parts = Vec::new();
        if !built.directives.is_empty() {
            let ids: Vec<String> = built.directives.iter().map(|(id, p)| format!("{id} at position {p}")).collect();
            parts.push(format!("directive {}", ids.join(", ")));
        }
        if !built.partners.is_empty() {
            let sns: Vec<String> = built.partners.iter().map(|(sn, p)| format!("{sn} at position {p}")).collect();
            parts.push(format!("replacement record of {}", sns.join(", ")));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(", with {}", parts.join("; "))
        }
    };
    out.line(format!(
        "wrote evidence for terminal {sn} to {}: {}{extra}, proven against the checkpoint of {} (origin {}, root {}), {} bytes",
        args.out.display(),
        count(built.records, "record", "records"),
        count(built.checkpoint.size, "record", "records"),
        built.checkpoint.origin,
        ledger::source::hex(&built.checkpoint.root),
        thousands(bytes.len() as u64)
    ))?;
    out.flush()
}

fn publish(args: PublishArgs) -> Outcome {
    use posledger::tiles::PublishError;
    check_dir(&args.dir)?;
    let source = posledger::ledger::Source::open(&args.dir).map_err(|e| Failure::Data(e.to_string()))?;
    let note = chosen_checkpoint(&source, &args.dir, args.checkpoint.as_deref(), "publish")?;
    let started = std::time::Instant::now();
    let bar = bar(source.head.size, "{spinner} publishing [{bar:30}] {pos}/{len} records");
    let result = posledger::tiles::publish(&source, &note, &args.out, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let done = result.map_err(|e| match e {
        PublishError::Io { .. }
        | PublishError::NotALayout { .. }
        | PublishError::Ahead { .. }
        | PublishError::PastEnd { .. } => usage(e),
        other => Failure::Data(other.to_string()),
    })?;
    let mut out = Out::new();
    if done.old_size == done.size {
        out.line(format!("{}: already publishes {} records; nothing to do", args.out.display(), thousands(done.size)))?;
    } else {
        out.line(format!(
            "published {} records ({} new) to {}: {} files, {} bytes{} ({:.1} s)",
            thousands(done.size),
            thousands(done.size - done.old_size),
            args.out.display(),
            thousands(done.files),
            thousands(done.bytes),
            if done.kept > 0 {
                format!(", {} kept from an interrupted run", thousands(done.kept))
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        ))?;
    }
    out.flush()
}

fn checkpoint(args: CheckpointArgs) -> Outcome {
    use posledger::checkpoints::{self, CheckpointStoreError};
    use posledger::tlog::keyfile;
    if args.witnesses.len() != args.witness_keys.len() {
        return Err(Failure::Usage(format!(
            "{} --witness but {} --witness-key: give each witness URL its key, in order",
            args.witnesses.len(),
            args.witness_keys.len()
        )));
    }
    let key = keyfile::load_signing_key(&args.key).map_err(usage)?;
    let witness_keys = args
        .witness_keys
        .iter()
        .map(|k| keyfile::load_verifier_key(k).map_err(usage))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bad) = witness_keys.iter().find(|k| k.key_type() != posledger::tlog::KeyType::Cosignature) {
        return Err(Failure::Usage(format!("--witness-key {bad}: not a witness's cosignature key (type 0x04)")));
    }
    check_dir(&args.dir)?;
    if !args.dir.is_dir() {
        return Err(Failure::Usage(format!("{}: no such ledger folder", args.dir.display())));
    }
    let ledger = Ledger::open(&args.dir).map_err(|e| open_error(&args.dir, e))?;
    let signed = match checkpoints::sign_head(&ledger, &key) {
        Ok(signed) => signed,
        Err(
            e @ (CheckpointStoreError::Cut { .. }
            | CheckpointStoreError::Rewritten { .. }
            | CheckpointStoreError::Origin { .. }
            | CheckpointStoreError::Stored { .. }),
        ) => return Err(Failure::Data(e.to_string())),
        Err(e) => return Err(usage(e)),
    };
    let mut out = Out::new();
    out.line(format!(
        "{} checkpoint: size {} root {} -> {}",
        if signed.new { "signed" } else { "already signed" },
        thousands(signed.checkpoint.size),
        posledger::ledger::source::hex(&signed.checkpoint.root),
        signed.path.display()
    ))?;
    let mut failed = Vec::new();
    for (url, witness) in args.witnesses.iter().zip(&witness_keys) {
        let old = last_cosigned_size(&args.dir, witness).unwrap_or(0);
        match posledger::witness_client::submit(&ledger, &signed, url, witness, old) {
            Ok(cosignatures) => {
                let path = checkpoints::store_cosigned(&args.dir, &signed, &cosignatures).map_err(usage)?;
                out.line(format!("cosigned by {}: {}", witness.name(), path.display()))?;
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    close_ledger(ledger, &args.dir)?;
    out.flush()?;
    match failed.len() {
        0 => Ok(()),
        _ => Err(Failure::Data(failed.join("\n"))),
    }
}

/// The size of the latest cosigned checkpoint that `witness` cosigned, as the ledger folder records it.
fn last_cosigned_size(dir: &Path, witness: &posledger::tlog::VerifierKey) -> Option<u64> {
    let folder = dir.join(posledger::checkpoints::CHECKPOINTS_DIR);
    let mut sizes: Vec<(u64, PathBuf)> = std::fs::read_dir(&folder)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_suffix(".cosigned")?.parse().ok()?;
            Some((size, e.path()))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().rev().find_map(|(size, path)| {
        let bytes = posledger::tlog::note::read_note_file(&path).ok()?;
        let note = posledger::tlog::Note::parse(&bytes).ok()?;
        note.open(&[witness]).ok().map(|_| size)
    })
}

/// The topmost folder of `dir`'s path that does not exist yet (what creating `dir` would create).
fn first_missing(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty()) {
        if path.exists() {
            break;
        }
        missing = Some(path.to_owned());
        at = path.parent();
    }
    missing
}

/// Removes a folder this run created (a refused import into a new folder leaves no folder behind).
fn remove_created(created: Option<&Path>) {
    if let Some(dir) = created {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("warning: {}: could not remove the folder this run created: {e}", dir.display());
        }
    }
}

/// Reads the model list of `stop-models`: one code a line, `#` comments and blank lines skipped.
/// The longest line of a `stop-models` list: a model code (at most 64 bytes) with room for a comment.
const MAX_MODEL_LINE_BYTES: usize = 4_096;

fn read_models(path: &Path) -> Result<Vec<ModelCode>, Failure> {
    let name = path.display();
    let file = std::fs::File::open(path).map_err(|e| Failure::Usage(format!("{name}: {e}")))?;
    let mut models = Vec::new();
    let mut seen = HashSet::new();
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    for i in 0usize.. {
        buf.clear();
        // A model code is at most 64 bytes: a line is read up to a bound, never to its end.
        let n = (&mut reader)
            .take(MAX_MODEL_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure::Usage(format!("{name}:{}: {e}", i + 1)))?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_MODEL_LINE_BYTES && buf.last() != Some(&b'\n') {
            return Err(Failure::Data(format!(
                "{name}:{}: line is longer than {} bytes",
                i + 1,
                thousands(MAX_MODEL_LINE_BYTES as u64)
            )));
        }
        let line = std::str::from_utf8(&buf).map_err(|e| Failure::Data(format!("{name}:{}: not UTF-8: {e}", i + 1)))?;
        let code = line.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        if models.len() >= ledger::model::MAX_DIRECTIVE_MODELS {
            return Err(Failure::Data(format!(
                "{name}:{}: more than {} models in one directive",
                i + 1,
                thousands(ledger::model::MAX_DIRECTIVE_MODELS as u64)
            )));
        }
        let model = ModelCode::parse(code).map_err(|e| Failure::Data(format!("{name}:{}: {e}", i + 1)))?;
        if !seen.insert(model.clone()) {
            return Err(Failure::Data(format!("{name}:{}: model {model} is listed twice", i + 1)));
        }
        models.push(model);
    }
    if models.is_empty() {
        return Err(Failure::Data(format!("{name}: lists no model")));
    }
    Ok(models)
}

fn stop_models(args: StopModelsArgs) -> Outcome {
    let id = DirectiveId::parse(&args.directive).map_err(|e| Failure::Usage(format!("--directive: {e}")))?;
    let reason = Text::parse(&args.reason).map_err(|e| Failure::Usage(format!("--reason: {e}")))?;
    let deadline = args
        .deadline
        .as_deref()
        .map(|d| {
            DateTime::parse_from_rfc3339(d)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| Failure::Usage(format!("--deadline: {d:?} is not an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let models = read_models(&args.models)?;
    check_dir(&args.dir)?;
    if !ops::is_ledger(&args.dir) {
        return Err(Failure::Usage(format!("{}: no posledger ledger here (no segments/ folder)", args.dir.display())));
    }
    let ledger = Ledger::open(&args.dir).map_err(|e| open_error(&args.dir, e))?;
    let models_len = models.len();
    let directive = Directive { id: id.clone(), at: Utc::now(), models, reason, deadline };
    let outcome = ledger.stop_models(directive, None).map_err(|e| match e {
        AppendError::Rule { violation, .. } => Failure::Data(format!("{}: {violation}", args.dir.display())),
        AppendError::Field { error, .. } => Failure::Data(format!("{}: {error}", args.models.display())),
        e @ AppendError::PartIdTooLong { .. } => Failure::Data(format!("--directive: {e}")),
        other => Failure::Usage(format!("{}: {other}", args.dir.display())),
    })?;
    let head = outcome.appended.head;
    close_ledger(ledger, &args.dir)?;
    let mut out = Out::new();
    out.line(format!(
        "directive {id} recorded: stopped {} of {}",
        count(outcome.stopped.len() as u64, "terminal", "terminals"),
        count(models_len as u64, "model", "models")
    ))?;
    if outcome.directives.len() > 1 {
        let ids: Vec<&str> = outcome.directives.iter().map(DirectiveId::as_str).collect();
        out.line(format!(
            "  the model list was split into {} directive records to fit the entry limit of {} bytes: {}",
            outcome.directives.len(),
            thousands(ledger::codec::MAX_ENTRY_BYTES as u64),
            ids.join(", ")
        ))?;
    }
    out.line(format!("head: size {} root {}", thousands(head.size), head.root_hex()))?;
    out.flush()
}

fn print_summary(out: &mut Out, summary: &FleetSummary) -> Outcome {
    let [issued, active, stopped, replaced] = summary.by_status;
    out.line(format!("  {:<22}{:>12}", "terminals", thousands(summary.devices)))?;
    for (name, n) in [("issued", issued), ("active", active), ("stopped", stopped), ("replaced", replaced)] {
        out.line(format!("    {:<20}{:>12}", name, thousands(n)))?;
    }
    out.line(format!("  {:<22}{:>12}", "with open flags", thousands(summary.flagged)))?;
    out.line(format!("  {:<22}{:>12}", "contract expired", thousands(summary.contract_expired)))?;
    out.line(format!("  {:<22}{:>12}", "directives", thousands(summary.directives)))?;
    out.line(format!("  {:<22}{}", "fleet digest", summary.digest))?;
    out.line("")?;
    out.line(format!("  {:<14}{:>10}{:>10}{:>10}{:>10}", "provider", "issued", "active", "stopped", "replaced"))?;
    for (provider, [i, a, s, r]) in &summary.by_provider {
        out.line(format!(
            "  {:<14}{:>10}{:>10}{:>10}{:>10}",
            provider,
            thousands(*i),
            thousands(*a),
            thousands(*s),
            thousands(*r)
        ))?;
    }
    Ok(())
}

fn demo(args: DemoArgs) -> Outcome {
    let config = Config { devices: args.devices, months: args.months, seed: args.seed, ..Config::default() };
    config.validate().map_err(usage)?;
    let started = Instant::now();
    let lock = ops::prepare_demo_dir(&args.dir).map_err(Failure::Usage)?;
    let mut out = Out::new();
    out.line(format!(
        "posledger demo: {} over {} (seed {}) into {}",
        count(config.devices, "terminal", "terminals"),
        count(u64::from(config.months), "month", "months"),
        config.seed,
        args.dir.display()
    ))?;
    out.flush()?;
    let (report, head, sim_time) = simulate_into(&args.dir, Some(lock), &config)?;
    out.line(format!(
        "  simulated {} in {} ({:.1} s)",
        count(report.events, "event", "events"),
        count(report.appends, "append", "appends"),
        sim_time.as_secs_f64()
    ))?;
    out.flush()?;
    let signed = demo_sign(&args.dir)?;
    out.line(format!(
        "  signed checkpoint {} (origin {}, key {}, verifier key {})",
        signed.path.display(),
        signed.checkpoint.origin,
        args.dir.join(ops::DEMO_KEY).display(),
        args.dir.join(ops::DEMO_VKEY).display()
    ))?;
    let export_started = Instant::now();
    let bundle = args.dir.join("bundle.plb");
    let source = open_source(&args.dir)?;
    let exported = export_to(&source, &bundle)?;
    out.line(format!(
        "  exported bundle {} ({}, {:.1} MB, {:.1} s)",
        bundle.display(),
        count(exported.records, "record", "records"),
        exported.bytes as f64 / 1e6,
        export_started.elapsed().as_secs_f64()
    ))?;
    out.line("")?;
    out.line(format!("events     {}", thousands(head.size)))?;
    out.line(format!("head root  {}", head.root_hex()))?;
    out.line("")?;
    out.line("fleet (rebuilt from the bundle by the projections, in parallel)")?;
    let bundle_source = Source::open(&bundle).map_err(|e| Failure::Data(e.to_string()))?;
    let progress = bar(bundle_source.head.size, "{spinner} summarizing [{bar:30}] {pos}/{len}");
    let summary =
        fleet_summary(&bundle_source, &mut |n| progress.set_position(n)).map_err(|e| Failure::Data(e.to_string()))?;
    progress.finish_and_clear();
    print_summary(&mut out, &summary)?;
    out.line("")?;
    out.line("audit findings by rule (replay audit lists each with its position and evidence)")?;
    for (rule, n) in &summary.findings {
        out.line(format!("  {rule:<30}{:>10}", thousands(*n)))?;
    }
    out.line("")?;
    out.line("planted for the audits (what the simulator did on purpose)")?;
    if let Some(id) = &report.directive {
        out.line(format!(
            "  directive {id}: {} recalled, {} stopped at once",
            count(sim::RECALLED_MODELS as u64, "model", "models"),
            count(report.stopped_by_directive, "terminal", "terminals")
        ))?;
        out.line(format!(
            "    missed: {} of recalled models issued after it ({} stopped past the deadline)",
            count(report.missed_directive, "terminal", "terminals"),
            thousands(report.stopped_late)
        ))?;
    }
    out.line(format!("  flow after a stop          {:>10} observations", thousands(report.flows_after_stop)))?;
    out.line(format!("  flow on an expired contract{:>10} observations", thousands(report.flows_on_expired_contract)))?;
    out.line(format!("  dormant terminals          {:>10} (never reach 100 yuan)", thousands(report.dormant)))?;
    out.line(format!(
        "  flags raised / cleared     {:>10} / {}",
        thousands(report.flags_raised),
        thousands(report.flags_cleared)
    ))?;
    out.line("")?;
    let report_started = Instant::now();
    let report_path = args.dir.join(ops::DEMO_REPORT);
    let report_progress = bar(bundle_source.head.size, "{spinner} writing the report [{bar:30}] {pos}/{len}");
    let options = replay::report::ReportOptions {
        source_arg: bundle.display().to_string(),
        ..replay::report::ReportOptions::default()
    };
    let html = replay::report::report(&bundle_source, &options, &mut |n| report_progress.set_position(n))
        .map_err(|e| Failure::Data(e.to_string()))?;
    report_progress.finish_and_clear();
    let mut file = replay::output::Output::create(&report_path).map_err(|e| Failure::Usage(e.to_string()))?;
    std::io::Write::write_all(&mut file, html.as_bytes()).map_err(|e| Failure::Usage(e.to_string()))?;
    file.commit().map_err(|e| Failure::Usage(e.to_string()))?;
    out.line(format!(
        "audit report (charts, one self-contained HTML file; replay report writes it): {} ({:.1} s)",
        report_path.display(),
        report_started.elapsed().as_secs_f64()
    ))?;
    out.line("")?;
    let b = bundle.display();
    out.line("dig further with replay, the regulators' read-only tool")?;
    out.line("(run it as `cargo run --release -p posledger-replay -- <command>` or target/release/replay):")?;
    out.line(format!("  replay verify {b}"))?;
    out.line(format!(
        "  replay verify {b} --checkpoint {} --key {}",
        signed.path.display(),
        args.dir.join(ops::DEMO_VKEY).display()
    ))?;
    out.line(format!("  replay fleet {b}"))?;
    out.line(format!("  replay audit {b}"))?;
    out.line(format!("  replay report {b} --out report.html"))?;
    let samples = [
        (&report.samples.recalled_and_replaced, "stopped by the directive, then replaced"),
        (&report.samples.missed_directive, "a recalled model issued after the directive"),
        (&report.samples.flow_after_stop, "flow after a stop"),
        (&report.samples.flow_on_expired_contract, "flow on an expired contract"),
        (&report.samples.dormant, "dormant: never activated"),
    ];
    for (sn, why) in samples {
        if let Some(sn) = sn {
            out.line(format!("  replay device {b} {sn}    # {why}"))?;
        }
    }
    out.line(format!("  replay export {b} --format ndjson --out fleet.ndjson"))?;
    out.line("")?;
    out.line(format!("done in {:.1} s", started.elapsed().as_secs_f64()))?;
    out.flush()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo(args),
        Command::Simulate(args) => simulate(args),
        Command::Append(args) => append(args),
        Command::StopModels(args) => stop_models(args),
        Command::Export(args) => export(args),
        Command::Restore(args) => restore(args),
        Command::Head(args) => head(args),
        Command::Reanchor(args) => reanchor(args),
        Command::Key(KeyCommand::Generate(args)) => key_generate(args),
        Command::Checkpoint(args) => checkpoint(args),
        Command::Publish(args) => publish(args),
        Command::Evidence(args) => evidence(args),
    };
    match result {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Data(why)) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(why)) => {
            eprintln!("{why}");
            ExitCode::from(2)
        }
    }
}

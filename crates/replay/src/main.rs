//! `replay`: the regulators' tool. Arguments, progress bars, output and exit codes; the work is in the
//! `replay` library. Exit codes: 0 success; 1 the data failed (verification failed, inconsistent log,
//! unknown terminal, findings with `--fail-on-findings`); 2 usage or I/O error.

#![deny(unsafe_code)]

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use log::merkle::Hash;
use log::source::{hex, parse_hash};
use log::{Sn, Source};
use projections::{AuditConfig, Cut};
use replay::error::{output, Class, Error};
use replay::export::Format;
use replay::output;
use replay::published::Keys;
use replay::text::{count, thousands};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "The regulators' tool: verify, rebuild, audit, export and prove a posledger log, read-only.\n\
SOURCE is a ledger folder or a bundle file; replay never writes to it and never opens its sled index.";

const EXIT_CODES: &str = "Examples:
  replay verify fleet.bundle
  replay fleet /var/lib/posledger --as-of 2026-07-01T00:00:00Z --format json | jq .status
  replay audit fleet.bundle --format csv > findings.csv

Exit codes: 0 success; 1 the data failed; 2 usage or I/O error.";

#[derive(Parser)]
#[command(name = "replay", version, about = ABOUT, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConsistencyFormat {
    Text,
    Witness,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Ndjson,
    Csv,
    Parquet,
}

/// Signed checkpoints to hold a source to (docs/CHECKPOINTS.md).
#[derive(clap::Args)]
struct SignedArgs {
    /// A signed checkpoint the source must extend (repeatable: the verdict then bounds a rewrite).
    #[arg(long = "checkpoint", value_name = "FILE", requires = "key")]
    checkpoints: Vec<PathBuf>,
    #[command(flatten)]
    keys: KeyArgs,
}

/// The keys a signed checkpoint must verify with (a published log's, or --checkpoint files').
#[derive(clap::Args)]
struct KeyArgs {
    /// The log's verifier key (a file, or the vkey text `name+id+base64`); required for a published
    /// log (an http(s):// URL or a publication folder, docs/TILES.md).
    #[arg(long, value_name = "VKEY")]
    key: Option<String>,
    /// A witness's verifier key whose cosignature counts (repeatable).
    #[arg(long = "witness", value_name = "VKEY", requires = "key")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned each checkpoint (default: all of them).
    #[arg(long, value_name = "K")]
    min_witnesses: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Check every byte of the log: CRCs, decoding, positions, versions, Merkle roots.
    ///
    /// Checks every CRC, that every record decodes, dense positions and dense stream versions, commit
    /// markers, the header chain, and the Merkle root recomputed from the records against every
    /// trailer and the published HEAD.
    #[command(
        after_help = "Examples:\n  replay verify /var/lib/posledger\n  replay verify fleet.bundle --json | jq .root\n\n\
Prints `verified N records, root <hex>`; on failure exits 1 naming the file, the first failing position and what failed."
    )]
    Verify {
        /// Ledger folder or bundle file.
        source: PathBuf,
        /// Print {"ok": true, "records": N, "root": "<hex>"} (or {"ok": false, "error": ..., "position": ...}).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        signed: SignedArgs,
    },
    /// Fleet summary by status and model, with the fleet digest, as of a position or a time.
    #[command(
        after_help = "Examples:\n  replay fleet fleet.bundle\n  replay fleet fleet.bundle --as-of 2026-07-01T00:00:00Z --format json | jq .status\n  replay fleet ledger-dir --position 1000 --format csv > fleet.csv"
    )]
    Fleet {
        /// Ledger folder, bundle file, or published log (http(s):// URL or folder, with --key); several
        /// sources (different ledgers) give totals and one part per source.
        #[arg(value_name = "SOURCE", required = true)]
        sources: Vec<PathBuf>,
        #[command(flatten)]
        keys: KeyArgs,
        /// Fold every record recorded at or before this time (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time, conflicts_with = "position")]
        as_of: Option<DateTime<Utc>>,
        /// Fold the first N records (positions 0 to N-1).
        #[arg(long, value_name = "N")]
        position: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
    /// One terminal's whole history: position, times, event, and its state after each event.
    #[command(
        after_help = "Examples:\n  replay device fleet.bundle SN00000042\n  replay device ledger-dir SN00000042 --format json | jq '.events[].state.status'"
    )]
    Device {
        /// Ledger folder, bundle file, or published log (http(s):// URL or folder, with --key).
        source: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
        /// The terminal's serial number.
        sn: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: DeviceFormat,
    },
    /// Audit findings: the regulations' rules applied to the whole log, or to the log as of a time.
    ///
    /// Flow after stop or replacement or on an expired contract, activation without 100 yuan of flow,
    /// directives not enforced, flags open too long, replacement mismatches, dormant terminals, illegal
    /// transitions, events dated before their terminal's issue, a contract expired twice without a
    /// renewal. Findings are data: the exit code is 0 unless --fail-on-findings is given.
    #[command(
        after_help = "Examples:\n  replay audit fleet.bundle\n  replay audit fleet.bundle --rule flow_after_stop --rule dormant --format csv > findings.csv\n  replay audit ledger-dir --fail-on-findings --format json | jq length\n\n\
Rules: flow_after_stop, flow_after_replacement, flow_while_contract_expired, activation_without_flow,\n\
directive_not_enforced, flag_open_too_long, replacement_mismatch, dormant, illegal_transition,\n\
event_before_issue, repeated_expiry; across several sources: one_sn_one_binding (docs/CLI.md)."
    )]
    Audit {
        /// Ledger folder, bundle file, or published log (http(s):// URL or folder, with --key); several
        /// sources (different ledgers) are audited each on its own, plus one_sn_one_binding across them.
        #[arg(value_name = "SOURCE", required = true)]
        sources: Vec<PathBuf>,
        #[command(flatten)]
        keys: KeyArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
        /// Only this rule (repeat for several).
        #[arg(long = "rule", value_name = "NAME")]
        rules: Vec<String>,
        /// Exit 1 when there is at least one finding.
        #[arg(long)]
        fail_on_findings: bool,
        /// flag_open_too_long: a flag open longer than this many days is a finding.
        #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        flag_open_days: u32,
        /// dormant: issued more than this many days before the end of the log and never activated.
        #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        dormant_days: u32,
        /// Audit the log as of this time (every record recorded at or before it; RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        as_of: Option<DateTime<Utc>>,
    },
    /// The audit report: one self-contained HTML file with charts (no script, nothing fetched).
    ///
    /// The fleet by status at each month's end, activations, flow, dormant share, stops by reason, each
    /// directive's effect day by day, findings by rule and provider, tables by provider, model and
    /// region. Every number is one that `replay fleet --as-of` or `replay audit --as-of` gives for the
    /// same cut. The same log and options give the same bytes: the time it says it was made is the
    /// last record's recorded_at unless --generated-at is given.
    #[command(
        after_help = "Examples:\n  replay report fleet.bundle --out report.html\n  replay report ledger-dir --as-of 2026-07-01T00:00:00Z --out report-h1.html\n  replay report fleet.bundle --out report.html --checkpoint head.checkpoint --key log.key.vkey\n\n\
--out is written atomically (never inside SOURCE). docs/REPORT.md says what each chart shows."
    )]
    Report {
        /// Ledger folder or bundle file.
        source: PathBuf,
        /// The HTML file to write (`-` for standard output). Replaced atomically; a path inside SOURCE,
        /// SOURCE itself or a symbolic link is refused.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Report the log as of this time (every record recorded at or before it; RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        as_of: Option<DateTime<Utc>>,
        /// The time the report says it was made (default: the last recorded_at folded, so that the
        /// report depends on the log only).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        generated_at: Option<DateTime<Utc>>,
        /// Models listed by name in the table by model (the rest are summed in one row).
        #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..=1000))]
        top_models: u16,
        /// Example terminals listed per audit rule, each with its `replay device` command.
        #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=1000))]
        examples: u16,
        /// flag_open_too_long: a flag open longer than this many days is a finding.
        #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        flag_open_days: u32,
        /// dormant: issued more than this many days before the cut and never activated.
        #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        dormant_days: u32,
        #[command(flatten)]
        signed: SignedArgs,
    },
    /// Every record in position order: NDJSON in the append schema, CSV, or Parquet tables.
    #[command(
        after_help = "Examples:\n  replay export fleet.bundle --format ndjson --out fleet.ndjson\n  replay export ledger-dir --format csv --out - | head\n  replay export fleet.bundle --format parquet --out fleet-parquet\n\n\
The NDJSON export appended into an empty ledger (`posledger append`) rebuilds a fleet with the same digest.\n\
Parquet (docs/PARQUET.md): --out is a new or empty folder; it gets events/provider=P/month=YYYY-MM/ (month in\n\
China Standard Time, UTC+8), directives/, directive_models/ and terminals/, written into a temporary folder and\n\
renamed into place at the end."
    )]
    Export {
        /// Ledger folder, bundle file, or published log (http(s):// URL or folder, with --key); several
        /// sources (different ledgers) export as parquet (a source=<ledger id> level) or csv (a source column).
        #[arg(value_name = "SOURCE", required = true)]
        sources: Vec<PathBuf>,
        #[command(flatten)]
        keys: KeyArgs,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file (`-` for standard output). A regular file is replaced atomically; a device or
        /// FIFO is written in place; a symbolic link, a path inside SOURCE or SOURCE itself is refused.
        /// For parquet: a folder that does not exist or is empty.
        #[arg(long, value_name = "FILE|DIR")]
        out: PathBuf,
    },
    /// Inclusion proof of one record: JSON {position, size, leaf_hash, root, proof}.
    #[command(
        after_help = "Examples:\n  replay prove fleet.bundle --position 42\n  replay prove ledger-dir --position 42 --size 1000 | jq -r .root"
    )]
    Prove {
        /// Ledger folder, bundle file, or published log (http(s):// URL or folder, with --key).
        source: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
        /// The record's position.
        #[arg(long, value_name = "N")]
        position: u64,
        /// The size of the log to prove inclusion in (default: the whole log).
        #[arg(long, value_name = "M")]
        size: Option<u64>,
    },
    /// Verify a published log (C2SP tlog-tiles, from a folder or an http(s):// URL) against its key.
    ///
    /// Checks the checkpoint's signature (and cosignatures), every entry against its level-0 hash and
    /// that it is the record of its position, every tile against the tiles and entries below it, and
    /// the root. With --since, only what is new after an older checkpoint, and that the log extends it.
    #[command(
        after_help = "Examples:\n  replay verify-tiles https://log.example/posledger --key log.vkey\n  replay verify-tiles ./published --key log.vkey --since yesterday.checkpoint\n\n\
Exits 0 when everything verifies, 1 naming the tile, bundle or entry that does not, 2 on usage or network errors."
    )]
    VerifyTiles {
        /// The published log: an http(s):// prefix or a folder.
        source: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
        /// An older checkpoint of the same log, already verified: check only what is new.
        #[arg(long, value_name = "FILE")]
        since: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evidence for one terminal (`posledger evidence`): `replay evidence check FILE --key VKEY`.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Check that the log extends an earlier head (size and root), and print the consistency proof.
    #[command(
        after_help = "Examples:\n  replay consistency fleet.bundle --old-size 1000 --old-root 3f5a...e1\n  replay consistency ledger-dir --old-size 1000 --old-root \"$ROOT\" --json\n\n\
Exits 0 when the log's first M records have that root and the log extends them, 1 otherwise."
    )]
    Consistency {
        /// Ledger folder or bundle file.
        source: PathBuf,
        /// The earlier log's size.
        #[arg(
            long,
            value_name = "M",
            required_unless_present = "from",
            requires = "old_root",
            conflicts_with = "from"
        )]
        old_size: Option<u64>,
        /// The earlier log's root (64 hex digits).
        #[arg(long, value_name = "HEX", value_parser = parse_root, requires = "old_size")]
        old_root: Option<Hash>,
        /// The older signed checkpoint (with --to and --key: prove that --to extends it).
        #[arg(long, value_name = "FILE", requires_all = ["to", "key"])]
        from: Option<PathBuf>,
        /// The newer signed checkpoint.
        #[arg(long, value_name = "FILE", requires = "from")]
        to: Option<PathBuf>,
        /// The log's verifier key (a file or the vkey text), for --from/--to.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// Output with --from/--to: `text`, or `witness` for the tlog-witness add-checkpoint request body.
        #[arg(long, value_enum, default_value = "text")]
        format: ConsistencyFormat,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// Verify one terminal's evidence offline and print its history with the state after each event.
    ///
    /// Checks the signed checkpoint the evidence carries (with the log's key, and --witness keys),
    /// every record's inclusion proof against its root, that every record decodes and is at its
    /// position, positions strictly increasing, the terminal's stream versions dense from 0, and that
    /// the directive and replacement records it holds are the ones the terminal's events name. Then
    /// prints the history as `replay device` does. Evidence proves what the log held up to the
    /// checkpoint's size, not what came after it (docs/FORMAT.md, "Evidence for one terminal").
    #[command(
        after_help = "Examples:\n  posledger evidence --dir ledger --device SN00000042 --out SN00000042.evidence\n  replay evidence check SN00000042.evidence --key log.key.vkey\n  replay evidence check SN00000042.evidence --key log.key.vkey --witness w1.vkey --format json\n\n\
Exits 0 when the evidence verifies, 1 naming the byte or the position of the record that does not\n\
(a cut file, records out of order, an altered or missing record, another log's checkpoint), 2 on usage\n\
or I/O errors. The format is in docs/FORMAT.md; the contract in docs/CLI.md."
    )]
    Check {
        /// The evidence file.
        file: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: DeviceFormat,
    },
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2026-07-01T00:00:00Z"))
}

fn parse_root(text: &str) -> Result<Hash, String> {
    parse_hash(text).ok_or_else(|| "expected 64 hex digits".to_owned())
}

/// A progress bar on a terminal; nothing otherwise.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} records ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A spinner on a terminal for work without a count; nothing otherwise.
fn spinner(what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A source opened for reading: a ledger folder or bundle, or a published log copied and verified into
/// a temporary bundle (removed when this is dropped).
struct Opened {
    source: Source,
    _mirror: Option<replay::published::Mirror>,
}

impl std::ops::Deref for Opened {
    type Target = Source;
    fn deref(&self) -> &Source {
        &self.source
    }
}

fn open(path: &Path) -> Result<Opened, Error> {
    if !replay::published::is_published(path) {
        return Ok(Opened { source: replay::open(path)?, _mirror: None });
    }
    let Some(keys) = PUBLISHED_KEYS.get().and_then(Option::as_ref) else {
        return Err(Error::Usage(format!(
            "{} is a published log: give --key VKEY (the log's verifier key) to verify it",
            path.display()
        )));
    };
    let bar = bar(0, "fetching and verifying the published log");
    let mirror = replay::published::mirror(path, keys, &mut |n, size| {
        bar.set_length(size);
        bar.set_position(n);
    });
    bar.finish_and_clear();
    let mirror = mirror?;
    Ok(Opened { source: mirror.source.clone(), _mirror: Some(mirror) })
}

/// `replay verify-tiles`.
fn verify_tiles(source: &Path, since: Option<&Path>, as_json: bool) -> Result<Verdict, Error> {
    let Some(keys) = PUBLISHED_KEYS.get().and_then(Option::as_ref) else {
        return Err(Error::Usage("verify-tiles needs --key VKEY (the log's verifier key)".into()));
    };
    let since = match since {
        Some(path) => Some((path, read_note(path)?)),
        None => None,
    };
    let bar = bar(0, "verify-tiles");
    let result = replay::published::verify(source, keys, since, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let (head, walked) = result?;
    let mut out = stdout();
    let cp = &head.checkpoint;
    if as_json {
        let value = serde_json::json!({
            "ok": true,
            "origin": cp.origin,
            "size": cp.size,
            "root": hex(&cp.root),
            "checked_records": walked.records,
            "tiles": walked.tiles,
            "bundles": walked.bundles,
            "bytes": walked.bytes,
            "witnesses": head.witnesses.iter().map(|(n, t)| serde_json::json!({"name": n, "timestamp": t})).collect::<Vec<_>>(),
        });
        json_line(&mut out, &value, false)?;
    } else {
        let by = if head.witnesses.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = head.witnesses.iter().map(|(n, t)| format!("{n} at {t}")).collect();
            format!(", cosigned by {}", names.join(", "))
        };
        writeln!(
            out,
            "verified published log {} ({}, root {}{by}): {} checked, {} hash tiles, {} entry bundles, {} fetched",
            cp.origin,
            count(cp.size, "record", "records"),
            hex(&cp.root),
            count(walked.records, "record", "records"),
            thousands(walked.tiles),
            thousands(walked.bundles),
            count(walked.bytes, "byte", "bytes"),
        )
        .map_err(output("-"))?;
    }
    finish(out)?;
    Ok(Verdict::Ok)
}

type Out = BufWriter<io::StdoutLock<'static>>;

fn stdout() -> Out {
    BufWriter::with_capacity(1 << 16, io::stdout().lock())
}

fn json_line(out: &mut dyn Write, value: &impl serde::Serialize, pretty: bool) -> Result<(), Error> {
    let mut write = || -> io::Result<()> {
        if pretty {
            serde_json::to_writer_pretty(&mut *out, value)?;
        } else {
            serde_json::to_writer(&mut *out, value)?;
        }
        out.write_all(b"\n")
    };
    write().map_err(output("-"))
}

fn finish(mut out: Out) -> Result<(), Error> {
    out.flush().map_err(output("-"))
}

/// What a command decided about the data, beside errors.
enum Verdict {
    Ok,
    /// Exit 1 without an error line of its own (the output said why).
    DataFailed,
}

/// The log key, witness keys and quorum of `--key`, `--witness`, `--min-witnesses`.
fn signed_keys(args: &SignedArgs) -> Result<Option<(tlog::VerifierKey, Vec<tlog::VerifierKey>, usize)>, Error> {
    Ok(load_keys(&args.keys)?.map(|k| (k.key, k.witnesses, k.min_witnesses)))
}

/// The keys of `--key`, `--witness`, `--min-witnesses`.
fn load_keys(args: &KeyArgs) -> Result<Option<Keys>, Error> {
    let Some(key) = &args.key else { return Ok(None) };
    let load =
        |k: &str, what: &str| tlog::keyfile::load_verifier_key(k).map_err(|e| Error::Usage(format!("{what}: {e}")));
    let log_key = load(key, "--key")?;
    let witnesses = args.witnesses.iter().map(|w| load(w, "--witness")).collect::<Result<Vec<_>, _>>()?;
    let min = args.min_witnesses.unwrap_or(witnesses.len());
    if min > witnesses.len() {
        return Err(Error::Usage(format!("--min-witnesses {min} but only {} --witness keys", witnesses.len())));
    }
    Ok(Some(Keys { key: log_key, witnesses, min_witnesses: min }))
}

/// The keys a published SOURCE is verified with (set once, from the command's arguments).
static PUBLISHED_KEYS: std::sync::OnceLock<Option<Keys>> = std::sync::OnceLock::new();

/// Remembers the command's keys for a published SOURCE; refuses --key with a local source when the
/// command has no other use for it.
fn published_keys(source: &Path, args: &KeyArgs, key_has_other_use: bool) -> Result<(), Error> {
    published_keys_of(std::slice::from_ref(&source.to_owned()), args, key_has_other_use)
}

/// [`published_keys`] for several sources: --key verifies every published one among them.
fn published_keys_of(sources: &[PathBuf], args: &KeyArgs, key_has_other_use: bool) -> Result<(), Error> {
    let keys = load_keys(args)?;
    if keys.is_some() && !key_has_other_use && !sources.iter().any(|s| replay::published::is_published(s)) {
        let names: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
        return Err(Error::Usage(format!(
            "--key is for a published log (an http(s):// URL or a publication folder); {} is neither",
            names.join(", ")
        )));
    }
    let _ = PUBLISHED_KEYS.set(keys);
    Ok(())
}

/// Reads a checkpoint file, bounded by the largest note.
fn read_note(path: &Path) -> Result<Vec<u8>, Error> {
    tlog::note::read_note_file(path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// `replay verify --checkpoint`: the source against each signed checkpoint. Exit 1 unless it extends
/// every one.
fn check_checkpoints(source_path: &Path, args: &SignedArgs, as_json: bool) -> Result<Verdict, Error> {
    use replay::checkpoint::{fork_bounds, Standing};
    let Some((log_key, witnesses, min)) = signed_keys(args)? else { return Ok(Verdict::Ok) };
    let source = open(source_path)?;
    let mut notes: Vec<(String, Vec<u8>)> = Vec::new();
    for path in &args.checkpoints {
        notes.push((path.display().to_string(), read_note(path)?));
    }
    let given = notes.len();
    // The checkpoints the source carries (a bundle's section, a folder's checkpoints/) must verify
    // with the same key and be extended too: a source that disagrees with its own signed history is
    // damaged or rewritten.
    for carried in source.checkpoints()? {
        notes.push((format!("carried checkpoint of size {}", carried.size), carried.note));
    }
    let bar = bar(source.head.size, "checkpoints");
    let checked =
        replay::checkpoint::check_all(&source, &notes, &log_key, &witnesses, min, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let checked = checked?;
    let carried_ok = checked.iter().skip(given).filter(|c| c.standing == Standing::Extends).count();
    let mut out = stdout();
    let mut all = true;
    for (i, c) in checked.iter().enumerate() {
        if i >= given && c.standing == Standing::Extends && !as_json {
            continue;
        }
        let cp = &c.verified.checkpoint;
        let by = if c.verified.witnesses.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = c.verified.witnesses.iter().map(|(n, t)| format!("{n} at {t}")).collect();
            format!(", cosigned by {}", names.join(", "))
        };
        let line = match &c.standing {
            Standing::Extends => format!(
                "checkpoint {} ({}, root {}{by}): the source extends it",
                c.name,
                count(cp.size, "record", "records"),
                hex(&cp.root)
            ),
            Standing::Shorter { size } => {
                all = false;
                format!(
                    "checkpoint {} ({}{by}): the source is SHORTER, {}: records after position {} were lost or cut",
                    c.name,
                    count(cp.size, "record", "records"),
                    count(*size, "record", "records"),
                    size
                )
            }
            Standing::Differs { actual_root } => {
                all = false;
                format!(
                    "checkpoint {} ({}, root {}{by}): the source DIFFERS, its root at that size is {}: the log was rewritten (a fork)",
                    c.name,
                    count(cp.size, "record", "records"),
                    hex(&cp.root),
                    hex(actual_root)
                )
            }
        };
        if as_json {
            let (standing, actual) = match &c.standing {
                Standing::Extends => ("extends", None),
                Standing::Shorter { .. } => ("shorter", None),
                Standing::Differs { actual_root } => ("differs", Some(hex(actual_root))),
            };
            let report = serde_json::json!({
                "checkpoint": c.name, "origin": cp.origin, "size": cp.size, "root": hex(&cp.root),
                "witnesses": c.verified.witnesses.iter().map(|(n, t)| serde_json::json!({"name": n, "timestamp": t})).collect::<Vec<_>>(),
                "standing": standing, "source_size": source.head.size, "source_root_at_size": actual,
            });
            json_line(&mut out, &report, false)?;
        } else {
            writeln!(out, "{line}").map_err(output("-"))?;
        }
    }
    if checked.len() > given && !as_json {
        writeln!(
            out,
            "{} carried by the source: the source extends {carried_ok}",
            count((checked.len() - given) as u64, "signed checkpoint", "signed checkpoints")
        )
        .map_err(output("-"))?;
    }
    finish(out)?;
    if all {
        return Ok(Verdict::Ok);
    }
    if let (agrees, Some(differs)) = fork_bounds(&checked) {
        match agrees {
            Some(a) if a < differs => {
                eprintln!("replay: the log was rewritten between signed sizes {a} (agrees) and {differs} (differs)")
            }
            _ => eprintln!("replay: the log differs from a checkpoint it signed at size {differs}"),
        }
    }
    Ok(Verdict::DataFailed)
}

fn verify(source_path: &Path, as_json: bool, signed: &SignedArgs) -> Result<Verdict, Error> {
    // Keys are checked before the (long) verification, so a typo fails at once.
    signed_keys(signed)?;
    let run = || -> Result<replay::verify::Verified, Error> {
        let source = open(source_path)?;
        let bar = bar(source.head.size, "verify");
        let result = replay::verify::verify(&source, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        result
    };
    let mut out = stdout();
    match run() {
        Ok(v) => {
            if as_json {
                let report = VerifyJson {
                    ok: true,
                    records: Some(v.records),
                    root: Some(v.root_hex()),
                    error: None,
                    position: None,
                };
                json_line(&mut out, &report, false)?;
            } else {
                writeln!(out, "verified {}, root {}", count(v.records, "record", "records"), v.root_hex())
                    .map_err(output("-"))?;
            }
            finish(out)?;
            if let Some(anchor) = &v.anchor {
                if let Some(slot) = anchor.damaged_slot {
                    eprintln!(
                        "replay: note: HEAD slot {slot} is damaged (a power cut during a HEAD write, or damage); the other slot anchors the log at {}",
                        count(anchor.head.size, "record", "records")
                    );
                }
                if anchor.legacy {
                    eprintln!("replay: note: HEAD is in format 1 (written by an earlier version, not fsynced; it may lag the log)");
                }
            }
            if let Some(torn) = &v.torn {
                eprintln!(
                    "replay: note: {} after the last committed record of the live segment {} not part of the log ({})",
                    count(torn.bytes, "byte", "bytes"),
                    if torn.bytes == 1 { "is" } else { "are" },
                    torn.reason
                );
            }
            check_checkpoints(source_path, signed, as_json)
        }
        Err(e) => {
            if as_json {
                let report = VerifyJson {
                    ok: false,
                    records: None,
                    root: None,
                    error: Some(e.to_string()),
                    position: e.position(),
                };
                json_line(&mut out, &report, false)?;
                finish(out)?;
            }
            Err(e)
        }
    }
}

fn fleet(
    source: &Path,
    as_of: Option<DateTime<Utc>>,
    position: Option<u64>,
    format: ReportFormat,
) -> Result<Verdict, Error> {
    let source = open(source)?;
    let cut = match (as_of, position) {
        (Some(t), _) => Cut::Time(t),
        (None, Some(n)) => Cut::Position(n),
        (None, None) => Cut::Head,
    };
    let spin = spinner("folding the fleet");
    let report = replay::fleet::fleet(&source, cut);
    spin.finish_and_clear();
    print_fleet(&report?, format, |r, out| r.write_csv(out), |r, out| r.write_table(out))
}

/// Prints a fleet report (one source's or many's) in `format`.
fn print_fleet<R: serde::Serialize>(
    report: &R,
    format: ReportFormat,
    csv: impl Fn(&R, &mut dyn Write) -> Result<(), Error>,
    table: impl Fn(&R, &mut dyn Write) -> Result<(), Error>,
) -> Result<Verdict, Error> {
    let mut out = stdout();
    match format {
        ReportFormat::Json => json_line(&mut out, report, true)?,
        ReportFormat::Csv => csv(report, &mut out)?,
        ReportFormat::Table => table(report, &mut out)?,
    }
    finish(out)?;
    Ok(Verdict::Ok)
}

/// Opens every source (a failure names its source) and names each by its ledger id, refusing the same
/// ledger twice.
fn open_many(paths: &[PathBuf]) -> Result<(Vec<Opened>, Vec<String>), Error> {
    let n = paths.len();
    let mut opened = Vec::with_capacity(n);
    for (i, path) in paths.iter().enumerate() {
        let source = open(path).map_err(|e| Error::InSource {
            source_path: path.clone(),
            index: i + 1,
            of: n,
            ledger_id: None,
            error: Box::new(e),
        })?;
        opened.push(source);
    }
    let pairs: Vec<(&Path, &Source)> =
        paths.iter().map(PathBuf::as_path).zip(opened.iter().map(|o| &o.source)).collect();
    let ids = replay::many::ledger_ids(&pairs)?;
    Ok((opened, ids))
}

fn named<'a>(paths: &'a [PathBuf], opened: &'a [Opened], ids: &'a [String]) -> Vec<replay::many::Named<'a>> {
    paths
        .iter()
        .zip(opened)
        .zip(ids)
        .map(|((path, o), id)| replay::many::Named { path, ledger_id: id, source: &o.source })
        .collect()
}

fn fleet_many(
    paths: &[PathBuf],
    as_of: Option<DateTime<Utc>>,
    position: Option<u64>,
    format: ReportFormat,
) -> Result<Verdict, Error> {
    if position.is_some() {
        return Err(Error::Usage(
            "--position counts one ledger's records: with several sources give --as-of (a time common to all)".into(),
        ));
    }
    let (opened, ids) = open_many(paths)?;
    let sources = named(paths, &opened, &ids);
    let cut = as_of.map_or(Cut::Head, Cut::Time);
    let spin = spinner("folding the fleets");
    let report = replay::many::fleet(&sources, cut);
    spin.finish_and_clear();
    print_fleet(&report?, format, |r, out| r.write_csv(out), |r, out| r.write_table(out))
}

fn audit_many(
    paths: &[PathBuf],
    format: ReportFormat,
    rules: &[String],
    fail_on_findings: bool,
    config: AuditConfig,
    as_of: Option<DateTime<Utc>>,
) -> Result<Verdict, Error> {
    let selection = replay::many::Selection::parse(rules)?;
    let (opened, ids) = open_many(paths)?;
    let sources = named(paths, &opened, &ids);
    let spin = spinner("auditing");
    let findings = replay::many::audit(&sources, as_of.map_or(Cut::Head, Cut::Time), &selection, config);
    spin.finish_and_clear();
    let findings = findings?;
    let mut out = stdout();
    match format {
        ReportFormat::Json => json_line(&mut out, &findings, true)?,
        ReportFormat::Csv => replay::many::write_csv(&findings, &mut out)?,
        ReportFormat::Table => replay::many::write_table(&findings, &sources, &mut out)?,
    }
    finish(out)?;
    if fail_on_findings && !findings.is_empty() {
        eprintln!("replay: {} (--fail-on-findings)", count(findings.len() as u64, "finding", "findings"));
        return Ok(Verdict::DataFailed);
    }
    Ok(Verdict::Ok)
}

fn export_many(paths: &[PathBuf], format: ExportFormat, out_path: &Path) -> Result<Verdict, Error> {
    if matches!(format, ExportFormat::Ndjson) {
        return Err(Error::Usage(
            "NDJSON is one ledger's append stream: export several sources as --format parquet or csv, or one at a time"
                .into(),
        ));
    }
    let to_stdout = out_path == Path::new("-");
    if matches!(format, ExportFormat::Parquet) {
        if to_stdout {
            return Err(Error::Usage("--format parquet writes a folder of tables: give --out DIR, not -".into()));
        }
        for path in paths {
            replay::columnar::check_out(path, out_path)?;
        }
    } else if !to_stdout {
        for path in paths {
            output::check_source(path, out_path)?;
        }
    }
    let (opened, ids) = open_many(paths)?;
    let sources = named(paths, &opened, &ids);
    let records: u64 = sources.iter().map(|s| s.source.head.size).sum();
    let bar = bar(records, "export");
    if matches!(format, ExportFormat::Parquet) {
        let options = replay::columnar::ParquetOptions::default();
        let result = replay::columnar::export_many(&sources, out_path, options, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        let s = result?;
        eprintln!(
            "replay: exported {} of {} to {}: {} events, {} directives, {} directive models, {} terminals in {} ({} bytes)",
            count(records, "record", "records"),
            count(sources.len() as u64, "source", "sources"),
            out_path.display(),
            thousands(s.events),
            thousands(s.directives),
            thousands(s.directive_models),
            thousands(s.terminals),
            count(s.files, "file", "files"),
            thousands(s.bytes)
        );
        return Ok(Verdict::Ok);
    }
    if to_stdout {
        let mut out = stdout();
        let result = replay::export::export_many_csv(&sources, &mut out, out_path, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        result?;
        finish(out)?;
        return Ok(Verdict::Ok);
    }
    let mut out = output::Output::create(out_path)?;
    let result = replay::export::export_many_csv(&sources, &mut out, out_path, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let n = result?;
    out.commit()?;
    eprintln!(
        "replay: exported {} of {} to {}",
        count(n, "record", "records"),
        count(sources.len() as u64, "source", "sources"),
        out_path.display()
    );
    Ok(Verdict::Ok)
}

fn device(source: &Path, sn: &str, format: DeviceFormat) -> Result<Verdict, Error> {
    let sn = Sn::parse(sn).map_err(|e| Error::Usage(format!("SN {sn:?}: {e}")))?;
    let source = open(source)?;
    let spin = spinner("reading the log");
    let report = replay::device::device(&source, &sn);
    spin.finish_and_clear();
    let report = report?;
    let mut out = stdout();
    match format {
        DeviceFormat::Json => json_line(&mut out, &report, true)?,
        DeviceFormat::Table => report.write_table(&mut out)?,
    }
    finish(out)?;
    Ok(Verdict::Ok)
}

/// `replay evidence check --format json` output.
#[derive(serde::Serialize)]
struct EvidenceJson<'a> {
    ok: bool,
    checkpoint: serde_json::Value,
    device: &'a str,
    events: &'a [replay::device::DeviceEntry],
    directives: Vec<serde_json::Value>,
    replacements: Vec<serde_json::Value>,
}

/// `replay evidence check`.
fn evidence_check(file: &Path, keys: &KeyArgs, format: DeviceFormat) -> Result<Verdict, Error> {
    let Some(keys) = load_keys(keys)? else {
        return Err(Error::Usage("evidence check needs --key VKEY (the log's verifier key)".into()));
    };
    let checked = replay::evidence::read(file)
        .and_then(|bytes| replay::evidence::check(&bytes, &keys.key, &keys.witnesses, keys.min_witnesses));
    let checked = match checked {
        Ok(checked) => checked,
        Err(e @ replay::evidence::EvidenceError::Io { .. }) => return Err(e.into()),
        Err(e) if e.is_data() => {
            eprintln!("replay: {}: evidence does not verify: {e}", file.display());
            return Ok(Verdict::DataFailed);
        }
        Err(e) => return Err(Error::Usage(format!("{}: {e}", file.display()))),
    };
    let cp = &checked.verified.checkpoint;
    let by: Vec<String> = checked.verified.witnesses.iter().map(|(n, t)| format!("{n} at {t}")).collect();
    let mut out = stdout();
    match format {
        DeviceFormat::Json => {
            let directives = checked
                .directives
                .iter()
                .map(|d| {
                    let line = replay::ndjson::render(&d.record).unwrap_or_default();
                    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({"position": d.position, "event": event})
                })
                .collect();
            let replacements =
                checked.partners.iter().map(|(sn, p)| serde_json::json!({"device": sn, "position": p})).collect();
            let report = EvidenceJson {
                ok: true,
                checkpoint: serde_json::json!({
                    "origin": cp.origin, "size": cp.size, "root": hex(&cp.root),
                    "witnesses": checked.verified.witnesses.iter().map(|(n, t)| serde_json::json!({"name": n, "timestamp": t})).collect::<Vec<_>>(),
                }),
                device: &checked.report.device,
                events: &checked.report.events,
                directives,
                replacements,
            };
            json_line(&mut out, &report, true)?;
        }
        DeviceFormat::Table => {
            let mut write = || -> io::Result<()> {
                writeln!(
                    out,
                    "evidence verified: {} of terminal {} in the log {} of {} (root {}{})",
                    count(checked.report.events.len() as u64, "record", "records"),
                    checked.report.device,
                    cp.origin,
                    count(cp.size, "record", "records"),
                    hex(&cp.root),
                    if by.is_empty() { String::new() } else { format!(", cosigned by {}", by.join(", ")) }
                )?;
                for d in &checked.directives {
                    if let log::Event::Directive(directive) = &d.record.event {
                        writeln!(
                            out,
                            "  directive {} at position {}: at {}, {}, reason {:?}{}",
                            directive.id,
                            d.position,
                            directive.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                            count(directive.models.len() as u64, "model", "models"),
                            directive.reason.as_str(),
                            directive
                                .deadline
                                .map(|t| format!(
                                    ", deadline {}",
                                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                                ))
                                .unwrap_or_default()
                        )?;
                    }
                }
                for (sn, position) in &checked.partners {
                    writeln!(out, "  replacement record of terminal {sn} at position {position}")?;
                }
                writeln!(
                    out,
                    "  (evidence covers the log up to its checkpoint's size; it says nothing of later records)"
                )?;
                writeln!(out)
            };
            write().map_err(output("-"))?;
            checked.report.write_table(&mut out)?;
        }
    }
    finish(out)?;
    Ok(Verdict::Ok)
}

fn audit(
    source: &Path,
    format: ReportFormat,
    rules: &[String],
    fail_on_findings: bool,
    config: AuditConfig,
    as_of: Option<DateTime<Utc>>,
) -> Result<Verdict, Error> {
    // one_sn_one_binding is a rule across sources: with one source it has nothing to compare.
    let selection = replay::many::Selection::parse(rules)?;
    let rules = selection.per_source.clone().unwrap_or_default();
    let source = open(source)?;
    let spin = spinner("auditing");
    let cut = as_of.map_or(Cut::Head, Cut::Time);
    let findings = if selection.per_source.as_ref().is_some_and(Vec::is_empty) {
        Ok(Vec::new())
    } else {
        replay::audit::audit(&source, cut, &rules, config)
    };
    spin.finish_and_clear();
    let findings = findings?;
    let mut out = stdout();
    match format {
        ReportFormat::Json => json_line(&mut out, &findings, true)?,
        ReportFormat::Csv => replay::audit::write_csv(&findings, &mut out)?,
        ReportFormat::Table => replay::audit::write_table(&findings, &mut out)?,
    }
    finish(out)?;
    if fail_on_findings && !findings.is_empty() {
        eprintln!("replay: {} (--fail-on-findings)", count(findings.len() as u64, "finding", "findings"));
        return Ok(Verdict::DataFailed);
    }
    Ok(Verdict::Ok)
}

fn audit_config(flag_open_days: u32, dormant_days: u32) -> AuditConfig {
    AuditConfig {
        flag_open_limit: Duration::from_secs(u64::from(flag_open_days) * 86_400),
        dormant_after: Duration::from_secs(u64::from(dormant_days) * 86_400),
    }
}

/// The header lines of the signed checkpoints the report's source extends; a checkpoint it does not
/// extend fails the command (exit 1), as `replay verify --checkpoint` does.
fn report_checkpoints(source: &Source, args: &SignedArgs) -> Result<Result<Vec<String>, String>, Error> {
    use replay::checkpoint::Standing;
    let Some((log_key, witnesses, min)) = signed_keys(args)? else { return Ok(Ok(Vec::new())) };
    let mut notes: Vec<(String, Vec<u8>)> = Vec::new();
    for path in &args.checkpoints {
        notes.push((path.display().to_string(), read_note(path)?));
    }
    let bar = bar(source.head.size, "checkpoints");
    let checked =
        replay::checkpoint::check_all(source, &notes, &log_key, &witnesses, min, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let mut lines = Vec::new();
    for c in checked? {
        let cp = &c.verified.checkpoint;
        if c.standing != Standing::Extends {
            return Ok(Err(format!(
                "checkpoint {} ({}): the source does not extend it (replay verify --checkpoint says how); no report written",
                c.name,
                count(cp.size, "record", "records")
            )));
        }
        let by: Vec<String> = c.verified.witnesses.iter().map(|(n, t)| format!("{n} at {t}")).collect();
        lines.push(format!(
            "{}: origin {}, {}, root {}{}; the source extends it",
            c.name,
            cp.origin,
            count(cp.size, "record", "records"),
            hex(&cp.root),
            if by.is_empty() { String::new() } else { format!(", cosigned by {}", by.join(", ")) }
        ));
    }
    Ok(Ok(lines))
}

fn report(
    source_path: &Path,
    out_path: &Path,
    mut options: replay::report::ReportOptions,
    signed: &SignedArgs,
) -> Result<Verdict, Error> {
    let to_stdout = out_path == Path::new("-");
    if !to_stdout {
        output::check_source(source_path, out_path)?;
    }
    let source = open(source_path)?;
    options.checkpoints = match report_checkpoints(&source, signed)? {
        Ok(lines) => lines,
        Err(why) => {
            eprintln!("replay: {why}");
            return Ok(Verdict::DataFailed);
        }
    };
    let bar = bar(source.head.size, "report");
    let html = replay::report::report(&source, &options, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let html = html?;
    if to_stdout {
        let mut out = stdout();
        out.write_all(html.as_bytes()).map_err(output("-"))?;
        return finish(out).map(|()| Verdict::Ok);
    }
    let mut out = output::Output::create(out_path)?;
    out.write_all(html.as_bytes()).map_err(output(out_path))?;
    out.commit()?;
    eprintln!("replay: wrote the report ({} bytes) to {}", thousands(html.len() as u64), out_path.display());
    Ok(Verdict::Ok)
}

fn export(source_path: &Path, format: ExportFormat, out_path: &Path) -> Result<Verdict, Error> {
    let format = match format {
        ExportFormat::Ndjson => Format::Ndjson,
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Parquet => return export_parquet(source_path, out_path),
    };
    let source = open(source_path)?;
    if out_path == Path::new("-") {
        let bar = bar(source.head.size, "export");
        let mut out = stdout();
        let result = replay::export::export(&source, format, &mut out, out_path, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        result?;
        finish(out)?;
        return Ok(Verdict::Ok);
    }
    // Never inside the source; a regular file is replaced atomically, a device or FIFO written as it is
    // (`replay::output`). Dropping an uncommitted output leaves no partial file.
    output::check_source(source_path, out_path)?;
    let mut out = output::Output::create(out_path)?;
    let bar = bar(source.head.size, "export");
    let result = replay::export::export(&source, format, &mut out, out_path, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let n = result?;
    out.commit()?;
    eprintln!("replay: exported {} to {}", count(n, "record", "records"), out_path.display());
    Ok(Verdict::Ok)
}

fn export_parquet(source_path: &Path, out_path: &Path) -> Result<Verdict, Error> {
    if out_path == Path::new("-") {
        return Err(Error::Usage("--format parquet writes a folder of tables: give --out DIR, not -".into()));
    }
    // Refused before the (long) read: an --out inside the source, a link, a file, a non-empty folder.
    replay::columnar::check_out(source_path, out_path)?;
    let source = open(source_path)?;
    let bar = bar(source.head.size, "export");
    let options = replay::columnar::ParquetOptions::default();
    let result = replay::columnar::export(&source, source_path, out_path, options, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let s = result?;
    eprintln!(
        "replay: exported {} to {}: {} events, {} directives, {} directive models, {} terminals in {} ({} bytes)",
        count(source.head.size, "record", "records"),
        out_path.display(),
        thousands(s.events),
        thousands(s.directives),
        thousands(s.directive_models),
        thousands(s.terminals),
        count(s.files, "file", "files"),
        thousands(s.bytes)
    );
    Ok(Verdict::Ok)
}

/// `replay prove` output, fields in this order.
#[derive(serde::Serialize)]
struct ProofJson {
    position: u64,
    size: u64,
    leaf_hash: String,
    root: String,
    proof: Vec<String>,
}

/// `replay consistency --json` output, fields in this order.
#[derive(serde::Serialize)]
struct ConsistencyJson {
    consistent: bool,
    old_size: u64,
    old_root: String,
    actual_old_root: Option<String>,
    size: u64,
    root: String,
    proof: Vec<String>,
}

/// `replay verify --json` output.
#[derive(serde::Serialize)]
struct VerifyJson {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| hex(h)).collect()
}

fn prove(source: &Path, position: u64, size: Option<u64>) -> Result<Verdict, Error> {
    let proof = match PUBLISHED_KEYS.get().and_then(Option::as_ref) {
        Some(keys) if replay::published::is_published(source) => {
            replay::published::prove(source, keys, position, size)?
        }
        _ => {
            let source = open(source)?;
            let bar = bar(size.unwrap_or(source.head.size), "prove");
            let proof = replay::prove::prove(&source, position, size, &mut |n| bar.set_position(n));
            bar.finish_and_clear();
            proof?
        }
    };
    let mut out = stdout();
    let report = ProofJson {
        position: proof.position,
        size: proof.size,
        leaf_hash: hex(&proof.leaf_hash),
        root: hex(&proof.root),
        proof: hexes(&proof.proof),
    };
    json_line(&mut out, &report, true)?;
    finish(out)?;
    Ok(Verdict::Ok)
}

/// `replay consistency SOURCE --from OLD --to NEW --key VKEY`: that signed checkpoint NEW extends OLD.
fn extension(
    source_path: &Path,
    from: &Path,
    to: &Path,
    key: &str,
    format: ConsistencyFormat,
) -> Result<Verdict, Error> {
    let log_key = tlog::keyfile::load_verifier_key(key).map_err(|e| Error::Usage(format!("--key: {e}")))?;
    let (from_note, to_note) = (read_note(from)?, read_note(to)?);
    let source = open(source_path)?;
    let bar = bar(source.head.size, "consistency");
    let (from_name, to_name) = (from.display().to_string(), to.display().to_string());
    let result =
        replay::checkpoint::extension(&source, (&from_name, &from_note), (&to_name, &to_note), &log_key, &mut |n| {
            bar.set_position(n)
        });
    bar.finish_and_clear();
    let extension = match result? {
        Ok(extension) => extension,
        Err(why) => {
            eprintln!("replay: inconsistent: {why}");
            return Ok(Verdict::DataFailed);
        }
    };
    let mut out = stdout();
    if format == ConsistencyFormat::Witness {
        out.write_all(&extension.witness_request()).map_err(output("-"))?;
    } else {
        let mut write = || -> io::Result<()> {
            writeln!(
                out,
                "consistent: checkpoint {to_name} ({}) extends checkpoint {from_name} ({}); proof:",
                count(extension.to.size, "record", "records"),
                count(extension.from.size, "record", "records"),
            )?;
            for h in &extension.proof {
                writeln!(out, "{}", tlog::checkpoint::hash_b64(h))?;
            }
            Ok(())
        };
        write().map_err(output("-"))?;
    }
    finish(out)?;
    Ok(Verdict::Ok)
}

fn consistency(source: &Path, old_size: u64, old_root: Hash, as_json: bool) -> Result<Verdict, Error> {
    let source = open(source)?;
    let bar = bar(source.head.size, "consistency");
    let c = replay::prove::consistency(&source, old_size, old_root, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let c = c?;
    let mut out = stdout();
    if as_json {
        let report = ConsistencyJson {
            consistent: c.consistent,
            old_size: c.old_size,
            old_root: hex(&c.old_root),
            actual_old_root: c.actual_old_root.as_ref().map(|h| hex(h)),
            size: c.size,
            root: hex(&c.root),
            proof: hexes(&c.proof),
        };
        json_line(&mut out, &report, true)?;
    } else if c.consistent {
        let mut write = || -> io::Result<()> {
            writeln!(
                out,
                "consistent: the log of {} (root {}) extends the log of {} (root {})",
                count(c.size, "record", "records"),
                hex(&c.root),
                count(c.old_size, "record", "records"),
                hex(&c.old_root)
            )?;
            for h in &c.proof {
                writeln!(out, "{}", hex(h))?;
            }
            Ok(())
        };
        write().map_err(output("-"))?;
    }
    finish(out)?;
    if c.consistent {
        return Ok(Verdict::Ok);
    }
    match c.actual_old_root {
        None => eprintln!(
            "replay: inconsistent: the log holds {}, fewer than the {} of the stated head",
            count(c.size, "record", "records"),
            thousands(c.old_size)
        ),
        Some(actual) => eprintln!(
            "replay: inconsistent: the log's first {} {} root {}, not {}",
            count(c.old_size, "record", "records"),
            if c.old_size == 1 { "has" } else { "have" },
            hex(&actual),
            hex(&c.old_root)
        ),
    }
    Ok(Verdict::DataFailed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify { source, json, signed } => {
            published_keys(&source, &signed.keys, true).and_then(|()| verify(&source, json, &signed))
        }
        Command::VerifyTiles { source, keys, since, json } => {
            published_keys(&source, &keys, true).and_then(|()| verify_tiles(&source, since.as_deref(), json))
        }
        Command::Fleet { sources, keys, as_of, position, format } => published_keys_of(&sources, &keys, false)
            .and_then(|()| match sources.as_slice() {
                [source] => fleet(source, as_of, position, format),
                _ => fleet_many(&sources, as_of, position, format),
            }),
        Command::Device { source, keys, sn, format } => {
            published_keys(&source, &keys, false).and_then(|()| device(&source, &sn, format))
        }
        Command::Audit { sources, keys, format, rules, fail_on_findings, flag_open_days, dormant_days, as_of } => {
            let config = audit_config(flag_open_days, dormant_days);
            published_keys_of(&sources, &keys, false).and_then(|()| match sources.as_slice() {
                [source] => audit(source, format, &rules, fail_on_findings, config, as_of),
                _ => audit_many(&sources, format, &rules, fail_on_findings, config, as_of),
            })
        }
        Command::Report {
            source,
            out,
            as_of,
            generated_at,
            top_models,
            examples,
            flag_open_days,
            dormant_days,
            signed,
        } => {
            let options = replay::report::ReportOptions {
                as_of,
                generated_at,
                audit: audit_config(flag_open_days, dormant_days),
                top_models: usize::from(top_models),
                examples: usize::from(examples),
                checkpoints: Vec::new(),
                source_arg: source.display().to_string(),
            };
            published_keys(&source, &signed.keys, true).and_then(|()| report(&source, &out, options, &signed))
        }
        Command::Export { sources, keys, format, out } => {
            published_keys_of(&sources, &keys, false).and_then(|()| match sources.as_slice() {
                [source] => export(source, format, &out),
                _ => export_many(&sources, format, &out),
            })
        }
        Command::Prove { source, keys, position, size } => {
            published_keys(&source, &keys, false).and_then(|()| prove(&source, position, size))
        }
        Command::Evidence(EvidenceCommand::Check { file, keys, format }) => evidence_check(&file, &keys, format),
        Command::Consistency { source, old_size, old_root, from, to, key, format, json } => match (from, to, key) {
            (Some(from), Some(to), Some(key)) => extension(&source, &from, &to, &key, format),
            _ => match (old_size, old_root) {
                (Some(old_size), Some(old_root)) => consistency(&source, old_size, old_root, json),
                _ => Err(Error::Usage("give --old-size and --old-root, or --from, --to and --key".into())),
            },
        },
    };
    match result {
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(Verdict::DataFailed) => ExitCode::from(1),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            eprintln!("replay: {message}");
            match e.class() {
                Class::Data => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}

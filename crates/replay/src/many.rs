//! Many sources at once: `replay fleet A B ...`, `replay audit A B ...`, `replay export A B ...`.
//!
//! Each source is read and folded on its own, exactly as a single-source command reads it (the same
//! checks, against its own root), and is named by its **ledger id** (16 hex digits, the id every file
//! header of the log carries). The same ledger id given twice is refused (exit 2) before anything is
//! folded: two copies of one ledger would count its terminals twice. Sources are folded in parallel
//! (rayon), and nothing is printed until every source has folded: a source that fails fails the
//! command, named in the error ([`Error::InSource`]).
//!
//! Across sources there is one audit rule, [`ONE_SN_ONE_BINDING`] (一机一码): the same SN issued in two
//! ledgers while both bindings are live. A binding is live from its `issued` (event time) until its
//! first accepted `stopped` (event time, exclusive); `replaced` comes only after `stopped`, and a
//! contract expiry does not end a binding (a renewal revives it, and the terminal stays in its
//! acquirer's fleet). Every other rule runs per source.

use crate::audit::FindingView;
use crate::error::{output, Error};
use crate::fleet::{FleetReport, StatusCounts};
use crate::text::{count, thousands, write_rows, Cell, CsvWriter, Table};
use log::Source;
use projections::{AuditConfig, Counts, Cut, Fleet, Options, Rule};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The name of the audit rule across sources.
pub const ONE_SN_ONE_BINDING: &str = "one_sn_one_binding";

/// One source of a many-source command: where it was given, its ledger id, the opened log.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// The path as given on the command line.
    pub path: &'a Path,
    /// Its ledger id, 16 lowercase hex digits.
    pub ledger_id: &'a str,
    /// The log.
    pub source: &'a Source,
}

/// The ledger ids of `sources` (path, opened log), in order; refuses a log without one (a ledger
/// folder with no segment written yet) and the same ledger id given twice.
pub fn ledger_ids(sources: &[(&Path, &Source)]) -> Result<Vec<String>, Error> {
    let mut seen: HashMap<u64, &Path> = HashMap::new();
    let mut ids = Vec::with_capacity(sources.len());
    for (path, source) in sources {
        let Some(id) = source.ledger_id() else {
            return Err(Error::Usage(format!(
                "{}: has no ledger id (no segment written yet); with several sources each is named by its ledger id",
                path.display()
            )));
        };
        if let Some(first) = seen.insert(id, path) {
            return Err(Error::Usage(format!(
                "{} and {} are the same ledger (ledger id {}): give each ledger once",
                first.display(),
                path.display(),
                crate::columnar::ledger_hex(id)
            )));
        }
        ids.push(crate::columnar::ledger_hex(id));
    }
    Ok(ids)
}

/// Runs `f` on every source in parallel; the first failure in the order given fails the whole, named.
fn each<'a, T: Send>(
    sources: &[Named<'a>],
    f: impl Fn(&Named<'a>) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    let results: Vec<Result<T, Error>> = sources.par_iter().map(&f).collect();
    let n = sources.len();
    results.into_iter().zip(sources).enumerate().map(|(i, (r, s))| r.map_err(|e| in_source(i, n, s, e))).collect()
}

/// `e` named by its source (the `i`-th of `n`).
pub fn in_source(i: usize, n: usize, s: &Named<'_>, e: Error) -> Error {
    Error::InSource {
        source_path: s.path.to_owned(),
        index: i + 1,
        of: n,
        ledger_id: Some(s.ledger_id.to_owned()),
        error: Box::new(e),
    }
}

/// One source's part of `replay fleet A B ... --format json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceFleet {
    /// The ledger id.
    pub ledger_id: String,
    /// The path as given.
    pub source: String,
    /// Records in the source (its size), whatever the cut.
    pub size: u64,
    /// The source's Merkle root at its size (hex).
    pub root: String,
    /// The fleet of this source alone: the same report `replay fleet SOURCE` gives.
    #[serde(flatten)]
    pub fleet: FleetReport,
}

/// The totals over every source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetTotals {
    /// Sources folded.
    pub sources: u64,
    /// Records folded, summed.
    pub position: u64,
    /// Terminals, summed.
    pub devices: u64,
    /// Terminals by status, summed.
    pub status: StatusCounts,
    /// Flagged terminals, summed.
    pub flagged: u64,
    /// Terminals with the contract expired, summed.
    pub contract_expired: u64,
    /// By model code and status, summed.
    pub by_model: BTreeMap<String, StatusCounts>,
    /// Every count by model, summed (table and CSV).
    #[serde(skip)]
    pub model_counts: BTreeMap<String, Counts>,
}

/// `replay fleet A B ... --format json`: totals and each source's own report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetMany {
    /// The sums over every source.
    pub total: FleetTotals,
    /// Each source, in the order given.
    pub sources: Vec<SourceFleet>,
}

/// Folds every source up to `cut` (sources in parallel) and sums them.
pub fn fleet(sources: &[Named<'_>], cut: Cut) -> Result<FleetMany, Error> {
    let reports = each(sources, |s| crate::fleet::fleet(s.source, cut))?;
    let mut total = FleetTotals { sources: sources.len() as u64, ..FleetTotals::default() };
    let mut out = Vec::with_capacity(sources.len());
    for (s, report) in sources.iter().zip(reports) {
        total.position += report.position;
        total.devices += report.devices;
        total.flagged += report.flagged;
        total.status.issued += report.status.issued;
        total.status.active += report.status.active;
        total.status.stopped += report.status.stopped;
        total.status.replaced += report.status.replaced;
        total.contract_expired += report.contract_expired;
        for (model, c) in &report.model_counts {
            total.model_counts.entry(model.clone()).or_default().merge(c);
        }
        out.push(SourceFleet {
            ledger_id: s.ledger_id.to_owned(),
            source: s.path.display().to_string(),
            size: s.source.head.size,
            root: s.source.head.root_hex(),
            fleet: report,
        });
    }
    total.by_model = total.model_counts.iter().map(|(m, c)| (m.clone(), StatusCounts::from(c))).collect();
    Ok(FleetMany { total, sources: out })
}

impl FleetMany {
    /// CSV: the single-source columns with a leading `source` column (`all` for the totals, else the
    /// ledger id): the totals' fleet and model rows, then each source's.
    pub fn write_csv(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut write = || -> std::io::Result<()> {
            let mut csv = CsvWriter::new(&mut *out);
            csv.row([
                "source",
                "scope",
                "model",
                "devices",
                "issued",
                "active",
                "stopped",
                "replaced",
                "flagged",
                "contract_expired",
            ])?;
            let t = &self.total;
            let row =
                |source: &str, scope: &str, model: &str, devices: u64, s: &StatusCounts, flagged: u64, expired: u64| {
                    [
                        source.to_owned(),
                        scope.to_owned(),
                        model.to_owned(),
                        devices.to_string(),
                        s.issued.to_string(),
                        s.active.to_string(),
                        s.stopped.to_string(),
                        s.replaced.to_string(),
                        flagged.to_string(),
                        expired.to_string(),
                    ]
                };
            csv.row(row("all", "fleet", "", t.devices, &t.status, t.flagged, t.contract_expired))?;
            for (m, c) in &t.model_counts {
                csv.row(row("all", "model", m, c.total, &StatusCounts::from(c), c.flagged, c.contract_expired))?;
            }
            for s in &self.sources {
                let f = &s.fleet;
                csv.row(row(&s.ledger_id, "fleet", "", f.devices, &f.status, f.flagged, f.contract_expired))?;
                for (m, c) in &f.model_counts {
                    csv.row(row(
                        &s.ledger_id,
                        "model",
                        m,
                        c.total,
                        &StatusCounts::from(c),
                        c.flagged,
                        c.contract_expired,
                    ))?;
                }
            }
            csv.finish()
        };
        write().map_err(output("-"))
    }

    /// The table for people: the totals, one line per source with its digest, then by model the
    /// totals and one DEVICES column per source.
    pub fn write_table(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut write = || -> std::io::Result<()> {
            let t = &self.total;
            let s = &t.status;
            writeln!(
                out,
                "fleet of {} after {}: {} (issued {}, active {}, stopped {}, replaced {}); flagged {}; contract expired {}",
                count(t.sources, "source", "sources"),
                count(t.position, "record", "records"),
                count(t.devices, "terminal", "terminals"),
                thousands(s.issued),
                thousands(s.active),
                thousands(s.stopped),
                thousands(s.replaced),
                thousands(t.flagged),
                thousands(t.contract_expired)
            )?;
            writeln!(out)?;
            let mut sources = Table::new(&[
                "LEDGER", "SOURCE", "RECORDS", "DEVICES", "ISSUED", "ACTIVE", "STOPPED", "REPLACED", "FLAGGED",
                "EXPIRED", "DIGEST",
            ]);
            for src in &self.sources {
                let f = &src.fleet;
                sources.push(vec![
                    src.ledger_id.clone(),
                    src.source.clone(),
                    thousands(f.position),
                    thousands(f.devices),
                    thousands(f.status.issued),
                    thousands(f.status.active),
                    thousands(f.status.stopped),
                    thousands(f.status.replaced),
                    thousands(f.flagged),
                    thousands(f.contract_expired),
                    f.digest.clone(),
                ]);
            }
            sources.write(out, 2)?;
            writeln!(out)?;
            let mut header: Vec<String> =
                ["MODEL", "DEVICES", "ISSUED", "ACTIVE", "STOPPED", "REPLACED", "FLAGGED", "EXPIRED"]
                    .map(String::from)
                    .to_vec();
            header.extend(self.sources.iter().map(|s| s.ledger_id.clone()));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut models = Table::new(&header);
            for (m, c) in &t.model_counts {
                let mut row = vec![
                    m.clone(),
                    thousands(c.total),
                    thousands(c.issued),
                    thousands(c.active),
                    thousands(c.stopped),
                    thousands(c.replaced),
                    thousands(c.flagged),
                    thousands(c.contract_expired),
                ];
                row.extend(self.sources.iter().map(|s| thousands(s.fleet.model_counts.get(m).map_or(0, |c| c.total))));
                models.push(row);
            }
            models.write(out, 1)
        };
        write().map_err(output("-"))
    }
}

/// Which rules a many-source audit runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The per-source rules (`None`: every one).
    pub per_source: Option<Vec<Rule>>,
    /// Whether [`ONE_SN_ONE_BINDING`] runs.
    pub across: bool,
}

impl Selection {
    /// From `--rule` names (none: every rule); an unknown name is a usage error.
    pub fn parse(names: &[String]) -> Result<Selection, Error> {
        if names.is_empty() {
            return Ok(Selection { per_source: None, across: true });
        }
        let across = names.iter().any(|n| n == ONE_SN_ONE_BINDING);
        let rest: Vec<String> = names.iter().filter(|n| *n != ONE_SN_ONE_BINDING).cloned().collect();
        Ok(Selection { per_source: Some(crate::audit::parse_rules(&rest)?), across })
    }

    fn keeps(&self, rule: Rule) -> bool {
        self.per_source.as_ref().is_none_or(|rules| rules.contains(&rule))
    }
}

/// Every finding of every source up to `cut`: each source's own (ledger id set, sorted by position,
/// sources in the order given), then the [`ONE_SN_ONE_BINDING`] findings (sorted by SN).
pub fn audit(
    sources: &[Named<'_>],
    cut: Cut,
    selection: &Selection,
    config: AuditConfig,
) -> Result<Vec<FindingView>, Error> {
    let options = Options::default().audit(config);
    let fleets = each(sources, |s| Ok(projections::rebuild(s.source, cut, &options)?))?;
    let mut out = Vec::new();
    for (s, fleet) in sources.iter().zip(&fleets) {
        for f in fleet.findings().unwrap_or_default() {
            if selection.keeps(f.rule) {
                out.push(FindingView {
                    rule: f.rule.as_str(),
                    device: f.device.map(|d| d.to_string()),
                    position: f.position,
                    detail: f.detail,
                    ledger_id: Some(s.ledger_id.to_owned()),
                    other_ledger_id: None,
                    other_position: None,
                });
            }
        }
    }
    if selection.across {
        let named: Vec<(&str, &Fleet)> = sources.iter().map(|s| s.ledger_id).zip(&fleets).collect();
        out.extend(one_sn_one_binding(&named));
    }
    Ok(out)
}

/// One binding of an SN to a ledger: when and where it was issued, when it was stopped.
#[derive(Clone, Copy, Debug)]
struct Binding<'a> {
    ledger: usize,
    ledger_id: &'a str,
    provider: &'a str,
    issued_at: i64,
    issued_position: u64,
    stopped_at: Option<i64>,
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

/// The [`ONE_SN_ONE_BINDING`] findings of `fleets` (each built with audit, named by ledger id): one per
/// pair of bindings of one SN in two ledgers whose live intervals `[issued, stopped)` overlap, at the
/// position of the later `issued` (the binding that should not have been made), naming the other.
pub fn one_sn_one_binding(fleets: &[(&str, &Fleet)]) -> Vec<FindingView> {
    let mut by_sn: HashMap<&str, Vec<Binding<'_>>> = HashMap::new();
    for (ledger, (ledger_id, fleet)) in fleets.iter().enumerate() {
        for (sn, t) in fleet.iter() {
            let Some(audit) = t.audit.as_deref() else { continue };
            let view = fleet.view_of(sn, t);
            by_sn.entry(sn).or_default().push(Binding {
                ledger,
                ledger_id,
                provider: view.provider,
                issued_at: t.issued_at,
                issued_position: audit.issued_position,
                stopped_at: audit.stopped_at,
            });
        }
    }
    let mut found: Vec<(&str, usize, u64, FindingView)> = Vec::new();
    for (sn, bindings) in by_sn {
        if bindings.len() < 2 {
            continue;
        }
        for (i, a) in bindings.iter().enumerate() {
            for b in bindings.iter().skip(i + 1) {
                let live = |x: &Binding<'_>, y: &Binding<'_>| x.stopped_at.is_none_or(|end| y.issued_at < end);
                if !(live(a, b) && live(b, a)) {
                    continue;
                }
                // The later binding is the finding; the earlier one is the evidence it collides with.
                // Equal times: the smaller ledger id is first (whatever the order of the command line).
                let (first, later) =
                    if (b.issued_at, b.ledger_id) < (a.issued_at, a.ledger_id) { (b, a) } else { (a, b) };
                let from = later.issued_at;
                let until = match (first.stopped_at, later.stopped_at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                let ended = |x: &Binding<'_>| {
                    x.stopped_at.map_or_else(|| "not stopped".to_owned(), |s| format!("stopped {}", time(s)))
                };
                let detail = format!(
                    "issued in ledger {} (provider {}) at {} while bound in ledger {} (provider {}, issued at position {}, {}; {}); here {}; both live from {} {}",
                    later.ledger_id,
                    later.provider,
                    time(later.issued_at),
                    first.ledger_id,
                    first.provider,
                    first.issued_position,
                    time(first.issued_at),
                    ended(first),
                    ended(later),
                    time(from),
                    until.map_or_else(|| "to the end of both logs".to_owned(), |u| format!("to {}", time(u)))
                );
                found.push((
                    sn,
                    later.ledger,
                    later.issued_position,
                    FindingView {
                        rule: ONE_SN_ONE_BINDING,
                        device: Some(sn.to_owned()),
                        position: later.issued_position,
                        detail,
                        ledger_id: Some(later.ledger_id.to_owned()),
                        other_ledger_id: Some(first.ledger_id.to_owned()),
                        other_position: Some(first.issued_position),
                    },
                ));
            }
        }
    }
    found.sort_by(|x, y| (x.0, x.1, x.2, &x.3.other_ledger_id).cmp(&(y.0, y.1, y.2, &y.3.other_ledger_id)));
    found.into_iter().map(|(_, _, _, f)| f).collect()
}

/// Writes many-source findings as CSV: the single-source columns, then `ledger_id`, `other_ledger_id`
/// and `other_position` (the last two for [`ONE_SN_ONE_BINDING`] only).
pub fn write_csv(findings: &[FindingView], out: &mut dyn Write) -> Result<(), Error> {
    let mut write = || -> std::io::Result<()> {
        let mut csv = CsvWriter::new(&mut *out);
        csv.row(["position", "rule", "device", "detail", "ledger_id", "other_ledger_id", "other_position"])?;
        for f in findings {
            let position = f.position.to_string();
            let other = f.other_position.map(|p| p.to_string()).unwrap_or_default();
            csv.row([
                position.as_str(),
                f.rule,
                f.device.as_deref().unwrap_or(""),
                f.detail.as_str(),
                f.ledger_id.as_deref().unwrap_or(""),
                f.other_ledger_id.as_deref().unwrap_or(""),
                other.as_str(),
            ])?;
        }
        csv.finish()
    };
    write().map_err(output("-"))
}

/// Writes many-source findings as a table, with counts per rule and per source.
pub fn write_table(findings: &[FindingView], sources: &[Named<'_>], out: &mut dyn Write) -> Result<(), Error> {
    let mut write = || -> std::io::Result<()> {
        if findings.is_empty() {
            return writeln!(out, "no findings in {}", count(sources.len() as u64, "source", "sources"));
        }
        let rows = || {
            findings.iter().map(|f| {
                let ledger = f.ledger_id.as_deref().unwrap_or_default();
                let device = f.device.as_deref().unwrap_or("-");
                [
                    Cell::Text(ledger),
                    Cell::Number(f.position),
                    Cell::Text(f.rule),
                    Cell::Text(device),
                    Cell::Text(&f.detail),
                ]
            })
        };
        write_rows(out, &["LEDGER", "POSITION", "RULE", "DEVICE", "DETAIL"], 4, rows)?;
        writeln!(out)?;
        let mut by_rule: BTreeMap<&str, u64> = BTreeMap::new();
        for f in findings {
            *by_rule.entry(f.rule).or_default() += 1;
        }
        let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r}: {}", thousands(*n))).collect();
        writeln!(out, "{} ({})", count(findings.len() as u64, "finding", "findings"), rules.join(", "))?;
        for s in sources {
            let n = findings.iter().filter(|f| f.ledger_id.as_deref() == Some(s.ledger_id)).count() as u64;
            writeln!(out, "ledger {} ({}): {}", s.ledger_id, s.path.display(), count(n, "finding", "findings"))?;
        }
        Ok(())
    };
    write().map_err(output("-"))
}

//! Gathering what the report shows: one streaming fold of the log (projections' [`stream`]), with the
//! fleet summarised at each month's end, the events the rules accepted counted by month, and the
//! fleet at the cut audited. No rule is restated here: counts come from the fold's states and
//! verdicts, findings from the audit.

use super::{ReportError, ReportOptions};
use crate::error::Error;
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use log::lifecycle::{State, Status, Violation};
use log::{Event, Record, Source, StopReason, TerminalEvent};
use projections::stream::{self, At, Observer};
use projections::{Counts, Cut, Fleet, Options, Rule};
use std::collections::BTreeMap;

/// Most months a report covers (50 years): a log spanning more is refused.
pub const MAX_MONTHS: usize = 600;
/// Most directives given a timeline (the others are listed in their table).
pub const MAX_DIRECTIVE_CHARTS: usize = 12;
/// Most days of one directive's timeline.
pub const MAX_TIMELINE_DAYS: i64 = 400;
/// Most terminals listed by name per list (late enforcers, examples of a rule).
pub const MAX_LISTED: usize = 10;

/// The fleet at one month's end (or at the cut, for the last point).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Month {
    /// `YYYY-MM`.
    pub label: String,
    /// The cut: every record recorded at or before it (`replay fleet --as-of` this time).
    pub cut: DateTime<Utc>,
    /// Records folded at the cut.
    pub position: u64,
    /// Terminals by status, flagged, contract expired (the fleet summary's total).
    pub counts: Counts,
    /// `dormant` findings of the audit at the cut (issued long before and never activated).
    pub dormant: u64,
    /// Terminals issued in the month (accepted `issued` events).
    pub issued: u64,
    /// Accepted `activated` events in the month.
    pub activations: u64,
    /// Flow recorded in the month, fen (accepted `flow` events).
    pub flow_fen: u64,
    /// Accepted `stopped` events in the month, by reason ([`StopReason::ALL`] order).
    pub stops: Vec<u64>,
}

/// One terminal named in a list, with the provider and what happened when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// SN.
    pub sn: String,
    /// Provider.
    pub provider: String,
    /// Position of the evidence.
    pub position: u64,
    /// What, in words.
    pub detail: String,
}

/// A directive's effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectiveView {
    /// Its id.
    pub id: String,
    /// Position of its record.
    pub position: u64,
    /// When it takes effect.
    pub at: DateTime<Utc>,
    /// Its deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Models it lists.
    pub models: usize,
    /// Terminals of its models (issued at or before the cut).
    pub terminals: u64,
    /// Per day from the directive's day: (day, terminals of its models running at the end of that day).
    pub days: Vec<(NaiveDate, u64)>,
    /// Terminals of its models running at its deadline (existed, not stopped by then).
    pub running_at_deadline: u64,
    /// Terminals of its models issued after its deadline and still running at the cut.
    pub issued_after: u64,
    /// `directive_not_enforced` findings of the audit for this directive.
    pub not_enforced_findings: u64,
    /// By provider: terminals of its models stopped after the deadline, and never stopped.
    pub late_by_provider: BTreeMap<String, [u64; 2]>,
    /// The first late or missed terminals (by SN).
    pub late: Vec<Named>,
}

/// Counts of one table row (by provider, model or region).
pub type Rows = Vec<(String, Counts)>;

/// Everything the report shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportData {
    /// SOURCE as given.
    pub source: String,
    /// Bundle or ledger folder.
    pub kind: &'static str,
    /// The ledger id (hex).
    pub ledger_id: String,
    /// Records in the log.
    pub size: u64,
    /// The log's Merkle root (hex).
    pub root: String,
    /// Records folded (the cut).
    pub position: u64,
    /// The `--as-of` time, if given.
    pub as_of: Option<DateTime<Utc>>,
    /// recorded_at of the first record.
    pub first_recorded: DateTime<Utc>,
    /// recorded_at of the last record folded.
    pub last_recorded: DateTime<Utc>,
    /// When the report says it was made: `--generated-at`, else `last_recorded`.
    pub generated_at: DateTime<Utc>,
    /// Whether `generated_at` was given.
    pub generated_given: bool,
    /// The fleet digest at the cut.
    pub digest: String,
    /// The checkpoints it was verified against, one line each.
    pub checkpoints: Vec<String>,
    /// Events the rules rejected.
    pub illegal: u64,
    /// The fleet at the cut.
    pub total: Counts,
    /// Month ends, then the cut.
    pub months: Vec<Month>,
    /// Directives, in position order.
    pub directives: Vec<DirectiveView>,
    /// Findings by rule, then provider (`-` for a finding without a terminal).
    pub findings: BTreeMap<Rule, BTreeMap<String, u64>>,
    /// The first findings of each rule that name a terminal.
    pub examples: BTreeMap<Rule, Vec<Named>>,
    /// By provider.
    pub by_provider: Rows,
    /// By model: the largest `top_models`, then `(the other N models)` summed.
    pub by_model: Rows,
    /// Models in the fleet.
    pub models: usize,
    /// By region.
    pub by_region: Rows,
}

fn month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, month, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

fn next_month(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (y, m) = if t.month() == 12 { (t.year().checked_add(1)?, 1) } else { (t.year(), t.month() + 1) };
    month_start(y, m)
}

/// The month ends from `first`'s month to the month before `cut`'s (each the last microsecond of its
/// month), then `cut` itself.
fn month_cuts(first: DateTime<Utc>, cut: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, ReportError> {
    let mut cuts = Vec::new();
    let mut start = month_start(first.year(), first.month());
    while let Some(next) = start.and_then(next_month) {
        let end = next - TimeDelta::microseconds(1);
        if end >= cut {
            break;
        }
        if cuts.len() >= MAX_MONTHS {
            return Err(ReportError::TooManyMonths { max: MAX_MONTHS });
        }
        cuts.push(end);
        start = Some(next);
    }
    cuts.push(cut);
    Ok(cuts)
}

fn recorded_at(source: &Source, position: u64) -> Result<DateTime<Utc>, Error> {
    let mut records = log::RecordIter::new(source.frames(position, position + 1));
    match records.next() {
        Some(record) => Ok(record?.recorded_at),
        None => Err(ReportError::Empty.into()),
    }
}

/// What the streaming fold gathers.
struct Gather<'a> {
    source: &'a Source,
    options: &'a ReportOptions,
    cuts: &'a [DateTime<Utc>],
    months: Vec<Month>,
    /// The month the next folded record falls in.
    current: usize,
    /// Cuts that fell inside an append (rebuilt separately).
    inside: Vec<usize>,
    progress: &'a mut dyn FnMut(u64),
}

fn dormant(fleet: &Fleet, options: &ReportOptions) -> u64 {
    let end = projections::audit::end_of_log(fleet, &options.audit);
    end.iter().filter(|f| f.rule == Rule::Dormant).count() as u64
}

impl Observer for Gather<'_> {
    fn record(&mut self, record: &Record, violation: Option<&Violation>, _state: Option<State>) {
        let (Event::Terminal(e), None) = (&record.event, violation) else { return };
        // The month is the record's own (the first cut at or after its recorded_at), not the fold's
        // place: a record may be folded a little after the fold passed a cut (behind a replacement half
        // waiting for its partner).
        let index = self.cuts.partition_point(|cut| *cut < record.recorded_at);
        let Some(month) = self.months.get_mut(index.min(self.cuts.len().saturating_sub(1))) else { return };
        match &e.event {
            TerminalEvent::Issued(_) => month.issued += 1,
            TerminalEvent::Activated => month.activations += 1,
            TerminalEvent::Flow { amount_fen, .. } => month.flow_fen = month.flow_fen.saturating_add(*amount_fen),
            TerminalEvent::Stopped { reason, .. } => {
                let i = StopReason::ALL.iter().position(|r| r == reason).unwrap_or(0);
                if let Some(n) = month.stops.get_mut(i) {
                    *n += 1;
                }
            }
            _ => {}
        }
    }

    fn at(&mut self, index: usize, fleet: At<'_>) {
        self.current = index + 1;
        match fleet {
            At::Exact(fleet) => {
                if let Some(month) = self.months.get_mut(index) {
                    month.position = fleet.position();
                    month.counts = fleet.summary().total;
                    month.dormant = dormant(fleet, self.options);
                }
            }
            At::InsideAppend { .. } => self.inside.push(index),
        }
    }

    fn progress(&mut self, records: u64) {
        (self.progress)(records);
    }
}

fn rows(map: &BTreeMap<String, Counts>) -> Rows {
    map.iter().map(|(k, c)| (k.clone(), *c)).collect()
}

fn top_models(map: &BTreeMap<String, Counts>, top: usize) -> Rows {
    let mut all = rows(map);
    all.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    if all.len() <= top + 1 {
        return all;
    }
    let rest = all.split_off(top);
    let mut sum = Counts::default();
    for (_, c) in &rest {
        sum.merge(c);
    }
    all.push((format!("(the other {} models)", rest.len()), sum));
    all
}

fn time(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

fn directives(fleet: &Fleet, findings: &[projections::Finding]) -> Vec<DirectiveView> {
    let Some(end) = fleet.end_at() else { return Vec::new() };
    let end_us = end.timestamp_micros();
    let names = fleet.names();
    let mut out = Vec::new();
    for d in fleet.directives().list() {
        let Some(at) = time(d.at) else { continue };
        let lists =
            |model: u32| names.models.get(model).is_some_and(|m| d.models.binary_search_by(|x| (**x).cmp(m)).is_ok());
        // (issued_at, stopped_at, sn, terminal) of the terminals of its models.
        let mut members: Vec<(i64, Option<i64>, &str, &projections::Terminal)> = fleet
            .iter()
            .filter(|(_, t)| lists(t.model))
            .map(|(sn, t)| (t.issued_at, t.audit.as_ref().and_then(|a| a.stopped_at), sn, t))
            .collect();
        members.sort_by(|a, b| a.2.cmp(b.2));
        let running_at = |instant: i64| {
            members
                .iter()
                .filter(|(issued, stopped, ..)| *issued <= instant && stopped.is_none_or(|s| s > instant))
                .count() as u64
        };
        let check_at = d.deadline.map_or(end_us, |dl| dl.min(end_us));
        let first_day = at.date_naive();
        let last_day = end.date_naive().min(first_day + TimeDelta::days(MAX_TIMELINE_DAYS - 1));
        let mut days = Vec::new();
        let mut day = first_day;
        while day <= last_day {
            let Some(next) = day.succ_opt() else { break };
            let Some(next_start) = next.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros()) else { break };
            days.push((day, running_at(next_start - 1)));
            day = next;
        }
        let mut late_by_provider = BTreeMap::new();
        let mut late = Vec::new();
        let mut issued_after = 0;
        for (issued, stopped, sn, t) in &members {
            let provider = names.providers.get(t.provider).unwrap_or("").to_owned();
            let detail = match stopped {
                Some(s) if *issued <= check_at && *s > check_at => {
                    late_by_provider.entry(provider.clone()).or_insert([0u64; 2])[0] += 1;
                    format!("stopped {} after the deadline", days_text(*s - check_at))
                }
                None if *issued > check_at && matches!(t.state.status, Status::Issued | Status::Active) => {
                    issued_after += 1;
                    "issued after the deadline, still running".to_owned()
                }
                None if *issued <= check_at => {
                    late_by_provider.entry(provider.clone()).or_insert([0u64; 2])[1] += 1;
                    "never stopped".to_owned()
                }
                _ => continue,
            };
            if late.len() < MAX_LISTED {
                late.push(Named { sn: (*sn).to_owned(), provider, position: t.last_position, detail });
            }
        }
        let not_enforced_findings =
            findings.iter().filter(|f| f.rule == Rule::DirectiveNotEnforced && f.position == d.position).count() as u64;
        out.push(DirectiveView {
            id: d.id.to_string(),
            position: d.position,
            at,
            deadline: d.deadline.and_then(time),
            models: d.models.len(),
            terminals: members.iter().filter(|m| m.0 <= end_us).count() as u64,
            days,
            running_at_deadline: running_at(check_at),
            issued_after,
            not_enforced_findings,
            late_by_provider,
            late,
        });
    }
    out
}

fn days_text(us: i64) -> String {
    let tenths = us / 8_640_000_000;
    format!("{}.{} days", tenths / 10, tenths % 10)
}

/// Folds `source` once up to the cut and gathers the report.
pub fn gather(source: &Source, options: &ReportOptions, progress: &mut dyn FnMut(u64)) -> Result<ReportData, Error> {
    if source.head.size == 0 {
        return Err(ReportError::Empty.into());
    }
    let first_recorded = recorded_at(source, 0)?;
    let to = match options.as_of {
        Some(t) if t < first_recorded => {
            return Err(ReportError::AsOfBeforeFirstRecord { as_of: t, first: first_recorded }.into())
        }
        Some(t) => projections::rebuild::resolve_cut(source, Cut::Time(t))?,
        None => source.head.size,
    };
    let last_recorded = recorded_at(source, to.saturating_sub(1))?;
    let cuts = month_cuts(first_recorded, options.as_of.unwrap_or(last_recorded))?;
    let mut gather = Gather {
        source,
        options,
        cuts: &cuts,
        months: cuts
            .iter()
            .map(|c| Month {
                label: format!("{:04}-{:02}", c.year(), c.month()),
                cut: *c,
                stops: vec![0; StopReason::ALL.len()],
                ..Month::default()
            })
            .collect(),
        current: 0,
        inside: Vec::new(),
        progress,
    };
    let fleet = stream::stream(source, to, Some(options.audit), &cuts, &mut gather)?;
    for index in std::mem::take(&mut gather.inside) {
        let (Some(cut), Some(month)) = (cuts.get(index), gather.months.get_mut(index)) else { continue };
        let at = projections::rebuild(gather.source, Cut::Time(*cut), &Options::default().audit(options.audit))?;
        month.position = at.position();
        month.counts = at.summary().total;
        month.dormant = dormant(&at, options);
    }
    let months = gather.months;
    let findings = fleet.findings().unwrap_or_default();
    let summary = fleet.summary();
    let provider_of = |sn: &str| fleet.view(sn).map(|v| v.provider.to_owned()).unwrap_or_else(|| "-".into());
    let mut by_rule: BTreeMap<Rule, BTreeMap<String, u64>> = BTreeMap::new();
    let mut examples: BTreeMap<Rule, Vec<Named>> = BTreeMap::new();
    for f in &findings {
        let provider = f.device.as_ref().map_or_else(|| "-".to_owned(), |sn| provider_of(sn.as_str()));
        *by_rule.entry(f.rule).or_default().entry(provider.clone()).or_insert(0) += 1;
        let listed = examples.entry(f.rule).or_default();
        if let (Some(sn), true) = (&f.device, listed.len() < options.examples) {
            listed.push(Named { sn: sn.to_string(), provider, position: f.position, detail: f.detail.clone() });
        }
    }
    let directives = directives(&fleet, &findings);
    Ok(ReportData {
        source: source.path.display().to_string(),
        kind: match source.kind {
            log::segment::FileKind::Bundle => "bundle",
            _ => "ledger folder",
        },
        ledger_id: source.ledger_id().map(|id| format!("{id:016x}")).unwrap_or_else(|| "-".into()),
        size: source.head.size,
        root: source.head.root_hex(),
        position: to,
        as_of: options.as_of,
        first_recorded,
        last_recorded,
        generated_at: options.generated_at.unwrap_or(last_recorded),
        generated_given: options.generated_at.is_some(),
        digest: fleet.digest_hex(),
        checkpoints: options.checkpoints.clone(),
        illegal: fleet.illegal_events(),
        total: summary.total,
        months,
        directives,
        findings: by_rule,
        examples,
        by_provider: rows(&summary.by_provider),
        by_model: top_models(&summary.by_model, options.top_models),
        models: summary.by_model.len(),
        by_region: rows(&summary.by_region),
    })
}

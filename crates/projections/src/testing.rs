//! Helpers for tests and benchmarks: build logs by hand — including logs the write path would refuse —
//! and write them as bundles.
//!
//! This is the one place in the crate that writes log files, and it never touches a ledger: it writes a
//! fresh bundle file from records it is given, bypassing the ledger's checks on purpose, so the
//! projections can be tested on illegal transitions a regulator may meet in a log.

use chrono::{DateTime, Duration, TimeZone, Utc};
use log::bundle::BundleStream;
use log::codec::encode_record;
use log::{
    Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, FlagReason, Head, Issued, MerchantId, ModelCode,
    ProviderId, Record, RegionCode, Sn, StopReason, StreamId, TerminalEvent, Text,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Writes `records` (positions must be 0, 1, 2, ...) as a bundle file at `path`, returning its head.
#[expect(clippy::disallowed_methods, reason = "test support: writes a new bundle for a test to read, never a source")]
pub fn write_bundle(path: &Path, records: &[Record], ledger_id: u64) -> std::io::Result<Head> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let mut stream = BundleStream::new(Vec::new(), path, ledger_id).map_err(|e| invalid(e.to_string()))?;
    let mut body = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if record.position != i as u64 {
            return Err(invalid(format!("record {i} holds position {}", record.position)));
        }
        body.clear();
        encode_record(record, &mut body).map_err(|e| invalid(e.to_string()))?;
        stream.push(&body).map_err(|e| invalid(e.to_string()))?;
    }
    let (written, bytes) = stream.finish().map_err(|e| invalid(e.to_string()))?;
    let mut file = std::fs::File::create(path)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(Head { size: written.records, root: written.root })
}

/// Builds a log record by record: positions, stream versions, commit markers and a recorded-at clock.
#[derive(Clone, Debug, Default)]
pub struct LogBuilder {
    records: Vec<Record>,
    versions: HashMap<StreamId, u64>,
}

impl LogBuilder {
    /// An empty log.
    pub fn new() -> Self {
        LogBuilder::default()
    }

    /// One atomic append recorded at the time of its last event (never before the previous append).
    pub fn append(&mut self, events: Vec<Event>) -> &mut Self {
        let at = events.iter().map(Event::at).max().unwrap_or_else(|| day(0));
        self.append_at(at, events)
    }

    /// One atomic append recorded at `recorded_at` (clamped up so recorded_at never decreases).
    pub fn append_at(&mut self, recorded_at: DateTime<Utc>, events: Vec<Event>) -> &mut Self {
        let recorded_at = self.records.last().map_or(recorded_at, |r| r.recorded_at.max(recorded_at));
        let n = events.len();
        for (i, event) in events.into_iter().enumerate() {
            let version = self.versions.entry(event.stream()).or_insert(0);
            self.records.push(Record {
                position: self.records.len() as u64,
                version: *version,
                event_id: None,
                recorded_at,
                commit: i + 1 == n,
                event,
            });
            *version += 1;
        }
        self
    }

    /// The records so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Takes the records.
    pub fn into_records(self) -> Vec<Record> {
        self.records
    }
}

/// Midnight UTC of day `n` counted from 2026-01-01.
pub fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default() + Duration::days(n)
}

fn sn(s: &str) -> Sn {
    Sn::parse(s).unwrap_or_else(|_| panic!("test SN {s:?} is not valid"))
}

fn id<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| panic!("test identifier {s:?} is not valid"))
}

/// A terminal event of `device` at day `at`.
pub fn terminal(device: &str, at: i64, event: TerminalEvent) -> Event {
    Event::Terminal(DeviceEvent { device: sn(device), at: day(at), event })
}

/// `issued` of `device` with `model` (provider `lakala`, region 310000, merchant M1, one-year contract).
pub fn issued(device: &str, at: i64, model: &str, replaces: Option<&str>) -> Event {
    issued_full(device, at, model, "lakala", "310000", "M1", replaces)
}

/// `issued` with every name given.
pub fn issued_full(
    device: &str,
    at: i64,
    model: &str,
    provider: &str,
    region: &str,
    merchant: &str,
    replaces: Option<&str>,
) -> Event {
    terminal(
        device,
        at,
        TerminalEvent::Issued(Box::new(Issued {
            model: id::<ModelCode>(model),
            merchant: id::<MerchantId>(merchant),
            provider: id::<ProviderId>(provider),
            region: RegionCode::parse(region).unwrap_or_else(|_| panic!("test region {region:?} is not valid")),
            contract: Contract { id: id::<ContractId>("C1"), start: day(at), end: day(at + 365) },
            replaces: replaces.map(sn),
        })),
    )
}

/// `flow` of `amount_fen`.
pub fn flow(device: &str, at: i64, amount_fen: u64) -> Event {
    terminal(device, at, TerminalEvent::Flow { amount_fen, transactions: 1 })
}

/// `activated`.
pub fn activated(device: &str, at: i64) -> Event {
    terminal(device, at, TerminalEvent::Activated)
}

/// `contract_expired`.
pub fn contract_expired(device: &str, at: i64) -> Event {
    terminal(device, at, TerminalEvent::ContractExpired)
}

/// `contract_renewed` for another year.
pub fn contract_renewed(device: &str, at: i64) -> Event {
    let contract = Contract { id: id::<ContractId>("C2"), start: day(at), end: day(at + 365) };
    terminal(device, at, TerminalEvent::ContractRenewed { contract })
}

/// `flagged`.
pub fn flagged(device: &str, at: i64, reason: FlagReason) -> Event {
    terminal(device, at, TerminalEvent::Flagged { reason, note: Text::default() })
}

/// `flag_cleared`.
pub fn flag_cleared(device: &str, at: i64, reason: FlagReason) -> Event {
    terminal(device, at, TerminalEvent::FlagCleared { reason, note: Text::default() })
}

/// `stopped`, naming `directive` if given.
pub fn stopped(device: &str, at: i64, reason: StopReason, directive: Option<&str>) -> Event {
    terminal(device, at, TerminalEvent::Stopped { reason, directive: directive.map(id::<DirectiveId>) })
}

/// `replaced` by `by`.
pub fn replaced(device: &str, at: i64, by: &str) -> Event {
    terminal(device, at, TerminalEvent::Replaced { by: sn(by) })
}

/// A directive stopping `models`, with an optional deadline day.
pub fn directive(directive_id: &str, at: i64, models: &[&str], deadline: Option<i64>) -> Event {
    Event::Directive(Directive {
        id: id::<DirectiveId>(directive_id),
        at: day(at),
        models: models.iter().map(|m| id::<ModelCode>(m)).collect(),
        reason: Text::default(),
        deadline: deadline.map(day),
    })
}

/// A small deterministic PRNG (SplitMix64), so generated fleets need no dependency and repeat exactly.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SimStatus {
    Issued,
    Active,
    Stopped,
    Replaced,
}

struct SimTerminal {
    status: SimStatus,
    flow: u64,
    flags: u8,
    expired: bool,
    recallable: bool,
}

/// Generates a *legal* simulated fleet log in batches (appends) of about `batch` events: terminals are
/// issued over time, record daily flow, get activated at 100 yuan, are flagged and cleared, see their
/// contracts expire and renewed, are stopped and replaced; one directive recalls a model near the end.
/// About one terminal per ten events; 200 models, 5 providers, 300 regions, a merchant per 3 terminals.
pub struct FleetSim {
    rng: SplitMix,
    terminals: Vec<SimTerminal>,
    target_terminals: usize,
    day: i64,
    directive_done: bool,
}

impl FleetSim {
    /// A simulator for a log of about `events` events.
    pub fn new(events: u64, seed: u64) -> Self {
        FleetSim {
            rng: SplitMix::new(seed),
            terminals: Vec::new(),
            target_terminals: usize::try_from(events / 10).unwrap_or(usize::MAX).max(10),
            day: 0,
            directive_done: false,
        }
    }

    fn sn(i: usize) -> String {
        format!("SN{:012}", i)
    }

    fn model(i: usize) -> String {
        format!("LKL-A{}", i % 200)
    }

    /// Model 7 is recalled near the end; terminals issued after that get its successor, `LKL-B7`.
    fn model_of(&self, i: usize) -> String {
        if self.directive_done && i % 200 == 7 {
            "LKL-B7".to_owned()
        } else {
            Self::model(i)
        }
    }

    fn issue(&mut self, replaces: Option<usize>, out: &mut Vec<Event>) -> usize {
        let i = self.terminals.len();
        let providers = ["lakala", "shengfutong", "ruiyinxin", "yeahka", "sumpay"];
        let region = format!("{}", 110_000 + (self.rng.below(300) * 100));
        let merchant = format!("M{:09}", i / 3);
        let replaces = replaces.map(Self::sn);
        out.push(issued_full(
            &Self::sn(i),
            self.day,
            &self.model_of(i),
            providers[i % providers.len()],
            &region,
            &merchant,
            replaces.as_deref(),
        ));
        let recallable = self.model_of(i) == "LKL-A7";
        self.terminals.push(SimTerminal { status: SimStatus::Issued, flow: 0, flags: 0, expired: false, recallable });
        i
    }

    /// The next batch of about `batch` events (one atomic append), and the day it is recorded at.
    pub fn next_batch(&mut self, batch: usize) -> (DateTime<Utc>, Vec<Event>) {
        self.day += 1;
        let mut out = Vec::with_capacity(batch + 4);
        // Issue terminals early on: a tenth of each batch until the fleet has its size.
        let issue = (batch / 10).min(self.target_terminals.saturating_sub(self.terminals.len()));
        for _ in 0..issue {
            self.issue(None, &mut out);
        }
        while out.len() < batch {
            let n = self.terminals.len() as u64;
            let i = self.rng.below(n) as usize;
            let roll = self.rng.below(1000);
            let Some(t) = self.terminals.get_mut(i) else { break };
            let sn = Self::sn(i);
            let day = self.day;
            match (roll, t.status) {
                (_, SimStatus::Replaced) => {}
                (0..=899, _) => {
                    let amount = 500 + self.rng.below(5000);
                    t.flow += amount;
                    out.push(flow(&sn, day, amount));
                    if t.status == SimStatus::Issued && !t.expired && t.flow >= 10_000 {
                        t.status = SimStatus::Active;
                        out.push(activated(&sn, day));
                    }
                }
                (900..=939, _) => {
                    let reason = FlagReason::ALL[(roll % 6) as usize];
                    if t.flags & reason.bit() == 0 {
                        t.flags |= reason.bit();
                        out.push(flagged(&sn, day, reason));
                    } else {
                        t.flags &= !reason.bit();
                        out.push(flag_cleared(&sn, day, reason));
                    }
                }
                (940..=969, SimStatus::Issued | SimStatus::Active) => {
                    if t.expired {
                        t.expired = false;
                        out.push(contract_renewed(&sn, day));
                    } else {
                        t.expired = true;
                        out.push(contract_expired(&sn, day));
                    }
                }
                (970..=989, SimStatus::Issued | SimStatus::Active) => {
                    t.status = SimStatus::Stopped;
                    out.push(stopped(&sn, day, StopReason::Violation, None));
                }
                (990..=999, SimStatus::Stopped) => {
                    t.status = SimStatus::Replaced;
                    let new = self.terminals.len();
                    out.push(replaced(&sn, day, &Self::sn(new)));
                    self.issue(Some(i), &mut out);
                }
                _ => {}
            }
        }
        (day(self.day), out)
    }

    /// The directive and the stops it causes, once, for model `LKL-A7` (call near the end of the log).
    pub fn recall(&mut self) -> Option<(DateTime<Utc>, Vec<Event>)> {
        if self.directive_done {
            return None;
        }
        self.directive_done = true;
        self.day += 1;
        let d = self.day;
        let mut out = vec![directive("D-RECALL-7", d, &["LKL-A7"], Some(d + 30))];
        self.directive_done = true;
        for (i, t) in self.terminals.iter_mut().enumerate() {
            if t.recallable && matches!(t.status, SimStatus::Issued | SimStatus::Active) {
                t.status = SimStatus::Stopped;
                out.push(stopped(&Self::sn(i), d, StopReason::ModelRecall, Some("D-RECALL-7")));
            }
        }
        Some((day(d), out))
    }
}

/// Fills a log with a legal simulated fleet of about `events` events, in appends of `batch`: `append`
/// takes each append's events with their recorded-at time (a ledger's `append_at`, which checks every
/// one) and returns the records it wrote. Returns the number of records written.
pub fn simulate_into<E>(
    append: &mut dyn FnMut(Vec<Event>, DateTime<Utc>) -> Result<u64, E>,
    events: u64,
    batch: usize,
    seed: u64,
) -> Result<u64, E> {
    let mut sim = FleetSim::new(events, seed);
    let mut written = 0u64;
    while written < events {
        let (at, batch) = if written + (batch as u64) >= events && !sim.directive_done {
            sim.recall().unwrap_or_else(|| sim.next_batch(batch))
        } else {
            sim.next_batch(batch)
        };
        written += append(batch, at)?;
    }
    Ok(written)
}

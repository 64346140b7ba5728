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

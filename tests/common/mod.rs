//! Helpers shared by the end-to-end tests: event constructors with fixed, readable defaults.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cli;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, FlagReason, Issued, MerchantId,
    ModelCode, ProviderId, RegionCode, Sn, StopReason, TerminalEvent, Text,
};

pub fn t(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(day)
}

pub fn sn(s: &str) -> Sn {
    Sn::parse(s).unwrap()
}

pub fn dev(device: &str, day: i64, event: TerminalEvent) -> AppendEvent {
    AppendEvent::from(Event::Terminal(DeviceEvent { device: sn(device), at: t(day), event }))
}

pub fn issued_with(device: &str, model: &str, replaces: Option<&str>) -> AppendEvent {
    dev(
        device,
        0,
        TerminalEvent::Issued(Box::new(Issued {
            model: ModelCode::parse(model).unwrap(),
            merchant: MerchantId::parse("M001").unwrap(),
            provider: ProviderId::parse("lakala").unwrap(),
            region: RegionCode::parse("310000").unwrap(),
            contract: Contract { id: ContractId::parse("C1").unwrap(), start: t(0), end: t(365) },
            replaces: replaces.map(sn),
        })),
    )
}

pub fn issued(device: &str, model: &str) -> AppendEvent {
    issued_with(device, model, None)
}

pub fn flow(device: &str, amount_fen: u64) -> AppendEvent {
    dev(device, 1, TerminalEvent::Flow { amount_fen, transactions: 1 })
}

pub fn activated(device: &str) -> AppendEvent {
    dev(device, 2, TerminalEvent::Activated)
}

pub fn flagged(device: &str, reason: FlagReason) -> AppendEvent {
    dev(device, 3, TerminalEvent::Flagged { reason, note: Text::parse("risk").unwrap() })
}

pub fn stopped(device: &str, reason: StopReason) -> AppendEvent {
    dev(device, 4, TerminalEvent::Stopped { reason, directive: None })
}

pub fn replaced(device: &str, by: &str) -> AppendEvent {
    dev(device, 5, TerminalEvent::Replaced { by: sn(by) })
}

pub fn directive(id: &str, models: &[&str]) -> Directive {
    Directive {
        id: DirectiveId::parse(id).unwrap(),
        at: t(10),
        models: models.iter().map(|m| ModelCode::parse(m).unwrap()).collect(),
        reason: Text::parse("certificates revoked").unwrap(),
        deadline: Some(t(20)),
    }
}

/// Copies a folder tree (a ledger, a fixture) file by file.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// xorshift64*: a tiny seeded generator for test data (same seed, same sequence).
pub struct Rng(pub u64);

impl Rng {
    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Every committed record body of `source`, in position order.
pub fn bodies(source: &ledger::Source) -> Vec<Vec<u8>> {
    let mut frames = source.frames(0, source.head.size);
    let mut out = Vec::new();
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        out.push(body.to_vec());
    }
    out
}

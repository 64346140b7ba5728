//! A payment processor embedding the ledger directly: the life of one POS terminal, decision by
//! decision, as a processor's own code would record it.
//!
//! ```sh
//! cargo run --example processor              # a ledger in a temporary folder, removed at the end
//! cargo run --example processor -- ./my-ledger # a ledger in ./my-ledger, kept
//! ```
//!
//! Then look at what it wrote to the folder you gave with the regulators' tool:
//! `replay device ./my-ledger LKL0000000001`.

#![deny(unsafe_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use posledger::ledger::{
    AppendError, AppendEvent, Contract, ContractId, DeviceEvent, Event, EventId, FlagReason, Issued, Ledger,
    MerchantId, ModelCode, ProviderId, RegionCode, Sn, StopReason, TerminalEvent, Text,
};
use posledger::replay::text::{count, thousands};
use std::error::Error;
use std::path::PathBuf;

/// One terminal event as an append request: the terminal's SN, when it happened, and what happened.
fn event(device: &Sn, at: DateTime<Utc>, event: TerminalEvent) -> AppendEvent {
    // `AppendEvent::from` leaves `event_id` and `expected_version` empty: no idempotency key, no
    // optimistic-concurrency check. The flow below sets them where a processor needs them.
    AppendEvent::from(Event::Terminal(DeviceEvent { device: device.clone(), at, event }))
}

/// The facts recorded when a terminal leaves the warehouse, bound to merchant M00012345 in Shanghai.
fn issued(
    model: &str,
    contract: &str,
    at: DateTime<Utc>,
    replaces: Option<Sn>,
) -> Result<TerminalEvent, Box<dyn Error>> {
    // Every identifier is a validated newtype: a bad SN or region is refused here, before the ledger.
    Ok(TerminalEvent::Issued(Box::new(Issued {
        model: ModelCode::parse(model)?,
        merchant: MerchantId::parse("M00012345")?,
        provider: ProviderId::parse("lakala")?,
        // A 6-digit GB/T 2260 region code: 310104 is Xuhui district, Shanghai.
        region: RegionCode::parse("310104")?,
        // A one-year service contract with the acquirer.
        contract: Contract { id: ContractId::parse(contract)?, start: at, end: at + Duration::days(365) },
        // A replacement names the stopped terminal it replaces.
        replaces,
    })))
}

fn main() -> Result<(), Box<dyn Error>> {
    // Where the ledger lives: the first argument (kept), or a fresh temporary folder that is removed
    // when `scratch` is dropped, at the end of `main` or on an early return with an error.
    let (dir, scratch) = match std::env::args().nth(1) {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let scratch = tempfile::Builder::new().prefix("posledger-processor-").tempdir()?;
            (scratch.path().to_owned(), Some(scratch))
        }
    };

    // Open (or create) the ledger. The default is durable: every append returns after an fsync.
    let ledger = Ledger::open(&dir)?;

    // A fixed clock for the story, so the output reads the same every run.
    let day0 = Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).single().ok_or("bad date")?;
    let sn = Sn::parse("LKL0000000001")?;

    // 1. Issue the terminal. `expected_version: Some(0)` says "this stream must be empty": if another
    //    process issued the same SN first, the append is refused instead of silently racing.
    let mut issue = event(&sn, day0, issued("LKL-A8", "C-2026-0001", day0, None)?);
    issue.expected_version = Some(0);
    ledger.append(vec![issue])?;

    // 2. Record flow reported by the switch: integer fen (5,000 fen = 50 yuan), never floats.
    //    The event id makes this settlement idempotent: a retry after a timeout is not counted twice.
    let mut settle = event(&sn, day0 + Duration::days(1), TerminalEvent::Flow { amount_fen: 5_000, transactions: 3 });
    settle.event_id = Some(EventId::parse("settle-20260106-LKL0000000001")?);
    ledger.append(vec![settle.clone()])?;
    let retry = ledger.append(vec![settle])?; // the same request again, e.g. after a network error
    assert_eq!(retry.written, 0, "an idempotent retry writes nothing");

    // 3. Try to activate too early: 50 yuan is below the 100-yuan threshold, so the decision is illegal.
    //    The ledger refuses it with a typed error naming the broken rule, and writes nothing.
    let early = ledger.append(vec![event(&sn, day0 + Duration::days(1), TerminalEvent::Activated)]);
    match early {
        Err(AppendError::Rule { violation, .. }) => println!("refused, as it should be: {violation}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // 4. More flow, then the activation, in one atomic append: both are written or neither is.
    ledger.append(vec![
        event(&sn, day0 + Duration::days(2), TerminalEvent::Flow { amount_fen: 6_000, transactions: 4 }),
        event(&sn, day0 + Duration::days(2), TerminalEvent::Activated),
    ])?;

    // 5. Risk control flags suspected cash-out (套现). A flag is an observation: always recorded.
    let note = Text::parse("many round-amount purchases at night")?;
    ledger.append(vec![event(
        &sn,
        day0 + Duration::days(30),
        TerminalEvent::Flagged { reason: FlagReason::CashOut, note },
    )])?;

    // 6. The investigation confirms it: stop the terminal for a violation (a decision, checked by the
    //    lifecycle rules: only an issued or active terminal can be stopped).
    ledger.append(vec![event(
        &sn,
        day0 + Duration::days(33),
        TerminalEvent::Stopped { reason: StopReason::Violation, directive: None },
    )])?;

    // 7. Replace it: the old terminal is `replaced` by the new SN and the new one is `issued` with
    //    `replaces` = the old SN, in the same append. One without the other is refused.
    let new_sn = Sn::parse("LKL0000000002")?;
    let at = day0 + Duration::days(40);
    ledger.append(vec![
        event(&sn, at, TerminalEvent::Replaced { by: new_sn.clone() }),
        event(&new_sn, at, issued("LKL-A9", "C-2026-0002", at, Some(sn.clone()))?),
    ])?;

    // 8. What the ledger now believes, and its head digest: the Merkle root over every record, which a
    //    regulator can check against an exported bundle with `replay verify`.
    for terminal in [&sn, &new_sn] {
        if let Some((version, state, model)) = ledger.terminal(terminal)? {
            println!(
                "{terminal} ({model}): {}, status {}, flow {} fen",
                count(version, "event", "events"),
                state.status,
                thousands(state.flow_fen)
            );
        }
    }
    let head = ledger.head();
    println!("ledger {}: {}, root {}", dir.display(), count(head.size, "record", "records"), head.root_hex());

    // Close: waits for the index and syncs everything. Dropping the ledger would also be safe.
    let closed = ledger.close()?;
    if let Some(why) = closed.index_warning {
        eprintln!("warning: {why}");
    }
    if let Some(scratch) = scratch {
        scratch.close()?;
        println!("removed the temporary ledger (pass a folder to keep one: cargo run --example processor -- DIR)");
    }
    Ok(())
}

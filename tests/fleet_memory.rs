//! The fleet projection's memory per terminal, measured on a simulated fleet (issue: at most 200 bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ledger::{Durability, Ledger, Options};
use posledger::sim;

#[test]
fn fleet_state_stays_under_200_bytes_per_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Ledger::open_with(dir.path(), Options { durability: Durability::Relaxed, ..Options::default() }).unwrap();
    let config = sim::Config { devices: 30_000, months: 6, seed: 3, batch_events: 10_000, ..sim::Config::default() };
    sim::run(&ledger, &config, &mut |_| {}).unwrap();
    ledger.flush().unwrap();
    let fleet =
        projections::rebuild(&ledger.source(), projections::Cut::Head, &projections::Options::default()).unwrap();
    let memory = fleet.memory();
    eprintln!("{:.1} bytes per terminal over {} terminals", memory.per_terminal(), memory.terminals);
    assert!(memory.terminals >= 30_000, "{memory:?}");
    assert!(memory.per_terminal() <= 200.0, "{:.1} bytes per terminal: {memory:?}", memory.per_terminal());
}

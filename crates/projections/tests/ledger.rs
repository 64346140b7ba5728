//! Against a real ledger: a simulated legal fleet, rebuilt from the folder and from a live snapshot,
//! checkpointed beside the ledger and caught up after more appends; memory per terminal measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

use ledger::{Durability, Ledger, Sn, Source};
use projections::checkpoint;
use projections::{history, rebuild, rebuild_sequential, AuditConfig, Cut, Options, Rule, Start};

fn relaxed() -> ledger::Options {
    ledger::Options { durability: Durability::Relaxed, segment_max_bytes: 2 << 20, ..ledger::Options::default() }
}

#[test]
fn simulated_fleet_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), relaxed()).unwrap();
    let report = sim::run(&ledger, &sim::Config::about_events(120_000, 5_000, 42), &mut |_| {}).unwrap();
    ledger.flush().unwrap();
    let written = report.events;
    assert!(written >= 100_000, "{report:?}");
    let live = ledger.source();
    let options = Options { audit: Some(AuditConfig::default()), ..Options::default() };
    let fleet = rebuild(&live, Cut::Head, &options).unwrap();
    assert_eq!(fleet.position(), written);
    assert_eq!(fleet.illegal_events(), 0, "the simulator writes a legal log through the ledger");
    // No illegal transition; the directive is enforced on every terminal the simulator stopped with it
    // (it plants misses on purpose: terminals of recalled models issued after it, never or late stopped).
    let findings = fleet.findings().unwrap();
    for f in
        findings.iter().filter(|f| f.rule == Rule::DirectiveNotEnforced || f.rule == Rule::IllegalTransition).take(5)
    {
        println!("{f:?}");
    }
    assert!(findings.iter().all(|f| f.rule != Rule::IllegalTransition));
    assert!(report.stopped_by_directive > 0, "{report:?}");
    let not_enforced = findings.iter().filter(|f| f.rule == Rule::DirectiveNotEnforced).count() as u64;
    assert!(not_enforced <= report.missed_directive, "{not_enforced} findings, {report:?}");
    assert_eq!(fleet, rebuild_sequential(&live, Cut::Head, options.audit).unwrap());
    // Consuming the fleet moves its findings instead of copying them; the list is the same.
    assert_eq!(fleet.clone().into_findings().as_ref(), Some(&findings));
    assert_eq!(fleet, rebuild(&live, Cut::Head, &options.threads(1)).unwrap());

    // Checkpoint beside the ledger, append more, catch up.
    let path = checkpoint::default_path(&live);
    assert!(path.starts_with(dir.path()));
    checkpoint::save(&fleet, &live, &path).unwrap();
    for batch in 0..3 {
        let events = (0..500)
            .flat_map(|i| {
                let sn = format!("X{batch}-{i}");
                [projections::testing::issued(&sn, 400, "LKL-A1", None), projections::testing::flow(&sn, 400, 20_000)]
            })
            .map(ledger::AppendEvent::from)
            .collect();
        ledger.append(events).unwrap();
    }
    ledger.flush().unwrap();
    let live = ledger.source();
    let (caught_up, start) = projections::rebuild_from_checkpoint(&path, &live, Cut::Head, &options).unwrap();
    assert!(matches!(start, Start::Checkpoint { position } if position == written), "{start:?}");
    let full = rebuild(&live, Cut::Head, &options).unwrap();
    assert_eq!(caught_up, full);
    assert_eq!(caught_up.digest_hex(), full.digest_hex());

    // The folder read by a reader (sealed segments without sparse offsets) gives the same fleet.
    drop(ledger);
    let folder = Source::open(dir.path()).unwrap();
    assert_eq!(rebuild(&folder, Cut::Head, &options).unwrap(), full);

    // One terminal's history ends in its fleet state.
    let (sn, terminal) = full.iter().find(|(_, t)| t.state.flow_fen > 0).unwrap();
    let sn = Sn::parse(sn).unwrap();
    let entries = history(&folder, &sn, Cut::Head).unwrap();
    assert!(entries.iter().all(|e| e.violation.is_none()));
    assert_eq!(entries.last().unwrap().state, Some(terminal.state));
    assert_eq!(entries.last().unwrap().record.position, terminal.last_position);
}

#[test]
fn bytes_per_terminal_are_at_most_200() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), relaxed()).unwrap();
    // At least 40,000 terminals (the simulator issues every one within the first two thirds of the run).
    let config = sim::Config { devices: 40_000, months: 12, seed: 1, batch_events: 10_000, ..sim::Config::default() };
    sim::run(&ledger, &config, &mut |_| {}).unwrap();
    ledger.flush().unwrap();
    let fleet = rebuild(&ledger.source(), Cut::Head, &Options::default()).unwrap();
    let memory = fleet.memory();
    println!(
        "fleet memory: {} terminals, {:.1} bytes/terminal (Terminal = {} bytes) {memory:?}",
        memory.terminals,
        memory.per_terminal(),
        std::mem::size_of::<projections::Terminal>()
    );
    assert!(memory.terminals >= 40_000);
    assert!(memory.per_terminal() <= 200.0, "{memory:?}");
}

/// A thread count of 0 or over `MAX_THREADS` is refused with `RebuildError::Threads`; repeated rebuilds
/// with one count (the kept pool after the first) give the sequential fleet each time.
#[test]
fn thread_counts_out_of_range_are_refused_and_a_kept_pool_rebuilds_the_same_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(dir.path(), relaxed()).unwrap();
    sim::run(&ledger, &sim::Config::about_events(20_000, 1_000, 7), &mut |_| {}).unwrap();
    ledger.flush().unwrap();
    let live = ledger.source();
    for threads in [0, projections::MAX_THREADS + 1] {
        let err = rebuild(&live, Cut::Head, &Options::default().threads(threads)).unwrap_err();
        assert!(matches!(err, projections::RebuildError::Threads { .. }), "{threads} threads: {err}");
    }
    let sequential = rebuild_sequential(&live, Cut::Head, None).unwrap();
    for _ in 0..3 {
        assert_eq!(rebuild(&live, Cut::Head, &Options::default().threads(3)).unwrap(), sequential);
    }
}

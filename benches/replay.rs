//! replay benchmarks: `verify` (CRC, SHA-256 leaf hashes, decode, dense positions and stream versions,
//! Merkle root against the trailer) and `fleet` (parallel rebuild, summary and digest) over a bundle of
//! a simulated fleet.
//!
//! Run: `cargo bench --bench replay` (`REPLAY_BENCH_DEVICES=N` sets the fleet size, default 50,000
//! terminals, about 1,000,000 records over 24 months). Targets on the 2-core reference machine:
//! verify ≥ 3,000,000 records/s, fleet from a bundle ≥ 5,000,000 events/s.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ledger::Source;
use posledger::sim;
use projections::testing::{write_bundle, LogBuilder};
use projections::Cut;
use std::time::Duration;

fn bundle(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let devices = std::env::var("REPLAY_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let config = sim::Config { devices, months: 24, seed: 7, ..sim::Config::default() };
    let mut log = LogBuilder::new();
    for (at, events) in sim::generate(&config).unwrap() {
        log.append_at(at, events.into_iter().map(|e| e.event).collect());
    }
    let path = dir.join("fleet.bundle");
    let head = write_bundle(&path, log.records(), 7).unwrap();
    (path, head.size)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (path, records) = bundle(dir.path());
    let source = Source::open(&path).unwrap();
    let mut group = c.benchmark_group("replay");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(records));
    group.bench_function(format!("verify_bundle_{records}"), |b| {
        b.iter(|| replay::verify::verify(&source, &mut |_| {}).unwrap().records)
    });
    group.bench_function(format!("fleet_bundle_{records}"), |b| {
        b.iter(|| replay::fleet::fleet(&source, Cut::Head).unwrap().devices)
    });
    group.finish();
}

criterion_group!(replay_benches, benches);
criterion_main!(replay_benches);

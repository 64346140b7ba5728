//! Projections benchmarks: full parallel rebuild (1 and 2 threads), the plain sequential fold, decoding
//! alone (owned `decode_record` and borrowed `decode_view`), and catch-up from a checkpoint covering 90%
//! of the log.
//!
//! The log is a legal simulated fleet (`posledger::sim`, the demo's simulator sized to the event count,
//! appends of 10,000 events through a relaxed-durability ledger), 1,000,000 events by default; set `POSLEDGER_BENCH_EVENTS` for
//! another size (the target is 10,000,000). The generated ledger is cached in the system temp
//! folder, keyed by size, so repeated runs skip generation.
//!
//! `cargo bench --bench projections` (`-- rebuild/` for the two headline numbers only)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ledger::codec::{decode_record, decode_view};
use ledger::{Durability, Ledger, Source};
use projections::checkpoint;
use projections::{rebuild, rebuild_sequential, Cut, Options};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn events() -> u64 {
    std::env::var("POSLEDGER_BENCH_EVENTS").ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(1_000_000)
}

/// The cached ledger folder of `n` simulated events (generated on first use).
fn fleet_ledger(n: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("posledger-bench-projections-{n}-v2"));
    let done = dir.join("GENERATED");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let options = ledger::Options { durability: Durability::Relaxed, ..ledger::Options::default() };
        let ledger = Ledger::open_with(&dir, options).expect("open bench ledger");
        let config = posledger::sim::Config::about_events(n, 10_000, 2026);
        let written = posledger::sim::run(&ledger, &config, &mut |_| {}).expect("simulate").events;
        let _ = ledger.close().expect("close bench ledger");
        std::fs::write(&done, written.to_string()).expect("mark generated");
        eprintln!("generated {written} events in {:.1?} at {}", started.elapsed(), dir.display());
    }
    dir
}

fn bench(c: &mut Criterion) {
    let dir = fleet_ledger(events());
    let source = Source::open(&dir).expect("open source");
    let n = source.head.size;
    let mut group = c.benchmark_group("projections");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(n));

    for threads in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("rebuild", format!("{threads}t")), &threads, |b, &threads| {
            b.iter(|| rebuild(&source, Cut::Head, &Options::default().threads(threads)).expect("rebuild"))
        });
    }
    group.bench_function("rebuild_sequential", |b| {
        b.iter(|| rebuild_sequential(&source, Cut::Head, None).expect("sequential"))
    });
    group.bench_function("decode_only_1t", |b| {
        b.iter(|| {
            let mut frames = source.frames(0, n);
            let mut count = 0u64;
            while let Some((_, body, _)) = frames.next_frame().expect("frame") {
                count += u64::from(decode_record(body).expect("decode").commit);
            }
            count
        })
    });
    group.bench_function("decode_view_only_1t", |b| {
        b.iter(|| {
            let mut frames = source.frames(0, n);
            let mut count = 0u64;
            while let Some((_, body, _)) = frames.next_frame().expect("frame") {
                count += u64::from(decode_view(body).expect("decode").commit);
            }
            count
        })
    });
    group.bench_function("audit_2t", |b| {
        b.iter(|| {
            projections::audit(&source, Cut::Head, Default::default(), &Options::default().threads(2)).expect("audit")
        })
    });

    // Catch-up: a checkpoint at the append boundary nearest 90% of the log, then the last 10%.
    let at = ledger::RecordIter::new(source.frames(n * 9 / 10, n))
        .map(|r| r.expect("record"))
        .find(|r| r.commit)
        .map_or(n, |r| r.position + 1);
    let early = rebuild(&source, Cut::Position(at), &Options::default()).expect("rebuild to checkpoint");
    let path = dir.join("bench.checkpoint");
    if early.at_commit_boundary() {
        checkpoint::save(&early, &source, &path).expect("save checkpoint");
        let loaded = checkpoint::load(&path).expect("load checkpoint");
        group.throughput(Throughput::Elements(n - at));
        group.bench_function("catch_up_last_10pct_2t", |b| {
            b.iter(|| {
                checkpoint::catch_up(loaded.clone(), &source, Cut::Head, &Options::default().threads(2))
                    .expect("catch up")
            })
        });
    }
    group.finish();

    let fleet = rebuild(&source, Cut::Head, &Options::default()).expect("rebuild");
    let memory = fleet.memory();
    eprintln!(
        "fleet of {} terminals from {n} events: {:.1} bytes/terminal; digest {}",
        memory.terminals,
        memory.per_terminal(),
        fleet.digest_hex()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

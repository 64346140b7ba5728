//! Ledger micro-benchmarks: the units of the append path (record encode and decode, Merkle leaf append,
//! lifecycle apply), durable append in batches of 1, 100 and 10,000 records, and a full scan of a
//! 1,000,000-record log (decoded records, and raw frames).
//!
//! Run: `cargo bench --bench ledger`. Targets on the 2-core reference machine: durable batched append
//! ≥ 1,000,000 records/s, scan ≥ 10,000,000 records/s.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ledger::{
    AppendEvent, Contract, ContractId, DeviceEvent, Durability, Event, Issued, Ledger, MerchantId, ModelCode, Options,
    ProviderId, Record, RegionCode, Sn, TerminalEvent,
};

const TERMINALS: usize = 10_000;
const SCAN_RECORDS: u64 = 1_000_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn sns() -> Vec<Sn> {
    (0..TERMINALS).map(|i| Sn::parse(&format!("SN{i:08}")).unwrap()).collect()
}

/// The issue of terminal number `i`.
fn issued_event(sn: &Sn, i: usize) -> AppendEvent {
    AppendEvent::from(Event::Terminal(DeviceEvent {
        device: sn.clone(),
        at: t0(),
        event: TerminalEvent::Issued(Box::new(Issued {
            model: ModelCode::parse(&format!("M-{}", i % 50)).unwrap(),
            merchant: MerchantId::parse(&format!("MER{}", i % 997)).unwrap(),
            provider: ProviderId::parse("lakala").unwrap(),
            region: RegionCode::parse("310000").unwrap(),
            contract: Contract { id: ContractId::parse("C1").unwrap(), start: t0(), end: t0() + Duration::days(365) },
            replaces: None,
        })),
    }))
}

fn issue_all(ledger: &Ledger, sns: &[Sn]) {
    ledger.append(sns.iter().enumerate().map(|(i, sn)| issued_event(sn, i)).collect()).unwrap();
}

/// `n` flow observations over the terminals, starting at terminal `from` (a realistic mix of streams).
fn flows(sns: &[Sn], from: usize, n: usize) -> Vec<AppendEvent> {
    (0..n)
        .map(|i| {
            let k = from + i * 7919;
            AppendEvent::from(Event::Terminal(DeviceEvent {
                device: sns[k % sns.len()].clone(),
                at: t0() + Duration::seconds(k as i64 % 86_400),
                event: TerminalEvent::Flow { amount_fen: 100 + (k as u64 % 50_000), transactions: 1 + (k as u32 % 5) },
            }))
        })
        .collect()
}

fn durable_append(c: &mut Criterion) {
    let sns = sns();
    let mut group = c.benchmark_group("durable_append");
    group.sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    for batch in [1usize, 100, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let ledger =
            Ledger::open_with(tmp.path(), Options { durability: Durability::Durable, ..Options::default() }).unwrap();
        issue_all(&ledger, &sns);
        let mut from = 0usize;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    from += batch;
                    flows(&sns, from, batch)
                },
                |events| ledger.append(events).unwrap(),
                BatchSize::PerIteration,
            )
        });
        drop(ledger);
    }
    group.finish();
}

fn scan(c: &mut Criterion) {
    let sns = sns();
    let tmp = tempfile::tempdir().unwrap();
    let ledger =
        Ledger::open_with(tmp.path(), Options { durability: Durability::Relaxed, ..Options::default() }).unwrap();
    issue_all(&ledger, &sns);
    let mut from = 0;
    while ledger.head().size < SCAN_RECORDS {
        let n = (SCAN_RECORDS - ledger.head().size).min(10_000) as usize;
        ledger.append(flows(&sns, from, n)).unwrap();
        from += n;
    }
    ledger.flush().unwrap();
    let size = ledger.head().size;
    assert_eq!(size, SCAN_RECORDS);

    let mut group = c.benchmark_group("scan");
    group.sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    group.throughput(Throughput::Elements(size));
    group.bench_function("read_from_decode_1M", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let mut fen = 0u64;
            for record in ledger.read_from(0) {
                let record = record.unwrap();
                if let Event::Terminal(DeviceEvent { event: TerminalEvent::Flow { amount_fen, .. }, .. }) =
                    &record.event
                {
                    fen = fen.wrapping_add(*amount_fen);
                }
                n += 1;
            }
            assert_eq!(n, size);
            fen
        })
    });
    // The full scan as readers that need no owned copy do it (replay verify, the projections): every
    // frame CRC-checked and every record decoded in place, with `codec::decode_view`.
    group.bench_function("frames_decode_view_1M", |b| {
        b.iter(|| {
            let mut frames = ledger.frames(0, size);
            let mut n = 0u64;
            let mut versions = 0u64;
            while let Some((_, body, _)) = frames.next_frame().unwrap() {
                let view = ledger::codec::decode_view(body).unwrap();
                versions += view.version;
                n += 1;
            }
            assert_eq!(n, size);
            versions
        })
    });
    group.bench_function("frames_raw_1M", |b| {
        b.iter(|| {
            let mut frames = ledger.frames(0, size);
            let mut n = 0u64;
            let mut bytes = 0usize;
            while let Some((_, body, _)) = frames.next_frame().unwrap() {
                bytes += body.len();
                n += 1;
            }
            assert_eq!(n, size);
            bytes
        })
    });
    group.finish();
}

/// 1,000 records like the log's: 90% flows, 10% issues, over the fixture terminals.
fn records() -> Vec<Record> {
    let sns = sns();
    let issues = (0..100).map(|i| issued_event(&sns[i], i));
    issues
        .chain(flows(&sns, 0, 900))
        .enumerate()
        .map(|(i, e)| Record {
            position: 5_000_000 + i as u64,
            version: (i % 40) as u64,
            event_id: None,
            recorded_at: t0(),
            commit: i % 100 == 99,
            event: e.event,
        })
        .collect()
}

fn units(c: &mut Criterion) {
    let records = records();
    let bodies: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut body = Vec::new();
            ledger::codec::encode_record(r, &mut body).unwrap();
            body
        })
        .collect();
    let mut group = c.benchmark_group("units");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("encode_1k", |b| {
        let mut out = Vec::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            for r in &records {
                ledger::codec::encode_record(r, &mut out).unwrap();
            }
            out.len()
        })
    });
    group.bench_function("encode_serde_1k", |b| {
        // The same records through bincode's serde encoder (byte-identical; what the writer used before).
        let mut out = Vec::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            for r in &records {
                ledger::codec::encode_record_serde(&ledger::codec::RecordRef::from(r), &mut out).unwrap();
            }
            out.len()
        })
    });
    group.bench_function("decode_view_1k", |b| {
        b.iter(|| bodies.iter().map(|body| ledger::codec::decode_view(body).unwrap().position).sum::<u64>())
    });
    group.bench_function("decode_owned_1k", |b| {
        b.iter(|| bodies.iter().map(|body| ledger::codec::decode_record(body).unwrap().position).sum::<u64>())
    });
    group.bench_function("merkle_push_leaf_1k", |b| {
        // Leaf hash of each body, pushed into a frontier that already holds 4,095 leaves (the writer's
        // per-record hashing: one leaf hash and, on average, one interior node hash).
        let mut base = ledger::merkle::Frontier::new();
        for i in 0..4_095u64 {
            base.push_leaf_hash([i as u8; 32]);
        }
        b.iter_batched(
            || base.clone(),
            |mut frontier| {
                for body in &bodies {
                    frontier.push_leaf(body);
                }
                frontier.size()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("leaf_hash_one_at_a_time_1k", |b| {
        // sha2, one message after the other (what every leaf cost before the batched path).
        b.iter(|| bodies.iter().map(|body| ledger::merkle::leaf_hash(body)[0] as u64).sum::<u64>())
    });
    group.bench_function("leaf_hashes_batched_1k", |b| {
        // The same leaves through `leaf_hashes_into` (tape-sha256, many messages in lockstep).
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let mut out = vec![[0u8; 32]; slices.len()];
        b.iter(|| {
            ledger::merkle::leaf_hashes_into(&slices, &mut out);
            out[0][0]
        })
    });
    group.bench_function("merkle_extend_batched_1k", |b| {
        // The writer's per-append hashing now: the append's leaves hashed together, then its aligned
        // subtrees pushed whole (`Frontier::extend`), on the frontier of merkle_push_leaf_1k.
        let mut base = ledger::merkle::Frontier::new();
        for i in 0..4_095u64 {
            base.push_leaf_hash([i as u8; 32]);
        }
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        b.iter_batched(
            || base.clone(),
            |mut frontier| {
                let mut leaves = vec![[0u8; 32]; slices.len()];
                ledger::merkle::leaf_hashes_into(&slices, &mut leaves);
                frontier.extend(&leaves);
                frontier.size()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("lifecycle_apply_1k", |b| {
        let none = |_: &ledger::DirectiveId| ledger::lifecycle::DirectiveLookup::NotRecorded;
        let events: Vec<&TerminalEvent> = records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Terminal(d) => Some(&d.event),
                Event::Directive(_) => None,
            })
            .collect();
        b.iter(|| {
            // Each terminal: issued, then flows (the fold every check and projection runs).
            let mut state = None;
            let mut applied = 0u32;
            for event in &events {
                if matches!(event, TerminalEvent::Issued(_)) {
                    state = None;
                }
                if let Ok(next) = ledger::lifecycle::apply(state.as_ref(), event, &none) {
                    state = Some(next);
                    applied += 1;
                }
            }
            applied
        })
    });
    group.finish();
}

criterion_group!(benches, units, durable_append, scan);
criterion_main!(benches);

//! Signed checkpoints: what signing costs an append, and what a checkpoint adds to verification.
//!
//! - `checkpoint/sign_note`, `checkpoint/verify_note_1_witness`: the Ed25519 note alone.
//! - `checkpoint/durable_append_1`, `checkpoint/durable_append_1_signed`: a durable append of one event,
//!   without and with `posledger::checkpoints::sign_head` after it (the root check at the last signed
//!   size, the consistency proof from it, the signature and the durable write of the checkpoint file),
//!   on a ledger of 100,000 records: the cost of `append --sign-with` per append, in the same run.
//!
//! Run: `cargo bench --bench checkpoints`. The whole-process figures (`posledger append --sign-with`,
//! `replay verify --checkpoint`) come from `scripts/bench-checkpoints.sh`; both are in BENCHMARKS.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ledger::{
    AppendEvent, Contract, ContractId, DeviceEvent, Durability, Event, Issued, Ledger, MerchantId, ModelCode, Options,
    ProviderId, RegionCode, Sn, TerminalEvent,
};
use tlog::ed25519::Cosigner;
use tlog::{Checkpoint, KeyType, Note, SigningKey};

const BASE_RECORDS: usize = 100_000;

fn issued(i: usize) -> AppendEvent {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    AppendEvent::from(Event::Terminal(DeviceEvent {
        device: Sn::parse(&format!("SN{i:09}")).unwrap(),
        at: t0,
        event: TerminalEvent::Issued(Box::new(Issued {
            model: ModelCode::parse("PAX-A920").unwrap(),
            merchant: MerchantId::parse("M001").unwrap(),
            provider: ProviderId::parse("lakala").unwrap(),
            region: RegionCode::parse("310000").unwrap(),
            contract: Contract {
                id: ContractId::parse("C1").unwrap(),
                start: t0,
                end: t0 + chrono::Duration::days(365),
            },
            replaces: None,
        })),
    }))
}

fn notes(c: &mut Criterion) {
    let log = SigningKey::generate("acquirer.example/posledger/bench", KeyType::Note).unwrap();
    let witness = SigningKey::generate("regulator.example/w1", KeyType::Cosignature).unwrap();
    let checkpoint = Checkpoint::new("acquirer.example/posledger/bench", 1_963_643, [7; 32]);
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_note", |b| b.iter(|| checkpoint.sign(&log).unwrap()));
    let mut note = Note::parse(&checkpoint.sign(&log).unwrap()).unwrap();
    note.sign(&Cosigner::new(&witness, 1_764_633_600).unwrap()).unwrap();
    let bytes = note.to_bytes();
    let (log_vkey, witness_vkey) = (log.verifier_key(), [witness.verifier_key()]);
    group.bench_function("verify_note_1_witness", |b| {
        b.iter(|| tlog::checkpoint::verify(&bytes, &log_vkey, &witness_vkey, 1).unwrap())
    });
    group.finish();
}

fn append_and_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(20).measurement_time(std::time::Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    for signed in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let ledger =
            Ledger::open_with(tmp.path(), Options { durability: Durability::Durable, ..Options::default() }).unwrap();
        ledger.append((0..BASE_RECORDS).map(issued).collect()).unwrap();
        let key = SigningKey::generate("acquirer.example/posledger/bench", KeyType::Note).unwrap();
        posledger::checkpoints::sign_head(&ledger, &key).unwrap();
        let mut next = BASE_RECORDS;
        let name = if signed { "durable_append_1_signed" } else { "durable_append_1" };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += 1;
                    vec![issued(next)]
                },
                |events| {
                    ledger.append(events).unwrap();
                    if signed {
                        posledger::checkpoints::sign_head(&ledger, &key).unwrap();
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, notes, append_and_sign);
criterion_main!(benches);

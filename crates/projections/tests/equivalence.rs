//! Properties: the parallel rebuild equals the sequential fold for any thread count and chunking; as of
//! position N equals a rebuild of the log cut at N; a checkpoint caught up equals a full rebuild; a
//! checkpoint of another log or past the end is refused. Generated logs include illegal transitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

use ledger::{Event, FlagReason, Record, Source, StopReason};
use projections::checkpoint::{self, CheckpointError};
use projections::testing::*;
use projections::{rebuild, rebuild_sequential, AuditConfig, Cut, Options, Start};
use proptest::prelude::*;
use std::path::Path;

type Step = (u8, usize, usize, u64, bool, i64);

fn build(steps: &[Step]) -> Vec<Record> {
    let mut log = LogBuilder::new();
    let mut group: Vec<Event> = Vec::new();
    let mut t = 0i64;
    let mut fresh = 0usize;
    let models = ["M0", "M1", "M2"];
    for &(kind, a, c, amount, close, dt) in steps {
        t += dt;
        let sa = format!("SN{a}");
        let model = models[a % 3];
        match kind {
            0 | 1 => group.push(issued(&sa, t, model, None)),
            2..=4 => group.push(flow(&sa, t, amount * 7)),
            5 => group.push(activated(&sa, t)),
            6 => group.push(contract_expired(&sa, t)),
            7 => group.push(contract_renewed(&sa, t)),
            8 => group.push(flagged(&sa, t, FlagReason::ALL[amount as usize % 6])),
            9 => group.push(flag_cleared(&sa, t, FlagReason::ALL[amount as usize % 6])),
            10 => {
                let reason = StopReason::ALL[amount as usize % 5];
                let directive = (reason == StopReason::ModelRecall || amount % 3 == 0).then(|| format!("D{}", c % 3));
                group.push(stopped(&sa, t, reason, directive.as_deref()));
            }
            11 => {
                // A replacement; sometimes one side only, sometimes split over two appends.
                fresh += 1;
                let new = if c % 4 == 0 { format!("SN{c}") } else { format!("R{fresh}") };
                match amount % 5 {
                    0 => group.push(replaced(&sa, t, &new)),
                    1 => group.push(issued(&new, t, model, Some(&sa))),
                    2 => {
                        group.push(replaced(&sa, t, &new));
                        log.append(std::mem::take(&mut group));
                        group.push(issued(&new, t, model, Some(&sa)));
                    }
                    _ => {
                        group.push(replaced(&sa, t, &new));
                        group.push(issued(&new, t, model, Some(&sa)));
                    }
                }
            }
            _ => {
                let deadline = (amount % 2 == 0).then_some(t + (amount % 40) as i64);
                group.push(directive(&format!("D{}", c % 3), t, &[models[c % 3], models[(c + 1) % 3]], deadline));
            }
        }
        if close && !group.is_empty() {
            log.append(std::mem::take(&mut group));
        }
    }
    if !group.is_empty() {
        log.append(group);
    }
    log.into_records()
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    steps_closing(0.4, 150)
}

/// Steps whose appends close with probability `close` after each step (long appends for a small one).
fn steps_closing(close: f64, max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0u8..13, 0usize..7, 0usize..9, 0u64..3000, prop::bool::weighted(close), 0i64..6), 1..max)
}

fn bundle(dir: &Path, name: &str, records: &[Record], ledger_id: u64) -> Source {
    let path = dir.join(name);
    write_bundle(&path, records, ledger_id).unwrap();
    Source::open(&path).unwrap()
}

fn audit() -> Option<AuditConfig> {
    Some(AuditConfig { flag_open_limit: std::time::Duration::from_secs(5 * 86_400), ..AuditConfig::default() })
}

/// The log of `steps` as a bundle, rebuilt in parallel with these options and sequentially; checks they
/// agree (state, digest, findings, summary) and returns the bundle, the options and the sequential fold.
fn parallel_and_sequential(
    steps: &[Step],
    threads: usize,
    chunk: u64,
    batch: usize,
) -> Result<(tempfile::TempDir, Source, Options, projections::Fleet), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let source = bundle(dir.path(), "log", &build(steps), 1);
    let sequential = rebuild_sequential(&source, Cut::Head, audit()).unwrap();
    let options = Options { threads: Some(threads), audit: audit(), chunk_records: chunk, batch_chunks: batch };
    let parallel = rebuild(&source, Cut::Head, &options).unwrap();
    prop_assert_eq!(&parallel, &sequential);
    prop_assert_eq!(parallel.digest_hex(), sequential.digest_hex());
    prop_assert_eq!(parallel.findings(), sequential.findings());
    prop_assert_eq!(parallel.summary(), sequential.summary());
    Ok((dir, source, options, sequential))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn parallel_equals_sequential_for_any_threads(
        steps in steps(), threads in 1usize..5, chunk in 1u64..9, batch in 1usize..4,
    ) {
        let (_dir, source, options, sequential) = parallel_and_sequential(&steps, threads, chunk, batch)?;
        // The same inside an explicitly sized rayon pool.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let in_pool = pool.install(|| rebuild(&source, Cut::Head, &Options { threads: None, ..options })).unwrap();
        prop_assert_eq!(&in_pool, &sequential);
    }

    /// Regression test for the pairing of long appends: the parallel rebuild decided a replacement's
    /// pairing only at its append's commit marker, so a log made by one long `posledger append` (one
    /// commit marker at its end) stalled nearly every partition until the end. Pairs are now decided
    /// as soon as both halves are seen; with appends spanning many chunks and batches, halves in
    /// different chunks, unpaired halves and self-replacements, the result is still the sequential
    /// fold's.
    #[test]
    fn long_appends_decide_pairs_early_and_equal_the_sequential_fold(
        steps in steps_closing(0.02, 400), threads in 1usize..4, chunk in 1u64..6, batch in 1usize..3,
    ) {
        let (_dir, source, options, _) = parallel_and_sequential(&steps, threads, chunk, batch)?;
        let n = source.head.size;
        for cut in [n / 3, n / 2, n.saturating_sub(1)] {
            let as_of = rebuild(&source, Cut::Position(cut), &options).unwrap();
            prop_assert_eq!(&as_of, &rebuild_sequential(&source, Cut::Position(cut), audit()).unwrap());
        }
    }

    #[test]
    fn as_of_position_equals_a_log_cut_there(steps in steps(), cut in 0.0f64..=1.0, chunk in 1u64..9) {
        let records = build(&steps);
        let n = ((records.len() as f64) * cut) as usize;
        let dir = tempfile::tempdir().unwrap();
        let full = bundle(dir.path(), "full", &records, 1);
        let cut_log = bundle(dir.path(), "cut", &records[..n], 1);
        let options = Options { audit: audit(), chunk_records: chunk, batch_chunks: 2, ..Options::default() };
        let as_of = rebuild(&full, Cut::Position(n as u64), &options).unwrap();
        let whole_cut = rebuild(&cut_log, Cut::Head, &options).unwrap();
        prop_assert_eq!(&as_of, &whole_cut);
        prop_assert_eq!(as_of.findings(), whole_cut.findings());
        prop_assert_eq!(&rebuild_sequential(&full, Cut::Position(n as u64), audit()).unwrap(), &whole_cut);
        // As of a recorded-at time: every record recorded at or before it.
        if let Some(last) = records[..n].last() {
            let t = last.recorded_at;
            let m = records.iter().take_while(|r| r.recorded_at <= t).count();
            let by_time = rebuild(&full, Cut::Time(t), &options).unwrap();
            prop_assert_eq!(by_time.position(), m as u64);
            prop_assert_eq!(&by_time, &rebuild(&full, Cut::Position(m as u64), &options).unwrap());
            prop_assert_eq!(&by_time, &rebuild_sequential(&full, Cut::Time(t), audit()).unwrap());
        }
    }

    #[test]
    fn checkpoint_catch_up_equals_full_rebuild(steps in steps(), at in 0.0f64..=1.0, chunk in 1u64..9) {
        let records = build(&steps);
        // Checkpoints are taken at append boundaries.
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(records.iter().enumerate().filter(|(_, r)| r.commit).map(|(i, _)| i + 1))
            .collect();
        let k = bounds[((bounds.len() - 1) as f64 * at) as usize];
        let dir = tempfile::tempdir().unwrap();
        let full = bundle(dir.path(), "full", &records, 1);
        let prefix = bundle(dir.path(), "prefix", &records[..k], 1);
        let options = Options { audit: audit(), chunk_records: chunk, batch_chunks: 2, ..Options::default() };
        let early = rebuild(&prefix, Cut::Head, &options).unwrap();
        let path = dir.path().join("fleet.checkpoint");
        checkpoint::save(&early, &prefix, &path).unwrap();
        let loaded = checkpoint::load(&path).unwrap();
        prop_assert_eq!(loaded.fleet(), &early);
        let caught_up = checkpoint::catch_up(loaded, &full, Cut::Head, &options).unwrap();
        let expected = rebuild(&full, Cut::Head, &options).unwrap();
        prop_assert_eq!(&caught_up, &expected);
        prop_assert_eq!(caught_up.findings(), expected.findings());
        let (again, start) = projections::rebuild_from_checkpoint(&path, &full, Cut::Head, &options).unwrap();
        let resumed = matches!(start, Start::Checkpoint { position } if position == k as u64);
        prop_assert!(resumed, "{:?}", start);
        prop_assert_eq!(&again, &expected);
    }
}

/// A log where every terminal is issued, then a different one.
fn two_logs() -> (Vec<Record>, Vec<Record>) {
    let mut a = LogBuilder::new();
    a.append(vec![issued("A", 0, "M1", None)]).append(vec![flow("A", 1, 500)]).append(vec![flow("A", 2, 9500)]);
    let mut b = LogBuilder::new();
    b.append(vec![issued("A", 0, "M1", None)]).append(vec![flow("A", 1, 501)]).append(vec![flow("A", 2, 9500)]);
    (a.into_records(), b.into_records())
}

#[test]
fn a_checkpoint_of_another_log_is_refused_and_the_rebuild_falls_back() {
    let (a, b) = two_logs();
    let dir = tempfile::tempdir().unwrap();
    let source_a = bundle(dir.path(), "a", &a, 1);
    let source_b = bundle(dir.path(), "b", &b[..2], 1);
    let from_b = rebuild(&source_b, Cut::Head, &Options::default()).unwrap();
    let path = dir.path().join("b.checkpoint");
    checkpoint::save(&from_b, &source_b, &path).unwrap();
    let refused = checkpoint::catch_up(checkpoint::load(&path).unwrap(), &source_a, Cut::Head, &Options::default());
    assert!(matches!(refused, Err(CheckpointError::RootMismatch { position: 2, .. })), "{refused:?}");
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("belongs to another log"), "{message}");
    let (fleet, start) =
        projections::rebuild_from_checkpoint(&path, &source_a, Cut::Head, &Options::default()).unwrap();
    assert!(matches!(start, Start::Scratch { refused: CheckpointError::RootMismatch { .. } }), "{start:?}");
    assert_eq!(fleet, rebuild(&source_a, Cut::Head, &Options::default()).unwrap());
}

#[test]
fn a_checkpoint_past_the_end_is_refused() {
    let (a, _) = two_logs();
    let dir = tempfile::tempdir().unwrap();
    let full = bundle(dir.path(), "full", &a, 1);
    let short = bundle(dir.path(), "short", &a[..1], 1);
    let fleet = rebuild(&full, Cut::Head, &Options::default()).unwrap();
    let path = dir.path().join("c");
    checkpoint::save(&fleet, &full, &path).unwrap();
    let refused = checkpoint::catch_up(checkpoint::load(&path).unwrap(), &short, Cut::Head, &Options::default());
    assert!(matches!(refused, Err(CheckpointError::PastEnd { position: 3, size: 1 })), "{refused:?}");
    let (fleet, start) = projections::rebuild_from_checkpoint(&path, &short, Cut::Head, &Options::default()).unwrap();
    assert!(matches!(start, Start::Scratch { refused: CheckpointError::PastEnd { .. } }));
    assert_eq!(fleet.position(), 1);
}

#[test]
fn damaged_checkpoints_and_cuts_inside_appends_are_refused() {
    let mut log = LogBuilder::new();
    log.append(vec![issued("A", 0, "M1", None), flow("A", 0, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let source = bundle(dir.path(), "x", log.records(), 1);
    let inside = rebuild(&source, Cut::Position(1), &Options::default()).unwrap();
    let path = dir.path().join("c");
    assert!(matches!(checkpoint::save(&inside, &source, &path), Err(CheckpointError::NotAtCommit { position: 1 })));
    let fleet = rebuild(&source, Cut::Head, &Options::default()).unwrap();
    checkpoint::save(&fleet, &source, &path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(checkpoint::load(&path), Err(CheckpointError::Invalid { .. })));
    assert!(matches!(
        rebuild(&source, Cut::Position(3), &Options::default()),
        Err(projections::RebuildError::PastEnd { position: 3, size: 2 })
    ));
}

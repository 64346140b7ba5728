//! The ledger's main paths end to end: append, refuse, reopen, rebuild the index, read, prove.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ledger::lifecycle::Status;
use ledger::{AppendError, Ledger, StopReason, StreamId};
use std::time::Duration;

#[test]
fn lifecycle_append_reopen_and_index_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let ledger = Ledger::open(&path).unwrap();
    let a = ledger.append(vec![issued("SN1", "LKL-A8"), flow("SN1", 6_000)]).unwrap();
    assert_eq!(a.positions, vec![0, 1]);
    // Activation before 100 yuan is refused and writes nothing.
    let before = ledger.head();
    let err = ledger.append(vec![activated("SN1")]).unwrap_err();
    assert!(matches!(err, AppendError::Rule { index: 0, .. }), "{err}");
    assert_eq!(ledger.head(), before);
    ledger.append(vec![flow("SN1", 4_000), activated("SN1")]).unwrap();
    ledger.append(vec![stopped("SN1", StopReason::Violation)]).unwrap();
    ledger.append(vec![replaced("SN1", "SN2"), issued_with("SN2", "LKL-A8", Some("SN1"))]).unwrap();
    let head = ledger.head();
    assert_eq!(head.size, 7);
    let history = ledger.read_stream(&StreamId::Terminal(sn("SN1"))).unwrap();
    assert_eq!(history.len(), 6);
    assert_eq!(ledger.terminal(&sn("SN1")).unwrap().unwrap().1.status, Status::Replaced);
    drop(ledger);

    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.read_stream(&StreamId::Terminal(sn("SN1"))).unwrap(), history);
    drop(ledger);

    std::fs::remove_dir_all(path.join("index")).unwrap();
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.read_stream(&StreamId::Terminal(sn("SN1"))).unwrap(), history);
    assert_eq!(ledger.terminal(&sn("SN2")).unwrap().unwrap().1.status, Status::Issued);
    // The rebuilt view still refuses what the old one refused.
    assert!(ledger.append(vec![issued("SN1", "LKL-A8")]).is_err());
}

#[test]
fn directive_stops_exactly_the_running_terminals_of_its_models() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger
        .append(vec![
            issued("A1", "M-A"),
            issued("A2", "M-A"),
            issued("B1", "M-B"),
            issued("C1", "M-C"),
            stopped("A2", StopReason::MerchantRequest),
        ])
        .unwrap();
    let outcome = ledger.stop_models(directive("D-1", &["M-A", "M-B"]), None).unwrap();
    assert_eq!(outcome.stopped, vec![sn("A1"), sn("B1")]);
    assert_eq!(outcome.appended.written, 3);
    assert_eq!(ledger.terminal(&sn("C1")).unwrap().unwrap().1.status, Status::Issued);
    let again = ledger.stop_models(directive("D-1", &["M-C"]), None).unwrap_err();
    assert!(matches!(again, AppendError::Rule { .. }), "{again}");
    let model = ledger::ModelCode::parse("M-A").unwrap();
    assert_eq!(ledger.terminals_of_model(&model).unwrap().len(), 2);
    assert_eq!(ledger.persisted_terminals_of_model(&model).unwrap().len(), 2);
}

#[test]
fn proofs_of_the_ledger_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    for i in 0..37 {
        ledger.append(vec![issued(&format!("SN{i}"), "M")]).unwrap();
    }
    let head = ledger.head();
    let old_root = ledger.root_at(20).unwrap();
    let proof = ledger.consistency_proof(20, head.size).unwrap();
    assert!(ledger::merkle::verify_consistency(20, 37, &old_root, &head.root, &proof));
    let mut frames = ledger.frames(11, 12);
    let (_, body, _) = frames.next_frame().unwrap().unwrap();
    let leaf = ledger::merkle::leaf_hash(body);
    let proof = ledger.inclusion_proof(11, 37).unwrap();
    assert!(ledger::merkle::verify_inclusion(&leaf, 11, 37, &proof, &head.root));
}

#[test]
fn idempotent_retry_and_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let mut e = issued("SN1", "M");
    e.event_id = Some(ledger::EventId::parse("evt-1").unwrap());
    let first = ledger.append(vec![e.clone()]).unwrap();
    let retry = ledger.append(vec![e.clone()]).unwrap();
    assert_eq!(retry.positions, first.positions);
    assert_eq!(retry.written, 0);
    assert_eq!(ledger.head().size, 1);
    let mut f = flow("SN1", 5);
    f.expected_version = Some(0);
    let err = ledger.append(vec![f.clone()]).unwrap_err();
    assert!(matches!(err, AppendError::WrongExpectedVersion { expected: 0, actual: 1, .. }), "{err}");
    f.expected_version = Some(1);
    ledger.append(vec![f]).unwrap();
}

#[test]
fn segments_rotate_and_everything_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let options = ledger::Options { segment_max_bytes: 2_000, ..Default::default() };
    let ledger = Ledger::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..200 {
        ledger.append(vec![issued(&format!("SN{i}"), "M"), flow(&format!("SN{i}"), 10)]).unwrap();
    }
    let head = ledger.head();
    let all: Vec<_> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 400);
    assert!(all.iter().enumerate().all(|(i, r)| r.position == i as u64));
    drop(ledger);
    let segments = std::fs::read_dir(dir.path().join("segments")).unwrap().count();
    assert!(segments > 5, "{segments} segments");
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    assert_eq!(ledger.head(), head);
    assert_eq!(ledger.read_stream(&StreamId::Terminal(sn("SN150"))).unwrap().len(), 2);
    let source = ledger::Source::open(dir.path()).unwrap();
    assert_eq!(source.head, head);
}

#[test]
fn a_lagging_head_is_checked_from_its_own_segment_and_a_wrong_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = ledger::Options { segment_max_bytes: 1_500, ..Default::default() };
    let ledger = Ledger::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..30 {
        ledger.append(vec![issued(&format!("SN{i}"), "M")]).unwrap();
    }
    let old_head = std::fs::read(dir.path().join("HEAD")).unwrap();
    for i in 30..90 {
        ledger.append(vec![issued(&format!("SN{i}"), "M")]).unwrap();
    }
    let head = ledger.head();
    drop(ledger);
    // A HEAD that lags by several segments (a crash before it was rewritten) still opens.
    std::fs::write(dir.path().join("HEAD"), &old_head).unwrap();
    let ledger = Ledger::open_with(dir.path(), options.clone()).unwrap();
    assert_eq!(ledger.head(), head);
    drop(ledger);
    // A HEAD whose root differs from the log at its size is refused: acknowledged records changed.
    let mut wrong = ledger::anchor::decode(std::path::Path::new("HEAD"), &old_head).unwrap().head;
    wrong.root[3] ^= 1;
    std::fs::write(dir.path().join("HEAD"), ledger::anchor::encode_fresh(&wrong)).unwrap();
    let err = Ledger::open_with(dir.path(), options).err().unwrap();
    assert!(err.to_string().contains("the log was rewritten"), "{err}");
    assert!(matches!(err, ledger::OpenError::Read(ledger::ReadError::AnchorMismatch { .. })), "{err:?}");
}

#[test]
fn relaxed_mode_publishes_head_only_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = ledger::Options { durability: ledger::Durability::Relaxed, ..Default::default() };
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    ledger.append(vec![issued("SN1", "M"), flow("SN1", 5)]).unwrap();
    // Readers see the records, but HEAD (the durable promise) does not name them yet.
    assert_eq!(ledger.head().size, 2);
    assert_eq!(ledger::source::read_head(dir.path()).map(|h| h.size), Some(0));
    let flushed = ledger.flush().unwrap();
    assert_eq!(ledger::source::read_head(dir.path()), Some(flushed));
}

#[test]
fn a_ledger_open_elsewhere_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let second = Ledger::open(dir.path()).err().unwrap();
    assert!(matches!(second, ledger::OpenError::Locked(_)), "{second}");
    drop(ledger);
    // Closed: the next open gets it.
    Ledger::open(dir.path()).unwrap();
}

/// Regression: a subscription held a strong reference to the open ledger, so one left alive kept the
/// folder locked (and the index threads running) after the ledger that made it was dropped.
#[test]
fn a_live_subscription_does_not_keep_the_folder_locked() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    ledger.append(vec![issued("SUB-1", "M1"), flow("SUB-1", 500)]).unwrap();
    let mut sub = ledger.subscribe(0);
    assert_eq!(sub.next_timeout(Duration::from_secs(5)).unwrap().map(|r| r.position), Some(0));
    drop(ledger);
    // The folder is free at once, while the subscription lives.
    let reopened = Ledger::open(dir.path()).unwrap();
    // The subscription hands out the record it had already fetched, then says the ledger is closed.
    assert_eq!(sub.next_timeout(Duration::from_secs(5)).unwrap().map(|r| r.position), Some(1));
    assert!(matches!(sub.next_timeout(Duration::from_millis(10)), Err(ledger::ReadError::Closed)));
    // A subscription of the reopened ledger resumes where the old one stopped.
    let mut resumed = reopened.subscribe(sub.position());
    reopened.append(vec![flow("SUB-1", 700)]).unwrap();
    assert_eq!(resumed.next_timeout(Duration::from_secs(5)).unwrap().map(|r| r.position), Some(2));
}

/// Regression: a subscriber already waiting when an append lands and the ledger is dropped right after
/// got `Closed` without the record, because the close was checked before the published head.
#[test]
fn a_waiting_subscriber_gets_the_append_published_just_before_the_close() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let mut sub = ledger.subscribe(0);
        let waiter = std::thread::spawn(move || {
            let first = sub.next_timeout(Duration::from_secs(30));
            (first.map(|r| r.map(|r| r.position)), sub.next_timeout(Duration::from_secs(30)).map(|r| r.is_some()))
        });
        // Let the subscriber reach its wait, then publish and close at once.
        std::thread::sleep(Duration::from_millis(100));
        ledger.append(vec![issued("LAST-1", "M1")]).unwrap();
        drop(ledger);
        let (first, then) = waiter.join().unwrap();
        assert_eq!(first.unwrap(), Some(0), "round {round}: the last append was not delivered");
        assert!(matches!(then, Err(ledger::ReadError::Closed)), "round {round}: {then:?}");
    }
}

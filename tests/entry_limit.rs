//! Records fit a C2SP tlog-tiles entry: new records are at most `MAX_ENTRY_BYTES` (65,535) bytes, a long
//! `stop-models` list is split into several directive records in the same atomic append, and ledgers
//! written before the limit, with larger records (up to `MAX_RECORD_BYTES`), still open, verify and fold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{posledger, s, stderr};
use common::*;
use ledger::codec::{decode_record, encode_record, MAX_ENTRY_BYTES, MAX_RECORD_BYTES};
use ledger::lifecycle::Status;
use ledger::merkle::Frontier;
use ledger::segment::push_frame;
use ledger::source::SEGMENTS_DIR;
use ledger::{AppendError, AppendEvent, DeviceEvent, Event, Head, Ledger, Record, Source, StopReason, TerminalEvent};
use projections::audit::{AuditConfig, Rule};
use projections::{Cut, Options};
use std::path::Path;

/// `n` distinct model codes of 56 bytes (2,000 of them make a directive record of about 116 KB).
fn models(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("RECALLED-MODEL-WITH-A-LONG-VENDOR-CODE-{i:017}")).collect()
}

fn bodies(dir: &Path) -> Vec<Vec<u8>> {
    let source = Source::open(dir).unwrap();
    let mut frames = source.frames(0, source.head.size);
    let mut out = Vec::new();
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        out.push(body.to_vec());
    }
    out
}

#[test]
fn stop_models_with_2000_models_splits_into_entries_that_fit_tlog_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let codes = models(2_000);
    let ledger = Ledger::open(&dir).unwrap();
    let issued: Vec<AppendEvent> = codes.iter().enumerate().map(|(i, m)| issued(&format!("SN{i:05}"), m)).collect();
    ledger.append(issued).unwrap();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let outcome = ledger.stop_models(directive("D-2026-03", &refs), None).unwrap();
    assert_eq!(outcome.stopped.len(), 2_000);
    let ids: Vec<&str> = outcome.directives.iter().map(|d| d.as_str()).collect();
    assert!(ids.len() >= 2, "{ids:?}");
    assert_eq!(ids[..2], ["D-2026-03", "D-2026-03-p2"]);
    assert_eq!(outcome.appended.written, 2_000 + ids.len() as u64);
    ledger.close().unwrap();

    let source = Source::open(&dir).unwrap();
    let mut listed = Vec::new();
    for body in bodies(&dir) {
        assert!(body.len() <= MAX_ENTRY_BYTES, "a record of {} bytes", body.len());
        let record = decode_record(&body).unwrap();
        match &record.event {
            Event::Directive(d) => listed.extend(d.models.iter().map(|m| m.as_str().to_owned())),
            Event::Terminal(DeviceEvent { event: TerminalEvent::Stopped { directive: Some(id), .. }, .. }) => {
                assert!(ids.contains(&id.as_str()))
            }
            _ => {}
        }
    }
    assert_eq!(listed, codes, "the parts list every model once, in order");
    let fleet = projections::rebuild(&source, Cut::Head, &Options::default()).unwrap();
    let summary = fleet.summary();
    assert_eq!(summary.total.total, 2_000);
    assert_eq!(summary.total.stopped, 2_000, "every terminal of every model is stopped");
    let findings = projections::audit(&source, Cut::Head, AuditConfig::default(), &Options::default()).unwrap();
    assert!(findings.iter().all(|f| f.rule != Rule::IllegalTransition), "{findings:?}");
}

#[test]
fn a_record_over_the_entry_limit_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let codes = models(2_000);
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let ledger = Ledger::open(&dir).unwrap();
    ledger.append(vec![issued("SN1", "M-1")]).unwrap();
    let before = ledger.head();
    let big = AppendEvent::from(Event::Directive(directive("D-BIG", &refs)));
    let err = ledger.append(vec![flow("SN1", 10), big]).unwrap_err();
    assert!(
        matches!(err, AppendError::EntryTooLarge { index: 1, len, max: MAX_ENTRY_BYTES } if len > MAX_ENTRY_BYTES),
        "{err}"
    );
    assert_eq!(ledger.head(), before);
    ledger.close().unwrap();

    // The same through `posledger append`: one line naming the input line, exit 1, the head unchanged.
    let line = serde_json::json!({
        "type": "directive", "id": "D-BIG", "at": "2026-07-01T00:00:00Z", "models": codes, "reason": "recall",
    });
    let input = tmp.path().join("big.ndjson");
    std::fs::write(&input, format!("{{\"device\":\"SN1\",\"type\":\"flow\",\"at\":\"2026-07-01T00:00:00Z\",\"amount_fen\":100,\"transactions\":1}}\n{line}\n"))
        .unwrap();
    let o = posledger(&["append", "--dir", s(&dir), s(&input)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("big.ndjson:2:") && err.contains("65,535"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let source = Source::open(&dir).unwrap();
    assert_eq!(source.head, before);
}

#[test]
fn a_ledger_written_before_the_entry_limit_still_opens_verifies_and_folds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let ledger = Ledger::open(&dir).unwrap();
    let model = "RECALLED-MODEL-WITH-A-LONG-VENDOR-CODE-00000000000000000";
    ledger.append_at(vec![issued("SN1", model)], Some(t(1))).unwrap();
    ledger.close().unwrap();
    // What an earlier version wrote: a directive of 2,000 models in one record, and a stop naming it.
    let codes = models(2_000);
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let old = [
        Event::Directive(directive("D-OLD", &refs)),
        Event::Terminal(DeviceEvent {
            device: sn("SN1"),
            at: t(10),
            event: TerminalEvent::Stopped {
                reason: StopReason::ModelRecall,
                directive: Some(ledger::DirectiveId::parse("D-OLD").unwrap()),
            },
        }),
    ];
    let mut all = bodies(&dir);
    let mut frames = Vec::new();
    for (i, event) in old.into_iter().enumerate() {
        let record = Record {
            position: 1 + i as u64,
            version: i as u64,
            event_id: None,
            recorded_at: t(10),
            commit: i == 1,
            event,
        };
        let mut body = Vec::new();
        encode_record(&record, &mut body).unwrap();
        push_frame(&mut frames, &body);
        all.push(body);
    }
    assert!(all[1].len() > MAX_ENTRY_BYTES && all[1].len() <= MAX_RECORD_BYTES, "{}", all[1].len());
    let segment = dir.join(SEGMENTS_DIR).join("00000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&frames);
    std::fs::write(&segment, bytes).unwrap();
    let mut frontier = Frontier::new();
    for body in &all {
        frontier.push_leaf(body);
    }
    let head = Head { size: 3, root: frontier.root() };
    std::fs::write(dir.join(ledger::anchor::HEAD_FILE), ledger::anchor::encode_fresh(&head)).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() && entry.file_name() != SEGMENTS_DIR {
            std::fs::remove_dir_all(entry.path()).unwrap(); // the derived index: rebuilt on open
        }
    }

    let source = Source::open(&dir).unwrap();
    assert_eq!(source.head, head);
    replay::verify::verify(&source, &mut |_| {}).unwrap();
    let fleet = projections::rebuild(&source, Cut::Head, &Options::default()).unwrap();
    assert_eq!(fleet.summary().total.stopped, 1);
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.head(), head);
    let (_, state, _) = ledger.terminal(&sn("SN1")).unwrap().unwrap();
    assert_eq!(state.status, Status::Stopped);
    ledger.close().unwrap();
}

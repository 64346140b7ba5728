//! Regression tests for "imports above 2,000,000 events fail, and a failed import leaves an empty ledger
//! behind": `posledger append` streams any number of lines as one atomic append (the ledger's
//! [`ledger::Import`]), in bounded memory; a refused line anywhere leaves the log exactly as it was, and
//! a refused import into a new folder leaves no folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::posledger;
use common::{flow, issued, issued_with, replaced, stopped};
use ledger::{Ledger, Options};
use std::io::Write;
use std::path::Path;

fn issued_line(sn: &str) -> String {
    format!(
        r#"{{"device":"{sn}","type":"issued","at":"2026-01-05T08:00:00Z","model":"M1","merchant":"M001","provider":"lakala","region":"310000","contract":{{"id":"C-{sn}","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}}}"#
    )
}

fn flow_line(sn: &str) -> String {
    format!(r#"{{"device":"{sn}","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":100,"transactions":1}}"#)
}

fn segment_bytes(dir: &Path) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect()
}

/// 2,100,000 events (over the 2,000,000 of one append) through the CLI: one atomic append, every event
/// in the log, one commit marker at the end.
#[test]
fn an_import_above_two_million_events_is_one_atomic_append() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.ndjson");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..300_000 {
            let sn = format!("T{i:07}");
            writeln!(out, "{}", issued_line(&sn)).unwrap();
            for _ in 0..6 {
                writeln!(out, "{}", flow_line(&sn)).unwrap();
            }
        }
    }
    let dir = tmp.path().join("ledger");
    let o = posledger(&["append", "--dir", dir.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("appended 2,100,000 events"));
    let source = ledger::Source::open(&dir).unwrap();
    assert_eq!(source.head.size, 2_100_000);
    let commits = source.records(0).filter(|r| r.as_ref().unwrap().commit).count();
    assert_eq!(commits, 1, "one append, one commit marker");
}

/// A refused event in the import's third chunk: the records the first chunks wrote are cut, the log is
/// byte for byte what it was, and the ledger reopens and accepts appends.
#[test]
fn a_refused_event_late_in_an_import_leaves_the_log_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    {
        let ledger = Ledger::open(&dir).unwrap();
        ledger.append(vec![issued("A", "M1"), flow("A", 1)]).unwrap();
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    let before = segment_bytes(&dir);
    let head = Ledger::open(&dir).unwrap().head();
    let ledger = Ledger::open(&dir).unwrap();
    let mut events = Vec::new();
    for i in 0..70_000u64 {
        events.push((issued(&format!("B{i}"), "M1"), i + 1));
    }
    for i in 0..70_000u64 {
        events.push((flow(&format!("B{i}"), 5), 70_001 + i));
    }
    // A flow for a terminal never issued: refused at its line.
    events.push((flow("NEVER", 5), 999_999));
    let err = ledger.import(events, None).unwrap_err();
    assert_eq!(err.tag, Some(999_999), "{err}");
    assert_eq!(ledger.head(), head);
    drop(ledger);
    assert_eq!(segment_bytes(&dir), before, "the aborted import left bytes in the log");
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.head(), head);
    ledger.append(vec![flow("A", 2)]).unwrap();
}

/// A bad first chunk changes nothing in memory either: the same ledger accepts the next append.
#[test]
fn a_refused_first_chunk_leaves_the_ledger_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(tmp.path()).unwrap();
    let err = ledger.import(vec![(issued("A", "M1"), 1), (flow("B", 1), 2)], None).unwrap_err();
    assert_eq!(err.tag, Some(2));
    assert_eq!(ledger.head().size, 0);
    ledger.append(vec![issued("A", "M1")]).unwrap();
}

/// A replacement whose two halves fall on either side of a chunk boundary is one append, so it is legal.
#[test]
fn a_replacement_across_a_chunk_boundary_is_kept_together() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_with(tmp.path(), Options::default()).unwrap();
    let mut events = vec![(issued("OLD", "M1"), 0), (stopped("OLD", ledger::StopReason::Upgrade), 0)];
    let filler = ledger::IMPORT_CHUNK_EVENTS as u64 - 3;
    for i in 0..filler {
        events.push((issued(&format!("F{i}"), "M1"), i + 1));
    }
    events.push((replaced("OLD", "NEW"), filler + 1));
    for i in 0..10 {
        events.push((issued(&format!("G{i}"), "M1"), filler + 2 + i));
    }
    events.push((issued_with("NEW", "M1", Some("OLD")), filler + 20));
    let imported = ledger.import(events, None).unwrap();
    assert_eq!(imported.written, filler + 14);
}

/// A refused import into a folder that did not exist leaves no folder behind.
#[test]
fn a_refused_import_into_a_new_folder_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.ndjson");
    std::fs::write(&input, format!("{}\n{}\n", issued_line("A"), flow_line("NOPE"))).unwrap();
    let dir = tmp.path().join("new").join("ledger");
    let o = posledger(&["append", "--dir", dir.to_str().unwrap(), input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.ndjson:2:"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path().join("new").exists(), "the refused import left its folder");
}

/// Regression test for "every command is slow after a big `posledger append`": an import never spans
/// segments, so one import of 10^7 lines left a 612 MB live segment that every open hashed to check
/// HEAD (2 s for `posledger head`). An import that leaves the live segment past its size limit now
/// seals it before it returns: the records are in a sealed segment with its trailer, the next records
/// go to a new one, and the log reads back whole.
#[test]
fn an_import_past_the_segment_limit_is_sealed_when_it_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options { segment_max_bytes: 4_096, ..Options::default() };
    let ledger = Ledger::open_with(tmp.path(), options.clone()).unwrap();
    let events = (0..500u64).map(|i| (issued(&format!("T{i:04}"), "M1"), i));
    let imported = ledger.import(events, None).unwrap();
    assert_eq!(imported.written, 500);
    let segments = |dir: &Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    };
    let files = segments(tmp.path());
    assert_eq!(files.len(), 2, "the import's segment, sealed, and a new live one: {files:?}");
    let trailer = ledger::segment::read_trailer_at_end(&files[0]).expect("the import's segment is sealed");
    assert_eq!(trailer.record_count, 500);
    assert_eq!(trailer.root, imported.head.root);
    // A small import below the limit leaves its segment live.
    ledger.import([(flow("T0001", 100), 0)], None).unwrap();
    assert_eq!(segments(tmp.path()).len(), 2);
    drop(ledger);
    let reopened = Ledger::open_with(tmp.path(), options).unwrap();
    assert_eq!(reopened.head().size, 501);
    let source = ledger::Source::open(tmp.path()).unwrap();
    assert_eq!(source.head, reopened.head());
    assert!(source.files[0].trailer.is_some() && source.files[1].trailer.is_none());
}

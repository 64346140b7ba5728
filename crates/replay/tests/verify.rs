//! `replay verify` end to end: intact logs pass; every kind of damage and tampering fails with exit 1
//! and one line naming the file and the first failing position.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use ledger::source::hex;
use ledger::{Event, TerminalEvent};

fn assert_fails(source: &std::path::Path, needle: &str) -> String {
    let out = replay_on("verify", source, &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "verify must fail (exit 1); stdout {:?} stderr {err:?}", stdout(&out));
    assert!(out.stdout.is_empty(), "no success line on failure: {:?}", stdout(&out));
    assert_eq!(err.trim_end().lines().count(), 1, "one error line: {err:?}");
    assert!(err.contains(needle), "error {err:?} should mention {needle:?}");
    err
}

#[test]
fn intact_bundle_and_folder_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let head = make_ledger(&ledger);
    assert!(segments(&ledger).len() >= 3, "the test ledger should have several segments");
    let bundle = dir.path().join("fleet.bundle");
    let bundle_head = write_raw_bundle(&bundle, &bodies(&ledger));
    assert_eq!(bundle_head, head);
    for source in [&ledger, &bundle] {
        let out = replay_on("verify", source, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("verified {} records, root {}\n", head.size, head.root_hex()));
        let out = replay_on("verify", source, &["--json"]);
        assert_eq!(code(&out), 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["records"], head.size);
        assert_eq!(json["root"], head.root_hex());
    }
}

#[test]
fn a_flipped_byte_anywhere_in_a_bundle_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let original = std::fs::read(&bundle).unwrap();
    let len = original.len();
    // Every byte of the header and the trailer region, and every 5th byte in between.
    let offsets: Vec<usize> = (0..len).filter(|i| *i < 48 || *i + 160 > len || i % 5 == 0).collect();
    let tampered = dir.path().join("tampered.bundle");
    for offset in offsets {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x01;
        std::fs::write(&tampered, &bytes).unwrap();
        let out = replay_on("verify", &tampered, &[]);
        assert_eq!(code(&out), 1, "flipped byte at offset {offset} of {len} was not detected: {}", stdout(&out));
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "offset {offset}: {}", stderr(&out));
        assert!(stderr(&out).contains("tampered.bundle"), "offset {offset}: {}", stderr(&out));
    }
}

#[test]
fn a_truncated_bundle_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.bundle");
    make_bundle(&bundle);
    let original = std::fs::read(&bundle).unwrap();
    let cut = dir.path().join("cut.bundle");
    for len in (0..original.len()).step_by(7).chain([original.len() - 1, original.len() - 4, 40]) {
        std::fs::write(&cut, &original[..len]).unwrap();
        let out = replay_on("verify", &cut, &[]);
        assert_eq!(code(&out), 1, "truncation to {len} bytes not detected");
    }
}

#[test]
fn a_removed_record_fails_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    b.remove(10);
    let tampered = dir.path().join("removed.bundle");
    write_raw_bundle(&tampered, &b);
    let err = assert_fails(&tampered, "position 10");
    assert!(err.contains("holds position 11"), "{err}");
    // The last record removed: the log then ends without its commit marker... or with a record of a
    // different append; either way the file no longer ends on a commit.
    let mut b = bodies(&source);
    let last = b.len() - 1;
    b.remove(last);
    write_raw_bundle(&tampered, &b);
    assert_fails(&tampered, "commit marker");
}

#[test]
fn a_duplicated_record_fails_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    let copy = b[20].clone();
    b.insert(21, copy);
    let tampered = dir.path().join("duplicated.bundle");
    write_raw_bundle(&tampered, &b);
    let err = assert_fails(&tampered, "position 21");
    assert!(err.contains("holds position 20"), "{err}");
}

#[test]
fn reordered_records_fail_at_the_first_moved_position() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    b.swap(15, 30);
    let tampered = dir.path().join("reordered.bundle");
    write_raw_bundle(&tampered, &b);
    assert_fails(&tampered, "position 15");
}

#[test]
fn an_inserted_record_fails() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    // A forged flow for SN005 claiming position 25 and the stream's next version... inserted before
    // the genuine record 25.
    let forged = reencode(&b[25], |r| {
        r.event = projections::testing::flow("SN005", 3, 1_000_000);
    });
    b.insert(25, forged);
    let tampered = dir.path().join("inserted.bundle");
    write_raw_bundle(&tampered, &b);
    assert_fails(&tampered, "position 2");
}

#[test]
fn renumbered_records_still_fail_on_stream_versions() {
    // A forger removes record k and renumbers every later position, so positions stay dense and the
    // trailer is recomputed: the stream versions of the removed record's terminal give it away.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    let head = make_bundle(&source);
    let mut b = bodies(&source);
    let removed = ledger::codec::decode_record(&b[14]).unwrap();
    b.remove(14);
    let b: Vec<Vec<u8>> = b.iter().enumerate().map(|(i, body)| reencode(body, |r| r.position = i as u64)).collect();
    let tampered = dir.path().join("renumbered.bundle");
    let forged = write_raw_bundle(&tampered, &b);
    let Event::Terminal(e) = &removed.event else { panic!("record 14 should be a terminal event") };
    assert!(!matches!(e.event, TerminalEvent::Issued(_)));
    let err = assert_fails(&tampered, "version");
    assert!(err.contains(e.device.as_str()), "{err}");
    // And against the genuine head, consistency fails too.
    let out = replay_on(
        "consistency",
        &tampered,
        &["--old-size", &head.size.min(forged.size).to_string(), "--old-root", &hex(&head.root)],
    );
    assert_eq!(code(&out), 1);
}

#[test]
fn a_changed_record_with_a_fixed_crc_fails_on_the_root() {
    // A forger changes a flow amount and fixes the frame CRC but not the trailer: the Merkle root
    // recomputed from the records no longer matches the trailer.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let b = bodies(&source);
    let mut bytes = std::fs::read(&source).unwrap();
    let idx = b.iter().position(|body| {
        matches!(ledger::codec::decode_record(body).unwrap().event, Event::Terminal(ref e) if matches!(e.event, TerminalEvent::Flow { .. }))
    }).unwrap();
    let changed = reencode(&b[idx], |r| {
        if let Event::Terminal(e) = &mut r.event {
            e.event = TerminalEvent::Flow { amount_fen: 1, transactions: 1 };
        }
    });
    // Rebuild the file with the changed frame but the original trailer.
    let trailer_start = bytes.len() - {
        let t = ledger::segment::read_trailer_at_end(&source).unwrap();
        ledger::segment::Trailer::encoded_len(t.frontier.len())
    };
    let trailer = bytes.split_off(trailer_start);
    let mut forged =
        ledger::segment::Header { kind: ledger::segment::FileKind::Bundle, seq: 0, first_position: 0, ledger_id: 42 }
            .encode()
            .to_vec();
    for (i, body) in b.iter().enumerate() {
        ledger::segment::push_frame(&mut forged, if i == idx { &changed } else { body });
    }
    forged.extend_from_slice(&trailer);
    let tampered = dir.path().join("changed.bundle");
    std::fs::write(&tampered, forged).unwrap();
    assert_fails(&tampered, "Merkle root");
}

#[test]
fn damage_in_a_ledger_folder_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    make_ledger(&ledger);
    let segs = segments(&ledger);
    let work = dir.path().join("work");
    // A flipped byte in the middle of a sealed segment and of the live segment.
    for (seg, label) in [(0usize, "sealed"), (segs.len() - 1, "live")] {
        let _ = std::fs::remove_dir_all(&work);
        copy_tree(&ledger, &work);
        let path = segments(&work)[seg].clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let out = replay_on("verify", &work, &[]);
        assert_eq!(code(&out), 1, "{label}: flipped byte not detected");
        assert!(
            stderr(&out).contains(&format!("{:08}.seg", seg)) || stderr(&out).contains("HEAD"),
            "{label}: {}",
            stderr(&out)
        );
    }
    // A truncated sealed segment, and a live segment cut short of the published HEAD.
    for (seg, label) in [(1usize, "sealed"), (segs.len() - 1, "live")] {
        let _ = std::fs::remove_dir_all(&work);
        copy_tree(&ledger, &work);
        let path = segments(&work)[seg].clone();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
        let out = replay_on("verify", &work, &[]);
        assert_eq!(code(&out), 1, "{label}: truncation not detected: {}", stdout(&out));
    }
    // A missing segment.
    let _ = std::fs::remove_dir_all(&work);
    copy_tree(&ledger, &work);
    std::fs::remove_file(&segments(&work)[1]).unwrap();
    let out = replay_on("verify", &work, &[]);
    assert_eq!(code(&out), 1, "a missing segment was not detected");
}

#[test]
fn json_failure_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    b.remove(7);
    let tampered = dir.path().join("removed.bundle");
    write_raw_bundle(&tampered, &b);
    let out = replay_on("verify", &tampered, &["--json"]);
    assert_eq!(code(&out), 1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["position"], 7);
    assert!(json["error"].as_str().unwrap().contains("position 7"));
}

#[test]
fn io_errors_exit_2() {
    let out = replay(&["verify", "/nonexistent/ledger"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("/nonexistent/ledger"));
    let out = replay(&["verify"]);
    assert_eq!(code(&out), 2, "a usage error exits 2");
}

#[test]
fn empty_logs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("empty.bundle");
    let head = write_raw_bundle(&bundle, &[]);
    let out = replay_on("verify", &bundle, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("verified 0 records, root {}\n", head.root_hex()));
    let folder = dir.path().join("ledger");
    ledger::Ledger::open(&folder).unwrap().close().unwrap();
    let out = replay_on("verify", &folder, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("\"records\":0"));
}

#[test]
fn a_body_that_does_not_decode_fails_even_with_a_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("fleet.bundle");
    make_bundle(&source);
    let mut b = bodies(&source);
    let at = b[12].windows(3).position(|w| w == b"SN0").unwrap();
    b[12][at + 1] = b'!';
    let tampered = dir.path().join("undecodable.bundle");
    write_raw_bundle(&tampered, &b);
    let err = assert_fails(&tampered, "position 12");
    assert!(err.contains("does not decode"), "{err}");
}

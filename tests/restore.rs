//! `posledger restore` and `ledger::Restore`: a ledger rebuilt in a new folder from a bundle or a
//! ledger folder is the same log (head, ledger id, fleet digest, signed checkpoints, further appends),
//! and anything the writer would refuse, a damaged record, a foreign target or an interrupted restore
//! leaves no ledger behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bodies;
use common::cli::{ok, posledger, s, stderr};
use common::{activated, flow, issued, issued_with, replaced, stopped, t};
use ledger::codec::{decode_record, encode_record};
use ledger::testing::FaultInjector;
use ledger::{AppendError, Head, Ledger, Options, Restore, RestoreError, Source, StopReason};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A small ledger with single-event appends, a multi-event append with a replacement, and an import
/// (one atomic append written in several chunks would need 65,536 events; this one is written whole).
fn build(dir: &Path, segment_max_bytes: u64) -> Head {
    let ledger = Ledger::open_with(dir, Options { segment_max_bytes, ..Options::default() }).unwrap();
    for i in 0..40 {
        ledger.append_at(vec![issued(&format!("T{i:03}"), "MODEL-A")], Some(t(i))).unwrap();
    }
    for i in 0..40 {
        ledger.append_at(vec![flow(&format!("T{i:03}"), 20_000), activated(&format!("T{i:03}"))], Some(t(50))).unwrap();
    }
    let replacement = vec![
        stopped("T001", StopReason::Violation),
        replaced("T001", "N001"),
        issued_with("N001", "MODEL-B", Some("T001")),
    ];
    ledger.append_at(replacement, Some(t(60))).unwrap();
    let events = (0..40).filter(|i| *i != 1).map(|i| (flow(&format!("T{i:03}"), 5), i as u64));
    ledger.import(events, Some(t(61))).unwrap();
    let head = ledger.head();
    ledger.close().unwrap();
    head
}

fn digest(dir: &Path) -> String {
    let source = Source::open(dir).unwrap();
    projections::rebuild(&source, projections::Cut::Head, &projections::Options::default()).unwrap().digest_hex()
}

fn more(ledger: &Ledger) -> Head {
    ledger.append_at(vec![issued("Z001", "MODEL-C")], Some(t(90))).unwrap();
    ledger.append_at(vec![flow("Z001", 30_000), flow("T002", 7)], Some(t(91))).unwrap();
    ledger.head()
}

#[test]
fn a_bundle_restores_to_the_same_log_with_its_checkpoints_and_further_appends_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, bundle, key, dst) =
        (tmp.path().join("src"), tmp.path().join("b.plb"), tmp.path().join("log.key"), tmp.path().join("dst"));
    // Small segments: the restored log spans several sealed segments too.
    let head = build(&src, 4096);
    ok(posledger(&["key", "generate", "--name", "acquirer.example/log", "--out", s(&key)]));
    ok(posledger(&["checkpoint", "--dir", s(&src), "--key", s(&key)]));
    ok(posledger(&["export", "--dir", s(&src), "--out", s(&bundle)]));
    let out = ok(posledger(&["restore", "--from", s(&bundle), "--dir", s(&dst)]));
    assert!(out.contains(&format!("restored {} records", head.size)) && out.contains(&head.root_hex()), "{out}");
    assert!(out.contains("checkpoints: 1 kept"), "{out}");
    let (a, b) = (Source::open(&src).unwrap(), Source::open(&dst).unwrap());
    assert_eq!(b.head, a.head);
    assert_eq!(b.ledger_id(), a.ledger_id());
    assert!(a.files.len() > 1, "the source spans segments");
    assert_eq!(bodies(&b), bodies(&a), "byte for byte");
    assert_eq!(digest(&dst), digest(&src));
    let name = format!("{:020}.checkpoint", head.size);
    assert_eq!(
        std::fs::read(dst.join("checkpoints").join(&name)).unwrap(),
        std::fs::read(src.join("checkpoints").join(&name)).unwrap()
    );
    // The same appends give the same root on both, and the restored ledger signs on from its checkpoint.
    let original = more(&Ledger::open(&src).unwrap());
    let restored = Ledger::open(&dst).unwrap();
    assert_eq!(more(&restored), original);
    drop(restored);
    ok(posledger(&["checkpoint", "--dir", s(&dst), "--key", s(&key)]));
    assert!(!tmp.path().join(".dst.restoring").exists());
}

#[test]
fn a_ledger_folder_restores_to_the_same_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let head = build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    // An empty target folder is fine.
    std::fs::create_dir(&dst).unwrap();
    ok(posledger(&["restore", "--from", s(&src), "--dir", s(&dst)]));
    let restored = Source::open(&dst).unwrap();
    assert_eq!(restored.head, head);
    assert_eq!(restored.ledger_id(), Source::open(&src).unwrap().ledger_id());
    assert_eq!(digest(&dst), digest(&src));
}

#[test]
fn a_bundle_with_one_changed_byte_is_refused_naming_the_position_and_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, bundle, dst) = (tmp.path().join("src"), tmp.path().join("b.plb"), tmp.path().join("dst"));
    build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    ok(posledger(&["export", "--dir", s(&src), "--out", s(&bundle)]));
    let mut bytes = std::fs::read(&bundle).unwrap();
    // A byte in the middle of the records (after the 40-byte header, well before the trailer).
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&bundle, &bytes).unwrap();
    let o = posledger(&["restore", "--from", s(&bundle), "--dir", s(&dst)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("position") && stderr(&o).contains("b.plb"), "{}", stderr(&o));
    assert!(!dst.exists() && !tmp.path().join(".dst.restoring").exists());
}

#[test]
fn a_non_empty_target_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("notes.txt"), b"mine").unwrap();
    let o = posledger(&["restore", "--from", s(&src), "--dir", s(&dst)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 1);
    assert_eq!(std::fs::read(dst.join("notes.txt")).unwrap(), b"mine");
    // Restoring a ledger over itself is the same refusal.
    let o = posledger(&["restore", "--from", s(&src), "--dir", s(&src)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Re-encodes the record at `position` of the bundle with `edit` applied, keeping its length, and
/// fixes its frame's CRC so the reader accepts it.
fn edit_bundle_record(bundle: &Path, position: u64, edit: impl Fn(&mut ledger::Record)) {
    let source = Source::open(bundle).unwrap();
    let old = bodies(&source).swap_remove(position as usize);
    let mut record = decode_record(&old).unwrap();
    edit(&mut record);
    let mut new = Vec::new();
    encode_record(&record, &mut new).unwrap();
    assert_eq!(new.len(), old.len(), "the edit keeps the body's length");
    let mut bytes = std::fs::read(bundle).unwrap();
    let at = bytes.windows(old.len()).position(|w| w == old.as_slice()).unwrap();
    bytes[at..at + new.len()].copy_from_slice(&new);
    bytes[at - 4..at].copy_from_slice(&crc32c::crc32c(&new).to_le_bytes());
    std::fs::write(bundle, &bytes).unwrap();
}

#[test]
fn a_record_the_writer_would_refuse_is_refused_naming_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, bundle, dst) = (tmp.path().join("src"), tmp.path().join("b.plb"), tmp.path().join("dst"));
    build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    ok(posledger(&["export", "--dir", s(&src), "--out", s(&bundle)]));
    // Position 50: T005's flow, its version 1; the edit makes it 2 (same length), CRC fixed.
    edit_bundle_record(&bundle, 50, |r| {
        assert_eq!(r.version, 1);
        r.version = 2;
    });
    let o = posledger(&["restore", "--from", s(&bundle), "--dir", s(&dst)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("position 50") && stderr(&o).contains("version is 2"), "{}", stderr(&o));
    assert!(!dst.exists() && !tmp.path().join(".dst.restoring").exists());
}

#[test]
fn the_library_refuses_each_field_and_rule_the_writer_enforces() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    let source = Source::open(&src).unwrap();
    let all = bodies(&source);
    let edited = |position: usize, edit: &dyn Fn(&mut ledger::Record)| {
        let mut list = all.clone();
        let mut record = decode_record(&list[position]).unwrap();
        edit(&mut record);
        list[position].clear();
        encode_record(&record, &mut list[position]).unwrap();
        list
    };
    let run = |list: &[Vec<u8>], expected: Head| {
        let dst = tmp.path().join("dst");
        let mut restore = Restore::create(&dst, source.ledger_id(), Options::default()).unwrap();
        let pushed = list.iter().try_for_each(|body| restore.push(body));
        let result = pushed.and_then(|()| restore.finish(expected).map(|_| ()));
        assert!(!dst.exists() && !tmp.path().join(".dst.restoring").exists(), "nothing is left behind");
        result.unwrap_err()
    };
    let head = source.head;
    let refused_at = |e: &RestoreError| match e {
        RestoreError::Refused { position, .. } => *position,
        other => panic!("not a refusal: {other}"),
    };
    // A position out of place, a recorded-at time going back.
    let e = run(&edited(3, &|r| r.position = 4), head);
    assert_eq!(refused_at(&e), 3, "{e}");
    assert!(e.to_string().contains("position is 4"), "{e}");
    let e = run(&edited(10, &|r| r.recorded_at = t(1)), head);
    assert_eq!(refused_at(&e), 10, "{e}");
    assert!(matches!(e, RestoreError::Refused { error: AppendError::RecordedAtBeforeHead { .. }, .. }), "{e}");
    // A commit marker moved splits or joins appends the writer would also accept: the root tells.
    let e = run(&edited(40, &|r| r.commit = true), head);
    assert!(matches!(e, RestoreError::HeadDiffers { .. }), "{e}");
    // A lifecycle rule: T000 flows before it was issued (an issued event becomes a flow).
    let e = run(&edited(0, &|r| r.event = flow("T000", 1).event), head);
    assert!(matches!(e, RestoreError::Refused { position: 0, error: AppendError::Rule { .. } }), "{e}");
    // An event id used twice (the second would be an idempotent retry the writer never writes again).
    let id = ledger::EventId::parse("e-1").unwrap();
    let mut twice = edited(5, &|r| r.event_id = Some(id.clone()));
    let mut r = decode_record(&twice[6]).unwrap();
    r.event_id = Some(id.clone());
    twice[6].clear();
    encode_record(&r, &mut twice[6]).unwrap();
    let e = run(&twice, head);
    assert!(matches!(e, RestoreError::Refused { position: 6, error: AppendError::DuplicateEventId { .. } }), "{e}");
    // The stream ends inside an append; the head is not the expected one; a body does not decode.
    let e = run(&all[..all.len() - 1], head);
    assert!(matches!(e, RestoreError::Uncommitted { .. }), "{e}");
    let e = run(&all, Head { size: head.size, root: [7; 32] });
    assert!(matches!(e, RestoreError::HeadDiffers { .. }) && e.is_refusal(), "{e}");
    let mut garbage = all.clone();
    garbage[7] = vec![9, 9, 9];
    assert!(matches!(run(&garbage, head), RestoreError::Decode { position: 7, .. }));
    // And the unchanged records restore, byte for byte, here into small segments.
    let dst = tmp.path().join("dst");
    let small = Options { segment_max_bytes: 2048, ..Options::default() };
    let mut restore = Restore::create(&dst, source.ledger_id(), small).unwrap();
    all.iter().for_each(|body| restore.push(body).unwrap());
    let restored = restore.finish(head).unwrap();
    assert_eq!((restored.head, Some(restored.ledger_id)), (head, source.ledger_id()));
    let back = Source::open(&dst).unwrap();
    assert!(back.files.len() > 2, "sealed segments of the restore");
    assert_eq!(bodies(&back), all);
}

/// Fails every write after the first `allowed`.
#[derive(Debug)]
struct FailAfter {
    allowed: u64,
    seen: AtomicU64,
}

impl FaultInjector for FailAfter {
    fn before_write(&self, _path: &Path, _len: usize) -> std::io::Result<()> {
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }
    fn before_sync(&self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_restore_that_fails_or_is_killed_midway_leaves_no_ledger_at_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let head = build(&src, ledger::DEFAULT_SEGMENT_BYTES);
    let source = Source::open(&src).unwrap();
    let all = bodies(&source);
    let dst = tmp.path().join("dst");
    let staging = tmp.path().join(".dst.restoring");
    // An I/O failure midway: reported, and what the restore created is removed.
    let faults = Arc::new(FailAfter { allowed: 30, seen: AtomicU64::new(0) });
    let options = Options { faults: Some(faults as Arc<dyn FaultInjector>), ..Options::default() };
    let mut restore = Restore::create(&dst, source.ledger_id(), options).unwrap();
    let failed = all.iter().try_for_each(|body| restore.push(body)).unwrap_err();
    assert!(matches!(failed, RestoreError::Write(_)) && !failed.is_refusal(), "{failed}");
    assert!(matches!(restore.push(&all[0]), Err(RestoreError::Failed)));
    drop(restore);
    assert!(!dst.exists() && !staging.exists());
    // Killed midway (nothing runs after the kill: the restore is never dropped): the target does not
    // exist, so nothing opens there as a ledger; the next restore refuses the leftover until it is removed.
    let mut restore = Restore::create(&dst, source.ledger_id(), Options::default()).unwrap();
    all[..50].iter().for_each(|body| restore.push(body).unwrap());
    std::mem::forget(restore);
    assert!(!dst.exists() && Source::open(&dst).is_err());
    let again = Restore::create(&dst, None, Options::default()).err().unwrap();
    assert!(matches!(&again, RestoreError::Interrupted { staging: s } if *s == staging), "{again}");
    std::fs::remove_dir_all(&staging).unwrap();
    let mut restore = Restore::create(&dst, source.ledger_id(), Options::default()).unwrap();
    all.iter().for_each(|body| restore.push(body).unwrap());
    assert_eq!(restore.finish(head).unwrap().head, head);
    assert_eq!(Source::open(&dst).unwrap().head, head);
}

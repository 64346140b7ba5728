//! Regression tests for the issue "the end of the log is anchored, and no command loses or hides data",
//! one per bug, named for it: the operator CLI and the library on cut ledgers, the folder lock, a crash
//! right after the lock, a damaged sled index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::posledger;
use common::{flow, issued};
use ledger::{Ledger, OpenError, Options, ReadError};
use std::path::{Path, PathBuf};
use std::process::Output;

fn build(dir: &Path) -> u64 {
    let ledger = Ledger::open_with(dir, Options { segment_max_bytes: 2_000, ..Options::default() }).unwrap();
    for i in 0..30 {
        let sn = format!("SN{i:04}");
        ledger.append(vec![issued(&sn, "M1"), flow(&sn, 20_000)]).unwrap();
    }
    let size = ledger.head().size;
    assert_eq!(ledger.close().unwrap().index_warning, None);
    size
}

fn last_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).max().unwrap()
}

/// `posledger head` and `posledger export` of a cut ledger exited 0 (and the export verified): now they
/// refuse it with exit 1, naming both sizes, and write no bundle; opening it for appends is refused too.
#[test]
fn a_cut_ledger_is_refused_by_head_export_and_append() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let size = build(&dir);
    std::fs::remove_file(last_segment(&dir)).unwrap();
    let d = dir.to_str().unwrap();
    let bundle = tmp.path().join("cut.plb");
    for args in [vec!["head", "--dir", d], vec!["export", "--dir", d, "--out", bundle.to_str().unwrap()]] {
        let o = posledger(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "posledger {args:?}: {stderr}");
        assert!(stderr.contains(&format!("HEAD records {size}")), "posledger {args:?}: {stderr}");
    }
    assert!(!bundle.exists(), "a bundle of a cut ledger was written");
    let err = Ledger::open(&dir).err().expect("a cut ledger opened for appends");
    assert!(matches!(err, OpenError::Read(ReadError::Cut { recorded, .. }) if recorded == size), "{err:?}");
    let input = tmp.path().join("one.ndjson");
    std::fs::write(&input, "").unwrap();
    let o = posledger(&["append", "--dir", d, input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Deleting `LOCK` let a second writer in, and the ledger became unopenable: the lock is now on the
/// folder itself, so no file a user can delete stands between two writers.
#[test]
fn deleting_lock_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let first = Ledger::open(&dir).unwrap();
    first.append(vec![issued("A", "M1")]).unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
    assert!(matches!(Ledger::open(&dir), Err(OpenError::Locked(_))));
    let o = posledger(&["append", "--dir", dir.to_str().unwrap(), "/dev/null"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("open in another process"));
    first.append(vec![flow("A", 1)]).unwrap();
    drop(first);
    let reopened = Ledger::open(&dir).unwrap();
    assert_eq!(reopened.head().size, 2);
}

/// A crash right after `LOCK` was created (an earlier version made it first) bricked the folder: "not a
/// posledger ledger". A folder holding only what a crash during the first open leaves is a new ledger.
#[test]
fn a_crash_right_after_lock_was_created_leaves_a_new_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    for leftovers in [vec!["LOCK"], vec!["LOCK", "HEAD.tmp"], vec![]] {
        let dir = tmp.path().join(format!("y{}", leftovers.len()));
        std::fs::create_dir(&dir).unwrap();
        for name in &leftovers {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let ledger = Ledger::open(&dir).unwrap_or_else(|e| panic!("{leftovers:?}: {e}"));
        ledger.append(vec![issued("A", "M1")]).unwrap();
    }
    // Anything else is not ours: refused, untouched.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("thesis.txt"), b"keep").unwrap();
    assert!(matches!(Ledger::open(&other), Err(OpenError::NotALedger(_))));
    assert_eq!(std::fs::read(other.join("thesis.txt")).unwrap(), b"keep");
}

/// `append --dir <a regular file>` said "File exists (os error 17)".
#[test]
fn a_ledger_path_that_is_a_file_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(Ledger::open(&file), Err(OpenError::NotAFolder(_))));
    let o = posledger(&["append", "--dir", file.to_str().unwrap(), "/dev/null"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("exists and is not a folder"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// sled panicked ("tried to serialize Uninitialized") or answered "Read corrupted data" on a damaged
/// index, on every later open. The index is derived: any failure of it, a panic included, is a damaged
/// index that is rebuilt from the log.
#[test]
fn a_garbled_sled_index_is_rebuilt_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let size = build(&dir);
    let index = dir.join("index");
    let mut garbled = 0;
    for entry in walk(&index) {
        let len = std::fs::metadata(&entry).unwrap().len() as usize;
        let noise: Vec<u8> = (0..len.max(64)).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&entry, noise).unwrap();
        garbled += 1;
    }
    assert!(garbled > 0, "sled wrote no files");
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.head().size, size);
    let stream = ledger.read_stream(&ledger::StreamId::Terminal(common::sn("SN0003"))).unwrap();
    assert_eq!(stream.len(), 2);
    ledger.append(vec![flow("SN0003", 1)]).unwrap();
    assert_eq!(ledger.close().unwrap().index_warning, None);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn demo(dir: &Path) -> Output {
    posledger(&["demo", "--dir", dir.to_str().unwrap(), "--devices", "200", "--months", "2"])
}

/// `posledger demo --dir V` deleted folders it did not make (`V/thesis.txt` beside an empty `segments/`,
/// a real ledger copied there) and ignored the lock (a running append's records were gone). It now only
/// recreates a folder that carries its mark, holding nothing it did not make, under the ledger lock.
#[test]
fn demo_only_recreates_a_folder_it_made_and_takes_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    // Someone's files beside an empty segments/ folder.
    let v = tmp.path().join("V");
    std::fs::create_dir_all(v.join("segments")).unwrap();
    std::fs::write(v.join("thesis.txt"), b"keep").unwrap();
    let o = demo(&v);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to touch it"));
    assert_eq!(std::fs::read(v.join("thesis.txt")).unwrap(), b"keep");
    // A real ledger.
    let prod = tmp.path().join("PROD");
    let size = build(&prod);
    assert_eq!(demo(&prod).status.code(), Some(2));
    assert_eq!(Ledger::open(&prod).unwrap().head().size, size);
    // Its own folder: made, then made again.
    let own = tmp.path().join("own");
    let first = demo(&own);
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(own.join(posledger::ops::DEMO_MARKER).exists());
    assert_eq!(demo(&own).status.code(), Some(0));
    // Held open by a writer: refused, and the writer's records stay.
    let writer = Ledger::open(&own).unwrap();
    let held = writer.head();
    let o = demo(&own);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use"), "{}", String::from_utf8_lossy(&o.stderr));
    writer.append(vec![flow("SN0000000001", 1)]).ok();
    drop(writer);
    assert!(Ledger::open(&own).unwrap().head().size >= held.size);
    // Its own folder with someone's file added: refused, file kept.
    std::fs::write(own.join("notes.txt"), b"mine").unwrap();
    let o = demo(&own);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"));
    assert_eq!(std::fs::read(own.join("notes.txt")).unwrap(), b"mine");
}

/// With HEAD lost every command refuses the folder; `posledger reanchor` records the end again, but only
/// when the operator states the size the segments hold, and never over a whole HEAD.
#[test]
fn reanchor_needs_the_size_and_never_replaces_a_whole_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let size = build(&dir);
    let d = dir.to_str().unwrap();
    let whole = posledger(&["reanchor", "--dir", d, "--size", &size.to_string()]);
    assert_eq!(whole.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&whole.stderr).contains("HEAD is whole"));
    std::fs::remove_file(dir.join("HEAD")).unwrap();
    assert_eq!(posledger(&["head", "--dir", d]).status.code(), Some(1));
    let wrong = posledger(&["reanchor", "--dir", d, "--size", &(size + 2).to_string()]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(!dir.join("HEAD").exists());
    let right = posledger(&["reanchor", "--dir", d, "--size", &size.to_string()]);
    assert_eq!(right.status.code(), Some(0), "{}", String::from_utf8_lossy(&right.stderr));
    let o = posledger(&["head", "--dir", d, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("\"size\": {size}")));
}

/// A power cut while HEAD's newer slot was written leaves the older slot as the anchor: the folder
/// opens (the slot's head was never acknowledged), the reader says which slot is damaged, and the next
/// writer's open makes HEAD whole again.
#[test]
fn a_torn_head_slot_leaves_the_other_as_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let size = build(&dir);
    let mut head = std::fs::read(dir.join("HEAD")).unwrap();
    let anchor = ledger::anchor::decode(Path::new("HEAD"), &head).unwrap();
    let newer = (anchor.generation % 2) as usize * 64;
    head[newer + 20] ^= 0xFF;
    std::fs::write(dir.join("HEAD"), &head).unwrap();
    let source = ledger::Source::open(&dir).unwrap();
    assert_eq!(source.anchor.unwrap().damaged_slot, Some(newer / 64));
    assert_eq!(source.head.size, size);
    drop(Ledger::open(&dir).unwrap());
    let healed = ledger::anchor::read(&dir).unwrap().unwrap();
    assert_eq!((healed.damaged_slot, healed.head.size), (None, size));
}

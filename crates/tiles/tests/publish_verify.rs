//! The publisher and the verifier against each other, against tampering, and against an independent
//! implementation of tlog-tiles (Cloudflare's `tlog_tiles`, a port of Go's sumdb `tlog`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use chrono::{TimeZone, Utc};
use log::model::{DeviceEvent, Event, Record, Sn, TerminalEvent};
use log::Source;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tiles::verify::{verify_note, DEFAULT_FETCH_THREADS};
use tiles::{publish, walk, DirFetch, Fetch, Policy, PublishError, SignedHead, VerifyError};
use tlog::checkpoint::Checkpoint;
use tlog::{KeyType, SigningKey, VerifierKey};

const ORIGIN: &str = "tiles.posledger.example/test";

fn body(position: u64) -> Vec<u8> {
    let record = Record {
        position,
        version: position / 3,
        event_id: None,
        recorded_at: Utc.timestamp_opt(1_780_000_000 + position as i64, 0).unwrap(),
        commit: position % 3 == 2,
        event: Event::Terminal(DeviceEvent {
            device: Sn::parse(&format!("SN{:06}", position / 3)).unwrap(),
            at: Utc.timestamp_opt(1_780_000_000 + position as i64, 0).unwrap(),
            event: TerminalEvent::Flow { amount_fen: 100 + position, transactions: 1 },
        }),
    };
    let mut out = Vec::new();
    log::codec::encode_record(&record, &mut out).unwrap();
    out
}

/// A bundle of `n` records at `path`.
fn bundle(path: &Path, n: u64) -> Source {
    let file = std::fs::File::create(path).unwrap();
    let mut stream = log::bundle::BundleStream::new(std::io::BufWriter::new(file), path, 7).unwrap();
    for p in 0..n {
        stream.push(&body(p)).unwrap();
    }
    stream.finish().unwrap();
    Source::open(path).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(ORIGIN, KeyType::Note, &[7; 32]).unwrap()
}

fn sign(source: &Source, size: u64) -> Vec<u8> {
    let root = source.frontier_at(size).unwrap().root();
    Checkpoint::new(ORIGIN, size, root).sign(&key()).unwrap()
}

fn head(note: &[u8], vkey: &VerifierKey) -> SignedHead {
    verify_note(note.to_vec(), "checkpoint", &Policy { key: vkey, witnesses: &[], min_witnesses: 0 }).unwrap()
}

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn verify(out: &Path, since: Option<&[u8]>) -> Result<tiles::Walked, VerifyError> {
    let vkey = key().verifier_key();
    let fetch = DirFetch::new(out);
    let policy = Policy { key: &vkey, witnesses: &[], min_witnesses: 0 };
    let head = tiles::read_checkpoint(&fetch, "checkpoint", &policy)?;
    let old = since.map(|n| self::head(n, &vkey));
    walk(&fetch, &head, old.as_ref(), DEFAULT_FETCH_THREADS, &mut |_| {}, &mut |_, _| Ok(()))
}

/// The oracle's stored hashes (Go's layout: every node of the tree, by stored-hash index).
struct Stored(RefCell<Vec<tlog_tiles::Hash>>);

impl tlog_tiles::HashReader for Stored {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        let hashes = self.0.borrow();
        Ok(indexes.iter().map(|&i| hashes[i as usize]).collect())
    }
}

/// What the oracle says a publication from `old` to `new` records holds: C2SP paths (Go's
/// `tile/8/L/...` without the height, `data` spelled `entries`) and bytes.
fn oracle(bodies: &[Vec<u8>], old: u64, new: u64) -> BTreeMap<String, Vec<u8>> {
    let stored = Stored(RefCell::new(Vec::new()));
    for (n, b) in bodies.iter().enumerate().take(new as usize) {
        let hashes = tlog_tiles::stored_hashes(n as u64, b, &stored).unwrap();
        stored.0.borrow_mut().extend(hashes);
    }
    let mut out = BTreeMap::new();
    for tile in tlog_tiles::Tile::new_tiles(8, old, new) {
        let path = tile.path().replacen("tile/8/", "tile/", 1);
        out.insert(path.clone(), tile.read_data(&stored).unwrap());
        if tile.level() == 0 {
            let start = (tile.level_index() * 256) as usize;
            let mut bundle = Vec::new();
            for b in &bodies[start..start + tile.width() as usize] {
                bundle.extend_from_slice(&(b.len() as u16).to_be_bytes());
                bundle.extend_from_slice(b);
            }
            out.insert(path.replacen("tile/0/", "tile/entries/", 1), bundle);
        }
    }
    out
}

#[test]
fn a_publication_holds_exactly_the_tiles_and_bundles_of_the_independent_implementation() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 70_000u64;
    let source = bundle(&tmp.path().join("log.plb"), n);
    let bodies: Vec<Vec<u8>> = (0..n).map(body).collect();
    let out = tmp.path().join("pub");
    // Two checkpoints: the second publication adds only what is new, and keeps the partial tiles of
    // the first size.
    for (old, new) in [(0u64, 65_790u64), (65_790, n)] {
        let before = if out.exists() { files(&out) } else { BTreeMap::new() };
        let done = publish(&source, &sign(&source, new), &out, &mut |_| {}).unwrap();
        assert_eq!((done.old_size, done.size, done.kept), (old, new, 0));
        let after = files(&out);
        let mut written: BTreeMap<String, Vec<u8>> =
            after.iter().filter(|(p, _)| !before.contains_key(*p)).map(|(p, b)| (p.clone(), b.clone())).collect();
        written.remove(".posledger-tiles");
        let checkpoint = written.remove("checkpoint").unwrap_or_else(|| after["checkpoint"].clone());
        assert_eq!(checkpoint, sign(&source, new));
        assert_eq!(written, oracle(&bodies, old, new), "publication {old} -> {new}");
        for (path, bytes) in &before {
            if path != "checkpoint" {
                assert_eq!(&after[path], bytes, "{path} was rewritten");
            }
        }
        assert_eq!(verify(&out, None).unwrap().records, new);
    }
    // A reader holding the first checkpoint checks only what is new.
    let walked = verify(&out, Some(&sign(&source, 65_790))).unwrap();
    assert_eq!(walked.records, n - 65_790);
    assert!(walked.bundles <= 18, "{walked:?}");
}

#[test]
fn proofs_read_through_tiles_are_the_ledgers_proofs() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5_000u64;
    let source = bundle(&tmp.path().join("log.plb"), n);
    let out = tmp.path().join("pub");
    publish(&source, &sign(&source, n), &out, &mut |_| {}).unwrap();
    let fetch = DirFetch::new(&out);
    let reader = tiles::TileHashes::new(&fetch, n);
    let root = source.frontier_at(n).unwrap().root();
    assert_eq!(reader.root().unwrap(), root);
    for index in [0u64, 1, 255, 256, 4_095, 4_999] {
        let proof = reader.inclusion(index).unwrap();
        assert!(log::merkle::verify_inclusion(
            &log::merkle::leaf_hash(&body(index)),
            index as usize,
            n as usize,
            &proof,
            &root
        ));
    }
    for old in [1u64, 256, 3_333] {
        let proof = reader.consistency(old).unwrap();
        let old_root = source.frontier_at(old).unwrap().root();
        assert!(log::merkle::verify_consistency(old as usize, n as usize, &old_root, &root, &proof));
    }
}

fn published(n: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let source = bundle(&tmp.path().join("log.plb"), n);
    let out = tmp.path().join("pub");
    publish(&source, &sign(&source, n), &out, &mut |_| {}).unwrap();
    (tmp, out)
}

#[test]
fn a_changed_hash_a_changed_entry_and_a_missing_tile_are_refused_naming_the_tile() {
    let (_tmp, out) = published(70_000);
    // One hash of a level-1 tile.
    let tile = out.join("tile/1/000");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&tile, &bytes).unwrap();
    let e = verify(&out, None).unwrap_err();
    assert!(matches!(&e, VerifyError::TileMismatch { location } if location.ends_with("tile/1/000")), "{e}");
    bytes[40] ^= 1;
    std::fs::write(&tile, &bytes).unwrap();
    verify(&out, None).unwrap();
    // One byte of an entry.
    let bundle = out.join("tile/entries/001");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let e = verify(&out, None).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Entry { location, position: 511, .. } if location.ends_with("tile/entries/001")),
        "{e}"
    );
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    // A missing tile.
    std::fs::remove_file(out.join("tile/0/002")).unwrap();
    let e = verify(&out, None).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Fetch(tiles::FetchError::Missing { location }) if location.ends_with("tile/0/002")),
        "{e}"
    );
}

#[test]
fn a_checkpoint_that_does_not_match_its_tiles_is_refused() {
    let (_tmp, out) = published(1_000);
    // Signed by the right key, for a root the tiles do not give (record 0 changed).
    let root = {
        let mut f = log::merkle::Frontier::new();
        f.push_leaf(b"not the log");
        for p in 1..1_000 {
            f.push_leaf(&body(p));
        }
        f.root()
    };
    let tampered = Checkpoint::new(ORIGIN, 1_000, root).sign(&key()).unwrap();
    std::fs::write(out.join("checkpoint"), &tampered).unwrap();
    let e = verify(&out, None).unwrap_err();
    assert!(matches!(e, VerifyError::Root { size: 1_000, .. }), "{e}");
    // Signed by another key: refused before any tile is read.
    let stranger = SigningKey::from_seed(ORIGIN, KeyType::Note, &[9; 32]).unwrap();
    let note = Checkpoint::new(ORIGIN, 1_000, root).sign(&stranger).unwrap();
    std::fs::write(out.join("checkpoint"), &note).unwrap();
    assert!(matches!(verify(&out, None).unwrap_err(), VerifyError::Checkpoint { .. }));
}

#[test]
fn a_reader_with_an_older_checkpoint_catches_a_rewritten_or_cut_log() {
    let tmp = tempfile::tempdir().unwrap();
    let source = bundle(&tmp.path().join("log.plb"), 3_000);
    let out = tmp.path().join("pub");
    publish(&source, &sign(&source, 3_000), &out, &mut |_| {}).unwrap();
    // An older checkpoint of another history of 1,000 records.
    let mut f = log::merkle::Frontier::new();
    for p in 0..1_000 {
        f.push_leaf(if p == 500 { b"rewritten".to_vec() } else { body(p) }.as_slice());
    }
    let forked = Checkpoint::new(ORIGIN, 1_000, f.root()).sign(&key()).unwrap();
    assert!(matches!(verify(&out, Some(&forked)).unwrap_err(), VerifyError::Fork { old: 1_000 }));
    // An older checkpoint larger than the served one.
    let bigger = bundle(&tmp.path().join("bigger.plb"), 3_001);
    let ahead = sign(&bigger, 3_001);
    assert!(matches!(verify(&out, Some(&ahead)).unwrap_err(), VerifyError::Shorter { old: 3_001, new: 3_000 }));
    assert_eq!(verify(&out, Some(&sign(&source, 1_000))).unwrap().records, 2_000);
}

#[test]
fn publish_never_writes_into_a_folder_it_does_not_own_nor_rewrites_a_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let source = bundle(&tmp.path().join("log.plb"), 600);
    let foreign = tmp.path().join("site");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("index.html"), b"hello").unwrap();
    let e = publish(&source, &sign(&source, 600), &foreign, &mut |_| {}).unwrap_err();
    assert!(matches!(e, PublishError::NotALayout { .. }), "{e}");
    assert_eq!(files(&foreign).len(), 1);

    // An interrupted run left a tile and no checkpoint: the next run keeps it and completes.
    let out = tmp.path().join("pub");
    publish(&source, &sign(&source, 300), &out, &mut |_| {}).unwrap();
    let full = out.join("tile/0/001");
    let expected = oracle(&(0..600).map(body).collect::<Vec<_>>(), 300, 600)["tile/0/001"].clone();
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(&full, &expected).unwrap();
    let done = publish(&source, &sign(&source, 600), &out, &mut |_| {}).unwrap();
    assert_eq!(done.kept, 1);
    verify(&out, None).unwrap();

    // A tile with other bytes is never replaced.
    let out2 = tmp.path().join("pub2");
    publish(&source, &sign(&source, 300), &out2, &mut |_| {}).unwrap();
    std::fs::create_dir_all(out2.join("tile/0")).unwrap();
    std::fs::write(out2.join("tile/0/001"), [0u8; 8192]).unwrap();
    let before = std::fs::read(out2.join("checkpoint")).unwrap();
    let e = publish(&source, &sign(&source, 600), &out2, &mut |_| {}).unwrap_err();
    assert!(matches!(&e, PublishError::Conflict { path } if path.ends_with("tile/0/001")), "{e}");
    assert_eq!(std::fs::read(out2.join("checkpoint")).unwrap(), before);

    // Another ledger's checkpoint into this publication: refused.
    let other = bundle(&tmp.path().join("other.plb"), 700);
    let e =
        publish(&other, &Checkpoint::new(ORIGIN, 700, [1; 32]).sign(&key()).unwrap(), &out, &mut |_| {}).unwrap_err();
    assert!(matches!(e, PublishError::NotThisLedger { .. }), "{e}");
    let fetch = DirFetch::new(&out);
    assert!(fetch.fetch("checkpoint", 1 << 20).is_ok());

    // Another log of the same origin, correctly signed, whose first records differ from the published
    // ones (record 5): refused before anything is written.
    let forked_path = tmp.path().join("forked.plb");
    let file = std::fs::File::create(&forked_path).unwrap();
    let mut stream = log::bundle::BundleStream::new(std::io::BufWriter::new(file), &forked_path, 7).unwrap();
    for p in 0..700 {
        let mut b = body(p);
        if p == 5 {
            let mut record = log::codec::decode_record(&b).unwrap();
            let Event::Terminal(DeviceEvent { event: TerminalEvent::Flow { amount_fen, .. }, .. }) = &mut record.event
            else {
                unreachable!()
            };
            *amount_fen += 1;
            b.clear();
            log::codec::encode_record(&record, &mut b).unwrap();
        }
        stream.push(&b).unwrap();
    }
    stream.finish().unwrap();
    let forked = Source::open(&forked_path).unwrap();
    let before = files(&out);
    let e = publish(&forked, &sign(&forked, 700), &out, &mut |_| {}).unwrap_err();
    assert!(matches!(&e, PublishError::Foreign { .. }), "{e}");
    assert_eq!(files(&out), before, "nothing written");
}

//! Corrupt data at rest: random bit flips anywhere in the sealed segments of a ledger folder (headers,
//! frames, trailers) and in bundles; records deleted, duplicated, reordered and renumbered in a bundle
//! that is rewritten with valid CRCs (so only positions, versions and the Merkle root can catch it); and a
//! forged bundle re-sealed with a fresh root. Each case is reported with its file and position, or reads
//! exactly the true records: never a panic, never silently wrong data.
//!
//! Torn tails, damaged trailers and one record flipped byte by byte are in `crash_consistency.rs`; a lost,
//! damaged, stale or foreign sled index in `index_rebuild.rs`; replay's own tampering cases in
//! `crates/replay/tests/verify.rs`. `POSLEDGER_CORRUPTION_CASES` sets the number of random flips per
//! test (default 150).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::codec::{decode_record, encode_record};
use ledger::merkle::Frontier;
use ledger::segment::{push_frame, FileKind, Header, Trailer};
use ledger::source::SEGMENTS_DIR;
use ledger::{Durability, Head, Ledger, Options, Record, Source};
use std::path::{Path, PathBuf};

fn cases() -> u64 {
    std::env::var("POSLEDGER_CORRUPTION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

fn seed() -> u64 {
    std::env::var("POSLEDGER_CORRUPTION_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    })
}

/// A ledger of many small sealed segments and a live one, with directives and replacements.
fn build(dir: &Path) -> (Head, Vec<Record>) {
    let options = Options { durability: Durability::Relaxed, segment_max_bytes: 1_200, ..Options::default() };
    let ledger = Ledger::open_with(dir, options).unwrap();
    for i in 0..40 {
        let model = if i % 2 == 0 { "LKL-A8" } else { "PAX-A920" };
        ledger.append(vec![issued(&format!("SN{i}"), model), flow(&format!("SN{i}"), 10_000)]).unwrap();
        if i % 3 == 0 {
            ledger.append(vec![activated(&format!("SN{i}")), flow(&format!("SN{}", i / 2), 7)]).unwrap();
        }
    }
    ledger.stop_models(directive("D-1", &["PAX-A920"]), None).unwrap();
    ledger.append(vec![issued_with("R1", "LKL-A8", Some("SN1")), replaced("SN1", "R1")]).unwrap();
    let records = ledger.read_from(0).collect::<Result<Vec<_>, _>>().unwrap();
    let head = ledger.head();
    assert_eq!(ledger.close().unwrap().index_warning, None);
    (head, records)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

/// Reads every record through `Source`; returns the records read before an error and the error text.
fn read_source(path: &Path) -> (Vec<Record>, Option<String>) {
    let source = match Source::open(path) {
        Ok(source) => source,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut read = Vec::new();
    for record in source.records(0) {
        match record {
            Ok(record) => read.push(record),
            Err(e) => return (read, Some(e.to_string())),
        }
    }
    (read, None)
}

fn verify(path: &Path) -> Result<replay::verify::Verified, replay::error::Error> {
    let source = Source::open(path).map_err(replay::error::Error::from)?;
    replay::verify::verify(&source, &mut |_| {})
}

/// The error names the file, and the place in it: an offset, a position, or its header (bytes 0..40).
fn locates(text: &str, file: &str) -> bool {
    text.contains(file)
        && (text.contains("offset")
            || text.contains("position")
            || text.contains("header")
            || text.contains("not a posledger segment"))
}

/// Random bit flips (1 to 3 bits, in one byte or spread) anywhere in the sealed segments of a folder:
/// header, frames or trailer. Every flip is caught by `replay verify`, which names the file and a
/// position or offset; a plain read returns a prefix of the true records and then a located error, or
/// (when the flip is in a trailer or header that the read does not need) the true records; opening the
/// ledger either refuses with a located error or serves the same.
#[test]
fn random_bit_flips_in_sealed_segments_are_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (head, records) = build(&dir);
    let paths = segments(&dir);
    let sealed = &paths[..paths.len() - 1];
    assert!(sealed.len() >= 5, "{} segments", paths.len());
    let seed = seed();
    let mut rng = Rng(seed);
    let (mut refused_open, mut read_errors) = (0, 0);
    for case in 0..cases() {
        let path = &sealed[rng.below(sealed.len() as u64) as usize];
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let original = std::fs::read(path).unwrap();
        let mut bytes = original.clone();
        let bits = 1 + rng.below(3);
        let spread = rng.below(2) == 0;
        let at = rng.below(bytes.len() as u64) as usize;
        for b in 0..bits {
            let i = if spread { rng.below(bytes.len() as u64) as usize } else { at };
            bytes[i] ^= 1 << ((rng.below(8) + b) % 8);
        }
        if bytes == original {
            continue;
        }
        let what = format!("case {case} (POSLEDGER_CORRUPTION_SEED={seed}): {bits} bit(s) near byte {at} of {name}");
        std::fs::write(path, &bytes).unwrap();

        let error = verify(&dir).map(|_| ()).expect_err(&what).to_string();
        assert!(locates(&error, &name), "{what}: verify error does not locate it: {error}");
        let (read, error) = read_source(&dir);
        assert_eq!(read[..], records[..read.len()], "{what}: a read returned a wrong record");
        match error {
            Some(error) => {
                assert!(locates(&error, &name), "{what}: read error does not locate it: {error}");
                read_errors += 1;
            }
            None => assert_eq!(read.len(), records.len(), "{what}: a read ended early without an error"),
        }
        // The ledger (every fourth case: an open costs more). Its index is intact, so it may open.
        if case % 4 == 0 {
            match Ledger::open(&dir) {
                Err(e) => {
                    assert!(locates(&e.to_string(), &name), "{what}: open error does not locate it: {e}");
                    refused_open += 1;
                }
                Ok(ledger) => {
                    assert_eq!(ledger.head(), head, "{what}");
                    let mut n = 0;
                    for record in ledger.read_from(0) {
                        match record {
                            Ok(record) => {
                                assert_eq!(record, records[n], "{what}: the ledger read a wrong record");
                                n += 1;
                            }
                            Err(e) => {
                                assert!(locates(&e.to_string(), &name), "{what}: {e}");
                                break;
                            }
                        }
                    }
                }
            }
        }
        std::fs::write(path, &original).unwrap();
    }
    eprintln!(
        "random_bit_flips_in_sealed_segments: {} cases, {read_errors} read errors, {refused_open} opens refused",
        cases()
    );
    verify(&dir).unwrap();
}

/// The same for a bundle: every flip fails `replay verify` with the bundle's name, and a read never
/// returns a wrong record.
#[test]
fn random_bit_flips_in_a_bundle_are_located() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (head, records) = build(&dir);
    let bodies = bodies_of(&dir);
    let bundle = tmp.path().join("fleet.bundle");
    let original = bundle_bytes(&bodies, None);
    std::fs::write(&bundle, &original).unwrap();
    assert_eq!(verify(&bundle).unwrap().root, head.root);
    let seed = seed();
    let mut rng = Rng(seed);
    for case in 0..cases() {
        let mut bytes = original.clone();
        let bits = 1 + rng.below(3);
        let at = rng.below(bytes.len() as u64) as usize;
        for b in 0..bits {
            let i = if rng.below(2) == 0 { at } else { rng.below(bytes.len() as u64) as usize };
            bytes[i] ^= 1 << ((rng.below(8) + b) % 8);
        }
        if bytes == original {
            continue;
        }
        let what = format!("case {case} (POSLEDGER_CORRUPTION_SEED={seed}): {bits} bit(s) near byte {at}");
        std::fs::write(&bundle, &bytes).unwrap();
        let error = verify(&bundle).map(|_| ()).expect_err(&what).to_string();
        assert!(error.contains("fleet.bundle"), "{what}: {error}");
        let (read, error) = read_source(&bundle);
        assert_eq!(read[..], records[..read.len()], "{what}: a read returned a wrong record");
        if let Some(error) = error {
            assert!(error.contains("fleet.bundle"), "{what}: {error}");
        }
    }
}

fn bodies_of(dir: &Path) -> Vec<Vec<u8>> {
    let source = Source::open(dir).unwrap();
    let mut frames = source.frames(0, source.head.size);
    let mut bodies = Vec::new();
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        bodies.push(body.to_vec());
    }
    bodies
}

/// A bundle of `bodies` with valid frame CRCs; its trailer carries `root_of` (the true bodies' frontier)
/// if given — a tamperer who keeps the published root — or the root of `bodies` itself (re-sealed).
fn bundle_bytes(bodies: &[Vec<u8>], root_of: Option<&[Vec<u8>]>) -> Vec<u8> {
    let header = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id: 9 };
    let mut bytes = header.encode().to_vec();
    for body in bodies {
        push_frame(&mut bytes, body);
    }
    let mut frontier = Frontier::new();
    for body in root_of.unwrap_or(bodies) {
        frontier.push_leaf(body);
    }
    let mut trailer = Trailer::new(bodies.len() as u64, &frontier);
    trailer.record_count = bodies.len() as u64;
    trailer.log_size = bodies.len() as u64;
    trailer.encode(&mut bytes);
    bytes
}

/// Re-encodes record `i` of `bodies` with position `i` (and its commit marker as `commit`).
fn renumber(bodies: &mut [Vec<u8>]) {
    for (i, body) in bodies.iter_mut().enumerate() {
        let mut record = decode_record(body).unwrap();
        record.position = i as u64;
        let mut out = Vec::new();
        encode_record(&record, &mut out).unwrap();
        *body = out;
    }
}

/// Records deleted, duplicated, swapped or moved in a bundle rewritten with valid CRCs, with the
/// original trailer root or re-sealed, with or without the positions renumbered: `replay verify` fails
/// every time with a position; a plain read never returns a record at a position it does not hold.
#[test]
fn tampered_bundles_with_valid_crcs_fail_verify_with_a_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (head, _) = build(&dir);
    let bodies = bodies_of(&dir);
    let n = bodies.len();
    let bundle = tmp.path().join("t.bundle");
    let seed = seed();
    let mut rng = Rng(seed);
    let mut checked = 0;
    for case in 0..cases() {
        let mut b = bodies.clone();
        let (i, j) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
        let op = match rng.below(4) {
            0 => {
                b.remove(i);
                format!("delete {i}")
            }
            1 => {
                let copy = b[i].clone();
                b.insert(j, copy);
                format!("duplicate {i} at {j}")
            }
            2 => {
                b.swap(i, j);
                format!("swap {i} {j}")
            }
            _ => {
                let moved = b.remove(i);
                b.insert(j, moved);
                format!("move {i} to {j}")
            }
        };
        if b == bodies {
            continue;
        }
        let renumbered = rng.below(2) == 0;
        if renumbered {
            renumber(&mut b);
        }
        let resealed = rng.below(2) == 0;
        let what = format!("case {case} (seed {seed}): {op}, renumbered {renumbered}, re-sealed {resealed}");
        std::fs::write(&bundle, bundle_bytes(&b, if resealed { None } else { Some(&bodies) })).unwrap();
        match verify(&bundle) {
            Err(e) => {
                let text = e.to_string();
                assert!(e.position().is_some() || text.contains("position"), "{what}: no position: {text}");
            }
            // A re-sealed, renumbered bundle whose every stream still has dense versions and legal
            // transitions is a different log that verifies on its own: only the published root tells.
            Ok(verified) => {
                assert!(resealed && renumbered, "{what}: verify accepted a tampered bundle");
                assert_ne!(verified.root, head.root, "{what}: a tampered log has the published root");
            }
        }
        let (read, _) = read_source(&bundle);
        for (p, record) in read.iter().enumerate() {
            assert_eq!(record.position, p as u64, "{what}: a record read at the wrong position");
        }
        checked += 1;
    }
    eprintln!("tampered_bundles: {checked} cases");
}

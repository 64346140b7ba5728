//! `replay verify-tiles` on a log published as tiles (docs/TILES.md) and served over HTTP by a test
//! server on 127.0.0.1 (`tiles::testing`): a missing tile, a changed hash, a changed entry, a checkpoint
//! its tiles do not give, a server that stalls or sends too much are each refused naming the URL of the
//! file, and nothing hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::disallowed_methods, reason = "tests build the fixtures they read")]

mod common;

use common::{replay, sim_bundle, stderr, stdout};
use log::Source;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tiles::testing::{Reply, Server};
use tiles::{Fetch, FetchError, HttpFetch};
use tlog::checkpoint::Checkpoint;
use tlog::{KeyType, SigningKey};

const ORIGIN: &str = "acquirer.example/log";

fn key() -> SigningKey {
    SigningKey::from_seed(ORIGIN, KeyType::Note, &[9; 32]).unwrap()
}

fn note(source: &Source) -> Vec<u8> {
    Checkpoint::new(ORIGIN, source.head.size, source.head.root).sign(&key()).unwrap()
}

/// A simulated bundle of about `events` records published into `dir/pub`.
fn published(dir: &Path, events: u64, seed: u64) -> (PathBuf, Source) {
    let bundle = dir.join(format!("fleet-{seed}.plb"));
    sim_bundle(&bundle, events, seed, None);
    let source = Source::open(&bundle).unwrap();
    let out = dir.join(format!("pub-{seed}"));
    tiles::publish(&source, &note(&source), &out, &mut |_| {}).unwrap();
    (out, source)
}

fn vkey() -> String {
    key().verifier_key().to_string()
}

/// `replay verify-tiles URL --key VKEY`: the exit code and what it said.
fn verify_tiles(server: &Server) -> (Option<i32>, String) {
    let out = replay(&["verify-tiles", &server.url, "--key", &vkey()]);
    (out.status.code(), format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn verify_tiles_over_http_names_a_missing_tile_a_changed_hash_a_changed_entry_and_a_foreign_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, source) = published(tmp.path(), 3_000, 1);
    assert!(source.head.size > 3 * 256, "several entry bundles");
    let server = Server::start(out.clone());
    let (code, said) = verify_tiles(&server);
    assert_eq!(code, Some(0), "{said}");
    let file = |path: &str| std::fs::read(out.join(path)).unwrap();
    let changed = |mut bytes: Vec<u8>, at: usize| {
        bytes[at] ^= 0x80;
        bytes
    };
    let cases: Vec<(&str, Reply)> = vec![
        ("tile/0/000", Reply::Missing),
        ("tile/entries/001", Reply::Missing),
        ("tile/0/001", Reply::Bytes(changed(file("tile/0/001"), 32 * 7 + 3))),
        ("tile/entries/002", Reply::Bytes(changed(file("tile/entries/002"), 40))),
    ];
    for (path, reply) in cases {
        server.set(path, reply.clone());
        let (code, said) = verify_tiles(&server);
        assert_eq!(code, Some(1), "{path}: {said}");
        assert!(said.contains(&format!("{}/{path}", server.url)), "{path}: {said}");
        server.clear();
    }
    // A checkpoint signed by the same key over another log: the tiles do not give its root.
    let (_, other) = published(tmp.path(), 3_000, 2);
    server.set("checkpoint", Reply::Bytes(note(&other)));
    let (code, said) = verify_tiles(&server);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&server.url), "{said}");
}

#[test]
fn a_server_that_stalls_or_sends_too_much_is_refused_naming_the_url_and_nothing_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, _) = published(tmp.path(), 1_000, 3);
    let server = Server::start(out);
    // The bound on time, shortened for the test (the commands use tiles::fetch::HTTP_TIMEOUT).
    let fetch = HttpFetch::with_timeout(&server.url, Duration::from_secs(1));
    server.set("tile/0/000", Reply::Stall);
    match fetch.fetch("tile/0/000", 8192) {
        Err(FetchError::Io { location, .. }) => assert_eq!(location, format!("{}/tile/0/000", server.url)),
        other => panic!("a stalled request: {other:?}"),
    }
    server.set("tile/0/001", Reply::Flood(1 << 20));
    match fetch.fetch("tile/0/001", 8192) {
        Err(FetchError::TooLarge { location, limit }) => {
            assert_eq!((location, limit), (format!("{}/tile/0/001", server.url), 8192));
        }
        other => panic!("an endless body: {other:?}"),
    }
    // Through the command: a checkpoint, a tile or an entry bundle with too much in it.
    server.clear();
    for path in ["checkpoint", "tile/0/000", "tile/entries/000"] {
        server.set(path, Reply::Flood(64 << 20));
        let (code, said) = verify_tiles(&server);
        assert_eq!(code, Some(1), "{path}: {said}");
        assert!(said.contains(&format!("{}/{path}", server.url)), "{path}: {said}");
        server.clear();
    }
}

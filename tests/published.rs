//! A ledger published as tiles (docs/TILES.md) and read back over HTTP from a test server on
//! 127.0.0.1 (`tiles::testing`): restored to the same log (head, ledger id, fleet digest, checkpoint, further appends);
//! a damaged entry bundle refused naming it; and a publish killed with
//! SIGKILL leaves a layout that verifies at the previous checkpoint, which the next run completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bodies;
use common::cli::{ok, posledger, s, stderr};
use ledger::{Ledger, Source};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tiles::testing::{Reply, Server};

/// Verifies the publication in `out` (every entry and tile) with the library `replay verify-tiles` uses;
/// the size it verified.
fn verify_tiles(out: &Path, vkey: &str) -> u64 {
    let key = tlog::VerifierKey::parse(vkey).unwrap();
    let policy = tiles::Policy { key: &key, witnesses: &[], min_witnesses: 0 };
    let fetch = tiles::DirFetch::new(out);
    let head = tiles::read_checkpoint(&fetch, "checkpoint", &policy).unwrap();
    tiles::walk(&fetch, &head, None, 2, &mut |_| {}, &mut |_, _| Ok(())).unwrap();
    head.checkpoint.size
}

/// A simulated ledger, signed and published: (ledger, publication, vkey text).
struct Published {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ledger: PathBuf,
    out: PathBuf,
    key: PathBuf,
    vkey: String,
}

fn published(devices: &str) -> Published {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let (ledger, out, key) = (root.join("ledger"), root.join("pub"), root.join("log.key"));
    ok(posledger(&["simulate", "--dir", s(&ledger), "--devices", devices, "--seed", "5", "--months", "3"]));
    ok(posledger(&["key", "generate", "--name", "acquirer.example/log", "--out", s(&key)]));
    ok(posledger(&["checkpoint", "--dir", s(&ledger), "--key", s(&key)]));
    ok(posledger(&["publish", "--dir", s(&ledger), "--out", s(&out)]));
    let vkey = std::fs::read_to_string(root.join("log.key.vkey")).unwrap().trim().to_owned();
    Published { _tmp: tmp, root, ledger, out, key, vkey }
}

fn digest(dir: &Path) -> String {
    let source = Source::open(dir).unwrap();
    projections::rebuild(&source, projections::Cut::Head, &projections::Options::default()).unwrap().digest_hex()
}

fn restored_is_the_same_log(from: &Path, to: &Path) {
    let (a, b) = (Source::open(from).unwrap(), Source::open(to).unwrap());
    assert_eq!(b.head, a.head);
    assert_eq!(b.ledger_id(), a.ledger_id(), "the publication's marker names the ledger id");
    assert_eq!(bodies(&b), bodies(&a), "byte for byte");
    assert_eq!(digest(to), digest(from));
    assert_eq!(b.checkpoints().unwrap().len(), 1, "the published checkpoint is kept");
    // The restored ledger takes further appends.
    let ledger = Ledger::open(to).unwrap();
    ledger.append(vec![common::issued("ZZ-NEW-1", "MODEL-Z")]).unwrap();
    assert_eq!(ledger.head().size, a.head.size + 1);
    ledger.close().unwrap();
}

#[test]
fn a_published_log_restores_to_the_same_log_over_http_and_from_its_folder() {
    let p = published("300");
    let server = Server::start(p.out.clone());
    let (over_http, from_folder) = (p.root.join("over-http"), p.root.join("from-folder"));
    let out = ok(posledger(&["restore", "--from", &server.url, "--key", &p.vkey, "--dir", s(&over_http)]));
    let head = Source::open(&p.ledger).unwrap().head;
    assert!(out.contains(&format!("root {}", head.root_hex())), "{out}");
    assert!(out.contains("checkpoints: 1 kept"), "{out}");
    restored_is_the_same_log(&p.ledger, &over_http);
    ok(posledger(&["restore", "--from", s(&p.out), "--key", &p.vkey, "--dir", s(&from_folder)]));
    restored_is_the_same_log(&p.ledger, &from_folder);
    // Without the key, or with another log's key, nothing is restored.
    let no_key = posledger(&["restore", "--from", &server.url, "--dir", s(&p.root.join("no-key"))]);
    assert_eq!(no_key.status.code(), Some(2), "{}", stderr(&no_key));
    assert!(stderr(&no_key).contains("--key"), "{}", stderr(&no_key));
    let other = p.root.join("other.key");
    ok(posledger(&["key", "generate", "--name", "acquirer.example/log", "--out", s(&other)]));
    let other_vkey = std::fs::read_to_string(p.root.join("other.key.vkey")).unwrap();
    let foreign =
        posledger(&["restore", "--from", &server.url, "--key", other_vkey.trim(), "--dir", s(&p.root.join("f"))]);
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert!(stderr(&foreign).contains("checkpoint"), "{}", stderr(&foreign));
    assert!(!p.root.join("no-key").exists() && !p.root.join("f").exists());
}

#[test]
fn a_restore_from_a_layout_with_one_damaged_entry_bundle_is_refused_naming_it() {
    let p = published("300");
    let server = Server::start(p.out.clone());
    let bundle = "tile/entries/001";
    let mut bytes = std::fs::read(p.out.join(bundle)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    server.set(bundle, Reply::Bytes(bytes.clone()));
    let dst = p.root.join("dst");
    let refused = posledger(&["restore", "--from", &server.url, "--key", &p.vkey, "--dir", s(&dst)]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(&format!("{}/{bundle}", server.url)), "{}", stderr(&refused));
    assert!(!dst.exists(), "a refused restore leaves no folder");
    // The same damage in the folder itself.
    std::fs::write(p.out.join(bundle), &bytes).unwrap();
    let refused = posledger(&["restore", "--from", s(&p.out), "--key", &p.vkey, "--dir", s(&dst)]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(bundle), "{}", stderr(&refused));
    assert!(!dst.exists());
}

/// The size the publication's checkpoint names (its second line), if it has one.
fn published_size(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("checkpoint")).ok()?;
    text.lines().nth(1)?.parse().ok()
}

/// Issues `n` more terminals into the ledger (NDJSON through `posledger append`).
fn issue_more(ledger: &Path, root: &Path, n: usize) {
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&format!(
            "{{\"device\":\"KILL{i:07}\",\"type\":\"issued\",\"at\":\"2030-01-01T00:00:00Z\",\"model\":\"LKL-A8\",\"merchant\":\"M1\",\"provider\":\"lakala\",\"region\":\"310000\",\"contract\":{{\"id\":\"C{i}\",\"start\":\"2030-01-01T00:00:00Z\",\"end\":\"2031-01-01T00:00:00Z\"}}}}\n"
        ));
    }
    let file = root.join("more.ndjson");
    std::fs::write(&file, lines).unwrap();
    ok(posledger(&["append", "--dir", s(ledger), s(&file)]));
}

#[test]
fn publish_killed_with_sigkill_leaves_a_layout_verifying_at_the_previous_checkpoint_and_the_next_run_completes_it() {
    let p = published("200");
    let first = Source::open(&p.ledger).unwrap().head;
    let verify_at = |size: u64| assert_eq!(verify_tiles(&p.out, &p.vkey), size);
    verify_at(first.size);
    issue_more(&p.ledger, &p.root, 150_000);
    ok(posledger(&["checkpoint", "--dir", s(&p.ledger), "--key", s(&p.key)]));
    let second = Source::open(&p.ledger).unwrap().head;
    let mut killed_midway = 0;
    // Whether a run got to the end before its kill (it may have replaced the checkpoint and not yet
    // exited): the next run then has nothing left to publish.
    let mut completed = false;
    for delay_ms in [5u64, 30, 80, 160, 320] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_posledger"))
            .args(["publish", "--dir", s(&p.ledger), "--out", s(&p.out)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let exited = child.try_wait().unwrap();
        if let Some(status) = exited {
            assert!(status.success(), "a publish that ended before its kill succeeded: {status}");
        }
        let finished = exited.is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        let published = published_size(&p.out);
        if finished || published == Some(second.size) {
            completed = true;
            break;
        }
        killed_midway += 1;
        // Killed before the checkpoint was replaced: the previous one still verifies.
        assert_eq!(published, Some(first.size), "after a kill at {delay_ms} ms");
        verify_at(first.size);
    }
    assert!(killed_midway > 0, "no publish was killed midway: make the log larger");
    let out = ok(posledger(&["publish", "--dir", s(&p.ledger), "--out", s(&p.out)]));
    if completed {
        let all = posledger::interchange::text::thousands(second.size);
        assert!(out.contains(&format!("already publishes {all} records")), "a completed run left nothing: {out}");
    } else {
        let new = posledger::interchange::text::thousands(second.size - first.size);
        assert!(out.contains(&format!("({new} new)")), "the next run publishes what the killed ones did not: {out}");
    }
    verify_at(second.size);
}

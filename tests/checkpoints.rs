//! `posledger key generate`, `posledger checkpoint` and `append --sign-with` as an operator runs them
//! (docs/CHECKPOINTS.md), with a witness served in this process on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok, posledger, s, stderr, stdout};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

fn simulate(dir: &Path, devices: &str) {
    ok(posledger(&["simulate", "--dir", s(dir), "--devices", devices, "--seed", "3", "--months", "2"]));
}

fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|r| r.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn key_generate_writes_a_private_file_never_prints_it_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("log.key");
    let out = ok(posledger(&["key", "generate", "--name", "acquirer.example/posledger/1", "--out", s(&key)]));
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(private.starts_with("PRIVATE+KEY+acquirer.example/posledger/1+"));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let vkey = std::fs::read_to_string(tmp.path().join("log.key.vkey")).unwrap();
    assert!(out.contains(vkey.trim()), "{out}");
    // The key material is everything after `PRIVATE+KEY+<name>+<hash>+`: base64 may itself contain
    // '+', so the last '+'-separated piece can be a fragment short enough to occur in the output by
    // chance (the flake of 2026-12-04, seen in a fresh-clone CI run).
    let material = private.trim().splitn(5, '+').nth(4).unwrap();
    assert!(material.len() >= 40, "{material}");
    assert!(!out.contains(private.trim()) && !out.contains(material), "{out}");
    let again = posledger(&["key", "generate", "--name", "acquirer.example/posledger/1", "--out", s(&key)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("never overwritten"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
    let bad = posledger(&["key", "generate", "--name", "has space", "--out", s(&tmp.path().join("x.key"))]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!tmp.path().join("x.key").exists());
}

#[test]
fn a_key_file_others_can_read_is_refused_and_the_key_never_reaches_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, dir) = (tmp.path().join("log.key"), tmp.path().join("ledger"));
    ok(posledger(&["key", "generate", "--name", "a.example/log", "--out", s(&key)]));
    simulate(&dir, "30");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = posledger(&["checkpoint", "--dir", s(&dir), "--key", s(&key)]);
    assert_eq!(o.status.code(), Some(2));
    let private = std::fs::read_to_string(&key).unwrap();
    let err = stderr(&o);
    assert!(err.contains("log.key") && err.contains("0644") && !err.contains(private.trim()), "{err}");
    assert!(checkpoint_files(&dir).is_empty());
}

#[test]
fn the_log_never_signs_a_checkpoint_inconsistent_with_one_it_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("log.key");
    ok(posledger(&["key", "generate", "--name", "a.example/log", "--out", s(&key)]));
    let (long, short) = (tmp.path().join("long"), tmp.path().join("short"));
    simulate(&long, "60");
    simulate(&short, "20");
    let signed = ok(posledger(&["checkpoint", "--dir", s(&long), "--key", s(&key)]));
    assert!(signed.starts_with("signed checkpoint: size "), "{signed}");
    // The short log with the long one's checkpoints: it is "cut", and signing is refused.
    std::fs::create_dir(short.join("checkpoints")).unwrap();
    for name in checkpoint_files(&long) {
        std::fs::copy(long.join("checkpoints").join(&name), short.join("checkpoints").join(&name)).unwrap();
    }
    let before = checkpoint_files(&short);
    let o = posledger(&["checkpoint", "--dir", s(&short), "--key", s(&key)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("refused to sign"), "{}", stderr(&o));
    assert_eq!(checkpoint_files(&short), before, "nothing new was signed");
    // Another key name (another origin) on the same ledger is refused too.
    let other = tmp.path().join("other.key");
    ok(posledger(&["key", "generate", "--name", "b.example/log", "--out", s(&other)]));
    let o = posledger(&["checkpoint", "--dir", s(&long), "--key", s(&other)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a.example/log"), "{}", stderr(&o));
}

/// A witness served in this process: its URL and verifier key.
fn serve_witness(dir: &Path, log_vkey: &str) -> (String, String) {
    let key = tlog::SigningKey::generate("regulator.example/w1", tlog::KeyType::Cosignature).unwrap();
    let vkey = key.verifier_key().to_string();
    let logs = vec![tlog::witness::LogPolicy {
        origin: "a.example/log".into(),
        keys: vec![tlog::VerifierKey::parse(log_vkey).unwrap()],
    }];
    let state = witness::state::State::open(&dir.join("witness"), &logs, &key.verifier_key()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(witness::server::Witness::new(logs, key, state));
    std::thread::spawn(move || runtime.block_on(witness::server::serve(listener, served)));
    (url, vkey)
}

#[test]
fn append_sign_with_and_checkpoint_with_a_witness_across_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, dir) = (tmp.path().join("log.key"), tmp.path().join("ledger"));
    ok(posledger(&["key", "generate", "--name", "a.example/log", "--out", s(&key)]));
    let log_vkey = std::fs::read_to_string(tmp.path().join("log.key.vkey")).unwrap();
    let (url, witness_vkey) = serve_witness(tmp.path(), log_vkey.trim());
    // The events of a simulated fleet, appended in three parts, each signed and witnessed.
    let sim = tmp.path().join("sim");
    simulate(&sim, "40");
    let events = tmp.path().join("events.ndjson");
    let source = ledger::Source::open(&sim).unwrap();
    let mut lines = Vec::new();
    for record in source.records(0) {
        let record = record.unwrap();
        lines.push(interchange::ndjson::render(&record).unwrap());
    }
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let third = lines.len() / 3;
    for (i, part) in [&lines[..third], &lines[third..2 * third], &lines[2 * third..]].into_iter().enumerate() {
        let file = tmp.path().join(format!("part{i}.ndjson"));
        std::fs::write(&file, part.join("\n") + "\n").unwrap();
        let out = ok(posledger(&["append", "--dir", s(&dir), s(&file), "--sign-with", s(&key)]));
        assert!(out.contains("signed checkpoint: "), "{out}");
        let out = ok(posledger(&[
            "checkpoint",
            "--dir",
            s(&dir),
            "--key",
            s(&key),
            "--witness",
            &url,
            "--witness-key",
            &witness_vkey,
        ]));
        assert!(out.contains("already signed checkpoint") && out.contains("cosigned by regulator.example/w1"), "{out}");
    }
    let cosigned: Vec<String> = checkpoint_files(&dir).into_iter().filter(|n| n.ends_with(".cosigned")).collect();
    assert_eq!(cosigned.len(), 3, "{cosigned:?}");
    let last = std::fs::read(dir.join("checkpoints").join(cosigned.last().unwrap())).unwrap();
    let verified = tlog::checkpoint::verify(
        &last,
        &tlog::VerifierKey::parse(&log_vkey).unwrap(),
        &[tlog::VerifierKey::parse(&witness_vkey).unwrap()],
        1,
    )
    .unwrap();
    assert_eq!(verified.checkpoint.size, lines.len() as u64);
    // The export carries every checkpoint, the cosigned note where there is one.
    let bundle = tmp.path().join("out.plb");
    ok(posledger(&["export", "--dir", s(&dir), "--out", s(&bundle)]));
    let carried = ledger::Source::open(&bundle).unwrap().checkpoints().unwrap();
    assert_eq!(carried.len(), 3);
    assert_eq!(carried.last().unwrap().note, last);
    // A witness that cannot be reached: exit 1, the signed checkpoint is kept.
    let o = posledger(&[
        "checkpoint",
        "--dir",
        s(&dir),
        "--key",
        s(&key),
        "--witness",
        "http://127.0.0.1:9",
        "--witness-key",
        &witness_vkey,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1:9"), "{}", stderr(&o));
    // Unpaired witness arguments are a usage error.
    let o = posledger(&["checkpoint", "--dir", s(&dir), "--key", s(&key), "--witness", &url]);
    assert_eq!(o.status.code(), Some(2));
}

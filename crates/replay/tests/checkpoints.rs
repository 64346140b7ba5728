//! `replay verify --checkpoint` and `replay consistency --from --to` against signed checkpoints
//! (docs/CHECKPOINTS.md): extends (exit 0), shorter and differs (exit 1, naming both sizes), bad
//! notes (exit 1), bad keys and arguments (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests build their own fixtures; the read side's no-write rule is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{bodies, code, make_ledger, reencode, replay, stderr, stdout, write_raw_bundle};
use ledger::merkle;
use std::path::{Path, PathBuf};
use tlog::ed25519::Cosigner;
use tlog::{Checkpoint, KeyType, Note, SigningKey};

const ORIGIN: &str = "acquirer.example/posledger/9";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bodies: Vec<Vec<u8>>,
    key: SigningKey,
    vkey: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("ledger");
    make_ledger(&ledger);
    let bodies = bodies(&ledger);
    let key = SigningKey::generate(ORIGIN, KeyType::Note).unwrap();
    let vkey = tmp.path().join("log.vkey");
    std::fs::write(&vkey, key.verifier_key().to_string()).unwrap();
    Setup { dir: tmp.path().to_owned(), _tmp: tmp, bodies, key, vkey }
}

impl Setup {
    fn bundle(&self, name: &str, bodies: &[Vec<u8>]) -> PathBuf {
        let path = self.dir.join(name);
        write_raw_bundle(&path, bodies);
        path
    }

    fn checkpoint(&self, size: usize) -> PathBuf {
        let refs: Vec<&[u8]> = self.bodies.iter().take(size).map(Vec::as_slice).collect();
        let note = Checkpoint::new(ORIGIN, size as u64, merkle::root(&refs)).sign(&self.key).unwrap();
        let path = self.dir.join(format!("{size}.checkpoint"));
        std::fs::write(&path, note).unwrap();
        path
    }
}

/// The record with one more fen of flow: a rewrite every other check still accepts.
fn more_flow(body: &[u8]) -> Vec<u8> {
    reencode(body, |r| match &mut r.event {
        ledger::Event::Terminal(ledger::DeviceEvent {
            event: ledger::TerminalEvent::Flow { amount_fen, .. }, ..
        }) => *amount_fen += 1,
        other => panic!("position 12 of the legal fleet is a flow, not {other:?}"),
    })
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_source_that_extends_a_checkpoint_passes_and_a_shorter_or_rewritten_one_fails() {
    let s = setup();
    let n = s.bodies.len();
    let full = s.bundle("full.plb", &s.bodies);
    let (cp_small, cp_full) = (s.checkpoint(5), s.checkpoint(n));
    let o =
        replay(&["verify", p(&full), "--checkpoint", p(&cp_small), "--checkpoint", p(&cp_full), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("the source extends it").count(), 2, "{}", stdout(&o));

    // Records cut after position 10: exit 1 naming both sizes.
    let short = s.bundle("short.plb", &s.bodies[..10]);
    let o = replay(&["verify", p(&short), "--checkpoint", p(&cp_full), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.contains("SHORTER") && out.contains(&format!("{n} records")) && out.contains("10 records"), "{out}");

    // One record rewritten at position 12: a fork, bounded by the checkpoints the regulator holds.
    let mut changed = s.bodies.clone();
    changed[12] = more_flow(&changed[12]);
    let forked = s.bundle("forked.plb", &changed);
    let o = replay(&[
        "verify",
        p(&forked),
        "--checkpoint",
        p(&cp_small),
        "--checkpoint",
        p(&cp_full),
        "--key",
        p(&s.vkey),
        "--json",
    ]);
    assert_eq!(code(&o), 1);
    let lines: Vec<serde_json::Value> = stdout(&o).lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["standing"], "extends");
    assert_eq!(lines[1]["standing"], "differs");
    assert!(stderr(&o).contains("rewritten between signed sizes 5 (agrees) and"), "{}", stderr(&o));
}

#[test]
fn a_checkpoint_that_does_not_verify_or_lacks_its_witnesses_is_refused() {
    let s = setup();
    let full = s.bundle("full.plb", &s.bodies);
    let cp = s.checkpoint(s.bodies.len());
    // Another number in the signed text: the signature fails.
    let forged = s.dir.join("forged.checkpoint");
    let text = std::fs::read_to_string(&cp).unwrap();
    std::fs::write(&forged, text.replacen(&format!("\n{}\n", s.bodies.len()), "\n3\n", 1)).unwrap();
    let o = replay(&["verify", p(&full), "--checkpoint", p(&forged), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("forged.checkpoint") && stderr(&o).contains("does not verify"), "{}", stderr(&o));

    // A witness is required but has not cosigned; then it has.
    let witness = SigningKey::generate("regulator.example/w1", KeyType::Cosignature).unwrap();
    let wkey = witness.verifier_key().to_string();
    let o = replay(&["verify", p(&full), "--checkpoint", p(&cp), "--key", p(&s.vkey), "--witness", &wkey]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("0 of the required 1 witnesses"), "{}", stderr(&o));
    let mut note = Note::parse(&std::fs::read(&cp).unwrap()).unwrap();
    note.sign(&Cosigner::new(&witness, 1_764_633_600).unwrap()).unwrap();
    let cosigned = s.dir.join("cosigned.checkpoint");
    std::fs::write(&cosigned, note.to_bytes()).unwrap();
    let o = replay(&["verify", p(&full), "--checkpoint", p(&cosigned), "--key", p(&s.vkey), "--witness", &wkey]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("cosigned by regulator.example/w1 at 1764633600"), "{}", stdout(&o));

    // Usage: a witness key as the log's key, --checkpoint without --key, too large a quorum.
    let o = replay(&["verify", p(&full), "--checkpoint", p(&cp), "--key", &wkey]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(code(&replay(&["verify", p(&full), "--checkpoint", p(&cp)])), 2);
    let o = replay(&[
        "verify",
        p(&full),
        "--checkpoint",
        p(&cp),
        "--key",
        p(&s.vkey),
        "--witness",
        &wkey,
        "--min-witnesses",
        "2",
    ]);
    assert_eq!(code(&o), 2);
    // Garbage as a checkpoint: exit 1 naming the file.
    let garbage = s.dir.join("garbage.checkpoint");
    std::fs::write(&garbage, [0xffu8, 0, 1, 2]).unwrap();
    let o = replay(&["verify", p(&full), "--checkpoint", p(&garbage), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("garbage.checkpoint"), "{}", stderr(&o));
}

#[test]
fn consistency_from_to_proves_one_checkpoint_extends_another_and_prints_a_witness_request() {
    let s = setup();
    let n = s.bodies.len();
    let full = s.bundle("full.plb", &s.bodies);
    let (old, new) = (s.checkpoint(6), s.checkpoint(n - 2));
    let o = replay(&["consistency", p(&full), "--from", p(&old), "--to", p(&new), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("consistent: checkpoint"), "{}", stdout(&o));
    let o = replay(&[
        "consistency",
        p(&full),
        "--from",
        p(&old),
        "--to",
        p(&new),
        "--key",
        p(&s.vkey),
        "--format",
        "witness",
    ]);
    assert_eq!(code(&o), 0);
    let request = tlog::AddCheckpoint::parse(&o.stdout).unwrap();
    assert_eq!(request.old_size, 6);
    assert_eq!(request.checkpoint, std::fs::read(&new).unwrap());
    let refs: Vec<&[u8]> = s.bodies.iter().map(Vec::as_slice).collect();
    let (old_root, new_root) = (merkle::root(&refs[..6]), merkle::root(&refs[..n - 2]));
    tlog::proof::check_consistency(6, &old_root, (n - 2) as u64, &new_root, &request.proof).unwrap();
    // Swapped: usage. On a rewritten source: inconsistent, exit 1.
    assert_eq!(code(&replay(&["consistency", p(&full), "--from", p(&new), "--to", p(&old), "--key", p(&s.vkey)])), 2);
    let mut changed = s.bodies.clone();
    changed[12] = more_flow(&changed[12]);
    let forked = s.bundle("forked.plb", &changed);
    let o = replay(&["consistency", p(&forked), "--from", p(&old), "--to", p(&new), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("inconsistent"), "{}", stderr(&o));
}

/// `bundle` with a checkpoint section carrying `notes` appended after its trailer.
fn carry(bundle: &Path, notes: &[(u64, Vec<u8>)]) {
    let carried: Vec<log::bundle::CarriedCheckpoint> =
        notes.iter().map(|(size, note)| log::bundle::CarriedCheckpoint { size: *size, note: note.clone() }).collect();
    let mut bytes = std::fs::read(bundle).unwrap();
    bytes.extend_from_slice(&log::bundle::encode_checkpoint_section(&carried).unwrap());
    std::fs::write(bundle, bytes).unwrap();
}

#[test]
fn a_bundle_carries_its_checkpoints_and_every_reader_still_reads_it() {
    let s = setup();
    let n = s.bodies.len();
    let bundle = s.bundle("carrying.plb", &s.bodies);
    let notes: Vec<(u64, Vec<u8>)> =
        [3usize, 9, n].iter().map(|&k| (k as u64, std::fs::read(s.checkpoint(k)).unwrap())).collect();
    carry(&bundle, &notes);
    // Every command reads the log part as before.
    let o = replay(&["verify", p(&bundle)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for cmd in [
        &["fleet"][..],
        &["audit"],
        &["prove", "--position", "2"],
        &["export", "--format", "ndjson", "--out", "/dev/null"],
    ] {
        let mut args = vec![cmd[0], p(&bundle)];
        args.extend_from_slice(&cmd[1..]);
        let o = replay(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    // With the key, the carried checkpoints are checked too.
    let o = replay(&["verify", p(&bundle), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("3 signed checkpoints carried by the source: the source extends 3"), "{}", stdout(&o));

    // A bundle rewritten after its checkpoints were signed contradicts what it carries: exit 1.
    let mut changed = s.bodies.clone();
    changed[12] = more_flow(&changed[12]);
    let rewritten = s.bundle("rewritten.plb", &changed);
    carry(&rewritten, &notes);
    let o = replay(&["verify", p(&rewritten), "--key", p(&s.vkey)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("carried checkpoint of size") && stdout(&o).contains("DIFFERS"), "{}", stdout(&o));

    // A damaged section: exit 1 naming it, whatever the command.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x55;
    let damaged = s.dir.join("damaged.plb");
    std::fs::write(&damaged, bytes).unwrap();
    for args in [&["verify", p(&damaged), "--key", p(&s.vkey)][..], &["verify", p(&damaged)]] {
        let o = replay(args);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains("checkpoints: the checkpoint section fails its checksum"), "{}", stderr(&o));
    }
    // A footer naming more bytes than the file has: refused on open.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let len_at = bytes.len() - 20;
    bytes[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&damaged, bytes).unwrap();
    let o = replay(&["verify", p(&damaged)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("checkpoint footer"), "{}", stderr(&o));
}

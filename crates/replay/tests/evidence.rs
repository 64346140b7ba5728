//! Evidence for one terminal (docs/FORMAT.md, "Evidence for one terminal"): built from a simulated
//! fleet with a directive stop, it verifies offline and prints what `replay device` prints; truncated,
//! reordered, altered, thinned-out and foreign evidence, and proofs for the wrong size, are refused with
//! a typed error naming what fails (exit 1 from `replay evidence check`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests build their own fixtures; the read side's no-write rule is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{code, replay, stderr, stdout};
use ledger::{Durability, Event, Ledger, Options, Sn, Source, TerminalEvent};
use replay::evidence::{build, check, Evidence, EvidenceError};
use std::path::{Path, PathBuf};
use tlog::{Checkpoint, KeyType, SigningKey, VerifierKey};

const ORIGIN: &str = "acquirer.example/posledger/evidence";

struct Fleet {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ledger: PathBuf,
    key: SigningKey,
    vkey: VerifierKey,
    vkey_file: PathBuf,
    /// Stopped by the directive, then replaced.
    recalled: Sn,
}

fn fleet(seed: u64, origin: &str) -> Fleet {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let path = dir.join("ledger");
    let ledger = Ledger::open_with(&path, Options { durability: Durability::Relaxed, ..Options::default() }).unwrap();
    let config = sim::Config { devices: 400, months: 12, seed, batch_events: 2_000, ..sim::Config::default() };
    let report = sim::run(&ledger, &config, &mut |_| {}).unwrap();
    ledger.flush().unwrap();
    ledger.close().unwrap();
    let key = SigningKey::generate(origin, KeyType::Note).unwrap();
    let vkey = key.verifier_key();
    let vkey_file = dir.join("log.vkey");
    std::fs::write(&vkey_file, vkey.to_string()).unwrap();
    let recalled = report.samples.recalled_and_replaced.expect("the simulation stops and replaces a recalled terminal");
    Fleet { _tmp: tmp, dir, ledger: path, key, vkey, vkey_file, recalled }
}

impl Fleet {
    fn source(&self) -> Source {
        Source::open(&self.ledger).unwrap()
    }
    /// A checkpoint of the first `size` records, signed with `key`.
    fn note(&self, size: u64, key: &SigningKey) -> Vec<u8> {
        let source = self.source();
        let root = log::proof::inclusions(&[], size, |a, b| source.frames(a, b), &mut |_| {}).unwrap().root;
        Checkpoint::new(key.name(), size, root).sign(key).unwrap()
    }
    fn head_note(&self) -> Vec<u8> {
        self.note(self.source().head.size, &self.key)
    }
    fn evidence(&self, sn: &Sn, note: &[u8]) -> Evidence {
        build(&self.source(), sn, note, &mut |_| {}).unwrap().evidence
    }
    fn check(&self, bytes: &[u8]) -> Result<replay::evidence::Checked, EvidenceError> {
        check(bytes, &self.vkey, &[], 0)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The positions of the entries and what each record is.
fn kinds(e: &Evidence) -> Vec<(u64, String)> {
    e.entries
        .iter()
        .map(|entry| {
            let r = ledger::codec::decode_record(&entry.body).unwrap();
            let what = match &r.event {
                Event::Directive(d) => format!("directive {}", d.id),
                Event::Terminal(t) => format!("{} {}", t.device, t.event.type_name()),
            };
            (entry.position, what)
        })
        .collect()
}

#[test]
fn evidence_of_a_terminal_stopped_by_a_directive_verifies_and_prints_what_replay_device_prints() {
    let f = fleet(7, ORIGIN);
    let note = f.head_note();
    let built = build(&f.source(), &f.recalled, &note, &mut |_| {}).unwrap();
    assert_eq!(built.directives.len(), 1, "{:?}", built.directives);
    assert_eq!(built.partners.len(), 1, "the replacement's other half: {:?}", built.partners);
    assert_eq!(built.evidence.note, note, "the checkpoint is carried verbatim");
    let bytes = built.evidence.to_bytes();
    assert_eq!(bytes.len(), built.evidence.encoded_len());
    assert_eq!(Evidence::parse(&bytes).unwrap(), built.evidence);

    let checked = f.check(&bytes).unwrap();
    let device = replay::device::device(&f.source(), &f.recalled).unwrap();
    assert_eq!(checked.report, device, "the history and the state after each event, as replay device has them");
    let (directive_id, directive_at) = &built.directives[0];
    assert_eq!(checked.directives.len(), 1);
    assert_eq!(checked.directives[0].position, *directive_at);
    let stop = checked.report.events.iter().find(|e| e.kind == "stopped").expect("the terminal was stopped");
    assert_eq!(stop.event["directive"], directive_id.as_str(), "{:?}", stop.event);
    assert!(stop.position > *directive_at);
    assert_eq!(stop.state.as_ref().unwrap().status, "stopped");
    assert_eq!(checked.report.events.last().unwrap().state.as_ref().unwrap().status, "replaced");
    // Nothing of other terminals but the other half of the replacement.
    for (_, what) in kinds(&built.evidence) {
        let ours = what.starts_with(f.recalled.as_str());
        assert!(ours || what.starts_with("directive") || what.ends_with("issued"), "{what}");
    }

    // The binary: exit 0, the directive named, the table exactly replay device's.
    let file = f.write("recalled.evidence", &bytes);
    let o = replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("directive {directive_id} at position {directive_at}")), "{out}");
    let d = replay(&["device", p(&f.ledger), f.recalled.as_str()]);
    assert!(out.ends_with(&stdout(&d)), "evidence check:\n{out}\nreplay device:\n{}", stdout(&d));
    let o = replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file), "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["device"], f.recalled.as_str());
    assert_eq!(json["directives"][0]["position"], *directive_at);
    assert_eq!(json["checkpoint"]["origin"], ORIGIN);
    // A witness quorum that the checkpoint does not meet: exit 1.
    let w = SigningKey::generate("witness.example/w1", KeyType::Cosignature).unwrap();
    let w_file = f.write("w1.vkey", w.verifier_key().to_string().as_bytes());
    let o = replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file), "--witness", p(&w_file)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("witnesses cosigned"), "{}", stderr(&o));
}

#[test]
fn a_truncated_file_is_refused_at_every_cut() {
    let f = fleet(7, ORIGIN);
    let bytes = f.evidence(&f.recalled, &f.head_note()).to_bytes();
    let sn_len = f.recalled.as_str().len();
    let note_len = f.head_note().len();
    let cuts =
        [0, 4, 9, 11, 12 + sn_len - 1, 12 + sn_len + 2, 12 + sn_len + 4 + note_len / 2, 12 + sn_len + 4 + note_len + 2];
    let mut cuts = cuts.to_vec();
    cuts.extend([bytes.len() / 2, bytes.len() - 33, bytes.len() - 1]);
    for cut in cuts {
        let err = f.check(&bytes[..cut]).unwrap_err();
        if cut < 8 {
            assert!(matches!(err, EvidenceError::Magic), "cut at {cut}: {err}");
        } else {
            assert!(matches!(err, EvidenceError::Truncated { .. }), "cut at {cut}: {err}");
            assert!(err.to_string().contains("truncated at byte"), "{err}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(f.check(&longer), Err(EvidenceError::TrailingBytes { extra: 1, .. })));
    let file = f.write("cut.evidence", &bytes[..bytes.len() / 2]);
    let o = replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("cut.evidence: evidence does not verify: truncated at byte"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn reordered_altered_and_dropped_records_are_refused_naming_the_position() {
    let f = fleet(7, ORIGIN);
    let evidence = f.evidence(&f.recalled, &f.head_note());
    let kinds = kinds(&evidence);
    let own: Vec<usize> = (0..kinds.len()).filter(|i| kinds[*i].1.starts_with(&format!("{} ", f.recalled))).collect();
    assert!(own.len() >= 4, "{kinds:?}");

    // Two records swapped.
    let mut swapped = evidence.clone();
    swapped.entries.swap(own[1], own[2]);
    let err = f.check(&swapped.to_bytes()).unwrap_err();
    let (later, earlier) = (evidence.entries[own[2]].position, evidence.entries[own[1]].position);
    assert!(
        matches!(err, EvidenceError::Order { position, previous } if position == earlier && previous == later),
        "{err}"
    );

    // One byte of one record changed (in the body, after the format byte).
    let target = own[2];
    let position = evidence.entries[target].position;
    let mut bytes = evidence.to_bytes();
    let body_at = offset_of_body(&evidence, target);
    bytes[body_at + evidence.entries[target].body.len() - 1] ^= 0x01;
    let err = f.check(&bytes).unwrap_err();
    assert!(matches!(err, EvidenceError::Inclusion { position: p, .. } if p == position), "{err}");
    assert!(err.to_string().contains(&format!("position {position}")), "{err}");
    let file = f.write("altered.evidence", &bytes);
    let o = replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("position {position}: the record is not in the log")), "{}", stderr(&o));

    // A record of the terminal dropped from the middle: the next one's version shows the gap.
    let mut dropped = evidence.clone();
    dropped.entries.remove(own[1]);
    let next = evidence.entries[own[2]].position;
    let err = f.check(&dropped.to_bytes()).unwrap_err();
    assert!(
        matches!(err, EvidenceError::VersionGap { position, expected: 1, found: 2, .. } if position == next),
        "{err}"
    );

    // The directive record dropped: the stop names it, so the evidence is incomplete.
    let d = kinds.iter().position(|(_, w)| w.starts_with("directive")).unwrap();
    let mut no_directive = evidence.clone();
    no_directive.entries.remove(d);
    let err = f.check(&no_directive.to_bytes()).unwrap_err();
    assert!(matches!(err, EvidenceError::MissingDirective { .. }), "{err}");

    // The other half of the replacement dropped.
    let partner = kinds.iter().position(|(_, w)| w.ends_with("issued") && !w.starts_with(f.recalled.as_str())).unwrap();
    let mut no_partner = evidence.clone();
    no_partner.entries.remove(partner);
    let err = f.check(&no_partner.to_bytes()).unwrap_err();
    assert!(matches!(err, EvidenceError::MissingPartner { event: "replaced", .. }), "{err}");

    // Another terminal's record (with a valid proof) slipped in: it has no business there.
    let other = other_terminal(&f);
    let theirs = f.evidence(&other, &f.head_note());
    let mut foreign = evidence.clone();
    let extra = theirs.entries[0].clone();
    let at = foreign.entries.partition_point(|e| e.position < extra.position);
    foreign.entries.insert(at, extra.clone());
    let err = f.check(&foreign.to_bytes()).unwrap_err();
    assert!(matches!(err, EvidenceError::Foreign { position, .. } if position == extra.position), "{err}");
}

#[test]
fn evidence_against_another_log_a_wrong_key_or_another_size_is_refused() {
    let f = fleet(7, ORIGIN);
    let g = fleet(8, ORIGIN);
    let evidence = f.evidence(&f.recalled, &f.head_note());

    // Signed by another key of the same name (another log claiming the origin): the signature fails.
    let err = check(&evidence.to_bytes(), &g.vkey, &[], 0).unwrap_err();
    assert!(matches!(err, EvidenceError::Checkpoint(_)), "{err}");
    let o = replay(&["evidence", "check", p(&g.write("f.evidence", &evidence.to_bytes())), "--key", p(&g.vkey_file)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("the evidence's checkpoint"), "{}", stderr(&o));

    // Our records under another ledger's checkpoint signed with our key: no proof reaches its root.
    let mut swapped = evidence.clone();
    let g_size = g.source().head.size;
    swapped.note = g.note(g_size, &f.key);
    let err = f.check(&swapped.to_bytes()).unwrap_err();
    assert!(matches!(err, EvidenceError::Inclusion { .. } | EvidenceError::PastCheckpoint { .. }), "{err}");
    // And build refuses another log's checkpoint.
    let err =
        build(&f.source(), &f.recalled, &g.note(g_size.min(f.source().head.size), &g.key), &mut |_| {}).unwrap_err();
    assert_eq!(err.class(), replay::error::Class::Data, "{err}");
    assert!(err.to_string().contains("not a checkpoint of this log"), "{err}");

    // Proofs for one size under a checkpoint of another size of the same log.
    let size = f.source().head.size;
    let last_own = evidence.entries.iter().map(|e| e.position).max().unwrap();
    let mut other_size = evidence.clone();
    other_size.note = f.note(size - 1, &f.key);
    assert!(last_own < size - 1, "the last record of the log is not the terminal's");
    let err = f.check(&other_size.to_bytes()).unwrap_err();
    assert!(matches!(err, EvidenceError::Inclusion { size: s, .. } if s == size - 1), "{err}");

    // The terminal's evidence against an earlier checkpoint of the same log verifies (it is then only
    // the records up to that size).
    let mid = evidence.entries[evidence.entries.len() / 2].position + 1;
    let early = f.evidence(&f.recalled, &f.note(mid, &f.key));
    let checked = f.check(&early.to_bytes()).unwrap();
    assert!(checked.report.events.iter().all(|e| e.position < mid));

    // A terminal that is not in the log.
    let err = build(&f.source(), &Sn::parse("NOPE0000000").unwrap(), &f.head_note(), &mut |_| {}).unwrap_err();
    assert_eq!(err.class(), replay::error::Class::Data, "{err}");
    assert!(err.to_string().contains("does not appear"), "{err}");
}

/// The byte offset of entry `index`'s body in the file.
fn offset_of_body(e: &Evidence, index: usize) -> usize {
    let mut at = 8 + 2 + 2 + e.device.as_str().len() + 4 + e.note.len() + 4;
    for entry in e.entries.iter().take(index) {
        at += 8 + 4 + entry.body.len() + 1 + 32 * entry.proof.len();
    }
    at + 8 + 4
}

/// A terminal with no replacement and no directive stop.
fn other_terminal(f: &Fleet) -> Sn {
    let source = f.source();
    for record in log::RecordIter::new(source.frames(0, source.head.size)) {
        let record = record.unwrap();
        if let Event::Terminal(t) = &record.event {
            if let TerminalEvent::Issued(issued) = &t.event {
                if issued.replaces.is_none() && t.device != f.recalled {
                    return t.device.clone();
                }
            }
        }
    }
    panic!("no other terminal");
}

#[test]
fn a_cosigned_checkpoint_is_carried_verbatim_and_its_witnesses_count() {
    let f = fleet(7, ORIGIN);
    let witness = SigningKey::generate("regulator.example/w1", KeyType::Cosignature).unwrap();
    let mut note = tlog::Note::parse(&f.head_note()).unwrap();
    note.sign(&tlog::ed25519::Cosigner::new(&witness, 1_764_633_600).unwrap()).unwrap();
    let cosigned = note.to_bytes();
    let evidence = f.evidence(&f.recalled, &cosigned);
    assert_eq!(evidence.note, cosigned);
    let checked = check(&evidence.to_bytes(), &f.vkey, &[witness.verifier_key()], 1).unwrap();
    assert_eq!(checked.verified.witnesses, [("regulator.example/w1".to_owned(), 1_764_633_600)]);
    let file = f.write("cosigned.evidence", &evidence.to_bytes());
    let wkey = witness.verifier_key().to_string();
    let o =
        replay(&["evidence", "check", p(&file), "--key", p(&f.vkey_file), "--witness", &wkey, "--min-witnesses", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("cosigned by regulator.example/w1 at 1764633600"), "{}", stdout(&o));
    // A witness key given as the log's key: usage, exit 2.
    let o = replay(&["evidence", "check", p(&file), "--key", &wkey]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // No --key: exit 2.
    let o = replay(&["evidence", "check", p(&file)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

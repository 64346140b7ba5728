//! End to end on 127.0.0.1: a ledger appends and submits checkpoints to a running `posledger-witness`
//! across many appends; then the log is cut, rewritten and forked in turn, and both the witness and
//! replay's checkpoint verification refuse each case. Also: the witness survives kill -9 at any point
//! without losing or rolling back its state.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use ledger::{
    AppendEvent, Contract, ContractId, DeviceEvent, Event, Issued, Ledger, MerchantId, ModelCode, ProviderId,
    RegionCode, Sn, TerminalEvent,
};
use posledger::checkpoints::{self, CheckpointStoreError};
use posledger::witness_client::{submit, SubmitError};
use replay::checkpoint::{check, fork_bounds, Standing};
use tlog::{keyfile, KeyType, SigningKey, VerifierKey};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const ORIGIN: &str = "acquirer.example/posledger/test";

/// A witness process; killed when dropped.
struct WitnessProcess {
    child: Child,
    url: String,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_witness(state: &Path, key: &Path, log_vkey: &VerifierKey) -> Result<WitnessProcess> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_posledger-witness"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .arg("--key")
        .arg(key)
        .arg("--log")
        .arg(log_vkey.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        return Err(format!("the witness did not start: {line:?} {err}").into());
    };
    Ok(WitnessProcess { url: format!("http://{addr}"), child })
}

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default() + chrono::Duration::minutes(minute)
}

fn issued(sn: &str, minute: i64) -> Result<AppendEvent> {
    Ok(AppendEvent::from(Event::Terminal(DeviceEvent {
        device: Sn::parse(sn)?,
        at: at(minute),
        event: TerminalEvent::Issued(Box::new(Issued {
            model: ModelCode::parse("PAX-A920")?,
            merchant: MerchantId::parse("M001")?,
            provider: ProviderId::parse("lakala")?,
            region: RegionCode::parse("310000")?,
            contract: Contract { id: ContractId::parse("C1")?, start: at(0), end: at(600_000) },
            replaces: None,
        })),
    })))
}

/// Round `r` of a log: 7 + r terminals issued at minute r; `tag` tells logs apart.
fn round(r: i64, tag: &str) -> Result<Vec<AppendEvent>> {
    (0..7 + r).map(|i| issued(&format!("{tag}{r:03}X{i:03}"), r)).collect()
}

/// A ledger of the given rounds, each one append recorded at its minute.
fn build(dir: &Path, rounds: &[(i64, &str)]) -> Result<Ledger> {
    let ledger = Ledger::open(dir)?;
    for &(r, tag) in rounds {
        ledger.append_at(round(r, tag)?, Some(at(r)))?;
    }
    Ok(ledger)
}

fn check_all(
    dir: &Path,
    notes: &[(&str, &[u8])],
    log: &VerifierKey,
    witness: &VerifierKey,
) -> Result<Vec<replay::checkpoint::Checked>> {
    let source = replay::open(dir)?;
    let mut out = Vec::new();
    for (name, note) in notes {
        out.push(check(&source, name, note, log, std::slice::from_ref(witness), 1, &mut |_| {})?);
    }
    Ok(out)
}

#[test]
fn a_witnessed_ledger_and_its_cut_rewritten_and_forked_copies() -> Result {
    let tmp = tempfile::tempdir()?;
    let log_key = SigningKey::generate(ORIGIN, KeyType::Note)?;
    let witness_key = SigningKey::generate("regulator.example/w1", KeyType::Cosignature)?;
    let witness_key_file = tmp.path().join("w.key");
    keyfile::create_private(&witness_key_file, &witness_key)?;
    let (log_vkey, witness_vkey) = (log_key.verifier_key(), witness_key.verifier_key());
    let witness = start_witness(&tmp.path().join("state"), &witness_key_file, &log_vkey)?;

    // Ten appends, each signed and cosigned; the regulator keeps round 4's and round 9's checkpoints.
    let main_dir = tmp.path().join("main");
    let ledger = Ledger::open(&main_dir)?;
    let mut witnessed_size = 0;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for r in 0..10 {
        ledger.append_at(round(r, "A")?, Some(at(r)))?;
        let signed = checkpoints::sign_head(&ledger, &log_key)?;
        let cosignatures = submit(&ledger, &signed, &witness.url, &witness_vkey, witnessed_size)?;
        let path = checkpoints::store_cosigned(&main_dir, &signed, &cosignatures)?;
        witnessed_size = signed.checkpoint.size;
        if r == 4 || r == 9 {
            kept.push(std::fs::read(path)?);
        }
    }
    // A submission from a stale size is corrected by the witness's 409 and still cosigned.
    let again = checkpoints::sign_head(&ledger, &log_key)?;
    assert!(!again.new);
    submit(&ledger, &again, &witness.url, &witness_vkey, 3)?;
    drop(ledger);
    let (yesterday, today) = (kept.first().ok_or("round 4")?.as_slice(), kept.get(1).ok_or("round 9")?.as_slice());
    let notes = [("yesterday", yesterday), ("today", today)];
    let checked = check_all(&main_dir, &notes, &log_vkey, &witness_vkey)?;
    assert!(checked.iter().all(|c| c.standing == Standing::Extends), "{checked:?}");

    let rounds_a: Vec<(i64, &str)> = (0..10).map(|r| (r, "A")).collect();

    // Cut: the first six rounds only.
    let cut_dir = tmp.path().join("cut");
    let cut = build(&cut_dir, rounds_a.get(..6).ok_or("rounds")?)?;
    // With the ledger's own checkpoints it refuses to sign a smaller head.
    copy_checkpoints(&main_dir, &cut_dir)?;
    assert!(matches!(checkpoints::sign_head(&cut, &log_key), Err(CheckpointStoreError::Cut { .. })));
    std::fs::remove_dir_all(cut_dir.join(checkpoints::CHECKPOINTS_DIR))?;
    // Without them it signs, but the witness holds a larger tree.
    let signed = checkpoints::sign_head(&cut, &log_key)?;
    let refused =
        submit(&cut, &signed, &witness.url, &witness_vkey, 0).err().ok_or("the witness cosigned a cut log")?;
    assert!(matches!(refused, SubmitError::WitnessAhead { witness, .. } if witness == witnessed_size), "{refused}");
    drop(cut);
    let checked = check_all(&cut_dir, &notes, &log_vkey, &witness_vkey)?;
    assert_eq!(checked.get(1).map(|c| &c.standing), Some(&Standing::Shorter { size: signed.checkpoint.size }));

    // Rewritten: the same ten rounds, one of them with other records (same size).
    let rewritten_dir = tmp.path().join("rewritten");
    let mut rounds_r = rounds_a.clone();
    if let Some(r) = rounds_r.get_mut(2) {
        *r = (2, "B");
    }
    let rewritten = build(&rewritten_dir, &rounds_r)?;
    copy_checkpoints(&main_dir, &rewritten_dir)?;
    assert!(matches!(checkpoints::sign_head(&rewritten, &log_key), Err(CheckpointStoreError::Rewritten { .. })));
    std::fs::remove_dir_all(rewritten_dir.join(checkpoints::CHECKPOINTS_DIR))?;
    let signed = checkpoints::sign_head(&rewritten, &log_key)?;
    assert_eq!(signed.checkpoint.size, witnessed_size);
    let refused =
        submit(&rewritten, &signed, &witness.url, &witness_vkey, witnessed_size).err().ok_or("cosigned a rewrite")?;
    assert!(matches!(refused, SubmitError::Refused { status: 422, .. }), "{refused}");
    drop(rewritten);
    let checked = check_all(&rewritten_dir, &notes, &log_vkey, &witness_vkey)?;
    assert!(checked.iter().all(|c| matches!(c.standing, Standing::Differs { .. })), "{checked:?}");

    // Forked: the first five rounds, then another history, longer than the witnessed one.
    let fork_dir = tmp.path().join("fork");
    let mut rounds_f: Vec<(i64, &str)> = rounds_a.get(..5).ok_or("rounds")?.to_vec();
    rounds_f.extend((5..12).map(|r| (r, "F")));
    let fork = build(&fork_dir, &rounds_f)?;
    let signed = checkpoints::sign_head(&fork, &log_key)?;
    assert!(signed.checkpoint.size > witnessed_size);
    let refused = submit(&fork, &signed, &witness.url, &witness_vkey, 0).err().ok_or("cosigned a fork")?;
    assert!(matches!(refused, SubmitError::Refused { status: 422, .. }), "{refused}");
    drop(fork);
    let checked = check_all(&fork_dir, &notes, &log_vkey, &witness_vkey)?;
    let sizes: Vec<u64> = checked.iter().map(|c| c.verified.checkpoint.size).collect();
    assert_eq!(checked.first().map(|c| &c.standing), Some(&Standing::Extends));
    assert!(matches!(checked.get(1).map(|c| &c.standing), Some(Standing::Differs { .. })));
    assert_eq!(fork_bounds(&checked), (sizes.first().copied(), sizes.get(1).copied()));

    // Through all of it the witness kept the true log's latest checkpoint.
    let held = witness_checkpoint(&witness.url)?;
    let verified = tlog::checkpoint::verify(&held, &log_vkey, &[witness_vkey], 1)?;
    assert_eq!(verified.checkpoint.size, witnessed_size);
    Ok(())
}

fn witness_checkpoint(url: &str) -> Result<Vec<u8>> {
    let hash = witness::state::origin_hash(ORIGIN);
    let mut response = ureq::get(&format!("{url}/{hash}/checkpoint")).call()?;
    Ok(response.body_mut().read_to_vec()?)
}

fn copy_checkpoints(from: &Path, to: &Path) -> Result {
    let (src, dst) = (from.join(checkpoints::CHECKPOINTS_DIR), to.join(checkpoints::CHECKPOINTS_DIR));
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dst.join(entry.file_name()))?;
    }
    Ok(())
}

/// Leaves of a log held in memory, for requests built without a ledger.
fn request(leaves: &[Vec<u8>], old: usize, new: usize, key: &SigningKey) -> Result<Vec<u8>> {
    let refs: Vec<&[u8]> = leaves.iter().take(new).map(Vec::as_slice).collect();
    let proof = if old == 0 { Vec::new() } else { log::merkle::consistency_proof(&refs, old) };
    let note = tlog::Checkpoint::new(ORIGIN, new as u64, log::merkle::root(&refs)).sign(key)?;
    Ok(tlog::AddCheckpoint { old_size: old as u64, proof, checkpoint: note }.to_bytes())
}

#[test]
fn the_witness_survives_kill_9_without_losing_or_rolling_back_its_state() -> Result {
    let cycles: usize = std::env::var("POSLEDGER_WITNESS_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let tmp = tempfile::tempdir()?;
    let log_key = SigningKey::generate(ORIGIN, KeyType::Note)?;
    let witness_key = SigningKey::generate("regulator.example/w1", KeyType::Cosignature)?;
    let key_file: PathBuf = tmp.path().join("w.key");
    keyfile::create_private(&key_file, &witness_key)?;
    let state = tmp.path().join("state");
    let leaves: Vec<Vec<u8>> = (0..10_000).map(|i| format!("record {i}").into_bytes()).collect();
    // One acknowledged checkpoint before any kill, so the test never passes on nothing acknowledged.
    let mut acknowledged = {
        let witness = start_witness(&state, &key_file, &log_key.verifier_key())?;
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let response =
            agent.post(&format!("{}/add-checkpoint", witness.url)).send(&request(&leaves, 0, 10, &log_key)?[..])?;
        assert_eq!(response.status().as_u16(), 200);
        10usize
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for cycle in 0..cycles {
        let witness = start_witness(&state, &key_file, &log_key.verifier_key())?;
        // After a restart the witness holds at least every acknowledged size (nothing lost), and
        // what it holds verifies (nothing half-written); a smaller size is never accepted.
        let held = witness_checkpoint(&witness.url).ok();
        let held_size = match held {
            Some(note) => {
                tlog::checkpoint::verify(&note, &log_key.verifier_key(), &[witness_key.verifier_key()], 1)?
                    .checkpoint
                    .size as usize
            }
            None => 0,
        };
        assert!(
            held_size >= acknowledged,
            "cycle {cycle}: the witness holds {held_size}, {acknowledged} was acknowledged"
        );
        acknowledged = held_size;
        // Submit growing checkpoints on a thread; kill -9 the witness after a pseudo-random delay.
        let url = witness.url.clone();
        let (sizes, log_key2) = (leaves.clone(), SigningKey::parse(&log_key.private_key_text())?);
        let start = held_size;
        let submitter = std::thread::spawn(move || -> usize {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut old = start;
            for step in 1..200 {
                let new = (old + step).min(sizes.len());
                let Ok(body) = request(&sizes, old, new, &log_key2) else { break };
                match agent.post(&format!("{url}/add-checkpoint")).send(&body[..]) {
                    Ok(response) if response.status().as_u16() == 200 => old = new,
                    _ => break,
                }
            }
            old
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 60));
        drop(witness);
        let last_ok = submitter.join().map_err(|_| "the submitter panicked")?;
        acknowledged = acknowledged.max(last_ok);
    }
    // A last start: everything acknowledged is there, and a rollback is refused.
    let witness = start_witness(&state, &key_file, &log_key.verifier_key())?;
    let note = witness_checkpoint(&witness.url)?;
    let held = tlog::checkpoint::verify(&note, &log_key.verifier_key(), &[witness_key.verifier_key()], 1)?
        .checkpoint
        .size as usize;
    assert!(held >= acknowledged, "held {held}, acknowledged {acknowledged}");
    eprintln!("{cycles} kill -9 cycles: the witness held {held} records' checkpoint, {acknowledged} acknowledged");
    let rollback = request(&leaves, held, held, &log_key)?;
    let smaller = request(&leaves, 0, held.saturating_sub(1).max(1), &log_key)?;
    let status = |body: &[u8]| -> Result<u16> {
        Ok(ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(&format!("{}/add-checkpoint", witness.url))
            .send(body)?
            .status()
            .as_u16())
    };
    assert_eq!(status(&rollback)?, 200, "resubmitting the held checkpoint is consistent");
    assert_eq!(status(&smaller)?, 409, "a smaller tree is a rollback");
    Ok(())
}

#[test]
fn garbage_huge_and_slow_requests_get_their_answer_and_change_nothing() -> Result {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir()?;
    let log_key = SigningKey::generate(ORIGIN, KeyType::Note)?;
    let witness_key = SigningKey::generate("regulator.example/w1", KeyType::Cosignature)?;
    let key_file = tmp.path().join("w.key");
    keyfile::create_private(&key_file, &witness_key)?;
    let state = tmp.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_posledger-witness"))
        .args(["serve", "--listen", "127.0.0.1:0", "--timeout-seconds", "1", "--state"])
        .arg(&state)
        .arg("--key")
        .arg(&key_file)
        .arg("--log")
        .arg(log_key.verifier_key().to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let witness = WitnessProcess { url: format!("http://{}", line.trim().trim_start_matches("listening on ")), child };
    let addr = witness.url.trim_start_matches("http://").to_owned();
    let leaves: Vec<Vec<u8>> = (0..50).map(|i| format!("r{i}").into_bytes()).collect();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let post = |body: &[u8]| -> Result<(u16, String)> {
        let mut r = agent.post(&format!("{}/add-checkpoint", witness.url)).send(body)?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    };
    // One good checkpoint, so there is state to keep unchanged.
    assert_eq!(post(&request(&leaves, 0, 20, &log_key)?)?.0, 200);
    let snapshot = || std::fs::read(state.join(format!("{}.checkpoint", witness::state::origin_hash(ORIGIN))));
    let before = snapshot()?;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"garbage".to_vec(), 400),
        (vec![0xff; 1000], 400),
        (b"old 20\n\n\n".to_vec(), 400),
        (b"old 99999999999999999999999\n\n".to_vec(), 400),
        (vec![b'a'; tlog::witness::MAX_REQUEST_BYTES + 1], 413),
        (request(&leaves, 20, 10, &log_key)?, 400),
        (request(&leaves, 5, 30, &log_key)?, 409),
    ];
    for (body, status) in cases {
        let (got, text) = post(&body)?;
        assert_eq!(got, status, "{text}");
        assert!(text.ends_with('\n') && text.lines().count() == 1, "one line: {text:?}");
    }
    let (status, size) = post(&request(&leaves, 0, 30, &log_key)?)?;
    assert_eq!((status, size.as_str()), (409, "20\n"));
    assert_eq!(agent.get(&format!("{}/add-checkpoint", witness.url)).call()?.status().as_u16(), 405);
    assert_eq!(agent.get(&format!("{}/nothing", witness.url)).call()?.status().as_u16(), 404);
    // Slow: headers that never end, a body that never comes. Each is cut within the bound.
    for partial in [
        &b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n"[..],
        b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nold 20\n",
    ] {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(partial)?;
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a slow request held the witness for {:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    assert_eq!(snapshot()?, before, "no refused request changed the state");
    assert_eq!(post(&request(&leaves, 20, 50, &log_key)?)?.0, 200, "the witness still serves");
    Ok(())
}

//! posledger-tlog against an independent implementation: Go's `golang.org/x/mod/sumdb/note` and
//! `sumdb/tlog` (Debian's golang-golang-x-mod-dev, built offline; `.ci/run` installs it). The oracle
//! program is `tests/go-oracle/main.go`. Without Go the test fails, unless POSLEDGER_SKIP_GO_ORACLE=1
//! says to skip it on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

use log::merkle;
use tlog::checkpoint::{hash_b64, Checkpoint};
use tlog::ed25519::Cosigner;
use tlog::note::Note;
use tlog::{KeyType, SigningKey};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

const GOPATH: &str = "/usr/share/gocode";

fn oracle(dir: &Path) -> std::result::Result<Option<PathBuf>, Box<dyn std::error::Error>> {
    let have_go = Command::new("go").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !have_go || !Path::new(GOPATH).join("src/golang.org/x/mod/sumdb/note").is_dir() {
        if std::env::var_os("POSLEDGER_SKIP_GO_ORACLE").is_some() {
            eprintln!("skipped: POSLEDGER_SKIP_GO_ORACLE is set and Go's x/mod is not installed");
            return Ok(None);
        }
        return Err("the Go oracle needs `go` and Debian's golang-golang-x-mod-dev (apt-get install golang-go golang-golang-x-mod-dev), or POSLEDGER_SKIP_GO_ORACLE=1".into());
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go-oracle/main.go");
    let binary = dir.join("oracle");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .output()?;
    if !out.status.success() {
        return Err(format!("go build: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(Some(binary))
}

fn run(binary: &Path, args: &[&str]) -> std::result::Result<(bool, String), Box<dyn std::error::Error>> {
    let out = Command::new(binary).args(args).output()?;
    let text = String::from_utf8(out.stdout)? + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

#[test]
fn go_and_posledger_agree_on_keys_notes_cosignatures_and_consistency_proofs() -> Result {
    let dir = tempfile::tempdir()?;
    let Some(go) = oracle(dir.path())? else { return Ok(()) };
    let leaves: Vec<Vec<u8>> = (0..70).map(|i| format!("record {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();

    // Keys Go generates are keys posledger reads; both sign the same text to the same bytes.
    let (ok, keys) = run(&go, &["generate", "acquirer.example/posledger/7"])?;
    assert!(ok, "{keys}");
    let mut lines = keys.lines();
    let (skey, vkey) = (lines.next().ok_or("no skey")?, lines.next().ok_or("no vkey")?);
    let log = SigningKey::parse(skey)?;
    assert_eq!(log.verifier_key().to_string(), vkey);
    for size in [0usize, 1, 2, 7, 64, 70] {
        let root = merkle::root(refs.get(..size).unwrap_or_default());
        let checkpoint = Checkpoint::new("acquirer.example/posledger/7", size as u64, root);
        let ours = checkpoint.sign(&log)?;
        let text_path = dir.path().join("text");
        std::fs::write(&text_path, checkpoint.to_text())?;
        let (ok, theirs) = run(&go, &["sign", skey, &text_path.to_string_lossy()])?;
        assert!(ok, "{theirs}");
        assert_eq!(String::from_utf8(ours.clone())?, theirs, "size {size}");
        let note_path = dir.path().join("note");
        std::fs::write(&note_path, &ours)?;
        let (ok, text) = run(&go, &["verify", vkey, &note_path.to_string_lossy()])?;
        assert!(ok, "{text}");
        assert_eq!(text, checkpoint.to_text());

        // A witness's cosignature verifies with Go's crypto/ed25519 over cosignature/v1.
        let witness = SigningKey::generate("regulator.example/w1", KeyType::Cosignature)?;
        let mut note = Note::parse(&ours)?;
        note.sign(&Cosigner::new(&witness, 1_764_633_600 + size as u64).ok_or("cosigner")?)?;
        std::fs::write(&note_path, note.to_bytes())?;
        let (ok, timestamp) =
            run(&go, &["cosig-verify", &witness.verifier_key().to_string(), &note_path.to_string_lossy()])?;
        assert!(ok, "{timestamp}");
        assert_eq!(timestamp.trim(), (1_764_633_600 + size as u64).to_string());
        // And Go refuses a note whose text was changed after signing.
        std::fs::write(&note_path, String::from_utf8(ours)?.replacen("posledger/7", "posledger/8", 1))?;
        assert!(!run(&go, &["verify", vkey, &note_path.to_string_lossy()])?.0);
    }

    // Consistency proofs from log::merkle check with Go's tlog.CheckTree; changed ones do not.
    for new in [1usize, 2, 3, 8, 13, 64, 70] {
        for old in 1..=new {
            let proof = merkle::consistency_proof(refs.get(..new).unwrap_or_default(), old);
            let old_root = hash_b64(&merkle::root(refs.get(..old).unwrap_or_default()));
            let new_root = hash_b64(&merkle::root(refs.get(..new).unwrap_or_default()));
            let (old_s, new_s) = (old.to_string(), new.to_string());
            let mut args = vec!["consistency", &old_s, &old_root, &new_s, &new_root];
            let hashes: Vec<String> = proof.iter().map(hash_b64).collect();
            args.extend(hashes.iter().map(String::as_str));
            let (ok, out) = run(&go, &args)?;
            assert!(ok, "{old}->{new}: {out}");
            tlog::proof::check_consistency(
                old as u64,
                &merkle::root(refs.get(..old).unwrap_or_default()),
                new as u64,
                &merkle::root(refs.get(..new).unwrap_or_default()),
                &proof,
            )?;
            if let Some(last) = args.last_mut().filter(|_| !proof.is_empty()) {
                let changed = hash_b64(&merkle::leaf_hash(last.as_bytes()));
                *last = &*Box::leak(changed.into_boxed_str());
                assert!(!run(&go, &args)?.0, "Go accepted a changed proof {old}->{new}");
            }
        }
    }
    Ok(())
}

//! The witness's decision for every answer of c2sp.org/tlog-witness `add-checkpoint`.

use log::merkle;
use tlog::checkpoint::{self, Checkpoint};
use tlog::witness::{decide, AddCheckpoint, Latest, LogPolicy};
use tlog::{KeyType, Refusal, SigningKey};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    log: SigningKey,
    witness: SigningKey,
    policy: Vec<LogPolicy>,
    leaves: Vec<Vec<u8>>,
}

const ORIGIN: &str = "acquirer.example/posledger/1";

impl Fixture {
    fn new() -> std::result::Result<Fixture, Box<dyn std::error::Error>> {
        let log = SigningKey::generate(ORIGIN, KeyType::Note)?;
        let witness = SigningKey::generate("regulator.example/w1", KeyType::Cosignature)?;
        let policy = vec![LogPolicy { origin: ORIGIN.to_owned(), keys: vec![log.verifier_key()] }];
        let leaves = (0..40).map(|i| format!("record {i}").into_bytes()).collect();
        Ok(Fixture { log, witness, policy, leaves })
    }

    fn root(&self, size: usize) -> merkle::Hash {
        let refs: Vec<&[u8]> = self.leaves.iter().take(size).map(Vec::as_slice).collect();
        merkle::root(&refs)
    }

    fn request(&self, old: usize, new: usize) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error>> {
        let refs: Vec<&[u8]> = self.leaves.iter().take(new).map(Vec::as_slice).collect();
        let proof = if old == 0 { Vec::new() } else { merkle::consistency_proof(&refs, old) };
        let note = Checkpoint::new(ORIGIN, new as u64, self.root(new)).sign(&self.log)?;
        Ok(AddCheckpoint { old_size: old as u64, proof, checkpoint: note }.to_bytes())
    }

    fn decide(&self, held: Option<Latest>, body: &[u8]) -> std::result::Result<tlog::witness::Accepted, Refusal> {
        decide(&self.policy, &|_| held.clone(), body, &self.witness, 1_764_633_600)
    }
}

#[test]
fn a_consistent_checkpoint_is_cosigned_and_the_cosignature_verifies() -> Result {
    let f = Fixture::new()?;
    let accepted = f.decide(None, &f.request(0, 10)?)?;
    assert_eq!(accepted.latest(), Latest { size: 10, root: f.root(10) });
    let verified = checkpoint::verify(&accepted.note, &f.log.verifier_key(), &[f.witness.verifier_key()], 1)?;
    assert_eq!(verified.checkpoint.size, 10);
    // The response body is the cosignature line(s) only, each `— name base64\n`.
    let body = accepted.body();
    assert!(body.starts_with("\u{2014} regulator.example/w1 ") && body.ends_with('\n'), "{body}");
    let next = f.decide(Some(accepted.latest()), &f.request(10, 25)?)?;
    assert_eq!(next.checkpoint.size, 25);
    // The same checkpoint again is consistent with itself (old = new, same root).
    f.decide(Some(next.latest()), &f.request(25, 25)?)?;
    Ok(())
}

#[test]
fn each_refusal_has_the_status_the_spec_gives() -> Result {
    let f = Fixture::new()?;
    let held = Latest { size: 10, root: f.root(10) };
    // 409: the old size is not what the witness holds; the body is its size.
    let refusal = f.decide(Some(held.clone()), &f.request(5, 20)?).err().ok_or("accepted")?;
    assert_eq!((refusal.status(), refusal.body()), (409, "10\n".to_owned()));
    // 409 for a first submission that claims an old size.
    assert_eq!(f.decide(None, &f.request(5, 20)?).err().map(|r| r.status()), Some(409));
    // 400: old size above the checkpoint's; malformed bodies.
    let mut body = f.request(10, 20)?;
    body.splice(0..6, b"old 30".iter().copied());
    assert_eq!(f.decide(Some(held.clone()), &body).err().map(|r| r.status()), Some(400));
    for garbage in [&b""[..], b"old\n\n", b"old 01\n\n", b"new 1\n\nx", b"old 1\nnot base64\n\n", b"old 0\n"] {
        assert_eq!(f.decide(None, garbage).err().map(|r| r.status()), Some(400), "{garbage:?}");
    }
    // 404: an origin the witness does not know.
    let other = SigningKey::generate("other.example/log", KeyType::Note)?;
    let note = Checkpoint::new("other.example/log", 1, f.root(1)).sign(&other)?;
    let body = AddCheckpoint { old_size: 0, proof: vec![], checkpoint: note }.to_bytes();
    assert_eq!(f.decide(None, &body).err().map(|r| r.status()), Some(404));
    // 403: the right origin signed by a key the witness does not trust.
    let impostor = SigningKey::generate(ORIGIN, KeyType::Note)?;
    let note = Checkpoint::new(ORIGIN, 1, f.root(1)).sign(&impostor)?;
    let body = AddCheckpoint { old_size: 0, proof: vec![], checkpoint: note }.to_bytes();
    assert_eq!(f.decide(None, &body).err().map(|r| r.status()), Some(403));
    // 403: the trusted key's signature over a changed text.
    let good = String::from_utf8(f.request(10, 20)?)?;
    let forged = good.replacen("\n20\n", "\n21\n", 1);
    assert_eq!(f.decide(Some(held.clone()), forged.as_bytes()).err().map(|r| r.status()), Some(403));
    // 422: a proof that does not verify (a forked log with the same size).
    let mut forked = Fixture::new()?;
    forked.log = SigningKey::parse(&f.log.private_key_text())?;
    forked.policy = f.policy.clone();
    if let Some(leaf) = forked.leaves.get_mut(3) {
        *leaf = b"rewritten".to_vec();
    }
    let refusal = forked.decide(Some(held.clone()), &forked.request(10, 20)?).err().ok_or("accepted a fork")?;
    assert_eq!(refusal.status(), 422, "{refusal}");
    // 422: the same size with another root.
    assert_eq!(forked.decide(Some(held.clone()), &forked.request(10, 10)?).err().map(|r| r.status()), Some(422));
    // 422: a proof from size 0; an empty tree with a non-empty root.
    let mut body = AddCheckpoint::parse(&f.request(0, 10)?)?;
    body.proof = vec![f.root(1)];
    assert_eq!(f.decide(None, &body.to_bytes()).err().map(|r| r.status()), Some(422));
    let note = Checkpoint::new(ORIGIN, 0, f.root(1)).sign(&f.log)?;
    let body = AddCheckpoint { old_size: 0, proof: vec![], checkpoint: note }.to_bytes();
    assert_eq!(f.decide(None, &body).err().map(|r| r.status()), Some(422));
    // A rollback (a smaller checkpoint than held) can only be asked with old = held > new: 400.
    assert_eq!(f.decide(Some(held), &f.request(5, 5)?).err().map(|r| r.status()), Some(409));
    Ok(())
}

#[test]
fn a_request_round_trips_and_bounds_its_proof() -> Result {
    let f = Fixture::new()?;
    let body = f.request(7, 33)?;
    let parsed = AddCheckpoint::parse(&body)?;
    assert_eq!(parsed.to_bytes(), body);
    let mut long = parsed.clone();
    long.proof = vec![[1; 32]; 64];
    assert!(AddCheckpoint::parse(&long.to_bytes()).is_err());
    assert!(AddCheckpoint::parse(&vec![b'x'; tlog::witness::MAX_REQUEST_BYTES + 1]).is_err());
    Ok(())
}

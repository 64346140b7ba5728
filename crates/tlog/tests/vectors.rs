//! Known-answer vectors of the specifications and of Go's `golang.org/x/mod/sumdb/note`, and
//! Cloudflare's `signed_note` crate as an independent implementation.

use tlog::checkpoint::{self, Checkpoint};
use tlog::ed25519::{Cosigner, PlainSigner};
use tlog::note::{Note, NoteError};
use tlog::{KeyType, SigningKey, VerifierKey};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn the_go_peter_neumann_note_verifies() -> Result {
    let key = VerifierKey::parse(PETER_VKEY)?;
    let opened = Note::parse(PETER_NOTE.as_bytes())?.open(&[&key])?;
    assert_eq!(opened.text, PETER_TEXT);
    assert_eq!(opened.verified.len(), 1);
    Ok(())
}

#[test]
fn the_go_peter_neumann_note_is_re_signed_byte_for_byte() -> Result {
    let key = SigningKey::parse(PETER_SKEY)?;
    let signer = PlainSigner::new(&key).ok_or("not a note key")?;
    let mut note = Note::unsigned(PETER_TEXT)?;
    note.sign(&signer)?;
    assert_eq!(String::from_utf8(note.to_bytes())?, PETER_NOTE);
    Ok(())
}

#[test]
fn the_signed_note_spec_example_verifies() -> Result {
    let key = VerifierKey::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")?;
    let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    Note::parse(note.as_bytes())?.open(&[&key])?;
    Ok(())
}

#[test]
fn a_changed_text_or_signature_is_refused_and_unknown_keys_are_ignored() -> Result {
    let key = VerifierKey::parse(PETER_VKEY)?;
    let changed = PETER_NOTE.replace("problem,", "problem;");
    assert!(matches!(Note::parse(changed.as_bytes())?.open(&[&key]), Err(NoteError::BadSignature { .. })));
    let other = SigningKey::generate("EnochRoot", KeyType::Note)?;
    let mut note = Note::parse(PETER_NOTE.as_bytes())?;
    note.sign(&PlainSigner::new(&other).ok_or("not a note key")?)?;
    // Peter's key alone: Enoch's signature is unknown and ignored.
    let opened = Note::parse(&note.to_bytes())?.open(&[&key])?;
    assert_eq!(opened.unverified.len(), 1);
    // Enoch's key alone verifies too; neither known: refused.
    Note::parse(&note.to_bytes())?.open(&[&other.verifier_key()])?;
    let stranger = SigningKey::generate("Stranger", KeyType::Note)?.verifier_key();
    assert_eq!(Note::parse(&note.to_bytes())?.open(&[&stranger]), Err(NoteError::Unverified));
    Ok(())
}

#[test]
fn malformed_notes_are_refused_with_their_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"no blank line\n\xe2\x80\x94 a AAAA\n".to_vec(), "blank"),
        (PETER_NOTE.replace('\n', "\r\n").into_bytes(), "control"),
        ([PETER_NOTE.as_bytes(), b"\xff"].concat(), "utf8"),
        (PETER_NOTE.trim_end().as_bytes().to_vec(), "newline"),
        (PETER_NOTE.replace("\u{2014} ", "- ").into_bytes(), "line"),
        (PETER_NOTE.replace("PeterNeumann x", "Peter+Neumann x").into_bytes(), "line"),
        (vec![b'a'; tlog::note::MAX_NOTE_BYTES + 1], "large"),
    ];
    for (bytes, what) in cases {
        let err = Note::parse(&bytes).err();
        let ok = match what {
            "blank" | "newline" => matches!(err, Some(NoteError::Malformed(_))),
            "control" => matches!(err, Some(NoteError::ControlCharacter { .. })),
            "utf8" => matches!(err, Some(NoteError::NotUtf8 { .. })),
            "line" => matches!(err, Some(NoteError::SignatureLine { line: 1 })),
            _ => matches!(err, Some(NoteError::TooLarge { .. })),
        };
        assert!(ok, "{what}: {err:?}");
    }
    let many = format!("{PETER_TEXT}\n{}", "\u{2014} a AAAAAAA=\n".repeat(101));
    assert_eq!(Note::parse(many.as_bytes()), Err(NoteError::TooManySignatures));
}

#[test]
fn the_cloudflare_signed_note_crate_agrees_both_ways() -> Result {
    use signed_note::Verifiers as _;
    for i in 0..20u32 {
        let name = format!("example.com/log{i}");
        let text = format!("example.com/log{i}\n{}\n{}\n", i * 1000, tlog::checkpoint::hash_b64(&[i as u8; 32]));
        // Ours signs, theirs verifies.
        let ours = SigningKey::generate(&name, KeyType::Note)?;
        let mut note = Note::unsigned(&text)?;
        note.sign(&PlainSigner::new(&ours).ok_or("not a note key")?)?;
        let their_verifier = signed_note::StandardVerifier::new(&ours.verifier_key().to_string())?;
        let list = signed_note::VerifierList::new(vec![Box::new(their_verifier)]);
        let their_note = signed_note::Note::from_bytes(&note.to_bytes())?;
        let (verified, _) = their_note.verify(&list)?;
        assert_eq!(verified.len(), 1);
        // Theirs signs, ours verifies; and their key texts are ours.
        let (skey, vkey) = signed_note::generate_key(&mut rand_core::OsRng, &name);
        let their_signer = signed_note::StandardSigner::new(&skey)?;
        let mut theirs = signed_note::Note::new(text.as_bytes(), &[])?;
        theirs.add_sigs(&[&their_signer])?;
        let our_key = VerifierKey::parse(&vkey)?;
        Note::parse(&theirs.to_bytes())?.open(&[&our_key])?;
        assert_eq!(SigningKey::parse(&skey)?.verifier_key(), our_key);
        let _ = list.verifier(&name, our_key.key_id());
    }
    Ok(())
}

#[test]
fn a_cosignature_signs_the_cosignature_v1_message_and_carries_its_time() -> Result {
    let log = SigningKey::generate("example.com/log", KeyType::Note)?;
    let witness = SigningKey::generate("witness.example/w1", KeyType::Cosignature)?;
    let cp = Checkpoint::new("example.com/log", 20852163, [9; 32]);
    let mut note = Note::parse(&cp.sign(&log)?)?;
    note.sign(&Cosigner::new(&witness, 1679315147).ok_or("not a cosigner")?)?;
    let bytes = note.to_bytes();
    let verified = checkpoint::verify(&bytes, &log.verifier_key(), &[witness.verifier_key()], 1)?;
    assert_eq!(verified.witnesses, vec![("witness.example/w1".to_owned(), 1679315147)]);
    // The cosignature is over "cosignature/v1\ntime T\n" ‖ text: a plain Ed25519 check of the
    // signature bytes over that message succeeds.
    let line = note.signatures().last().ok_or("no cosignature")?;
    let (time, sig) = line.signature().split_first_chunk::<8>().ok_or("short")?;
    assert_eq!(u64::from_be_bytes(*time), 1679315147);
    let message = format!("cosignature/v1\ntime 1679315147\n{}", cp.to_text());
    let plain = tlog::VerifierKey::parse(&witness.verifier_key().to_string().replacen(
        &format!("+{:08x}+", witness.key_id()),
        "+00000000+",
        1,
    ));
    assert!(plain.is_err(), "a vkey with a wrong id must not parse");
    let dalek = ed25519_dalek_check(&witness, message.as_bytes(), sig);
    assert!(dalek);
    // Two witnesses required, one given: refused with the count.
    assert!(matches!(
        checkpoint::verify(&bytes, &log.verifier_key(), &[witness.verifier_key()], 2),
        Err(tlog::CheckpointError::Witnesses { found: 1, required: 2 })
    ));
    // The witness's cosignature alone does not make it the log's checkpoint.
    let stranger = SigningKey::generate("example.com/log", KeyType::Note)?;
    assert!(checkpoint::verify(&bytes, &stranger.verifier_key(), &[witness.verifier_key()], 0).is_err());
    Ok(())
}

/// Checks `sig` over `message` with the public half of `key`, straight through `ed25519-dalek`.
fn ed25519_dalek_check(key: &SigningKey, message: &[u8], sig: &[u8]) -> bool {
    use base64::Engine as _;
    let text = key.verifier_key().to_string();
    let Some(b64) = text.splitn(3, '+').nth(2) else { return false };
    let Ok(material) = base64::engine::general_purpose::STANDARD.decode(b64) else { return false };
    let Some(Ok(public)) = material.get(1..).map(<[u8; 32]>::try_from) else { return false };
    let Ok(public) = ed25519_dalek::VerifyingKey::from_bytes(&public) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
    public.verify_strict(message, &sig).is_ok()
}

#[test]
fn checkpoint_texts_follow_the_spec_exactly() -> Result {
    let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse(text)?;
    assert_eq!((cp.origin.as_str(), cp.size), ("example.com/behind-the-sofa", 20852163));
    assert_eq!(cp.to_text(), text);
    for bad in [
        "example.com/x\n020\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
        "example.com/x\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        "\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "example.com/x\n20\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        "example.com/x\n20\n",
    ] {
        assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
    }
    Ok(())
}

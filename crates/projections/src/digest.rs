//! The fleet digest: SHA-256 over every terminal's state, sorted by SN, canonically encoded
//! (docs/FORMAT.md, "Fleet digest", draws the bytes).
//!
//! The encoding uses names, never interned ids, so two parties get the same digest for the same fleet
//! however their tables were built.

use crate::fleet::{BySn, Fleet, Terminal};
use log::lifecycle::{ContractState, Status};
use sha2::{Digest, Sha256};

/// The tag that starts the digested bytes.
pub const DIGEST_TAG: &[u8] = b"posledger-fleet-v1";

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s);
}

/// Appends the canonical encoding of one terminal to `out`.
pub fn encode_terminal(fleet: &Fleet, sn: &str, t: &Terminal, out: &mut Vec<u8>) {
    encode(fleet, sn.as_bytes(), t, out);
}

fn encode(fleet: &Fleet, sn: &[u8], t: &Terminal, out: &mut Vec<u8>) {
    put_bytes(out, sn);
    out.push(match t.state.status {
        Status::Issued => 0,
        Status::Active => 1,
        Status::Stopped => 2,
        Status::Replaced => 3,
    });
    out.push(match t.state.contract {
        ContractState::Current => 0,
        ContractState::Expired => 1,
    });
    out.extend_from_slice(&t.state.flow_fen.to_le_bytes());
    out.push(t.state.flags.bits());
    for name in fleet.names_of(t) {
        put_bytes(out, name.as_bytes());
    }
    out.extend_from_slice(&t.issued_at.to_le_bytes());
    out.extend_from_slice(&t.contract_end.to_le_bytes());
    out.extend_from_slice(&t.last_position.to_le_bytes());
    let links = t.links.as_deref();
    for link in [links.and_then(|l| l.replaces.as_ref()), links.and_then(|l| l.replaced_by.as_ref())] {
        match link {
            None => out.push(0),
            Some((other, position)) => {
                out.push(1);
                put_bytes(out, other.as_str().as_bytes());
                out.extend_from_slice(&position.to_le_bytes());
            }
        }
    }
}

/// Terminals a group of the digest holds (their encodings are held at once, two groups at a time).
const GROUP: usize = 1 << 16;

/// The encodings of one group of terminals (in SN order), in parts of `TASK` terminals encoded in
/// parallel.
fn encode_group(fleet: &Fleet, group: &[BySn<'_>]) -> Vec<Vec<u8>> {
    use rayon::prelude::*;
    const TASK: usize = 1 << 10;
    const LOOKAHEAD: usize = 16;
    group
        .par_chunks(TASK)
        .map(|terminals| {
            let mut buf = Vec::with_capacity(terminals.len() * 128);
            // In SN order the terminals, and the merchant names they point to, are scattered over the
            // fleet: a window of them is touched first, as independent loads whose cache misses
            // overlap, then encoded from cache. (The SN itself comes from the sort's prefix.)
            for window in terminals.chunks(LOOKAHEAD) {
                let mut touched = 0usize;
                for e in window {
                    let name = fleet.names.merchants.get(e.terminal.merchant).unwrap_or_default();
                    touched ^= usize::from(name.as_bytes().first().copied().unwrap_or_default());
                }
                std::hint::black_box(touched);
                for e in window {
                    encode(fleet, e.sn_bytes().get(), e.terminal, &mut buf);
                }
            }
            buf
        })
        .collect()
}

/// The fleet digest.
pub fn digest(fleet: &Fleet) -> [u8; 32] {
    let sorted = fleet.sorted_by_sn();
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_TAG);
    hasher.update((sorted.len() as u64).to_le_bytes());
    // Encoding (names resolved through the tables, a cache miss or two per terminal) is done in
    // parallel; the hash is one sequential stream, so each group is hashed while the next is encoded
    // (it was a fifth of the digest's time, after the encoding, on one thread).
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    for group in sorted.chunks(GROUP) {
        let (next, ()) =
            rayon::join(|| encode_group(fleet, group), || encoded.iter().for_each(|part| hasher.update(part)));
        encoded = next;
    }
    encoded.iter().for_each(|part| hasher.update(part));
    hasher.finalize().into()
}

/// The fleet digest as 64 lowercase hex digits.
pub fn digest_hex(fleet: &Fleet) -> String {
    log::source::hex(&digest(fleet))
}

impl Fleet {
    /// The fleet digest as 64 lowercase hex digits (see [`crate::digest`]).
    pub fn digest_hex(&self) -> String {
        digest_hex(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::rebuild::{rebuild, rebuild_sequential, Cut, Options};
    use crate::testing::{flow, issued, terminal, write_bundle, LogBuilder};
    use log::{Sn, Source, TerminalEvent};

    /// SNs of every length class of the sort key: shorter than its prefix, exactly 15 and 16 bytes,
    /// longer SNs that share their first 16 bytes, and the longest an SN may be.
    const SNS: [&str; 12] = [
        "A",
        "AB",
        "A-",
        "ABCDEFGHIJKLMN",
        "ABCDEFGHIJKLMNO",
        "ABCDEFGHIJKLMNOP",
        "ABCDEFGHIJKLMNOA",
        "ABCDEFGHIJKLMNOPQRST",
        "ABCDEFGHIJKLMNOPQRSA",
        "ABCDEFGHIJKLMNOPQ",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "9",
    ];

    fn fleet_of(dir: &std::path::Path) -> Fleet {
        let mut log = LogBuilder::new();
        log.append(SNS.iter().map(|sn| issued(sn, 0, "M1", None)).collect());
        log.append(vec![flow("ABCDEFGHIJKLMNOPQ", 1, 12_345), flow("A", 2, 10_000)]);
        // A replacement, so the links are encoded too.
        log.append(vec![
            terminal("AB", 3, TerminalEvent::Replaced { by: Sn::parse("ABCDEFGHIJKLMNOPQRSTUVWXYZ").unwrap() }),
            issued("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 3, "M2", Some("AB")),
        ]);
        let bundle = dir.join("log.bundle");
        write_bundle(&bundle, log.records(), 1).unwrap();
        let source = Source::open(&bundle).unwrap();
        let fleet = rebuild(&source, Cut::Head, &Options::default()).unwrap();
        assert_eq!(fleet, rebuild_sequential(&source, Cut::Head, None).unwrap());
        fleet
    }

    /// The digest as its contract (docs/FORMAT.md, "Fleet digest") says it, plainly: the terminals
    /// sorted by comparing their SNs as strings, each encoded, all hashed in one pass.
    fn plain_digest(fleet: &Fleet) -> [u8; 32] {
        let mut all: Vec<(&str, &Terminal)> = fleet.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut bytes = DIGEST_TAG.to_vec();
        bytes.extend_from_slice(&(all.len() as u64).to_le_bytes());
        for (sn, t) in all {
            encode_terminal(fleet, sn, t, &mut bytes);
        }
        Sha256::digest(&bytes).into()
    }

    #[test]
    fn digest_of_sns_of_every_length_equals_the_plain_sort_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet_of(dir.path());
        assert_eq!(fleet.len(), SNS.len() + 1);
        assert_eq!(digest(&fleet), plain_digest(&fleet));
        let sorted: Vec<&str> = fleet.sorted().into_iter().map(|(sn, _)| sn).collect();
        let mut expected: Vec<&str> = SNS.iter().copied().chain(["ABCDEFGHIJKLMNOPQRSTUVWXYZ"]).collect();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        // The format itself, pinned (the digest `replay fleet` of the build before the keyed sort gave
        // for this log): a change to the encoding is a change of contract, not a refactoring.
        assert_eq!(digest_hex(&fleet), "aca49ac8c6bbd16fa6050d24413afd38623c60ae55687c2960b285954768fb2d");
    }

    #[test]
    fn digest_of_more_terminals_than_a_group_equals_the_plain_sort_and_hash() {
        // Several groups (each hashed while the next is encoded), the last one partial.
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogBuilder::new();
        let sns: Vec<String> = (0..2 * GROUP + 77).map(|i| format!("SN{:07}", (i * 7_919) % 1_000_000)).collect();
        for batch in sns.chunks(10_000) {
            log.append(batch.iter().map(|sn| issued(sn, 0, "M1", None)).collect());
        }
        let bundle = dir.path().join("log.bundle");
        write_bundle(&bundle, log.records(), 1).unwrap();
        let fleet = rebuild(&Source::open(&bundle).unwrap(), Cut::Head, &Options::default()).unwrap();
        assert_eq!(fleet.len(), sns.len());
        assert_eq!(digest(&fleet), plain_digest(&fleet));
    }
}

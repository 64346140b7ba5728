//! The fleet digest: SHA-256 over every terminal's state, sorted by SN, canonically encoded.
//!
//! The encoding uses names, never interned ids, so two parties get the same digest for the same fleet
//! however their tables were built. Per terminal, all integers little endian, strings as a u32 length
//! and their bytes:
//!
//! ```text
//! sn | status u8 | contract u8 | flow_fen u64 | flags u8 | model | provider | region | merchant
//!    | issued_at i64 | contract_end i64 | last_position u64
//!    | replaces (0u8 | 1u8 sn position u64) | replaced_by (0u8 | 1u8 sn position u64)
//! ```
//! preceded by the domain tag `posledger-fleet-v1` and the terminal count (u64).

use crate::fleet::{Fleet, Terminal};
use log::lifecycle::{ContractState, Status};
use sha2::{Digest, Sha256};

/// The tag that starts the digested bytes.
pub const DIGEST_TAG: &[u8] = b"posledger-fleet-v1";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the canonical encoding of one terminal to `out`.
pub fn encode_terminal(fleet: &Fleet, sn: &str, t: &Terminal, out: &mut Vec<u8>) {
    let view = fleet.view_of(sn, t);
    put_str(out, sn);
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
    for name in [view.model, view.provider, view.region, view.merchant] {
        put_str(out, name);
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
                put_str(out, other.as_str());
                out.extend_from_slice(&position.to_le_bytes());
            }
        }
    }
}

/// The fleet digest.
pub fn digest(fleet: &Fleet) -> [u8; 32] {
    use rayon::prelude::*;
    let sorted = fleet.sorted();
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_TAG);
    hasher.update((sorted.len() as u64).to_le_bytes());
    // Encoding (names resolved through the tables, a cache miss or two per terminal) was most of the
    // digest's time on one thread: groups of terminals are encoded in parallel, then hashed in order, so
    // at most `GROUP` terminals' bytes are held at once.
    const GROUP: usize = 1 << 16;
    const TASK: usize = 1 << 10;
    const LOOKAHEAD: usize = 16;
    for group in sorted.chunks(GROUP) {
        let parts: Vec<Vec<u8>> = group
            .par_chunks(TASK)
            .map(|terminals| {
                let mut buf = Vec::with_capacity(terminals.len() * 128);
                // In SN order the terminals, and the merchant names they point to, are scattered over
                // the fleet: a window of them is touched first, as independent loads whose cache
                // misses overlap, then encoded from cache.
                for window in terminals.chunks(LOOKAHEAD) {
                    let mut touched = 0usize;
                    for (_, t) in window {
                        let name = fleet.names.merchants.get(t.merchant).unwrap_or_default();
                        touched ^= usize::from(name.as_bytes().first().copied().unwrap_or_default());
                    }
                    std::hint::black_box(touched);
                    for (sn, t) in window {
                        encode_terminal(fleet, sn, t, &mut buf);
                    }
                }
                buf
            })
            .collect();
        for part in &parts {
            hasher.update(part);
        }
    }
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

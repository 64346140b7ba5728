//! The anchor: the log's committed end (size and root), recorded durably in the ledger folder's `HEAD`
//! file, so that a log cut short (a truncated or deleted segment) is told apart from a shorter valid log.
//!
//! `HEAD` (format 2, 128 bytes) holds two 64-byte slots. Each write takes the next *generation*, goes to
//! slot `generation % 2`, and is fsynced before the append it names is acknowledged; the other slot keeps
//! the previous anchor. A power cut during a write can damage only the slot being written, whose anchor
//! was never acknowledged, so the other slot is then the anchor. See `docs/FORMAT.md` ("HEAD").
//!
//! Format 1 (`PLHEAD01`, 52 bytes, one slot, not fsynced) is still read: a ledger written by an older
//! version is anchored by it until its writer next opens it, which rewrites `HEAD` in format 2.

use crate::merkle::Hash;
use crate::source::Head;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The file, inside a ledger folder, that anchors the log's committed end.
pub const HEAD_FILE: &str = "HEAD";
/// Bytes of one slot of a format-2 HEAD.
pub const SLOT_LEN: usize = 64;
/// Bytes of a format-2 HEAD (two slots).
pub const HEAD_LEN: usize = 2 * SLOT_LEN;
const SLOT_MAGIC: &[u8; 8] = b"PLHEAD02";
const V1_MAGIC: &[u8; 8] = b"PLHEAD01";
const V1_LEN: usize = 8 + 8 + 32 + 4;
/// Bytes of a slot covered by its CRC.
const SLOT_CRC_AT: usize = 8 + 8 + 8 + 32;

const _: () = assert!(SLOT_CRC_AT + 4 <= SLOT_LEN, "a slot holds its fields and CRC");
const _: () = assert!(HEAD_LEN.is_multiple_of(512) || 512 % HEAD_LEN == 0, "HEAD fits in one sector");

/// The recorded end of a log, as read from `HEAD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Size and root of the log when it was recorded: the log must reach this size with this root.
    pub head: Head,
    /// The write's generation (0 for a format-1 HEAD).
    pub generation: u64,
    /// A slot that fails its checksum while the other holds the anchor: what a power cut during a HEAD
    /// write leaves (the damaged slot's anchor was never acknowledged), or damage to that slot.
    pub damaged_slot: Option<usize>,
    /// Read from a format-1 HEAD (written without fsync by older versions: it may lag the log).
    pub legacy: bool,
}

/// Why a ledger folder's anchor could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The folder has a log but no `HEAD`: its committed end is unknown.
    #[error("{path}: the HEAD file is missing, so the log's committed end is unknown (records may have been cut); if the log is known to be whole, `posledger reanchor --dir DIR --size N` records its end again")]
    Missing {
        /// The HEAD file's path.
        path: PathBuf,
    },
    /// `HEAD` exists but no slot of it is valid.
    #[error("{path}: the HEAD file is damaged ({what}), so the log's committed end is unknown")]
    Damaged {
        /// The HEAD file's path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The HEAD file's path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Encodes one format-2 slot.
pub fn encode_slot(generation: u64, head: &Head) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    out[0..8].copy_from_slice(SLOT_MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..24].copy_from_slice(&head.size.to_le_bytes());
    out[24..56].copy_from_slice(&head.root);
    let crc = crc32c::crc32c(&out[0..SLOT_CRC_AT]);
    out[SLOT_CRC_AT..SLOT_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A whole format-2 HEAD recording `head` in both slots (generations 0 and 1), as a new ledger's.
pub fn encode_fresh(head: &Head) -> [u8; HEAD_LEN] {
    let mut out = [0u8; HEAD_LEN];
    out[..SLOT_LEN].copy_from_slice(&encode_slot(0, head));
    out[SLOT_LEN..].copy_from_slice(&encode_slot(1, head));
    out
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let array: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

fn hash_at(bytes: &[u8], at: usize) -> Option<Hash> {
    bytes.get(at..at + 32)?.try_into().ok()
}

/// Decodes one format-2 slot: `(generation, head)`, or why it is not valid.
fn decode_slot(bytes: &[u8]) -> Result<(u64, Head), &'static str> {
    if bytes.len() != SLOT_LEN || bytes.get(0..8) != Some(SLOT_MAGIC.as_slice()) {
        return Err("bad magic");
    }
    let crc = bytes.get(SLOT_CRC_AT..SLOT_CRC_AT + 4).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let covered = bytes.get(0..SLOT_CRC_AT).ok_or("short slot")?;
    if crc.map(u32::from_le_bytes) != Some(crc32c::crc32c(covered)) {
        return Err("checksum mismatch");
    }
    let (Some(generation), Some(size), Some(root)) = (u64_at(bytes, 8), u64_at(bytes, 16), hash_at(bytes, 24)) else {
        return Err("short slot");
    };
    Ok((generation, Head { size, root }))
}

/// Decodes the bytes of a HEAD file (either format).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Anchor, AnchorError> {
    let damaged = |what: String| AnchorError::Damaged { path: path.to_owned(), what };
    if bytes.len() == V1_LEN && bytes.get(0..8) == Some(V1_MAGIC.as_slice()) {
        let crc = bytes.get(48..52).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
        let covered = bytes.get(0..48).ok_or_else(|| damaged("short".into()))?;
        if crc != Some(crc32c::crc32c(covered)) {
            return Err(damaged("format 1, checksum mismatch".into()));
        }
        let (Some(size), Some(root)) = (u64_at(bytes, 8), hash_at(bytes, 16)) else {
            return Err(damaged("format 1, short".into()));
        };
        return Ok(Anchor { head: Head { size, root }, generation: 0, damaged_slot: None, legacy: true });
    }
    if bytes.len() != HEAD_LEN {
        return Err(damaged(format!("{} bytes, expected {HEAD_LEN}", bytes.len())));
    }
    let Some((slot0, slot1)) = bytes.split_at_checked(SLOT_LEN) else {
        return Err(damaged(format!("{} bytes, expected {HEAD_LEN}", bytes.len())));
    };
    let slots = [decode_slot(slot0), decode_slot(slot1)];
    let anchor = |generation, head, damaged_slot| Anchor { head, generation, damaged_slot, legacy: false };
    match slots {
        [Ok((g0, h0)), Ok((g1, h1))] => {
            if g0 % 2 != 0 || g1 % 2 != 1 || g0.abs_diff(g1) != 1 {
                return Err(damaged(format!("slot generations {g0} and {g1} are not consecutive")));
            }
            let (newer, older) = if g0 > g1 { ((g0, h0), h1) } else { ((g1, h1), h0) };
            if older.size > newer.1.size {
                return Err(damaged(format!(
                    "generation {} records {} records, fewer than the {} of the generation before it",
                    newer.0, newer.1.size, older.size
                )));
            }
            Ok(anchor(newer.0, newer.1, None))
        }
        [Ok((g, h)), Err(_)] if g % 2 == 0 => Ok(anchor(g, h, Some(1))),
        [Err(_), Ok((g, h))] if g % 2 == 1 => Ok(anchor(g, h, Some(0))),
        [Ok((g, _)), Err(_)] | [Err(_), Ok((g, _))] => Err(damaged(format!("generation {g} is in the wrong slot"))),
        [Err(a), Err(b)] => Err(damaged(format!("slot 0: {a}; slot 1: {b}"))),
    }
}

/// Reads the anchor of a ledger folder; `Ok(None)` when there is no HEAD file.
pub fn read(dir: &Path) -> Result<Option<Anchor>, AnchorError> {
    let path = dir.join(HEAD_FILE);
    // A HEAD larger than its format is damaged: read one byte more than the largest format to tell.
    let mut bytes = Vec::with_capacity(HEAD_LEN + 1);
    match File::open(&path) {
        Ok(file) => {
            use std::io::Read;
            file.take(HEAD_LEN as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| AnchorError::Io { path: path.clone(), source })?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AnchorError::Io { path, source }),
    }
    decode(&path, &bytes).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(size: u64) -> Head {
        Head { size, root: [size as u8; 32] }
    }

    fn file(slots: [[u8; SLOT_LEN]; 2]) -> Vec<u8> {
        slots.concat()
    }

    #[test]
    fn the_newer_slot_is_the_anchor() {
        let p = Path::new("HEAD");
        let a = decode(p, &file([encode_slot(4, &head(10)), encode_slot(3, &head(7))])).unwrap();
        assert_eq!((a.generation, a.head, a.damaged_slot), (4, head(10), None));
        let a = decode(p, &file([encode_slot(4, &head(10)), encode_slot(5, &head(12))])).unwrap();
        assert_eq!((a.generation, a.head), (5, head(12)));
    }

    /// A power cut while slot 1 was written leaves slot 0's anchor, which covers every acknowledged append.
    #[test]
    fn a_torn_slot_leaves_the_other_as_the_anchor() {
        let p = Path::new("HEAD");
        let mut torn = encode_slot(5, &head(12));
        torn[20] ^= 1;
        let a = decode(p, &file([encode_slot(4, &head(10)), torn])).unwrap();
        assert_eq!((a.head, a.damaged_slot), (head(10), Some(1)));
        let zeros = [0u8; SLOT_LEN];
        let a = decode(p, &file([zeros, encode_slot(3, &head(7))])).unwrap();
        assert_eq!((a.head, a.damaged_slot), (head(7), Some(0)));
    }

    #[test]
    fn damaged_heads_are_refused() {
        let p = Path::new("HEAD");
        let zeros = [0u8; SLOT_LEN];
        assert!(matches!(decode(p, &file([zeros, zeros])), Err(AnchorError::Damaged { .. })));
        assert!(matches!(decode(p, &[]), Err(AnchorError::Damaged { .. })));
        assert!(matches!(decode(p, &[0u8; HEAD_LEN + 1]), Err(AnchorError::Damaged { .. })));
        // Generations that cannot follow one another, a slot in the wrong place, a shrinking anchor.
        assert!(decode(p, &file([encode_slot(4, &head(10)), encode_slot(9, &head(12))])).is_err());
        assert!(decode(p, &file([encode_slot(3, &head(10)), zeros])).is_err());
        assert!(decode(p, &file([encode_slot(4, &head(10)), encode_slot(5, &head(9))])).is_err());
    }

    #[test]
    fn format_1_is_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(V1_MAGIC);
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&[9u8; 32]);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let a = decode(Path::new("HEAD"), &v1).unwrap();
        assert_eq!((a.head, a.legacy), (head(9), true));
        v1[10] ^= 1;
        assert!(decode(Path::new("HEAD"), &v1).is_err());
    }
}

//! Record bodies: a format-version byte followed by the record in bincode 2 (standard config).
//!
//! The body is what the Merkle tree hashes (leaf = SHA-256(0x00 ‖ body)) and what the frame's CRC32C
//! covers; see `docs/FORMAT.md`. Decoding is bounded: a body longer than [`MAX_RECORD_BYTES`] is refused
//! before any allocation, and bincode is configured with the same limit so no length field inside a body
//! can make it allocate more.

use crate::model::{Event, EventId, Record};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A record borrowed from its parts: encodes to exactly the bytes of the equal [`Record`], without
/// cloning the event (the append path's hot loop).
#[derive(Serialize)]
pub struct RecordRef<'a> {
    /// See [`Record::position`].
    pub position: u64,
    /// See [`Record::version`].
    pub version: u64,
    /// See [`Record::event_id`].
    pub event_id: Option<&'a EventId>,
    /// See [`Record::recorded_at`].
    #[serde(with = "crate::model::micros")]
    pub recorded_at: DateTime<Utc>,
    /// See [`Record::commit`].
    pub commit: bool,
    /// See [`Record::event`].
    pub event: &'a Event,
}

/// The record format written by this version of posledger.
pub const RECORD_FORMAT_V1: u8 = 1;
/// The largest record body, in bytes (a directive naming 10,000 models of 64 bytes fits).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Why a record body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is empty (no format byte).
    #[error("empty record body")]
    Empty,
    /// A format version this build does not know.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// Too big to write or read.
    #[error("record body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// bincode refused the bytes, or a field failed validation.
    #[error("record does not decode: {0}")]
    Decode(String),
    /// Bytes were left over after the record.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// bincode could not encode the record.
    #[error("record does not encode: {0}")]
    Encode(String),
}

/// Appends the body of `record` (format byte + bincode) to `out` and returns its length.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    encode_record_ref(
        &RecordRef {
            position: record.position,
            version: record.version,
            event_id: record.event_id.as_ref(),
            recorded_at: record.recorded_at,
            commit: record.commit,
            event: &record.event,
        },
        out,
    )
}

/// Appends the body of a borrowed record to `out` and returns its length.
pub fn encode_record_ref(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = out.len();
    out.push(RECORD_FORMAT_V1);
    bincode::serde::encode_into_std_write(record, out, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = out.len() - start;
    if len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(CodecError::TooLarge { len, max: MAX_RECORD_BYTES });
    }
    Ok(len)
}

/// Decodes one record body.
pub fn decode_record(body: &[u8]) -> Result<Record, CodecError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge { len: body.len(), max: MAX_RECORD_BYTES });
    }
    let (&version, rest) = body.split_first().ok_or(CodecError::Empty)?;
    match version {
        RECORD_FORMAT_V1 => {
            let (record, used): (Record, usize) =
                bincode::serde::decode_from_slice(rest, config()).map_err(|e| CodecError::Decode(e.to_string()))?;
            if used != rest.len() {
                return Err(CodecError::Trailing(rest.len() - used));
            }
            record.event.validate().map_err(|e| CodecError::Decode(e.to_string()))?;
            Ok(record)
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{DeviceEvent, Event, Sn, TerminalEvent};
    use chrono::{TimeZone, Utc};

    fn record() -> Record {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        Record {
            position: 7,
            version: 2,
            event_id: None,
            recorded_at: at,
            commit: true,
            event: Event::Terminal(DeviceEvent {
                device: Sn::parse("SN1").unwrap(),
                at,
                event: TerminalEvent::Flow { amount_fen: 5000, transactions: 3 },
            }),
        }
    }

    #[test]
    fn borrowed_and_owned_records_encode_alike() {
        let mut via_ref = Vec::new();
        encode_record(&record(), &mut via_ref).unwrap();
        let mut via_owned = vec![RECORD_FORMAT_V1];
        bincode::serde::encode_into_std_write(record(), &mut via_owned, config()).unwrap();
        assert_eq!(via_ref, via_owned);
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        let len = encode_record(&record(), &mut out).unwrap();
        assert_eq!(len, out.len());
        assert_eq!(decode_record(&out).unwrap(), record());
    }

    #[test]
    fn refuses_bad_bodies() {
        let mut out = Vec::new();
        encode_record(&record(), &mut out).unwrap();
        assert!(matches!(decode_record(&[]), Err(CodecError::Empty)));
        let mut v9 = out.clone();
        v9[0] = 9;
        assert!(matches!(decode_record(&v9), Err(CodecError::UnknownVersion(9))));
        let mut long = out.clone();
        long.push(0);
        assert!(matches!(decode_record(&long), Err(CodecError::Trailing(1))));
        assert!(decode_record(&out[..out.len() - 1]).is_err());
    }

    #[test]
    fn refuses_an_invalid_sn_inside_a_body() {
        let mut out = Vec::new();
        encode_record(&record(), &mut out).unwrap();
        // The SN "SN1" is stored as its bytes; make it "S!1".
        let at = out.windows(3).position(|w| w == b"SN1").unwrap();
        out[at + 1] = b'!';
        assert!(matches!(decode_record(&out), Err(CodecError::Decode(_))));
    }
}

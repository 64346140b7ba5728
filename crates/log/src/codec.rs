//! Record bodies: a format-version byte followed by the record in bincode 2 (standard config).
//!
//! The body is what the Merkle tree hashes (leaf = SHA-256(0x00 ‖ body)) and what the frame's CRC32C
//! covers; see `docs/FORMAT.md`. Decoding is bounded: a body longer than [`MAX_RECORD_BYTES`] is refused
//! before any allocation, and bincode is configured with the same limit so no length field inside a body
//! can make it allocate more.

use crate::model::{
    Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, EventFields, EventId, FieldError, FlagReason,
    Issued, MerchantId, ModelCode, ProviderId, Record, RegionCode, Sn, StopReason, TerminalEvent, Text, MAX_ID_LEN,
    MAX_TEXT_LEN,
};
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
/// The largest record body a reader accepts, in bytes: the READ limit (a directive naming 10,000 models
/// of 64 bytes fits). Ledgers written before [`MAX_ENTRY_BYTES`] may hold records up to this size, and
/// they still open, verify and fold.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The largest record body the writer writes, in bytes: the WRITE limit. A C2SP tlog-tiles entry bundle
/// prefixes each entry (one record body, the Merkle leaf data) with a big-endian uint16 length, so an
/// entry holds at most 65,535 bytes. Readers still accept up to [`MAX_RECORD_BYTES`].
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
const _: () = assert!(MAX_ENTRY_BYTES == 65_535 && MAX_ENTRY_BYTES <= MAX_RECORD_BYTES);

/// bincode's configuration for format v1, for the serde oracle (the `oracle` feature and tests).
#[cfg(any(test, feature = "oracle"))]
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

impl<'a> From<&'a Record> for RecordRef<'a> {
    /// Borrows the parts of `record`.
    fn from(record: &'a Record) -> Self {
        RecordRef {
            position: record.position,
            version: record.version,
            event_id: record.event_id.as_ref(),
            recorded_at: record.recorded_at,
            commit: record.commit,
            event: &record.event,
        }
    }
}

/// Appends the body of `record` (format byte + bincode) to `out` and returns its length.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    encode_record_ref(&RecordRef::from(record), out)
}

/// Appends the body of a borrowed record to `out` and returns its length.
///
/// A body over [`MAX_RECORD_BYTES`] is refused with [`CodecError::TooLarge`], and `out` is then left
/// with the bytes it had. The bytes are written by hand (see the writer below): exactly those of the
/// serde encoder [`encode_record_serde`] (proptested below, for every event variant), without its
/// per-identifier `String` clones and per-field `io::Write` calls: a quarter to a third of the time (measured
/// on a flow record: 21 ns against 59 ns; an issued record: 41 ns against 162 ns).
pub fn encode_record_ref(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = out.len();
    out.reserve(record_bound(record));
    out.push(RECORD_FORMAT_V1);
    put_record(out, record);
    finish(out, start)
}

/// Appends the body of a borrowed record to `out` through serde and bincode, and returns its length (the
/// `oracle` feature: bincode 2.0.1 is unmaintained, so it is only a test oracle, never the writer):
/// the reference [`encode_record_ref`] is checked against (it defines the bytes of format v1). Same
/// contract as [`encode_record_ref`].
#[cfg(any(test, feature = "oracle"))]
pub fn encode_record_serde(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    let start = out.len();
    out.push(RECORD_FORMAT_V1);
    if let Err(e) = bincode::serde::encode_into_std_write(record, out, config()) {
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    finish(out, start)
}

/// The length of the body written to `out` since `start`, or [`CodecError::TooLarge`] (and the body
/// taken back off `out`) when it is over [`MAX_RECORD_BYTES`].
fn finish(out: &mut Vec<u8>, start: usize) -> Result<usize, CodecError> {
    let len = out.len() - start;
    if len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(CodecError::TooLarge { len, max: MAX_RECORD_BYTES });
    }
    Ok(len)
}

// ---------------------------------------------------------------------------------------------------
// Hand-written encoding.
//
// The serde encoder clones every identifier into a `String` (the newtypes serialize `into = "String"`)
// and hands bincode each field through `io::Write`. The writer below emits the same bytes directly,
// following the rules of the reader further down (bincode 2.0.1 standard configuration, as its serde
// serializer writes them), always in bincode's minimal form:
//
// - an unsigned integer (`u64`, `u32`, a length, an enum's variant index) is a varint: below 251 one
//   byte; up to `u16::MAX` 251 then a little-endian u16; up to `u32::MAX` 252 then a u32; else 253
//   then a u64 (a `u32` varint is the `u64` varint of the same value);
// - an `i64` (a timestamp in microseconds, `model::micros`) is the varint of its zigzag;
// - `bool` is 0 or 1; `Option` is 0, or 1 then the value; an enum is its variant index (declaration
//   order) then its fields; a struct is its fields in declaration order (a `Box` is its content);
// - a string (an identifier, `Text`) is its length then its bytes; a `Vec` its length then elements.
//
// The matches below name every variant with no wildcard, so a new variant does not compile until it is
// written here; its index must then be checked against the declaration order (the proptest does).
// ---------------------------------------------------------------------------------------------------

/// The most bytes a varint takes (253 and a u64).
const MAX_VARINT_BYTES: usize = 9;
/// More than the bytes a record can take besides its strings (format byte, integers, timestamps, tags).
const RECORD_FIXED_BOUND_BYTES: usize = 96;

/// An upper bound of the body's length, reserved once before writing.
fn record_bound(record: &RecordRef<'_>) -> usize {
    let string = |s: &str| MAX_VARINT_BYTES + s.len();
    let mut bound = RECORD_FIXED_BOUND_BYTES + record.event_id.map_or(0, |id| string(id.as_str()));
    match record.event {
        Event::Terminal(e) => {
            bound += string(e.device.as_str());
            bound += match &e.event {
                TerminalEvent::Issued(issued) => {
                    string(issued.model.as_str())
                        + string(issued.merchant.as_str())
                        + string(issued.provider.as_str())
                        + string(issued.contract.id.as_str())
                        + issued.replaces.as_ref().map_or(0, |sn| string(sn.as_str()))
                }
                TerminalEvent::ContractRenewed { contract } => string(contract.id.as_str()),
                TerminalEvent::Flagged { note, .. } | TerminalEvent::FlagCleared { note, .. } => string(note.as_str()),
                TerminalEvent::Stopped { directive, .. } => directive.as_ref().map_or(0, |d| string(d.as_str())),
                TerminalEvent::Replaced { by } => string(by.as_str()),
                TerminalEvent::Flow { .. } | TerminalEvent::Activated | TerminalEvent::ContractExpired => 0,
            };
        }
        Event::Directive(d) => {
            bound += string(d.id.as_str()) + string(d.reason.as_str());
            bound += d.models.iter().map(|m| string(m.as_str())).sum::<usize>();
        }
    }
    bound
}

/// An unsigned integer (or a length, or a variant index) as a bincode varint.
#[inline(always)]
fn put_varint(out: &mut Vec<u8>, value: u64) {
    if let Ok(byte @ 0..=250) = u8::try_from(value) {
        out.push(byte);
    } else if let Ok(short) = u16::try_from(value) {
        out.push(251);
        out.extend_from_slice(&short.to_le_bytes());
    } else if let Ok(word) = u32::try_from(value) {
        out.push(252);
        out.extend_from_slice(&word.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A length (a string's, a `Vec`'s) as a varint (bincode writes a `usize` as a `u64`).
#[inline(always)]
fn put_len(out: &mut Vec<u8>, len: usize) {
    // A `usize` is at most 64 bits on every target Rust supports, so this does not saturate.
    put_varint(out, u64::try_from(len).unwrap_or(u64::MAX));
}

/// An `i64` as the varint of its zigzag.
#[inline(always)]
fn put_i64(out: &mut Vec<u8>, value: i64) {
    // Zigzag: 0, -1, 1, -2, ... map to 0, 1, 2, 3, ...; `as u64` reinterprets the bits.
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// A timestamp as `model::micros` writes it: microseconds since the epoch.
#[inline(always)]
fn put_timestamp(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    put_i64(out, at.timestamp_micros());
}

/// A `bool`, or an `Option`'s tag: one byte 0 or 1.
#[inline(always)]
fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

/// A string: its length, then its bytes.
#[inline(always)]
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// An optional string: the tag, then the string.
#[inline(always)]
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            put_bool(out, true);
            put_str(out, s);
        }
        None => put_bool(out, false),
    }
}

#[inline(always)]
fn put_contract(out: &mut Vec<u8>, contract: &Contract) {
    put_str(out, contract.id.as_str());
    put_timestamp(out, &contract.start);
    put_timestamp(out, &contract.end);
}

/// A [`FlagReason`]: its variant index (the enums are fieldless, without explicit discriminants, so
/// the discriminant is the declaration index serde writes).
#[inline(always)]
fn put_flag_reason(out: &mut Vec<u8>, reason: FlagReason) {
    put_varint(out, reason as u64);
}

/// A [`StopReason`]: its variant index, as [`put_flag_reason`].
#[inline(always)]
fn put_stop_reason(out: &mut Vec<u8>, reason: StopReason) {
    put_varint(out, reason as u64);
}

#[inline(always)]
fn put_terminal_event(out: &mut Vec<u8>, event: &TerminalEvent) {
    match event {
        TerminalEvent::Issued(issued) => {
            put_varint(out, 0);
            put_str(out, issued.model.as_str());
            put_str(out, issued.merchant.as_str());
            put_str(out, issued.provider.as_str());
            put_varint(out, u64::from(issued.region.get()));
            put_contract(out, &issued.contract);
            put_opt_str(out, issued.replaces.as_ref().map(Sn::as_str));
        }
        TerminalEvent::Flow { amount_fen, transactions } => {
            put_varint(out, 1);
            put_varint(out, *amount_fen);
            put_varint(out, u64::from(*transactions));
        }
        TerminalEvent::Activated => put_varint(out, 2),
        TerminalEvent::ContractRenewed { contract } => {
            put_varint(out, 3);
            put_contract(out, contract);
        }
        TerminalEvent::ContractExpired => put_varint(out, 4),
        TerminalEvent::Flagged { reason, note } => {
            put_varint(out, 5);
            put_flag_reason(out, *reason);
            put_str(out, note.as_str());
        }
        TerminalEvent::FlagCleared { reason, note } => {
            put_varint(out, 6);
            put_flag_reason(out, *reason);
            put_str(out, note.as_str());
        }
        TerminalEvent::Stopped { reason, directive } => {
            put_varint(out, 7);
            put_stop_reason(out, *reason);
            put_opt_str(out, directive.as_ref().map(DirectiveId::as_str));
        }
        TerminalEvent::Replaced { by } => {
            put_varint(out, 8);
            put_str(out, by.as_str());
        }
    }
}

fn put_directive(out: &mut Vec<u8>, directive: &Directive) {
    put_str(out, directive.id.as_str());
    put_timestamp(out, &directive.at);
    put_len(out, directive.models.len());
    for model in &directive.models {
        put_str(out, model.as_str());
    }
    put_str(out, directive.reason.as_str());
    match &directive.deadline {
        Some(deadline) => {
            put_bool(out, true);
            put_timestamp(out, deadline);
        }
        None => put_bool(out, false),
    }
}

/// The record after the format byte: [`RecordRef`]'s fields in order.
#[inline(always)]
fn put_record(out: &mut Vec<u8>, record: &RecordRef<'_>) {
    put_varint(out, record.position);
    put_varint(out, record.version);
    put_opt_str(out, record.event_id.map(EventId::as_str));
    put_timestamp(out, &record.recorded_at);
    put_bool(out, record.commit);
    match record.event {
        Event::Terminal(e) => {
            put_varint(out, 0);
            put_str(out, e.device.as_str());
            put_timestamp(out, &e.at);
            put_terminal_event(out, &e.event);
        }
        Event::Directive(d) => {
            put_varint(out, 1);
            put_directive(out, d);
        }
    }
}

/// Decodes one record body.
///
/// Reads it with [`decode_view`] and converts the view ([`RecordView::to_record`]): the same result as
/// the serde decoder [`decode_record_serde`] (proptested below, on valid and damaged bodies), in about
/// two thirds of the time (measured on a simulated fleet log: 165 ns against 255 ns a record).
pub fn decode_record(body: &[u8]) -> Result<Record, CodecError> {
    decode_view(body)?.to_record()
}

/// Decodes one record body through serde and bincode: the oracle [`decode_view`] and [`decode_record`]
/// are checked against, byte for byte on format v1 (the `oracle` feature and tests only).
#[cfg(any(test, feature = "oracle"))]
pub fn decode_record_serde(body: &[u8]) -> Result<Record, CodecError> {
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

// ---------------------------------------------------------------------------------------------------
// Borrowed, allocation-free decoding.
//
// `decode_record` goes through serde and allocates a `String` per identifier, a `Box<Issued>`, ...;
// projections and scans that look at millions of records want the fields in place. `decode_view`
// reads the very same bytes by hand, following bincode 2.0.1's standard configuration as its serde
// deserializer reads them:
//
// - unsigned integers are varints: a byte < 251 is the value; 251, 252, 253 are followed by a
//   little-endian u16, u32, u64. bincode does not insist on the shortest form, so neither do we. For a
//   `u32` the u64 form (253) is refused; for a `u64` the u128 form (254) is; 255 is always refused;
// - signed integers are the zigzag of a `u64` varint;
// - `bool` is one byte 0 or 1; `Option` a byte 0 (None) or 1 (Some) then the value;
// - an enum is its variant index as a `u32` varint, then the variant's fields;
// - a string (and a `Vec`) is a `u64` varint length, then the UTF-8 bytes (elements).
//
// It applies the checks the owned decoder applies, in the same two stages, so both accept the same
// bodies and refuse the others with the same `CodecError` variant: while reading, what serde checks
// (charsets and lengths of ids, text, region, timestamps in chrono's range, tags, UTF-8); then the
// trailing-bytes check; then what `Event::validate` checks (contract order, flow limit, directive
// models), which is the very same code: `model::EventFields::check_fields`, which both the owned
// types and the views implement. A proptest below holds the two decoders to that.
// ---------------------------------------------------------------------------------------------------

/// The earliest timestamp, in microseconds since the epoch, that decodes (chrono's `DateTime::MIN_UTC`).
pub const MIN_TIMESTAMP_US: i64 = DateTime::<Utc>::MIN_UTC.timestamp_micros();
/// The latest timestamp, in microseconds since the epoch, that decodes (chrono's `DateTime::MAX_UTC`).
pub const MAX_TIMESTAMP_US: i64 = DateTime::<Utc>::MAX_UTC.timestamp_micros();

/// A record read in place from its body: every string borrows the body. See [`decode_view`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// See [`Record::position`].
    pub position: u64,
    /// See [`Record::version`].
    pub version: u64,
    /// See [`Record::event_id`] (already validated as an [`EventId`]).
    pub event_id: Option<&'a str>,
    /// [`Record::recorded_at`] in microseconds since the Unix epoch (within chrono's range).
    pub recorded_at_us: i64,
    /// See [`Record::commit`].
    pub commit: bool,
    /// See [`Record::event`].
    pub event: EventView<'a>,
}

/// A borrowed [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventView<'a> {
    /// See [`Event::Terminal`].
    Terminal(DeviceEventView<'a>),
    /// See [`Event::Directive`].
    Directive(DirectiveView<'a>),
}

/// A borrowed [`DeviceEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEventView<'a> {
    /// The terminal's SN (already validated as an [`Sn`]).
    pub device: &'a str,
    /// Event time, microseconds since the Unix epoch.
    pub at_us: i64,
    /// What happened.
    pub event: TerminalEventView<'a>,
}

/// A borrowed [`Contract`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractView<'a> {
    /// See [`Contract::id`].
    pub id: &'a str,
    /// See [`Contract::start`], microseconds.
    pub start_us: i64,
    /// See [`Contract::end`], microseconds.
    pub end_us: i64,
}

/// A borrowed [`Issued`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedView<'a> {
    /// See [`Issued::model`].
    pub model: &'a str,
    /// See [`Issued::merchant`].
    pub merchant: &'a str,
    /// See [`Issued::provider`].
    pub provider: &'a str,
    /// See [`Issued::region`] (at most 999999).
    pub region: u32,
    /// See [`Issued::contract`].
    pub contract: ContractView<'a>,
    /// See [`Issued::replaces`].
    pub replaces: Option<&'a str>,
}

/// A borrowed [`TerminalEvent`]; the variants and fields mirror it one for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalEventView<'a> {
    /// See [`TerminalEvent::Issued`].
    Issued(IssuedView<'a>),
    /// See [`TerminalEvent::Flow`].
    Flow {
        /// Amount in fen.
        amount_fen: u64,
        /// Number of transactions.
        transactions: u32,
    },
    /// See [`TerminalEvent::Activated`].
    Activated,
    /// See [`TerminalEvent::ContractRenewed`].
    ContractRenewed {
        /// The new contract.
        contract: ContractView<'a>,
    },
    /// See [`TerminalEvent::ContractExpired`].
    ContractExpired,
    /// See [`TerminalEvent::Flagged`].
    Flagged {
        /// Why.
        reason: FlagReason,
        /// Free text (already validated as a [`Text`]).
        note: &'a str,
    },
    /// See [`TerminalEvent::FlagCleared`].
    FlagCleared {
        /// Which flag.
        reason: FlagReason,
        /// Free text (already validated as a [`Text`]).
        note: &'a str,
    },
    /// See [`TerminalEvent::Stopped`].
    Stopped {
        /// Why.
        reason: StopReason,
        /// The directive, if any (already validated as a [`DirectiveId`]).
        directive: Option<&'a str>,
    },
    /// See [`TerminalEvent::Replaced`].
    Replaced {
        /// The new terminal's SN.
        by: &'a str,
    },
}

/// A borrowed [`Directive`]. The model list is the one field that allocates (a `Vec` of borrowed
/// strings): directives are rare, and checking that the models are distinct needs them side by side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectiveView<'a> {
    /// See [`Directive::id`].
    pub id: &'a str,
    /// See [`Directive::at`], microseconds.
    pub at_us: i64,
    /// See [`Directive::models`]: 1..=[`MAX_DIRECTIVE_MODELS`](crate::model::MAX_DIRECTIVE_MODELS), distinct.
    pub models: Vec<&'a str>,
    /// See [`Directive::reason`].
    pub reason: &'a str,
    /// See [`Directive::deadline`], microseconds.
    pub deadline_us: Option<i64>,
}

fn field_error(error: FieldError) -> CodecError {
    CodecError::Decode(error.to_string())
}

fn timestamp(us: i64) -> Result<DateTime<Utc>, CodecError> {
    DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| CodecError::Decode("timestamp out of range".into()))
}

impl ContractView<'_> {
    /// The owned contract.
    pub fn to_contract(&self) -> Result<Contract, CodecError> {
        Ok(Contract {
            id: ContractId::parse(self.id).map_err(field_error)?,
            start: timestamp(self.start_us)?,
            end: timestamp(self.end_us)?,
        })
    }
}

impl IssuedView<'_> {
    /// The owned [`Issued`].
    pub fn to_issued(&self) -> Result<Issued, CodecError> {
        Ok(Issued {
            model: ModelCode::parse(self.model).map_err(field_error)?,
            merchant: MerchantId::parse(self.merchant).map_err(field_error)?,
            provider: ProviderId::parse(self.provider).map_err(field_error)?,
            region: RegionCode::try_from(self.region).map_err(field_error)?,
            contract: self.contract.to_contract()?,
            replaces: self.replaces.map(Sn::parse).transpose().map_err(field_error)?,
        })
    }
}

impl TerminalEventView<'_> {
    /// The owned event. `Flow`, `Activated` and `ContractExpired` take no heap; the others allocate
    /// their strings (and `Issued` its box).
    pub fn to_terminal_event(&self) -> Result<TerminalEvent, CodecError> {
        Ok(match *self {
            TerminalEventView::Issued(issued) => TerminalEvent::Issued(Box::new(issued.to_issued()?)),
            TerminalEventView::Flow { amount_fen, transactions } => TerminalEvent::Flow { amount_fen, transactions },
            TerminalEventView::Activated => TerminalEvent::Activated,
            TerminalEventView::ContractRenewed { contract } => {
                TerminalEvent::ContractRenewed { contract: contract.to_contract()? }
            }
            TerminalEventView::ContractExpired => TerminalEvent::ContractExpired,
            TerminalEventView::Flagged { reason, note } => {
                TerminalEvent::Flagged { reason, note: Text::parse(note).map_err(field_error)? }
            }
            TerminalEventView::FlagCleared { reason, note } => {
                TerminalEvent::FlagCleared { reason, note: Text::parse(note).map_err(field_error)? }
            }
            TerminalEventView::Stopped { reason, directive } => TerminalEvent::Stopped {
                reason,
                directive: directive.map(DirectiveId::parse).transpose().map_err(field_error)?,
            },
            TerminalEventView::Replaced { by } => TerminalEvent::Replaced { by: Sn::parse(by).map_err(field_error)? },
        })
    }

    /// The snake_case type name, as [`TerminalEvent::type_name`].
    pub fn type_name(&self) -> &'static str {
        match self {
            TerminalEventView::Issued(_) => "issued",
            TerminalEventView::Flow { .. } => "flow",
            TerminalEventView::Activated => "activated",
            TerminalEventView::ContractRenewed { .. } => "contract_renewed",
            TerminalEventView::ContractExpired => "contract_expired",
            TerminalEventView::Flagged { .. } => "flagged",
            TerminalEventView::FlagCleared { .. } => "flag_cleared",
            TerminalEventView::Stopped { .. } => "stopped",
            TerminalEventView::Replaced { .. } => "replaced",
        }
    }
}

impl DeviceEventView<'_> {
    /// The owned [`DeviceEvent`].
    pub fn to_device_event(&self) -> Result<DeviceEvent, CodecError> {
        Ok(DeviceEvent {
            device: Sn::parse(self.device).map_err(field_error)?,
            at: timestamp(self.at_us)?,
            event: self.event.to_terminal_event()?,
        })
    }
}

impl DirectiveView<'_> {
    /// The owned [`Directive`].
    pub fn to_directive(&self) -> Result<Directive, CodecError> {
        Ok(Directive {
            id: DirectiveId::parse(self.id).map_err(field_error)?,
            at: timestamp(self.at_us)?,
            models: self.models.iter().map(|m| ModelCode::parse(m)).collect::<Result<_, _>>().map_err(field_error)?,
            reason: Text::parse(self.reason).map_err(field_error)?,
            deadline: self.deadline_us.map(timestamp).transpose()?,
        })
    }
}

impl EventView<'_> {
    /// The owned [`Event`].
    pub fn to_event(&self) -> Result<Event, CodecError> {
        Ok(match self {
            EventView::Terminal(e) => Event::Terminal(e.to_device_event()?),
            EventView::Directive(d) => Event::Directive(d.to_directive()?),
        })
    }

    /// Event time in microseconds, as [`Event::at`].
    pub fn at_us(&self) -> i64 {
        match self {
            EventView::Terminal(e) => e.at_us,
            EventView::Directive(d) => d.at_us,
        }
    }
}

impl RecordView<'_> {
    /// The owned [`Record`]: equal to what [`decode_record`] returns for the same body (proptested).
    ///
    /// Cannot fail for a view that [`decode_view`] returned (every field was validated while reading);
    /// the `Result` is there because the owned types re-check what they are built from.
    pub fn to_record(&self) -> Result<Record, CodecError> {
        Ok(Record {
            position: self.position,
            version: self.version,
            event_id: self.event_id.map(EventId::parse).transpose().map_err(field_error)?,
            recorded_at: timestamp(self.recorded_at_us)?,
            commit: self.commit,
            event: self.event.to_event()?,
        })
    }
}

/// Which bytes an identifier may hold: `[A-Za-z0-9_-]`.
const ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        #[expect(clippy::indexing_slicing, reason = "bound proven: b < 256, the table's length (the loop's bound)")]
        {
            table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        }
        b += 1;
    }
    table
};
const _: () = assert!(ID_BYTES.len() == u8::MAX as usize + 1, "every byte indexes ID_BYTES");

/// The bincode reader: a position in the body, every read bounds-checked (no indexing that can panic).
struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed(what: &str) -> CodecError {
    CodecError::Decode(what.to_owned())
}

// The small readers are forced inline: a flow record is a dozen of them, and calls were ~10% of a
// rebuild profile when LLVM left them out of line.
impl<'a> Reader<'a> {
    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.bytes.len() {
            return Err(malformed("unexpected end of the record body"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.bytes.split_first().ok_or_else(|| malformed("unexpected end of the record body"))?;
        self.bytes = rest;
        Ok(b)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A `u64` varint (251/252/253 prefix a u16/u32/u64; 254 and 255 are refused, as by bincode).
    #[inline(always)]
    fn u64(&mut self) -> Result<u64, CodecError> {
        match self.byte()? {
            b @ 0..=250 => Ok(u64::from(b)),
            251 => Ok(u64::from(u16::from_le_bytes(self.array()?))),
            252 => Ok(u64::from(u32::from_le_bytes(self.array()?))),
            253 => Ok(u64::from_le_bytes(self.array()?)),
            _ => Err(malformed("invalid varint discriminant for a u64")),
        }
    }

    /// A `u32` varint (the u64 form is refused, as by bincode).
    #[inline(always)]
    fn u32(&mut self) -> Result<u32, CodecError> {
        match self.byte()? {
            b @ 0..=250 => Ok(u32::from(b)),
            251 => Ok(u32::from(u16::from_le_bytes(self.array()?))),
            252 => Ok(u32::from_le_bytes(self.array()?)),
            _ => Err(malformed("invalid varint discriminant for a u32")),
        }
    }

    /// An `i64`: the zigzag of a `u64` varint.
    #[inline(always)]
    fn i64(&mut self) -> Result<i64, CodecError> {
        let n = self.u64()?;
        // (n >> 1) fits in 63 bits, so the cast is lossless; XOR with all ones for odd n undoes zigzag.
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// A timestamp in microseconds, refused outside chrono's range (as `model::micros` does).
    #[inline(always)]
    fn timestamp(&mut self) -> Result<i64, CodecError> {
        let us = self.i64()?;
        if !(MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&us) {
            return Err(malformed("timestamp out of range"));
        }
        Ok(us)
    }

    /// A 0/1 byte (a `bool`, or an `Option`'s tag); anything else is refused, naming `what`.
    #[inline(always)]
    fn flag(&mut self, what: &str) -> Result<bool, CodecError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::Decode(format!("invalid {what} {b}"))),
        }
    }

    #[inline(always)]
    fn bool(&mut self) -> Result<bool, CodecError> {
        self.flag("bool value")
    }

    /// The tag of an `Option`: `true` for `Some`.
    #[inline(always)]
    fn some(&mut self) -> Result<bool, CodecError> {
        self.flag("Option tag")
    }

    /// The variant index of an enum.
    #[inline(always)]
    fn variant(&mut self) -> Result<u32, CodecError> {
        self.u32()
    }

    /// A string: `u64` length, then UTF-8 bytes.
    #[inline(always)]
    fn str(&mut self) -> Result<&'a str, CodecError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| malformed("string length out of range"))?;
        std::str::from_utf8(self.take(len)?).map_err(|e| CodecError::Decode(e.to_string()))
    }

    /// An identifier: 1..=[`MAX_ID_LEN`] bytes of `[A-Za-z0-9_-]` (the checks of `model::check_id`).
    #[inline(always)]
    fn id(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let len = usize::try_from(self.u64()?).map_err(|_| malformed("string length out of range"))?;
        let bytes = self.take(len)?;
        if bytes.is_empty() || bytes.len() > MAX_ID_LEN {
            return Err(field_error(FieldError::Length { field, max: MAX_ID_LEN, len: bytes.len() }));
        }
        #[expect(clippy::indexing_slicing, reason = "bound proven: a u8 is below ID_BYTES.len() = 256 (asserted)")]
        let charset_ok = bytes.iter().all(|b| ID_BYTES[usize::from(*b)]);
        if !charset_ok {
            // The owned decoder refuses invalid UTF-8 first, then the charset; both refuse.
            return Err(CodecError::Decode(format!("{field} may only hold the characters A-Z a-z 0-9 _ -")));
        }
        // ASCII by the check above, so this cannot fail; it is the safe way to get a `&str`.
        std::str::from_utf8(bytes).map_err(|e| CodecError::Decode(e.to_string()))
    }

    /// Free text: at most [`MAX_TEXT_LEN`] bytes, no control characters (the checks of [`Text`]).
    #[inline(always)]
    fn text(&mut self) -> Result<&'a str, CodecError> {
        let text = self.str()?;
        if text.len() > MAX_TEXT_LEN {
            return Err(field_error(FieldError::Length { field: "text", max: MAX_TEXT_LEN, len: text.len() }));
        }
        if crate::model::has_control(text) {
            return Err(malformed("text must not hold control characters"));
        }
        Ok(text)
    }

    #[inline(always)]
    fn contract(&mut self) -> Result<ContractView<'a>, CodecError> {
        Ok(ContractView { id: self.id("contract id")?, start_us: self.timestamp()?, end_us: self.timestamp()? })
    }

    #[inline(always)]
    fn flag_reason(&mut self) -> Result<FlagReason, CodecError> {
        let index = self.variant()?;
        FlagReason::ALL
            .get(index as usize)
            .copied()
            .ok_or_else(|| CodecError::Decode(format!("unknown flag reason variant {index}")))
    }

    #[inline(always)]
    fn stop_reason(&mut self) -> Result<StopReason, CodecError> {
        let index = self.variant()?;
        StopReason::ALL
            .get(index as usize)
            .copied()
            .ok_or_else(|| CodecError::Decode(format!("unknown stop reason variant {index}")))
    }

    #[inline(always)]
    fn terminal_event(&mut self) -> Result<TerminalEventView<'a>, CodecError> {
        Ok(match self.variant()? {
            0 => TerminalEventView::Issued(IssuedView {
                model: self.id("model")?,
                merchant: self.id("merchant")?,
                provider: self.id("provider")?,
                region: {
                    let region = self.u32()?;
                    // The check of `RegionCode::try_from`.
                    if region > 999_999 {
                        return Err(field_error(FieldError::Range {
                            field: "region",
                            max: 999_999,
                            value: u64::from(region),
                        }));
                    }
                    region
                },
                contract: self.contract()?,
                replaces: if self.some()? { Some(self.id("SN")?) } else { None },
            }),
            1 => TerminalEventView::Flow { amount_fen: self.u64()?, transactions: self.u32()? },
            2 => TerminalEventView::Activated,
            3 => TerminalEventView::ContractRenewed { contract: self.contract()? },
            4 => TerminalEventView::ContractExpired,
            5 => TerminalEventView::Flagged { reason: self.flag_reason()?, note: self.text()? },
            6 => TerminalEventView::FlagCleared { reason: self.flag_reason()?, note: self.text()? },
            7 => TerminalEventView::Stopped {
                reason: self.stop_reason()?,
                directive: if self.some()? { Some(self.id("directive id")?) } else { None },
            },
            8 => TerminalEventView::Replaced { by: self.id("SN")? },
            other => return Err(CodecError::Decode(format!("unknown terminal event variant {other}"))),
        })
    }

    fn directive(&mut self) -> Result<DirectiveView<'a>, CodecError> {
        let id = self.id("directive id")?;
        let at_us = self.timestamp()?;
        let count = usize::try_from(self.u64()?).map_err(|_| malformed("sequence length out of range"))?;
        // Each model takes at least 2 bytes (length and one byte): never reserve more than the body can
        // hold, so a forged count cannot make us allocate (serde caps its preallocation the same way).
        let mut models = Vec::with_capacity(count.min(self.bytes.len() / 2));
        for _ in 0..count {
            models.push(self.id("model")?);
        }
        let reason = self.text()?;
        let deadline_us = if self.some()? { Some(self.timestamp()?) } else { None };
        Ok(DirectiveView { id, at_us, models, reason, deadline_us })
    }

    #[inline(always)]
    fn record(&mut self) -> Result<RecordView<'a>, CodecError> {
        let position = self.u64()?;
        let version = self.u64()?;
        let event_id = if self.some()? { Some(self.id("event_id")?) } else { None };
        let recorded_at_us = self.timestamp()?;
        let commit = self.bool()?;
        let event = match self.variant()? {
            0 => {
                let device = self.id("SN")?;
                let at_us = self.timestamp()?;
                EventView::Terminal(DeviceEventView { device, at_us, event: self.terminal_event()? })
            }
            1 => EventView::Directive(self.directive()?),
            other => return Err(CodecError::Decode(format!("unknown event variant {other}"))),
        };
        Ok(RecordView { position, version, event_id, recorded_at_us, commit, event })
    }
}

impl<'a> EventFields for TerminalEventView<'a> {
    type Time = i64;
    type Model = &'a str;
    #[inline(always)]
    fn contract_fields(&self) -> Option<(&str, &i64, &i64)> {
        match self {
            TerminalEventView::Issued(IssuedView { contract, .. })
            | TerminalEventView::ContractRenewed { contract } => {
                Some((contract.id, &contract.start_us, &contract.end_us))
            }
            _ => None,
        }
    }
    #[inline(always)]
    fn flow_fen(&self) -> Option<u64> {
        match self {
            TerminalEventView::Flow { amount_fen, .. } => Some(*amount_fen),
            _ => None,
        }
    }
    #[inline(always)]
    fn directive_fields(&self) -> Option<(&str, &[&'a str])> {
        None
    }
}

impl<'a> EventFields for EventView<'a> {
    type Time = i64;
    type Model = &'a str;
    #[inline(always)]
    fn contract_fields(&self) -> Option<(&str, &i64, &i64)> {
        match self {
            EventView::Terminal(e) => e.event.contract_fields(),
            EventView::Directive(_) => None,
        }
    }
    #[inline(always)]
    fn flow_fen(&self) -> Option<u64> {
        match self {
            EventView::Terminal(e) => e.event.flow_fen(),
            EventView::Directive(_) => None,
        }
    }
    #[inline(always)]
    fn directive_fields(&self) -> Option<(&str, &[&'a str])> {
        match self {
            EventView::Terminal(_) => None,
            EventView::Directive(d) => Some((d.id, &d.models)),
        }
    }
}

/// Decodes one record body in place, without allocating (but for a directive's model list).
///
/// Accepts exactly the bodies [`decode_record`] accepts and refuses the others with the same
/// [`CodecError`] variant; `decode_view(body)?.to_record()` equals `decode_record_serde(body)?`.
pub fn decode_view(body: &[u8]) -> Result<RecordView<'_>, CodecError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge { len: body.len(), max: MAX_RECORD_BYTES });
    }
    let (&version, rest) = body.split_first().ok_or(CodecError::Empty)?;
    if version != RECORD_FORMAT_V1 {
        return Err(CodecError::UnknownVersion(version));
    }
    let mut reader = Reader { bytes: rest };
    let record = reader.record()?;
    if !reader.bytes.is_empty() {
        return Err(CodecError::Trailing(reader.bytes.len()));
    }
    // The same checks as `Event::validate`: one rule set, read through `EventFields`.
    record.event.check_fields().map_err(field_error)?;
    Ok(record)
}

/// A committed flow record of terminal `SN1` (for tests).
#[cfg(test)]
pub(crate) fn flow_record(position: u64, version: u64, at: chrono::DateTime<chrono::Utc>, amount_fen: u64) -> Record {
    use crate::model::{DeviceEvent, Event, Sn, TerminalEvent};
    let device = Sn::parse("SN1").unwrap_or_else(|e| panic!("a valid test SN: {e}"));
    Record {
        position,
        version,
        event_id: None,
        recorded_at: at,
        commit: true,
        event: Event::Terminal(DeviceEvent { device, at, event: TerminalEvent::Flow { amount_fen, transactions: 1 } }),
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

    mod view {
        use super::super::*;
        use crate::model::*;
        use chrono::{DateTime, Utc};
        use proptest::collection::{hash_set, vec};
        use proptest::prelude::*;

        #[test]
        fn timestamp_bounds_are_chronos() {
            assert!(DateTime::<Utc>::from_timestamp_micros(MIN_TIMESTAMP_US).is_some());
            assert!(DateTime::<Utc>::from_timestamp_micros(MAX_TIMESTAMP_US).is_some());
            assert!(DateTime::<Utc>::from_timestamp_micros(MIN_TIMESTAMP_US - 1).is_none());
            assert!(DateTime::<Utc>::from_timestamp_micros(MAX_TIMESTAMP_US + 1).is_none());
        }

        fn id() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_-]{1,64}"
        }

        fn text() -> impl Strategy<Value = Text> {
            // Any non-control characters (multi-byte ones included), then cut to the byte limit.
            "\\PC{0,24}".prop_map(|s| Text::parse(&s).unwrap())
        }

        fn at() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                4 => 1_500_000_000_000_000i64..2_500_000_000_000_000,
                1 => MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US,
                1 => Just(MIN_TIMESTAMP_US),
                1 => Just(MAX_TIMESTAMP_US),
            ]
            .prop_map(|us| DateTime::<Utc>::from_timestamp_micros(us).unwrap())
        }

        fn contract() -> impl Strategy<Value = Contract> {
            (id(), at(), 1i64..1_000_000_000_000).prop_filter_map("end in range", |(id, start, len)| {
                let end = DateTime::<Utc>::from_timestamp_micros(start.timestamp_micros().checked_add(len)?)?;
                Some(Contract { id: ContractId::parse(&id).unwrap(), start, end })
            })
        }

        fn flag() -> impl Strategy<Value = FlagReason> {
            proptest::sample::select(FlagReason::ALL)
        }

        fn terminal_event() -> impl Strategy<Value = TerminalEvent> {
            prop_oneof![
                (id(), id(), id(), 0u32..=999_999, contract(), proptest::option::of(id())).prop_map(
                    |(model, merchant, provider, region, contract, replaces)| {
                        TerminalEvent::Issued(Box::new(Issued {
                            model: ModelCode::parse(&model).unwrap(),
                            merchant: MerchantId::parse(&merchant).unwrap(),
                            provider: ProviderId::parse(&provider).unwrap(),
                            region: RegionCode::try_from(region).unwrap(),
                            contract,
                            replaces: replaces.map(|s| Sn::parse(&s).unwrap()),
                        }))
                    }
                ),
                (prop_oneof![0u64..300, 0..=MAX_FLOW_FEN], any::<u32>())
                    .prop_map(|(amount_fen, transactions)| TerminalEvent::Flow { amount_fen, transactions }),
                Just(TerminalEvent::Activated),
                contract().prop_map(|contract| TerminalEvent::ContractRenewed { contract }),
                Just(TerminalEvent::ContractExpired),
                (flag(), text()).prop_map(|(reason, note)| TerminalEvent::Flagged { reason, note }),
                (flag(), text()).prop_map(|(reason, note)| TerminalEvent::FlagCleared { reason, note }),
                (proptest::sample::select(StopReason::ALL), proptest::option::of(id())).prop_map(
                    |(reason, directive)| TerminalEvent::Stopped {
                        reason,
                        directive: directive.map(|d| DirectiveId::parse(&d).unwrap())
                    }
                ),
                id().prop_map(|by| TerminalEvent::Replaced { by: Sn::parse(&by).unwrap() }),
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                8 => (id(), at(), terminal_event()).prop_map(|(device, at, event)| Event::Terminal(DeviceEvent {
                    device: Sn::parse(&device).unwrap(),
                    at,
                    event
                })),
                1 => (id(), at(), hash_set(id(), 1..6), text(), proptest::option::of(at())).prop_map(
                    |(id, at, models, reason, deadline)| Event::Directive(Directive {
                        id: DirectiveId::parse(&id).unwrap(),
                        at,
                        models: models.iter().map(|m| ModelCode::parse(m).unwrap()).collect(),
                        reason,
                        deadline,
                    })
                ),
            ]
        }

        /// Records of every event variant (each terminal event, and directives), with integers and
        /// timestamps spread over every varint width.
        pub(super) fn record() -> impl Strategy<Value = Record> {
            (
                prop_oneof![0u64..300, any::<u64>()],
                prop_oneof![0u64..70_000, any::<u64>()],
                proptest::option::of(id()),
                at(),
                any::<bool>(),
                event(),
            )
                .prop_map(|(position, version, event_id, recorded_at, commit, event)| Record {
                    position,
                    version,
                    event_id: event_id.map(|e| EventId::parse(&e).unwrap()),
                    recorded_at,
                    commit,
                    event,
                })
        }

        fn body(record: &Record) -> Vec<u8> {
            let mut out = Vec::new();
            encode_record(record, &mut out).unwrap();
            out
        }

        /// Both decoders agree: the same record, or errors of the same variant.
        fn agree(body: &[u8]) -> Result<bool, TestCaseError> {
            let owned = decode_record_serde(body);
            let view = decode_view(body);
            match (&owned, decode_record(body)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, &b),
                (Err(a), Err(b)) => prop_assert_eq!(std::mem::discriminant(a), std::mem::discriminant(&b)),
                (a, b) => prop_assert!(false, "serde {:?} vs decode_record {:?}", a, b),
            }
            match (&owned, &view) {
                (Ok(owned), Ok(view)) => {
                    prop_assert_eq!(&view.to_record().unwrap(), owned);
                    Ok(true)
                }
                (Err(a), Err(b)) => {
                    prop_assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "{} vs {}", a, b);
                    Ok(false)
                }
                _ => {
                    prop_assert!(false, "owned {:?} vs view {:?} for {:?}", owned, view, body);
                    Ok(false)
                }
            }
        }

        #[derive(Clone, Debug)]
        enum Mutation {
            Set(usize, u8),
            Truncate(usize),
            Insert(usize, u8),
            Append(Vec<u8>),
            Remove(usize),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
                // Bytes that matter to the grammar: tags, varint prefixes, control and non-ASCII chars.
                3 => (any::<usize>(), proptest::sample::select(vec![0u8, 1, 2, 8, 9, 0x1f, 0x7f, 0x80, 0xc2, 250, 251, 252, 253, 254, 255]))
                    .prop_map(|(i, b)| Mutation::Set(i, b)),
                1 => any::<usize>().prop_map(Mutation::Truncate),
                1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
                1 => vec(any::<u8>(), 1..4).prop_map(Mutation::Append),
                1 => any::<usize>().prop_map(Mutation::Remove),
            ]
        }

        fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
            for m in mutations {
                let n = body.len().max(1);
                match m {
                    Mutation::Set(i, b) => {
                        if let Some(x) = body.get_mut(i % n) {
                            *x = *b;
                        }
                    }
                    Mutation::Truncate(i) => body.truncate(i % n),
                    Mutation::Insert(i, b) => body.insert(i % (body.len() + 1), *b),
                    Mutation::Append(bytes) => body.extend_from_slice(bytes),
                    Mutation::Remove(i) => {
                        if !body.is_empty() {
                            body.remove(i % n);
                        }
                    }
                }
            }
            body
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn view_equals_owned_on_valid_records(record in record()) {
                let body = body(&record);
                prop_assert!(agree(&body)?);
                prop_assert_eq!(decode_view(&body).unwrap().to_record().unwrap(), record);
            }

            #[test]
            fn both_refuse_the_same_mutated_bodies(record in record(), mutations in vec(mutation(), 1..4)) {
                agree(&mutate(body(&record), &mutations))?;
            }

            #[test]
            fn both_refuse_the_same_random_bodies(tail in vec(any::<u8>(), 0..64)) {
                let mut body = vec![RECORD_FORMAT_V1];
                body.extend(tail);
                agree(&body)?;
            }

            #[test]
            fn both_agree_on_every_prefix(record in record()) {
                let body = body(&record);
                for cut in 0..body.len() {
                    agree(&body[..cut])?;
                }
            }
        }

        #[test]
        fn invalid_fields_are_refused_alike() {
            let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_000_000).unwrap();
            let base = flow_record(1, 0, at, MAX_FLOW_FEN);
            let good = body(&base);
            assert!(agree(&good).unwrap());
            // Flow over the limit: refused after decoding (validate), by both.
            let mut over = base.clone();
            if let Event::Terminal(e) = &mut over.event {
                e.event = TerminalEvent::Flow { amount_fen: MAX_FLOW_FEN + 1, transactions: 1 };
            }
            assert!(!agree(&body(&over)).unwrap());
            // ... and with a trailing byte it is `Trailing` for both (trailing is checked first).
            let mut over_trailing = body(&over);
            over_trailing.push(0);
            assert!(matches!(decode_view(&over_trailing), Err(CodecError::Trailing(1))));
            assert!(!agree(&over_trailing).unwrap());
            // A directive listing a model twice, and one listing none.
            for models in [vec!["A", "A"], vec![]] {
                let d = Record {
                    event: Event::Directive(Directive {
                        id: DirectiveId::parse("D1").unwrap(),
                        at,
                        models: models.iter().map(|m| ModelCode::parse(m).unwrap()).collect(),
                        reason: Text::parse("r").unwrap(),
                        deadline: None,
                    }),
                    ..base.clone()
                };
                assert!(!agree(&body(&d)).unwrap());
            }
            // Text with a control character (C1, two bytes in UTF-8), an SN of 65 bytes, region 10^6.
            let mut flagged = body(&Record {
                event: Event::Terminal(DeviceEvent {
                    device: Sn::parse("SN1").unwrap(),
                    at,
                    event: TerminalEvent::Flagged { reason: FlagReason::Other, note: Text::parse("xé").unwrap() },
                }),
                ..base.clone()
            });
            let e = flagged.windows(2).position(|w| w == "é".as_bytes()).unwrap();
            assert!(agree(&flagged).unwrap());
            flagged[e] = 0xc2;
            flagged[e + 1] = 0x85; // U+0085, a C1 control
            assert!(!agree(&flagged).unwrap());
            let long = "S".repeat(MAX_ID_LEN);
            let mut long_sn = body(&Record {
                event: Event::Terminal(DeviceEvent {
                    device: Sn::parse(&long).unwrap(),
                    at,
                    event: TerminalEvent::Activated,
                }),
                ..base.clone()
            });
            assert!(agree(&long_sn).unwrap());
            let len_at = long_sn.windows(MAX_ID_LEN).position(|w| w == long.as_bytes()).unwrap() - 1;
            long_sn[len_at] = 65;
            long_sn.insert(len_at + 1, b'S');
            assert!(!agree(&long_sn).unwrap());
        }
    }

    mod encoder {
        use super::super::*;
        use super::view::record;
        use crate::model::*;
        use chrono::{DateTime, Utc};
        use proptest::prelude::*;

        /// The record encoded by both encoders, each appended after the same bytes: the bodies must be
        /// byte for byte the same, and so must the returned lengths.
        fn both(record: &Record) -> Vec<u8> {
            let prefix = vec![0xAB, 0xCD];
            let (mut fast, mut serde) = (prefix.clone(), prefix.clone());
            let fast_len = encode_record_ref(&RecordRef::from(record), &mut fast).unwrap();
            let serde_len = encode_record_serde(&RecordRef::from(record), &mut serde).unwrap();
            assert_eq!(fast, serde, "{record:?}");
            assert_eq!(fast_len, serde_len);
            assert_eq!(fast_len, fast.len() - prefix.len());
            assert_eq!(fast[..prefix.len()], prefix[..]);
            fast.split_off(prefix.len())
        }

        fn bincode_bytes<T: bincode::Encode>(value: T) -> Vec<u8> {
            bincode::encode_to_vec(value, bincode::config::standard()).unwrap()
        }

        fn varint(value: u64) -> Vec<u8> {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            out
        }

        fn zigzag(value: i64) -> Vec<u8> {
            let mut out = Vec::new();
            put_i64(&mut out, value);
            out
        }

        fn at(us: i64) -> DateTime<Utc> {
            DateTime::<Utc>::from_timestamp_micros(us).unwrap()
        }

        /// One event of each variant (every terminal event, `Option`s both ways, and directives).
        fn every_variant(t: DateTime<Utc>, text: &Text) -> Vec<Event> {
            let contract = Contract { id: ContractId::parse("C-1").unwrap(), start: t, end: at(MAX_TIMESTAMP_US) };
            let issued = |replaces: Option<&str>| {
                TerminalEvent::Issued(Box::new(Issued {
                    model: ModelCode::parse("LKL-A8").unwrap(),
                    merchant: MerchantId::parse("M_0001").unwrap(),
                    provider: ProviderId::parse("lakala").unwrap(),
                    region: RegionCode::try_from(999_999).unwrap(),
                    contract: contract.clone(),
                    replaces: replaces.map(|r| Sn::parse(r).unwrap()),
                }))
            };
            let mut terminal = vec![issued(None), issued(Some("SN0"))];
            for transactions in [0, 250, 251, 65_535, 65_536, u32::MAX] {
                for amount_fen in [0, 250, 251, 65_535, 65_536, 1 << 32, MAX_FLOW_FEN, u64::MAX] {
                    terminal.push(TerminalEvent::Flow { amount_fen, transactions });
                }
            }
            terminal.push(TerminalEvent::Activated);
            terminal.push(TerminalEvent::ContractRenewed { contract: contract.clone() });
            terminal.push(TerminalEvent::ContractExpired);
            for &reason in FlagReason::ALL {
                terminal.push(TerminalEvent::Flagged { reason, note: text.clone() });
                terminal.push(TerminalEvent::FlagCleared { reason, note: text.clone() });
            }
            for &reason in StopReason::ALL {
                terminal.push(TerminalEvent::Stopped { reason, directive: None });
                terminal.push(TerminalEvent::Stopped { reason, directive: Some(DirectiveId::parse("D-1").unwrap()) });
            }
            terminal.push(TerminalEvent::Replaced { by: Sn::parse(&"S".repeat(MAX_ID_LEN)).unwrap() });
            let mut events: Vec<Event> = terminal
                .into_iter()
                .map(|event| Event::Terminal(DeviceEvent { device: Sn::parse("SN1").unwrap(), at: t, event }))
                .collect();
            // 1, 250, 251 and 300 models: the model count's varint in both widths.
            for count in [1, 250, 251, 300] {
                for deadline in [None, Some(t)] {
                    events.push(Event::Directive(Directive {
                        id: DirectiveId::parse("D-2026-07").unwrap(),
                        at: t,
                        models: (0..count).map(|i| ModelCode::parse(&format!("M{i}")).unwrap()).collect(),
                        reason: text.clone(),
                        deadline,
                    }));
                }
            }
            events
        }

        #[test]
        fn varint_boundaries_match_bincode() {
            let boundaries = [0u64, 1, 250, 251, 252, 253, 65_535, 65_536, 1 << 31, 1 << 32];
            let u32_max = u64::from(u32::MAX);
            for value in boundaries.into_iter().chain([u32_max - 1, u32_max, u32_max + 1, u64::MAX - 1, u64::MAX]) {
                assert_eq!(varint(value), bincode_bytes(value), "u64 {value}");
                if let Ok(value32) = u32::try_from(value) {
                    assert_eq!(varint(value), bincode_bytes(value32), "u32 {value}");
                }
            }
            assert_eq!(varint(250), [250]);
            assert_eq!(varint(251), [251, 251, 0]);
            assert_eq!(varint(65_535), [251, 0xff, 0xff]);
            assert_eq!(varint(65_536), [252, 0, 0, 1, 0]);
            assert_eq!(varint(u32_max), [252, 0xff, 0xff, 0xff, 0xff]);
            assert_eq!(varint(u32_max + 1), [253, 0, 0, 0, 0, 1, 0, 0, 0]);
            let signed = [0i64, 1, -1, 125, -125, 126, -126, 32_767, -32_768, 32_768, -32_769, i64::MIN, i64::MAX];
            let timestamps = [MIN_TIMESTAMP_US, MAX_TIMESTAMP_US, -1_000_000, 1_700_000_000_000_000];
            for value in signed.into_iter().chain(timestamps) {
                assert_eq!(zigzag(value), bincode_bytes(value), "i64 {value}");
            }
        }

        #[test]
        fn every_variant_and_width_encodes_as_serde() {
            let long = |n: usize| Text::parse(&"x".repeat(n)).unwrap();
            // Text lengths on both sides of the one-byte varint, and the longest text.
            let texts = [Text::default(), Text::parse("é note").unwrap(), long(250), long(251), long(MAX_TEXT_LEN)];
            let times = [MIN_TIMESTAMP_US, -1, 0, 1, 1_700_000_000_000_000, MAX_TIMESTAMP_US - 1];
            let mut count = 0;
            for (i, text) in texts.iter().enumerate() {
                for &us in &times {
                    for event in every_variant(at(us), text) {
                        let n = u64::try_from(count).unwrap();
                        let integers = [0, 250, 251, 65_535, 65_536, u64::from(u32::MAX), 1 << 32, u64::MAX];
                        let record = Record {
                            position: integers[count % integers.len()],
                            version: integers[(count / integers.len() + i) % integers.len()],
                            event_id: (n % 2 == 1).then(|| EventId::parse(&format!("e-{n}")).unwrap()),
                            recorded_at: at(us),
                            commit: n % 3 == 0,
                            event,
                        };
                        let body = both(&record);
                        // A valid record reads back as itself (flows over the limit are not valid).
                        if record.event.validate().is_ok() {
                            assert_eq!(decode_record(&body).unwrap(), record);
                        }
                        count += 1;
                    }
                }
            }
            assert!(count > 1000);
        }

        #[test]
        fn a_body_over_the_limit_is_refused_and_out_is_unchanged() {
            let t = at(1_700_000_000_000_000);
            // 20,000 distinct models of 64 bytes: over 1 MiB (the encoder does not validate).
            let record = Record {
                position: 1,
                version: 1,
                event_id: None,
                recorded_at: t,
                commit: true,
                event: Event::Directive(Directive {
                    id: DirectiveId::parse("D1").unwrap(),
                    at: t,
                    models: (0..20_000).map(|i| ModelCode::parse(&format!("{i:064}")).unwrap()).collect(),
                    reason: Text::default(),
                    deadline: None,
                }),
            };
            for encode in [encode_record_ref, encode_record_serde] {
                let mut out = vec![1, 2, 3];
                let err = encode(&RecordRef::from(&record), &mut out).unwrap_err();
                assert!(matches!(err, CodecError::TooLarge { len, max: MAX_RECORD_BYTES } if len > MAX_RECORD_BYTES));
                assert_eq!(out, [1, 2, 3]);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            #[test]
            fn fast_encoder_equals_serde(record in record()) {
                let body = both(&record);
                // And equals bincode's encoding of the owned record.
                let mut owned = vec![RECORD_FORMAT_V1];
                owned.extend(bincode::serde::encode_to_vec(&record, bincode::config::standard()).unwrap());
                prop_assert_eq!(body, owned);
            }

            #[test]
            fn varints_equal_bincodes(value in any::<u64>(), small in any::<u32>(), signed in any::<i64>()) {
                prop_assert_eq!(varint(value), bincode_bytes(value));
                prop_assert_eq!(varint(u64::from(small)), bincode_bytes(small));
                prop_assert_eq!(zigzag(signed), bincode_bytes(signed));
            }
        }
    }
}

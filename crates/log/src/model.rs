//! The domain model: identifiers, terminal events, directives and the record envelope.
//!
//! Every identifier is a validated newtype: it can only be built through `parse`/`TryFrom`, and
//! decoding re-validates it (serde `try_from`), so a value of these types always satisfies its limits.
//! Money is integer fen (`amount_fen`, 1 yuan = 100 fen); times are `chrono::DateTime<Utc>`, stored as
//! microseconds since the Unix epoch.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest identifier (SN, model code, merchant, provider, contract, directive, event id), in bytes.
pub const MAX_ID_LEN: usize = 64;
/// The longest free-text field (flag note, directive reason), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// The most models one directive may name.
pub const MAX_DIRECTIVE_MODELS: usize = 10_000;
/// The largest amount one flow observation may carry: 10^12 fen (10 billion yuan). Keeps sums far from overflow.
pub const MAX_FLOW_FEN: u64 = 1_000_000_000_000;
/// Cumulative flow at which a terminal may be activated: 100 yuan.
pub const ACTIVATION_FLOW_FEN: u64 = 10_000;

/// Why an identifier or field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// Empty, or longer than the limit.
    #[error("{field} must be 1 to {max} bytes long, got {len}")]
    Length {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// A list with too few or too many elements.
    #[error("{field} must list 1 to {max} entries, got {len}")]
    Count {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// How many were given.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("{field} {value:?} may only hold {allowed}")]
    Charset {
        /// Which field.
        field: &'static str,
        /// The offending value (already known to be at most the length limit).
        value: String,
        /// A description of the allowed characters.
        allowed: &'static str,
    },
    /// A numeric field out of range.
    #[error("{field} must be at most {max}, got {value}")]
    Range {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: u64,
        /// What was given.
        value: u64,
    },
    /// A structural rule of a compound value.
    #[error("{0}")]
    Invalid(String),
}

fn check_id(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(FieldError::Length { field, max: MAX_ID_LEN, len: value.len() });
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(FieldError::Charset { field, value: value.to_owned(), allowed: "the characters A-Z a-z 0-9 _ -" });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        ///
        /// Held inline (no heap allocation) up to 24 bytes, which covers SNs and codes in practice: a
        /// fleet's events are mostly identifiers, and allocating, chasing and freeing one string per
        /// event cost more than validating and encoding it. Serialized exactly as a `String`.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(compact_str::CompactString);

        impl $name {
            /// Validates and wraps `value`: 1 to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9_-]`.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                Self::check(value)?;
                Ok(Self(compact_str::CompactString::new(value)))
            }
            /// The checks of [`Self::parse`], without building the value.
            pub fn check(value: &str) -> Result<(), FieldError> {
                check_id($field, value)
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                check_id($field, &value)?;
                Ok(Self(compact_str::CompactString::from(value)))
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.into_string()
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::try_from(text).map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                Self::parse(s)
            }
        }
    };
}

identifier!(
    /// A terminal's serial number (一机一码: one SN for the terminal's whole life).
    Sn, "SN"
);
identifier!(
    /// A terminal model code, e.g. `LKL-A8`.
    ModelCode, "model"
);
identifier!(
    /// The merchant a terminal is bound to.
    MerchantId, "merchant"
);
identifier!(
    /// The acquirer / service provider, e.g. `lakala`.
    ProviderId, "provider"
);
identifier!(
    /// A service contract's identifier.
    ContractId, "contract id"
);
identifier!(
    /// An emergency-stop directive's identifier, e.g. `D-2026-07`.
    DirectiveId, "directive id"
);
identifier!(
    /// A caller-chosen event id that makes a retried append idempotent.
    EventId, "event_id"
);

/// A 6-digit administrative region code (GB/T 2260), e.g. `310000`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RegionCode(u32);

impl RegionCode {
    /// Parses exactly six ASCII digits.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.len() != 6 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::Charset {
                field: "region",
                value: value.chars().take(MAX_ID_LEN).collect(),
                allowed: "exactly six digits",
            });
        }
        value.parse::<u32>().map(Self).map_err(|_| FieldError::Invalid(format!("region {value:?} is not a number")))
    }
    /// The code as a number (0..=999999).
    pub fn get(self) -> u32 {
        self.0
    }
}
impl TryFrom<u32> for RegionCode {
    type Error = FieldError;
    fn try_from(value: u32) -> Result<Self, FieldError> {
        if value > 999_999 {
            return Err(FieldError::Range { field: "region", max: 999_999, value: u64::from(value) });
        }
        Ok(Self(value))
    }
}
impl From<RegionCode> for u32 {
    fn from(value: RegionCode) -> u32 {
        value.0
    }
}
impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}
impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({:06})", self.0)
    }
}

/// Free text (a flag note, a directive's reason): at most [`MAX_TEXT_LEN`] bytes, no control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    /// Validates and wraps `value`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::try_from(value.to_owned())
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
/// Whether `text` holds a control character (`char::is_control`: C0, DEL, C1). The one copy of the
/// rule, for [`Text`] and for the codec's borrowed decoding.
#[inline]
pub(crate) fn has_control(text: &str) -> bool {
    // ASCII text (most notes) is checked a byte at a time: its control characters are 0x00-0x1F and
    // 0x7F, the same set `char::is_control` gives there.
    if text.is_ascii() {
        text.bytes().any(|b| b < 0x20 || b == 0x7f)
    } else {
        text.chars().any(char::is_control)
    }
}

impl TryFrom<String> for Text {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, FieldError> {
        if value.len() > MAX_TEXT_LEN {
            return Err(FieldError::Length { field: "text", max: MAX_TEXT_LEN, len: value.len() });
        }
        if has_control(&value) {
            return Err(FieldError::Invalid("text must not hold control characters".into()));
        }
        Ok(Self(value))
    }
}
impl From<Text> for String {
    fn from(value: Text) -> String {
        value.0
    }
}
impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Serde helpers storing a `DateTime<Utc>` as `i64` microseconds since the Unix epoch.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as microseconds.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(at.timestamp_micros())
    }
    /// Deserializes from microseconds; out-of-range values are an error, not a panic.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let us = i64::deserialize(d)?;
        DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| serde::de::Error::custom("timestamp out of range"))
    }
    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};
        /// Serializes as optional microseconds.
        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_some(&at.timestamp_micros()),
                None => s.serialize_none(),
            }
        }
        /// Deserializes optional microseconds.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<i64>::deserialize(d)? {
                None => Ok(None),
                Some(us) => DateTime::<Utc>::from_timestamp_micros(us)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("timestamp out of range")),
            }
        }
    }
}

/// A service contract between the merchant and the provider.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Contract {
    /// The contract's id.
    pub id: ContractId,
    /// When the service starts.
    #[serde(with = "micros")]
    pub start: DateTime<Utc>,
    /// When the service ends unless renewed.
    #[serde(with = "micros")]
    pub end: DateTime<Utc>,
}

impl Contract {
    /// A contract must end after it starts.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_contract(self.id.as_str(), &self.start, &self.end)
    }
}

/// The rule of [`Contract::validate`], on any time type (the owned `DateTime`s, the codec view's
/// microseconds): written once for both.
#[inline]
fn check_contract<T: PartialOrd>(id: &str, start: &T, end: &T) -> Result<(), FieldError> {
    if end <= start {
        return Err(FieldError::Invalid(format!("contract {id} must end after it starts")));
    }
    Ok(())
}

/// The fields the state-independent checks of an event read, as the owned types ([`Event`],
/// [`TerminalEvent`], [`Directive`]) and the codec's zero-copy views (`codec::EventView`, ...) both expose
/// them. The checks themselves, [`EventFields::check_fields`], are written once, here: an impl only says
/// where its fields are, so the owned and the borrowed decoders cannot drift apart.
pub trait EventFields {
    /// How the event holds a time (`DateTime<Utc>` owned, microseconds in a view).
    type Time: PartialOrd;
    /// How a directive holds a model code (`ModelCode` owned, `&str` in a view).
    type Model: Ord + fmt::Display;
    /// The contract an `issued` or `contract_renewed` carries: id, start, end.
    fn contract_fields(&self) -> Option<(&str, &Self::Time, &Self::Time)>;
    /// The amount of a `flow`, in fen.
    fn flow_fen(&self) -> Option<u64>;
    /// A directive's id and models.
    fn directive_fields(&self) -> Option<(&str, &[Self::Model])>;

    /// The field limits that do not depend on any state: a contract ends after it starts, a flow is at
    /// most [`MAX_FLOW_FEN`], a directive names 1..=[`MAX_DIRECTIVE_MODELS`] distinct models. Allocates
    /// only for a directive (to sort its models).
    #[inline]
    fn check_fields(&self) -> Result<(), FieldError> {
        if let Some((id, start, end)) = self.contract_fields() {
            check_contract(id, start, end)?;
        }
        if let Some(amount_fen) = self.flow_fen() {
            if amount_fen > MAX_FLOW_FEN {
                return Err(FieldError::Range { field: "amount_fen", max: MAX_FLOW_FEN, value: amount_fen });
            }
        }
        if let Some((id, models)) = self.directive_fields() {
            if models.is_empty() || models.len() > MAX_DIRECTIVE_MODELS {
                return Err(FieldError::Count { field: "models", max: MAX_DIRECTIVE_MODELS, len: models.len() });
            }
            let mut sorted: Vec<&Self::Model> = models.iter().collect();
            sorted.sort_unstable();
            if let Some(twice) = sorted.windows(2).find_map(|pair| match pair {
                [a, b] if a == b => Some(*a),
                _ => None,
            }) {
                return Err(FieldError::Invalid(format!("directive {id} lists model {twice} twice")));
            }
        }
        Ok(())
    }
}

macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The snake_case name used in NDJSON and reports.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses the snake_case name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

name_enum!(
    /// Why risk control raised a flag.
    FlagReason {
        /// 套现: cashing out through fake purchases.
        CashOut = "cash_out",
        /// 移机: the terminal was moved away from the merchant's registered place.
        Relocation = "relocation",
        /// 跳码: MCC code jumping.
        CodeJumping = "code_jumping",
        /// Abnormal transaction volume.
        AbnormalVolume = "abnormal_volume",
        /// The model's certificate was revoked.
        CertificateRevoked = "certificate_revoked",
        /// Anything else.
        Other = "other",
    }
);

impl FlagReason {
    /// The bit of this reason in a [`crate::lifecycle::FlagSet`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

name_enum!(
    /// Why a terminal was stopped.
    StopReason {
        /// An emergency stop of whole models; must name a directive that lists the terminal's model.
        ModelRecall = "model_recall",
        /// The service contract ended without renewal.
        ContractExpired = "contract_expired",
        /// A violation found by risk control.
        Violation = "violation",
        /// Replaced for a technology upgrade.
        Upgrade = "upgrade",
        /// The merchant asked for it.
        MerchantRequest = "merchant_request",
    }
);

/// The facts recorded when a terminal is issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Model code.
    pub model: ModelCode,
    /// Merchant it is bound to.
    pub merchant: MerchantId,
    /// Acquirer / provider.
    pub provider: ProviderId,
    /// Region code.
    pub region: RegionCode,
    /// The service contract.
    pub contract: Contract,
    /// The stopped terminal this one replaces, if any.
    pub replaces: Option<Sn>,
}

/// What happened to one terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminalEvent {
    /// Shipped and bound to a merchant. A decision.
    Issued(Box<Issued>),
    /// Transaction flow reported by the switch. An observation.
    Flow {
        /// Amount in fen (1 yuan = 100 fen), at most [`MAX_FLOW_FEN`].
        amount_fen: u64,
        /// Number of transactions in the amount.
        transactions: u32,
    },
    /// Activated after 100 yuan of flow. A decision.
    Activated,
    /// The contract was renewed (续签). A decision.
    ContractRenewed {
        /// The new contract.
        contract: Contract,
    },
    /// The contract ended. An observation.
    ContractExpired,
    /// Risk control raised a flag. An observation.
    Flagged {
        /// Why.
        reason: FlagReason,
        /// Free text.
        note: Text,
    },
    /// An open flag was investigated and closed. A decision.
    FlagCleared {
        /// Which flag.
        reason: FlagReason,
        /// Free text.
        note: Text,
    },
    /// Switched off. A decision.
    Stopped {
        /// Why.
        reason: StopReason,
        /// The directive that ordered it, if any.
        directive: Option<DirectiveId>,
    },
    /// Replaced by a new terminal issued in the same append. A decision.
    Replaced {
        /// The new terminal's SN.
        by: Sn,
    },
}

impl TerminalEvent {
    /// The snake_case type name used in NDJSON (`issued`, `flow`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            TerminalEvent::Issued(_) => "issued",
            TerminalEvent::Flow { .. } => "flow",
            TerminalEvent::Activated => "activated",
            TerminalEvent::ContractRenewed { .. } => "contract_renewed",
            TerminalEvent::ContractExpired => "contract_expired",
            TerminalEvent::Flagged { .. } => "flagged",
            TerminalEvent::FlagCleared { .. } => "flag_cleared",
            TerminalEvent::Stopped { .. } => "stopped",
            TerminalEvent::Replaced { .. } => "replaced",
        }
    }

    /// Checks the field limits that do not depend on any state ([`EventFields::check_fields`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check_fields()
    }
}

impl EventFields for TerminalEvent {
    type Time = DateTime<Utc>;
    type Model = ModelCode;
    #[inline]
    fn contract_fields(&self) -> Option<(&str, &DateTime<Utc>, &DateTime<Utc>)> {
        match self {
            TerminalEvent::Issued(issued) => Some(&issued.contract),
            TerminalEvent::ContractRenewed { contract } => Some(contract),
            _ => None,
        }
        .map(|c| (c.id.as_str(), &c.start, &c.end))
    }
    #[inline]
    fn flow_fen(&self) -> Option<u64> {
        match self {
            TerminalEvent::Flow { amount_fen, .. } => Some(*amount_fen),
            _ => None,
        }
    }
    #[inline]
    fn directive_fields(&self) -> Option<(&str, &[ModelCode])> {
        None
    }
}

/// One event of one terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// The terminal.
    pub device: Sn,
    /// When it happened.
    #[serde(with = "micros")]
    pub at: DateTime<Utc>,
    /// What happened.
    pub event: TerminalEvent,
}

/// An emergency-stop order naming a list of models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Never reused.
    pub id: DirectiveId,
    /// When it takes effect.
    #[serde(with = "micros")]
    pub at: DateTime<Utc>,
    /// The models to stop: 1..=[`MAX_DIRECTIVE_MODELS`], distinct.
    pub models: Vec<ModelCode>,
    /// Why.
    pub reason: Text,
    /// By when every terminal of the models must be stopped.
    #[serde(with = "micros::option")]
    pub deadline: Option<DateTime<Utc>>,
}

impl Directive {
    /// Checks the model list: 1..=10,000 distinct models ([`EventFields::check_fields`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check_fields()
    }
}

impl EventFields for Directive {
    type Time = DateTime<Utc>;
    type Model = ModelCode;
    #[inline]
    fn contract_fields(&self) -> Option<(&str, &DateTime<Utc>, &DateTime<Utc>)> {
        None
    }
    #[inline]
    fn flow_fen(&self) -> Option<u64> {
        None
    }
    #[inline]
    fn directive_fields(&self) -> Option<(&str, &[ModelCode])> {
        Some((self.id.as_str(), &self.models))
    }
}

/// Anything the log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An event of one terminal, in that terminal's stream.
    Terminal(DeviceEvent),
    /// A directive, in the directives stream.
    Directive(Directive),
}

impl Event {
    /// The stream the event belongs to.
    pub fn stream(&self) -> StreamId {
        match self {
            Event::Terminal(e) => StreamId::Terminal(e.device.clone()),
            Event::Directive(_) => StreamId::Directives,
        }
    }
    /// When it happened (the event's own time, not when it was recorded).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Terminal(e) => e.at,
            Event::Directive(d) => d.at,
        }
    }
    /// The snake_case type name (`issued`, ..., `directive`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Terminal(e) => e.event.type_name(),
            Event::Directive(_) => "directive",
        }
    }
    /// Checks the field limits that do not depend on any state ([`EventFields::check_fields`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check_fields()
    }
}

impl EventFields for Event {
    type Time = DateTime<Utc>;
    type Model = ModelCode;
    #[inline]
    fn contract_fields(&self) -> Option<(&str, &DateTime<Utc>, &DateTime<Utc>)> {
        match self {
            Event::Terminal(e) => e.event.contract_fields(),
            Event::Directive(_) => None,
        }
    }
    #[inline]
    fn flow_fen(&self) -> Option<u64> {
        match self {
            Event::Terminal(e) => e.event.flow_fen(),
            Event::Directive(_) => None,
        }
    }
    #[inline]
    fn directive_fields(&self) -> Option<(&str, &[ModelCode])> {
        match self {
            Event::Terminal(_) => None,
            Event::Directive(d) => d.directive_fields(),
        }
    }
}

/// A stream: the events of one terminal, or the directives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamId {
    /// One terminal's stream.
    Terminal(Sn),
    /// The single stream of every directive.
    Directives,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Terminal(sn) => write!(f, "terminal {sn}"),
            StreamId::Directives => f.write_str("directives"),
        }
    }
}

/// An event as the log holds it: the envelope around one [`Event`].
///
/// The stream is not stored twice: it is derived from the event ([`Record::stream`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Dense position in the whole log, from 0.
    pub position: u64,
    /// Dense version in the record's stream, from 0: the number of earlier events in the stream.
    pub version: u64,
    /// The caller's idempotency key, if given.
    pub event_id: Option<EventId>,
    /// When the ledger recorded it. Never decreases along the log.
    #[serde(with = "micros")]
    pub recorded_at: DateTime<Utc>,
    /// True on the last record of each append: the commit marker that makes a multi-record append
    /// all-or-nothing across a crash (a tail without it is cut on open).
    pub commit: bool,
    /// The event.
    pub event: Event,
}

impl Record {
    /// The record's stream.
    pub fn stream(&self) -> StreamId {
        self.event.stream()
    }
}

/// One event to append, with its optional idempotency key and optimistic-concurrency check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEvent {
    /// The event.
    pub event: Event,
    /// Makes a retry idempotent: an id already in the log is not appended again.
    pub event_id: Option<EventId>,
    /// The number of events the stream must hold just before this event, else the whole append fails.
    pub expected_version: Option<u64>,
}

impl From<Event> for AppendEvent {
    fn from(event: Event) -> Self {
        AppendEvent { event, event_id: None, expected_version: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_are_those_of_char_is_control_ascii_or_not() {
        for (text, control) in [
            ("plain note", false),
            ("tab\there", true),
            ("del\u{7f}", true),
            ("nul\u{0}", true),
            ("c1 next line \u{85}", true),
            ("c1 last \u{9f}", true),
            ("商户移机 é", false),
            ("", false),
        ] {
            assert_eq!(has_control(text), control, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn prop_has_control_is_char_is_control(text in any::<String>()) {
            prop_assert_eq!(has_control(&text), text.chars().any(char::is_control));
        }
    }
}

//! The NDJSON event schema of docs/NDJSON.md, both directions: [`parse_line`] turns one line into an
//! [`AppendEvent`] (what `posledger append` reads) and [`render`] turns a [`Record`] back into exactly
//! that schema (what `replay export --format ndjson` writes), so an export appended into an empty
//! ledger rebuilds the same fleet.
//!
//! One JSON object a line; `type` selects the event; `at` is RFC 3339 (any offset is accepted and
//! converted to UTC; at most microsecond precision, which is what the log stores); optional `event_id`
//! makes a retry idempotent; optional `expected_version` is the number of events the stream must
//! already hold. Unknown fields are refused, so a typo never silently drops data. `docs/NDJSON.md` has
//! an example line per type.
//!
//! Most lines (every line an export writes) are read in one pass into borrowed typed fields, with no JSON
//! tree; a line that pass does not accept as it is takes the checked path below, which names its
//! problem ([`parse_line`] says why both give the same answer for every line).
//!
//! The checked path is two-staged for clear errors: the line is first read as a JSON object, in one pass that
//! refuses a key repeated in any object (malformed JSON names its column), then `type` is dispatched
//! by hand (an unknown type names the known ones), a table of field kinds names the field of a
//! wrong-typed or out-of-range value, and the typed DTO (`deny_unknown_fields`) names missing and
//! unknown fields. Identifiers are validated by the model's newtypes.

use chrono::{DateTime, SecondsFormat, Utc};
use log::model::{FieldError, MAX_DIRECTIVE_MODELS};
use log::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, EventId, FlagReason, Issued,
    MerchantId, ModelCode, ProviderId, Record, RegionCode, Sn, StopReason, TerminalEvent, Text,
};
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest line accepted, in bytes: 1 MiB. Large enough for a directive naming the maximum 10,000
/// models of 64 bytes each (about 680 KB), small enough that one line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Every `type` the schema knows, in the order of docs/NDJSON.md.
pub const TYPES: [&str; 10] = [
    "issued",
    "flow",
    "activated",
    "contract_renewed",
    "contract_expired",
    "flagged",
    "flag_cleared",
    "stopped",
    "replaced",
    "directive",
];

/// Why a line was refused. The caller adds the file and line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// The line's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not valid JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A key given twice in one object, at any depth (JSON allows it, and a reader would keep one of
    /// the two values silently): the path of the repeated key, e.g. `amount_fen` or `contract.id`.
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    /// The line starts with U+FEFF, a byte-order mark (the caller names it at the start of an input).
    #[error("the line starts with a UTF-8 byte-order mark (U+FEFF); remove it")]
    ByteOrderMark,
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// No `type` field, or not a string.
    #[error("missing field `type` (a string: one of {})", TYPES.join(", "))]
    MissingType,
    /// A `type` the schema does not know.
    #[error("unknown type {0:?} (expected one of {types})", types = TYPES.join(", "))]
    UnknownType(String),
    /// A field holds the wrong kind of JSON value.
    #[error("field `{field}` must be {expected}, got {got}")]
    WrongType {
        /// The field.
        field: String,
        /// What it must be.
        expected: &'static str,
        /// What it is.
        got: String,
    },
    /// An integer field holds a number past its type's range.
    #[error("field `{field}` must be at most {}, got {got}", crate::text::thousands(*max))]
    OutOfRange {
        /// The field.
        field: String,
        /// The largest value it holds.
        max: u64,
        /// What was given, as JSON.
        got: String,
    },
    /// A directive's model list is empty or too long.
    #[error("field `models` must list 1 to {} model codes, got {}", crate::text::thousands(*max as u64), crate::text::thousands(*got as u64))]
    ModelCount {
        /// The most a directive may list.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// A missing or unknown field, or another schema error, as serde reports it.
    #[error("{0}")]
    Schema(String),
    /// A field's value is refused by the model (a bad SN, model code, region, ...).
    #[error("field `{field}`: {error}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        error: FieldError,
    },
    /// A name outside its enumeration (a flag or stop reason).
    #[error("field `{field}`: unknown {field} {value:?} (expected one of {allowed})")]
    UnknownName {
        /// The field.
        field: &'static str,
        /// What was given.
        value: String,
        /// The allowed names.
        allowed: String,
    },
    /// A time that is not RFC 3339, or finer than a microsecond.
    #[error("field `{field}`: {value:?} is not an RFC 3339 time with at most microsecond precision ({why})")]
    Time {
        /// The field.
        field: &'static str,
        /// What was given (cut to 64 bytes).
        value: String,
        /// Why.
        why: String,
    },
    /// The event as a whole breaks a limit (a contract ending before it starts, a flow over the limit,
    /// a directive listing a model twice, ...).
    #[error("{0}")]
    Invalid(FieldError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractDto {
    id: String,
    start: String,
    end: String,
}

/// Declares one terminal event's line: `device`, `type`, `at`, the event's own fields, then the
/// optional `event_id` and `expected_version`. `type` is written, never read (it was dispatched on).
macro_rules! terminal_line {
    ($name:ident { $($(#[$meta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            device: String,
            #[serde(rename = "type", skip_deserializing)]
            kind: &'static str,
            at: String,
            $($(#[$meta])* $field: $ty,)*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            event_id: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            expected_version: Option<u64>,
        }
    };
}

terminal_line!(IssuedLine {
    model: String,
    merchant: String,
    provider: String,
    region: String,
    contract: ContractDto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaces: Option<String>,
});
terminal_line!(FlowLine { amount_fen: u64, transactions: u32 });
terminal_line!(PlainLine {});
terminal_line!(RenewedLine { contract: ContractDto });
terminal_line!(FlagLine {
    reason: String,
    #[serde(default)]
    note: String,
});
terminal_line!(StoppedLine {
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directive: Option<String>,
});
terminal_line!(ReplacedLine { by: String });

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectiveLine {
    #[serde(rename = "type", skip_deserializing)]
    kind: &'static str,
    id: String,
    at: String,
    models: Vec<String>,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

/// The JSON kind a field must hold.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// A non-negative integer up to this maximum.
    UInt(u64),
    Object,
    StrArray,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::UInt(_) => "a non-negative integer",
            Kind::Object => "an object",
            Kind::StrArray => "an array of strings",
        }
    }
    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::Str => value.is_string(),
            Kind::UInt(_) => value.is_u64(),
            Kind::Object => value.is_object(),
            Kind::StrArray => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }
}

/// The kind of each field of a type (the fields every terminal line has are checked separately).
fn field_kinds(kind: &str) -> &'static [(&'static str, Kind)] {
    match kind {
        "issued" => &[
            ("model", Kind::Str),
            ("merchant", Kind::Str),
            ("provider", Kind::Str),
            ("region", Kind::Str),
            ("contract", Kind::Object),
            ("replaces", Kind::Str),
        ],
        "flow" => &[("amount_fen", Kind::UInt(u64::MAX)), ("transactions", Kind::UInt(u32::MAX as u64))],
        "contract_renewed" => &[("contract", Kind::Object)],
        "flagged" | "flag_cleared" => &[("reason", Kind::Str), ("note", Kind::Str)],
        "stopped" => &[("reason", Kind::Str), ("directive", Kind::Str)],
        "replaced" => &[("by", Kind::Str)],
        "directive" => &[("id", Kind::Str), ("models", Kind::StrArray), ("reason", Kind::Str), ("deadline", Kind::Str)],
        _ => &[],
    }
}

const COMMON_KINDS: [(&str, Kind); 4] =
    [("device", Kind::Str), ("at", Kind::Str), ("event_id", Kind::Str), ("expected_version", Kind::UInt(u64::MAX))];

fn describe_value(value: &Value) -> String {
    let text = match value {
        Value::Null => return "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", s.chars().take(64).collect::<String>()),
        Value::Array(_) => return "an array".into(),
        Value::Object(_) => return "an object".into(),
    };
    text
}

/// Whether `value` is a non-negative whole number larger than `max` (past `u64`, serde_json reads it as
/// a float: `18446744073709551616` is `1.8446744073709552e19`).
fn out_of_range(value: &Value, max: u64) -> bool {
    match value.as_u64() {
        Some(n) => n > max,
        None => value.as_f64().is_some_and(|f| f.fract() == 0.0 && f >= 18_446_744_073_709_551_616.0),
    }
}

/// Names the first field holding the wrong kind of value.
fn check_kinds(kind: &str, map: &Map<String, Value>) -> Result<(), LineError> {
    for (field, expected) in COMMON_KINDS.iter().chain(field_kinds(kind)) {
        if let Some(value) = map.get(*field) {
            if let Kind::UInt(max) = expected {
                if out_of_range(value, *max) {
                    return Err(LineError::OutOfRange {
                        field: (*field).to_owned(),
                        max: *max,
                        got: value.to_string(),
                    });
                }
            }
            if !expected.matches(value) {
                return Err(LineError::WrongType {
                    field: (*field).to_owned(),
                    expected: expected.describe(),
                    got: describe_value(value),
                });
            }
        }
    }
    if let Some(Value::Object(contract)) = map.get("contract") {
        for field in ["id", "start", "end"] {
            if let Some(value) = contract.get(field) {
                if !value.is_string() {
                    return Err(LineError::WrongType {
                        field: format!("contract.{field}"),
                        expected: "a string",
                        got: describe_value(value),
                    });
                }
            }
        }
    }
    Ok(())
}

fn field<T>(name: &'static str, parsed: Result<T, FieldError>) -> Result<T, LineError> {
    parsed.map_err(|error| LineError::Field { field: name, error })
}

fn parse_time(name: &'static str, text: &str) -> Result<DateTime<Utc>, LineError> {
    let bad = |why: String| LineError::Time { field: name, value: text.chars().take(64).collect(), why };
    let at = DateTime::parse_from_rfc3339(text).map_err(|e| bad(e.to_string()))?.with_timezone(&Utc);
    if at.timestamp_subsec_nanos() % 1_000 != 0 {
        return Err(bad("finer than a microsecond".into()));
    }
    Ok(at)
}

fn parse_flag_reason(text: &str) -> Result<FlagReason, LineError> {
    FlagReason::parse(text).ok_or_else(|| LineError::UnknownName {
        field: "reason",
        value: text.chars().take(64).collect(),
        allowed: FlagReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
    })
}

fn parse_stop_reason(text: &str) -> Result<StopReason, LineError> {
    StopReason::parse(text).ok_or_else(|| LineError::UnknownName {
        field: "reason",
        value: text.chars().take(64).collect(),
        allowed: StopReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// Parses one NDJSON line (without its newline) into an event to append.
///
/// A line is first read in one pass, without building a JSON tree, into [`fast::Fields`] (borrowed
/// strings, every field of every type; serde refuses a repeated or unknown key, a wrong-typed or
/// out-of-range value). If that pass succeeds and the line holds exactly the fields its type allows,
/// with the required ones, the line passed every check of the second, slower path below; the event is
/// then built by [`build`], the one copy of the construction and the field checks, which that path
/// ends in too. Any other line takes the slower path, whose checks name the problem; so both give the
/// same event or the same error for every line.
pub fn parse_line(line: &str) -> Result<AppendEvent, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { len: line.len(), max: MAX_LINE_BYTES });
    }
    if line.starts_with('\u{feff}') {
        return Err(LineError::ByteOrderMark);
    }
    let mut fields = fast::Fields::default();
    if let Some(kind) = fast::parse(line, &mut fields) {
        return build(kind, &fields);
    }
    parse_checked(line)
}

/// The slower path of [`parse_line`]: a JSON tree, then the checks in the order that names the first
/// problem of a line (see the module documentation), then [`build`].
fn parse_checked(line: &str) -> Result<AppendEvent, LineError> {
    let value = strict::parse(line)?;
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => return Err(LineError::NotAnObject("null")),
        Value::Bool(_) => return Err(LineError::NotAnObject("a boolean")),
        Value::Number(_) => return Err(LineError::NotAnObject("a number")),
        Value::String(_) => return Err(LineError::NotAnObject("a string")),
        Value::Array(_) => return Err(LineError::NotAnObject("an array")),
    };
    let kind = match map.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(LineError::MissingType),
    };
    let Some(kind) = fast::Kind::parse(&kind) else {
        return Err(LineError::UnknownType(kind.chars().take(64).collect()));
    };
    check_kinds(kind.name(), &map)?;
    let value = Value::Object(map);
    // The schema of the type: missing and unknown fields, named by serde.
    match kind {
        fast::Kind::Issued => schema::<IssuedLine>(&value)?,
        fast::Kind::Flow => schema::<FlowLine>(&value)?,
        fast::Kind::Activated | fast::Kind::ContractExpired => schema::<PlainLine>(&value)?,
        fast::Kind::ContractRenewed => schema::<RenewedLine>(&value)?,
        fast::Kind::Flagged | fast::Kind::FlagCleared => schema::<FlagLine>(&value)?,
        fast::Kind::Stopped => schema::<StoppedLine>(&value)?,
        fast::Kind::Replaced => schema::<ReplacedLine>(&value)?,
        fast::Kind::Directive => schema::<DirectiveLine>(&value)?,
    }
    let mut fields = fast::Fields::default();
    fast::Fill(&mut fields).deserialize(&value).map_err(|e| LineError::Schema(e.to_string()))?;
    build(kind, &fields)
}

fn schema<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<(), LineError> {
    T::deserialize(value).map(drop).map_err(|e| LineError::Schema(e.to_string()))
}

/// A field [`fast::Kind::fields`] requires for the type (so never missing here).
fn need<T>(name: &'static str, value: Option<T>) -> Result<T, LineError> {
    value.ok_or_else(|| LineError::Schema(format!("missing field `{name}`")))
}

fn text<'s>(value: &'s Option<fast::Str<'_>>) -> Option<&'s str> {
    value.as_ref().map(|s| s.0.as_ref())
}

fn parse_contract(c: &fast::ContractFields<'_>) -> Result<Contract, LineError> {
    Ok(Contract {
        id: field("contract.id", ContractId::parse(&c.id.0))?,
        start: parse_time("contract.start", &c.start.0)?,
        end: parse_time("contract.end", &c.end.0)?,
    })
}

/// The event of a line that has the fields of its type: the one copy of the construction and of the
/// field checks (identifiers by the model's newtypes, times, then the event's own limits).
fn build(kind: fast::Kind, f: &fast::Fields<'_>) -> Result<AppendEvent, LineError> {
    use fast::Kind as K;
    let event = match kind {
        K::Directive => {
            let models = need("models", f.models.as_ref())?;
            if models.is_empty() || models.len() > MAX_DIRECTIVE_MODELS {
                return Err(LineError::ModelCount { max: MAX_DIRECTIVE_MODELS, got: models.len() });
            }
            let directive = Directive {
                id: field("id", DirectiveId::parse(need("id", text(&f.id))?))?,
                at: parse_time("at", need("at", text(&f.at))?)?,
                models: models.iter().map(|m| field("models", ModelCode::parse(&m.0))).collect::<Result<_, _>>()?,
                reason: field("reason", Text::parse(need("reason", text(&f.reason))?))?,
                deadline: text(&f.deadline).map(|d| parse_time("deadline", d)).transpose()?,
            };
            AppendEvent {
                event: Event::Directive(directive),
                event_id: text(&f.event_id).map(|id| field("event_id", EventId::parse(id))).transpose()?,
                expected_version: f.expected_version,
            }
        }
        _ => {
            let event = match kind {
                K::Issued => TerminalEvent::Issued(Box::new(Issued {
                    model: field("model", ModelCode::parse(need("model", text(&f.model))?))?,
                    merchant: field("merchant", MerchantId::parse(need("merchant", text(&f.merchant))?))?,
                    provider: field("provider", ProviderId::parse(need("provider", text(&f.provider))?))?,
                    region: field("region", RegionCode::parse(need("region", text(&f.region))?))?,
                    contract: parse_contract(need("contract", f.contract.as_ref())?)?,
                    replaces: text(&f.replaces).map(|sn| field("replaces", Sn::parse(sn))).transpose()?,
                })),
                K::Flow => TerminalEvent::Flow {
                    amount_fen: need("amount_fen", f.amount_fen)?,
                    transactions: need("transactions", f.transactions)?,
                },
                K::Activated => TerminalEvent::Activated,
                K::ContractExpired => TerminalEvent::ContractExpired,
                K::ContractRenewed => {
                    TerminalEvent::ContractRenewed { contract: parse_contract(need("contract", f.contract.as_ref())?)? }
                }
                K::Flagged | K::FlagCleared => {
                    let reason = parse_flag_reason(need("reason", text(&f.reason))?)?;
                    let note = field("note", Text::parse(text(&f.note).unwrap_or("")))?;
                    if kind == K::Flagged {
                        TerminalEvent::Flagged { reason, note }
                    } else {
                        TerminalEvent::FlagCleared { reason, note }
                    }
                }
                K::Stopped => TerminalEvent::Stopped {
                    reason: parse_stop_reason(need("reason", text(&f.reason))?)?,
                    directive: text(&f.directive).map(|d| field("directive", DirectiveId::parse(d))).transpose()?,
                },
                K::Replaced => TerminalEvent::Replaced { by: field("by", Sn::parse(need("by", text(&f.by))?))? },
                K::Directive => return Err(LineError::MissingType),
            };
            AppendEvent {
                event: Event::Terminal(DeviceEvent {
                    device: field("device", Sn::parse(need("device", text(&f.device))?))?,
                    at: parse_time("at", need("at", text(&f.at))?)?,
                    event,
                }),
                event_id: text(&f.event_id).map(|id| field("event_id", EventId::parse(id))).transpose()?,
                expected_version: f.expected_version,
            }
        }
    };
    event.event.validate().map_err(LineError::Invalid)?;
    Ok(event)
}

/// The one-pass reading of [`parse_line`]: every field any type has, borrowed from the line, read
/// into a [`Fields`] the caller holds (so the fields are written once, never moved).
mod fast {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
    use serde::Deserialize;
    use std::borrow::Cow;
    use std::fmt;

    /// A JSON string, borrowed from the line unless it holds an escape.
    pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Owned(v)))
                }
            }
            deserializer.deserialize_str(V)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, bound(deserialize = "'de: 'a"))]
    pub(super) struct ContractFields<'a> {
        pub(super) id: Str<'a>,
        pub(super) start: Str<'a>,
        pub(super) end: Str<'a>,
    }

    /// Every key any line may have; serde refuses any other ("unknown field").
    #[derive(Clone, Copy, Deserialize)]
    #[serde(field_identifier, rename_all = "snake_case")]
    enum Key {
        #[serde(rename = "type")]
        Type,
        Device,
        At,
        Model,
        Merchant,
        Provider,
        Region,
        Contract,
        Replaces,
        AmountFen,
        Transactions,
        Reason,
        Note,
        Directive,
        By,
        Id,
        Models,
        Deadline,
        EventId,
        ExpectedVersion,
    }

    impl Key {
        const fn bit(self) -> u32 {
            1 << self as u32
        }
    }

    /// Every field of every type (`type` too), each optional; [`Kind::fields`] says which a type has.
    #[derive(Default)]
    pub(super) struct Fields<'a> {
        /// The keys present, one [`Key::bit`] each.
        present: u32,
        pub(super) kind: Option<Str<'a>>,
        pub(super) device: Option<Str<'a>>,
        pub(super) at: Option<Str<'a>>,
        pub(super) model: Option<Str<'a>>,
        pub(super) merchant: Option<Str<'a>>,
        pub(super) provider: Option<Str<'a>>,
        pub(super) region: Option<Str<'a>>,
        pub(super) contract: Option<ContractFields<'a>>,
        pub(super) replaces: Option<Str<'a>>,
        pub(super) amount_fen: Option<u64>,
        pub(super) transactions: Option<u32>,
        pub(super) reason: Option<Str<'a>>,
        pub(super) note: Option<Str<'a>>,
        pub(super) directive: Option<Str<'a>>,
        pub(super) by: Option<Str<'a>>,
        pub(super) id: Option<Str<'a>>,
        pub(super) models: Option<Vec<Str<'a>>>,
        pub(super) deadline: Option<Str<'a>>,
        pub(super) event_id: Option<Str<'a>>,
        pub(super) expected_version: Option<u64>,
    }

    /// Reads one JSON object into the [`Fields`] it points to.
    pub(super) struct Fill<'f, 'a>(pub(super) &'f mut Fields<'a>);

    impl<'de: 'a, 'a> DeserializeSeed<'de> for Fill<'_, 'a> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_map(self)
        }
    }

    /// Reads the next value into `slot`; a key given twice is refused (serde's "duplicate field").
    /// `null` is refused too (as the checked path refuses it), never read as absent.
    fn put<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
        slot: &mut Option<T>,
        map: &mut A,
        name: &'static str,
    ) -> Result<(), A::Error> {
        if slot.is_some() {
            return Err(A::Error::duplicate_field(name));
        }
        *slot = Some(map.next_value()?);
        Ok(())
    }

    impl<'de: 'a, 'a> Visitor<'de> for Fill<'_, 'a> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let f = self.0;
            while let Some(key) = map.next_key::<Key>()? {
                f.present |= key.bit();
                let m = &mut map;
                match key {
                    Key::Type => put(&mut f.kind, m, "type")?,
                    Key::Device => put(&mut f.device, m, "device")?,
                    Key::At => put(&mut f.at, m, "at")?,
                    Key::Model => put(&mut f.model, m, "model")?,
                    Key::Merchant => put(&mut f.merchant, m, "merchant")?,
                    Key::Provider => put(&mut f.provider, m, "provider")?,
                    Key::Region => put(&mut f.region, m, "region")?,
                    Key::Contract => put(&mut f.contract, m, "contract")?,
                    Key::Replaces => put(&mut f.replaces, m, "replaces")?,
                    Key::AmountFen => put(&mut f.amount_fen, m, "amount_fen")?,
                    Key::Transactions => put(&mut f.transactions, m, "transactions")?,
                    Key::Reason => put(&mut f.reason, m, "reason")?,
                    Key::Note => put(&mut f.note, m, "note")?,
                    Key::Directive => put(&mut f.directive, m, "directive")?,
                    Key::By => put(&mut f.by, m, "by")?,
                    Key::Id => put(&mut f.id, m, "id")?,
                    Key::Models => put(&mut f.models, m, "models")?,
                    Key::Deadline => put(&mut f.deadline, m, "deadline")?,
                    Key::EventId => put(&mut f.event_id, m, "event_id")?,
                    Key::ExpectedVersion => put(&mut f.expected_version, m, "expected_version")?,
                }
            }
            Ok(())
        }
    }

    /// The `type` of a line.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Kind {
        Issued,
        Flow,
        Activated,
        ContractRenewed,
        ContractExpired,
        Flagged,
        FlagCleared,
        Stopped,
        Replaced,
        Directive,
    }

    impl Kind {
        /// Its name in [`super::TYPES`].
        pub(super) fn name(self) -> &'static str {
            super::TYPES.get(self as usize).copied().unwrap_or("directive")
        }

        pub(super) fn parse(name: &str) -> Option<Kind> {
            Some(match name {
                "issued" => Kind::Issued,
                "flow" => Kind::Flow,
                "activated" => Kind::Activated,
                "contract_renewed" => Kind::ContractRenewed,
                "contract_expired" => Kind::ContractExpired,
                "flagged" => Kind::Flagged,
                "flag_cleared" => Kind::FlagCleared,
                "stopped" => Kind::Stopped,
                "replaced" => Kind::Replaced,
                "directive" => Kind::Directive,
                _ => return None,
            })
        }

        /// (required, allowed) keys of the type, as bits (`type` aside): the schema of its DTO above.
        fn fields(self) -> (u32, u32) {
            use Key as K;
            let terminal = |required: u32, optional: u32| {
                let required = K::Device.bit() | K::At.bit() | required;
                (required, required | optional | K::EventId.bit() | K::ExpectedVersion.bit())
            };
            match self {
                Kind::Issued => terminal(
                    K::Model.bit() | K::Merchant.bit() | K::Provider.bit() | K::Region.bit() | K::Contract.bit(),
                    K::Replaces.bit(),
                ),
                Kind::Flow => terminal(K::AmountFen.bit() | K::Transactions.bit(), 0),
                Kind::Activated | Kind::ContractExpired => terminal(0, 0),
                Kind::ContractRenewed => terminal(K::Contract.bit(), 0),
                Kind::Flagged | Kind::FlagCleared => terminal(K::Reason.bit(), K::Note.bit()),
                Kind::Stopped => terminal(K::Reason.bit(), K::Directive.bit()),
                Kind::Replaced => terminal(K::By.bit(), 0),
                Kind::Directive => {
                    let required = K::Id.bit() | K::At.bit() | K::Models.bit() | K::Reason.bit();
                    (required, required | K::Deadline.bit() | K::EventId.bit() | K::ExpectedVersion.bit())
                }
            }
        }
    }

    /// Reads `line` into `fields` in one pass; its type if the line is one JSON object with exactly the
    /// fields of its type. `None` sends it to the checked path.
    pub(super) fn parse<'a>(line: &'a str, fields: &mut Fields<'a>) -> Option<Kind> {
        let mut de = serde_json::Deserializer::from_str(line);
        Fill(fields).deserialize(&mut de).ok()?;
        de.end().ok()?;
        let kind = Kind::parse(&fields.kind.as_ref()?.0)?;
        let (required, allowed) = kind.fields();
        let present = fields.present & !Key::Type.bit();
        (present & required == required && present & !allowed == 0).then_some(kind)
    }
}

/// One pass from text to a [`Value`] that refuses a repeated key in any object.
///
/// The same work as `serde_json::from_str::<Value>` (one allocation per key and string, the same
/// recursion limit), with a visitor that notices when inserting a key replaces an earlier value. The
/// repeated key's path travels back through a side channel (not the error's text): serde_json wraps a
/// visitor's error in its own message with a column, and the caller wants the field's name.
mod strict {
    use super::LineError;
    use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};
    use std::cell::RefCell;
    use std::fmt;

    /// The path of a repeated key, innermost segment first while it travels outwards.
    type Found = RefCell<Option<Vec<Segment>>>;

    enum Segment {
        Key(String),
        Index(usize),
    }

    fn render(mut segments: Vec<Segment>) -> String {
        segments.reverse();
        let mut path = String::new();
        for segment in segments {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.extend(key.chars().take(64));
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }

    /// Parses `line` as one JSON value with no repeated key in any object.
    pub(super) fn parse(line: &str) -> Result<Value, LineError> {
        let found = Found::default();
        let mut de = serde_json::Deserializer::from_str(line);
        let parsed = Strict(&found).deserialize(&mut de).and_then(|value| de.end().map(|()| value));
        parsed.map_err(|e| match found.take() {
            Some(path) => LineError::DuplicateField(render(path)),
            None => LineError::Json(e.to_string()),
        })
    }

    #[derive(Clone, Copy)]
    struct Strict<'a>(&'a Found);

    impl<'de> DeserializeSeed<'de> for Strict<'_> {
        type Value = Value;
        fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl Strict<'_> {
        /// Adds `segment` to the path of a repeated key found below it, if that is why `result` failed.
        fn within<T, E>(self, segment: impl FnOnce() -> Segment, result: Result<T, E>) -> Result<T, E> {
            if result.is_err() {
                if let Some(path) = self.0.borrow_mut().as_mut() {
                    path.push(segment());
                }
            }
            result
        }
    }

    impl<'de> Visitor<'de> for Strict<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::Number(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            // JSON text never holds a non-finite number (serde_json refuses `1e999` itself).
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut values = Vec::new();
            loop {
                let index = values.len();
                match self.within(|| Segment::Index(index), seq.next_element_seed(self))? {
                    Some(value) => values.push(value),
                    None => return Ok(Value::Array(values)),
                }
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut values = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = match map.next_value_seed(self) {
                    Ok(value) => value,
                    Err(e) => return self.within(|| Segment::Key(key), Err(e)),
                };
                match values.entry(key) {
                    serde_json::map::Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    serde_json::map::Entry::Occupied(slot) => {
                        *self.0.borrow_mut() = Some(vec![Segment::Key(slot.key().clone())]);
                        return Err(A::Error::custom("duplicate field"));
                    }
                }
            }
            Ok(Value::Object(values))
        }
    }
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn contract_dto(c: &Contract) -> ContractDto {
    ContractDto { id: c.id.to_string(), start: time(&c.start), end: time(&c.end) }
}

/// Renders one event as an NDJSON line (without the newline), with `event_id` when given.
pub fn render_event(event: &Event, event_id: Option<&EventId>) -> Result<String, serde_json::Error> {
    let event_id = event_id.map(EventId::to_string);
    let e = match event {
        Event::Directive(d) => {
            return serde_json::to_string(&DirectiveLine {
                kind: "directive",
                id: d.id.to_string(),
                at: time(&d.at),
                models: d.models.iter().map(ModelCode::to_string).collect(),
                reason: d.reason.to_string(),
                deadline: d.deadline.as_ref().map(time),
                event_id,
                expected_version: None,
            })
        }
        Event::Terminal(e) => e,
    };
    let (device, kind, at) = (e.device.to_string(), e.event.type_name(), time(&e.at));
    match &e.event {
        TerminalEvent::Issued(i) => serde_json::to_string(&IssuedLine {
            device,
            kind,
            at,
            model: i.model.to_string(),
            merchant: i.merchant.to_string(),
            provider: i.provider.to_string(),
            region: i.region.to_string(),
            contract: contract_dto(&i.contract),
            replaces: i.replaces.as_ref().map(Sn::to_string),
            event_id,
            expected_version: None,
        }),
        TerminalEvent::Flow { amount_fen, transactions } => serde_json::to_string(&FlowLine {
            device,
            kind,
            at,
            amount_fen: *amount_fen,
            transactions: *transactions,
            event_id,
            expected_version: None,
        }),
        TerminalEvent::Activated | TerminalEvent::ContractExpired => {
            serde_json::to_string(&PlainLine { device, kind, at, event_id, expected_version: None })
        }
        TerminalEvent::ContractRenewed { contract } => serde_json::to_string(&RenewedLine {
            device,
            kind,
            at,
            contract: contract_dto(contract),
            event_id,
            expected_version: None,
        }),
        TerminalEvent::Flagged { reason, note } | TerminalEvent::FlagCleared { reason, note } => {
            serde_json::to_string(&FlagLine {
                device,
                kind,
                at,
                reason: reason.as_str().to_owned(),
                note: note.to_string(),
                event_id,
                expected_version: None,
            })
        }
        TerminalEvent::Stopped { reason, directive } => serde_json::to_string(&StoppedLine {
            device,
            kind,
            at,
            reason: reason.as_str().to_owned(),
            directive: directive.as_ref().map(DirectiveId::to_string),
            event_id,
            expected_version: None,
        }),
        TerminalEvent::Replaced { by } => serde_json::to_string(&ReplacedLine {
            device,
            kind,
            at,
            by: by.to_string(),
            event_id,
            expected_version: None,
        }),
    }
}

/// Renders a record of the log as an NDJSON line (without the newline): its event and `event_id`.
/// Position, version and recorded-at are not part of the schema (the position is the line number).
pub fn render(record: &Record) -> Result<String, serde_json::Error> {
    render_event(&record.event, record.event_id.as_ref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LINES: [&str; 10] = [
        r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}"#,
        r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00.123456Z","amount_fen":5000,"transactions":3,"event_id":"e-1"}"#,
        r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z","expected_version":2}"#,
        r#"{"device":"SN1","type":"contract_renewed","at":"2026-12-20T00:00:00Z","contract":{"id":"C2","start":"2027-01-01T00:00:00Z","end":"2028-01-01T00:00:00Z"}}"#,
        r#"{"device":"SN1","type":"contract_expired","at":"2028-01-01T00:00:00Z"}"#,
        r#"{"device":"SN1","type":"flagged","at":"2028-01-02T00:00:00Z","reason":"cash_out","note":"fake purchases"}"#,
        r#"{"device":"SN1","type":"flag_cleared","at":"2028-01-03T00:00:00Z","reason":"cash_out","note":"ok"}"#,
        r#"{"device":"SN1","type":"stopped","at":"2028-01-04T00:00:00Z","reason":"model_recall","directive":"D-2026-07"}"#,
        r#"{"device":"SN1","type":"replaced","at":"2028-01-05T00:00:00Z","by":"SN2"}"#,
        r#"{"type":"directive","id":"D-2026-07","at":"2026-07-01T00:00:00Z","models":["LKL-A8","PAX-A920"],"reason":"certificates revoked","deadline":"2026-08-01T00:00:00Z"}"#,
    ];

    #[test]
    fn every_type_round_trips_byte_for_byte() {
        for line in LINES {
            let event = parse_line(line).unwrap();
            let mut rendered = render_event(&event.event, event.event_id.as_ref()).unwrap();
            if let Some(v) = event.expected_version {
                // expected_version is an input-only field: the log does not keep it.
                rendered.insert_str(rendered.len() - 1, &format!(",\"expected_version\":{v}"));
            }
            assert_eq!(rendered, line);
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |line: &str| parse_line(line).unwrap_err().to_string();
        assert!(err("{not json").starts_with("malformed JSON"));
        assert!(err("[1]").contains("expected a JSON object"));
        assert!(err(r#"{"device":"SN1","type":"teleported","at":"2026-01-01T00:00:00Z"}"#).contains("unknown type"));
        assert!(err(r#"{"device":"SN1","at":"2026-01-01T00:00:00Z"}"#).contains("missing field `type`"));
        assert!(err(r#"{"device":"SN1","type":"flow","at":"2026-01-01T00:00:00Z","amount_fen":5}"#)
            .contains("missing field `transactions`"));
        assert!(err(r#"{"device":"SN1","type":"activated","at":"2026-01-01T00:00:00Z","colour":"red"}"#)
            .contains("unknown field `colour`"));
        assert!(err(r#"{"device":"SN 1","type":"activated","at":"2026-01-01T00:00:00Z"}"#).contains("field `device`"));
        let wrong =
            err(r#"{"device":"SN1","type":"flow","at":"2026-01-01T00:00:00Z","amount_fen":"5","transactions":1}"#);
        assert!(wrong.contains("field `amount_fen` must be a non-negative integer"), "{wrong}");
        assert!(err(r#"{"device":"SN1","type":"activated","at":"yesterday"}"#).contains("RFC 3339"));
        assert!(err(r#"{"device":"SN1","type":"stopped","at":"2026-01-01T00:00:00Z","reason":"bored"}"#)
            .contains("unknown reason"));
        let long = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_LINE_BYTES));
        assert!(err(&long).contains("over the limit"));
    }

    /// The one-pass reading and the slower path agree on every line: the same event or the same error.
    #[test]
    fn fast_path_and_checked_path_agree() {
        let mut lines: Vec<String> = LINES.iter().map(|l| (*l).to_owned()).collect();
        let tricky = [
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5000,"transactions":3,"amount_fen":1}"#,
            r#"{"device":"SN1","type":"flow","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5000,"transactions":3}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5000,"transactions":3,"note":"x"}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5000,"transactions":4294967296}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":18446744073709551616,"transactions":1}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5.0,"transactions":1}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":-5,"transactions":1}"#,
            r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":0,"transactions":1}"#,
            r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z","event_id":null}"#,
            r#"{"device":null,"type":"activated","at":"2026-01-07T08:00:00Z"}"#,
            r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z"}"#,
            r#"{"device":"SN1","device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z"}"#,
            r#"{"device":"SN1","type":"flagged","at":"2028-01-02T00:00:00Z","reason":"cash_out","note":"café "quoted""}"#,
            r#"{"device":"SN1","type":"flagged","at":"2028-01-02T00:00:00Z","reason":"cash_out"}"#,
            r#"{"device":"SN1","type":"flagged","at":"2028-01-02T00:00:00Z","reason":"bored","note":"x"}"#,
            r#"{"device":"SN1","type":"stopped","at":"2028-01-04T00:00:00Z","reason":"model_recall","directive":"D-2026-07","by":"SN2"}"#,
            r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z","id":"C2"}}"#,
            r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z","x":1}}"#,
            r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2027-01-01T00:00:00Z","end":"2026-01-01T00:00:00Z"}}"#,
            r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000"}"#,
            r#"{"device":"SN1","type":"contract_renewed","at":"2026-12-20T00:00:00Z","contract":{"id":"C2","start":"2027-01-01T00:00:00Z"}}"#,
            r#"{"device":"SN1","type":"replaced","at":"2028-01-05T00:00:00.0000001Z","by":"SN2"}"#,
            r#"{"device":"SN1","type":"replaced","at":"2028-01-05T00:00:00+08:00","by":"SN2"}"#,
            r#"{"type":"directive","id":"D-2026-07","at":"2026-07-01T00:00:00Z","models":[],"reason":"r"}"#,
            r#"{"type":"directive","id":"D-2026-07","at":"2026-07-01T00:00:00Z","models":["A-1","A-1"],"reason":"r"}"#,
            r#"{"type":"directive","id":"D-2026-07","at":"2026-07-01T00:00:00Z","models":["A-1",2],"reason":"r"}"#,
            r#"{"type":"directive","device":"SN1","id":"D-2026-07","at":"2026-07-01T00:00:00Z","models":["A-1"],"reason":"r"}"#,
            r#"{"type":"Flow","device":"SN1","at":"2026-07-01T00:00:00Z"}"#,
            r#"{"type":7,"device":"SN1","at":"2026-07-01T00:00:00Z"}"#,
            r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z"} x"#,
            r#"  {"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z"}  "#,
            r#"["device"]"#,
            r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z","expected_version":1,"expected_version":2}"#,
        ];
        lines.extend(tricky.iter().map(|l| (*l).to_owned()));
        for line in &lines {
            assert_eq!(parse_line(line), parse_checked(line), "{line}");
        }
        assert!(fast::parse(LINES[1], &mut fast::Fields::default()).is_some(), "an export's line takes the fast path");
    }
}

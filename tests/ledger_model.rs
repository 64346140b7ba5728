//! Model-based property test of the ledger's write path.
//!
//! proptest generates random sequences of appends — legal and illegal decisions, observations, replacement
//! pairs, directives, `stop_models`, idempotent retries, wrong expected versions, invalid fields — and runs
//! them against both the real [`Ledger`] and a small reference model written here from the rule table of
//! docs/LIFECYCLE.md (status, contract, flow, flags, directives, stream versions, event ids). After every step:
//! the ledger accepts exactly what the model accepts (with the same error kind, index and rule), positions
//! are dense, a refused append leaves the head unchanged, multi-event appends are all-or-nothing, and the
//! head root equals `ledger::merkle::root` over the stored record bodies. At the end of every case (and
//! after every reopen) the whole log, every stream and every terminal's state are compared with the model.
//!
//! I/O faults, as redb's fuzzer checks its engine against a model with injected I/O faults: each case runs
//! in relaxed or durable mode, with default or small segments (so that sealing — a trailer write and an
//! fsync — is among an append's I/O points), through a [`FaultInjector`] the test keeps. A `Fault` action
//! fails one I/O point of one generated append: a write (plainly, or after a short write of a real prefix
//! of its bytes, cut inside a frame or between whole frames, taken from a twin ledger) or an fsync. The
//! failed append must get an I/O error and leave the head and reads as they were; the next append is
//! refused with `Poisoned` and writes nothing; after a reopen without the fault the log holds every
//! acknowledged append and the failed one whole or not at all (never after a failed write), and the model
//! takes it only if it landed. The end-of-case comparison then covers everything that came after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{sn, t};
use ledger::lifecycle::{ContractState, FlagSet, State, Status, Violation};
use ledger::model::{ACTIVATION_FLOW_FEN, MAX_FLOW_FEN};
use ledger::testing::FaultInjector;
use ledger::{
    AppendError, AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Durability, Event, EventId,
    FlagReason, Head, Issued, Ledger, MerchantId, ModelCode, Options, ProviderId, RegionCode, Sn, StopReason, StreamId,
    TerminalEvent, Text, WriterFailure,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------------------
// Generated operations
// ---------------------------------------------------------------------------------------------------------

/// Small universes, so that random events often hit the same terminals, flags and directives.
const SNS: u8 = 6;
const MODELS: u8 = 3;
const DIRECTIVES: u8 = 3;
const EVENT_IDS: u8 = 10;
const FLAG_REASONS: u8 = 3;

#[derive(Clone, Debug)]
enum GenKind {
    Issue { sn: u8, model: u8 },
    Flow { sn: u8, amount: u64 },
    Activate { sn: u8 },
    Renew { sn: u8, bad_contract: bool },
    Expire { sn: u8 },
    Flag { sn: u8, reason: u8 },
    Clear { sn: u8, reason: u8 },
    Stop { sn: u8, reason: u8, directive: Option<u8> },
    Replaced { sn: u8, by: u8 },
    IssueReplacing { sn: u8, model: u8, replaces: u8 },
    Directive { id: u8, models: Vec<u8> },
}

#[derive(Clone, Debug)]
struct Gen {
    kind: GenKind,
    event_id: Option<u8>,
    /// Offset from the stream's version at this point of the append: `Some(0)` is right, others are wrong.
    expect: Option<i8>,
}

#[derive(Clone, Debug)]
enum Action {
    Append(Vec<Gen>),
    /// Re-send a previously successful append, byte for byte.
    Retry(usize),
    StopModels {
        id: u8,
        models: Vec<u8>,
    },
    Reopen,
    /// One generated append with I/O point `point` of it (writes and fsyncs counted together, from 0)
    /// failing; a write that fails is a short write when `short` is set (it selects where to cut).
    Fault {
        point: u8,
        short: Option<u8>,
        gens: Vec<Gen>,
    },
}

/// How a case opens its ledger.
#[derive(Clone, Copy, Debug, Default)]
struct Config {
    durable: bool,
    /// Small segments, so that appends seal segments (a trailer write and an fsync).
    small_segments: bool,
}

const SMALL_SEGMENT: u64 = 256;

fn sn_of(n: u8) -> String {
    format!("T{n}")
}

fn model_of(n: u8) -> String {
    format!("M-{n}")
}

fn gen_kind() -> impl Strategy<Value = GenKind> {
    let sn = 0..SNS;
    prop_oneof![
        2 => (0..SNS, 0..MODELS).prop_map(|(sn, model)| GenKind::Issue { sn, model }),
        5 => (0..SNS, prop_oneof![8 => Just(3_000u64), 8 => Just(5_000u64), 4 => Just(10_000u64),
                                  1 => Just(MAX_FLOW_FEN + 1)])
            .prop_map(|(sn, amount)| GenKind::Flow { sn, amount }),
        3 => sn.clone().prop_map(|sn| GenKind::Activate { sn }),
        2 => (0..SNS, proptest::bool::weighted(0.1)).prop_map(|(sn, bad_contract)| GenKind::Renew { sn, bad_contract }),
        1 => sn.clone().prop_map(|sn| GenKind::Expire { sn }),
        2 => (0..SNS, 0..FLAG_REASONS).prop_map(|(sn, reason)| GenKind::Flag { sn, reason }),
        2 => (0..SNS, 0..FLAG_REASONS).prop_map(|(sn, reason)| GenKind::Clear { sn, reason }),
        3 => (0..SNS, 0..5u8, proptest::option::weighted(0.4, 0..DIRECTIVES))
            .prop_map(|(sn, reason, directive)| GenKind::Stop { sn, reason, directive }),
        1 => (0..SNS, 0..SNS).prop_map(|(sn, by)| GenKind::Replaced { sn, by }),
        1 => (0..SNS, 0..MODELS, 0..SNS)
            .prop_map(|(sn, model, replaces)| GenKind::IssueReplacing { sn, model, replaces }),
        1 => (0..DIRECTIVES, prop_oneof![
                8 => proptest::sample::subsequence(vec![0, 1, 2], 1..=3),
                1 => proptest::collection::vec(0..MODELS, 0..3), // often empty or repeated: refused
            ])
            .prop_map(|(id, models)| GenKind::Directive { id, models }),
    ]
}

fn gen_event() -> impl Strategy<Value = Gen> {
    (
        gen_kind(),
        proptest::option::weighted(0.4, 0..EVENT_IDS),
        proptest::option::weighted(0.2, prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)]),
    )
        .prop_map(|(kind, event_id, expect)| Gen { kind, event_id, expect })
}

/// A unit of an append: one event, or a well-formed replacement pair (in either order).
fn gen_unit() -> impl Strategy<Value = Vec<Gen>> {
    prop_oneof![
        8 => gen_event().prop_map(|g| vec![g]),
        1 => (0..SNS, 0..SNS, 0..MODELS, any::<bool>()).prop_map(|(old, new, model, flip)| {
            let a = Gen { kind: GenKind::Replaced { sn: old, by: new }, event_id: None, expect: None };
            let b = Gen { kind: GenKind::IssueReplacing { sn: new, model, replaces: old }, event_id: None, expect: None };
            if flip { vec![b, a] } else { vec![a, b] }
        }),
    ]
}

/// The events of an append: one unit, or a few.
fn gen_gens() -> impl Strategy<Value = Vec<Gen>> {
    prop_oneof![2 => gen_unit(), 1 => proptest::collection::vec(gen_unit(), 2..4).prop_map(|units| units.concat())]
}

fn gen_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => gen_gens().prop_map(Action::Append),
        2 => (prop_oneof![4 => Just(0u8), 2 => Just(1u8), 1 => 2..4u8], proptest::option::of(any::<u8>()), gen_gens())
            .prop_map(|(point, short, gens)| Action::Fault { point, short, gens }),
        2 => (0..64usize).prop_map(Action::Retry),
        1 => (0..DIRECTIVES, proptest::collection::vec(0..MODELS, 1..3))
            .prop_map(|(id, models)| Action::StopModels { id, models }),
        1 => Just(Action::Reopen),
    ]
}

fn directive_value(id: u8, models: &[u8]) -> Directive {
    Directive {
        id: DirectiveId::parse(&format!("D-{id}")).unwrap(),
        at: t(10),
        models: models.iter().map(|m| ModelCode::parse(&model_of(*m)).unwrap()).collect(),
        reason: Text::parse("certificates revoked").unwrap(),
        deadline: None,
    }
}

fn issued_value(model: u8, replaces: Option<u8>) -> TerminalEvent {
    TerminalEvent::Issued(Box::new(Issued {
        model: ModelCode::parse(&model_of(model)).unwrap(),
        merchant: MerchantId::parse("M001").unwrap(),
        provider: ProviderId::parse("lakala").unwrap(),
        region: RegionCode::parse("310000").unwrap(),
        contract: Contract { id: ContractId::parse("C1").unwrap(), start: t(0), end: t(365) },
        replaces: replaces.map(|r| sn(&sn_of(r))),
    }))
}

fn build_event(kind: &GenKind) -> Event {
    let dev = |n: u8, day: i64, event: TerminalEvent| {
        Event::Terminal(DeviceEvent { device: sn(&sn_of(n)), at: t(day), event })
    };
    let note = || Text::parse("note").unwrap();
    match kind {
        GenKind::Issue { sn, model } => dev(*sn, 0, issued_value(*model, None)),
        GenKind::Flow { sn, amount } => dev(*sn, 1, TerminalEvent::Flow { amount_fen: *amount, transactions: 1 }),
        GenKind::Activate { sn } => dev(*sn, 2, TerminalEvent::Activated),
        GenKind::Renew { sn, bad_contract } => {
            let end = if *bad_contract { t(300) } else { t(730) };
            let contract = Contract { id: ContractId::parse("C2").unwrap(), start: t(365) - Duration::days(65), end };
            let contract = if *bad_contract { Contract { start: t(400), ..contract } } else { contract };
            dev(*sn, 3, TerminalEvent::ContractRenewed { contract })
        }
        GenKind::Expire { sn } => dev(*sn, 4, TerminalEvent::ContractExpired),
        GenKind::Flag { sn, reason } => {
            dev(*sn, 5, TerminalEvent::Flagged { reason: FlagReason::ALL[*reason as usize], note: note() })
        }
        GenKind::Clear { sn, reason } => {
            dev(*sn, 6, TerminalEvent::FlagCleared { reason: FlagReason::ALL[*reason as usize], note: note() })
        }
        GenKind::Stop { sn, reason, directive } => dev(
            *sn,
            7,
            TerminalEvent::Stopped {
                reason: StopReason::ALL[*reason as usize],
                directive: directive.map(|d| DirectiveId::parse(&format!("D-{d}")).unwrap()),
            },
        ),
        GenKind::Replaced { sn, by } => dev(*sn, 8, TerminalEvent::Replaced { by: common::sn(&sn_of(*by)) }),
        GenKind::IssueReplacing { sn, model, replaces } => dev(*sn, 8, issued_value(*model, Some(*replaces))),
        GenKind::Directive { id, models } => Event::Directive(directive_value(*id, models)),
    }
}

/// Turns generated events into an append request, resolving expected-version offsets against the model's
/// versions (counting earlier events of the same stream in this request).
fn build_append(model: &Model, gens: &[Gen]) -> Vec<AppendEvent> {
    let mut extra: HashMap<StreamId, u64> = HashMap::new();
    gens.iter()
        .map(|g| {
            let event = build_event(&g.kind);
            let stream = event.stream();
            let slot = extra.entry(stream.clone()).or_default();
            let version = model.version(&stream) + *slot;
            *slot += 1;
            AppendEvent {
                event,
                event_id: g.event_id.map(|i| EventId::parse(&format!("evt-{i}")).unwrap()),
                expected_version: g.expect.map(|off| version.saturating_add_signed(i64::from(off))),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    version: u64,
    status: Status,
    expired: bool,
    flow: u64,
    flags: Vec<FlagReason>,
    model: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelRecord {
    event: Event,
    event_id: Option<EventId>,
    version: u64,
    commit: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    terms: BTreeMap<String, Term>,
    directives: HashMap<String, HashSet<String>>,
    directives_version: u64,
    event_ids: HashMap<EventId, u64>,
    log: Vec<ModelRecord>,
    streams: BTreeMap<StreamId, Vec<u64>>,
}

/// What a refusal is, compared between the model and the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    Field(usize),
    DuplicateEventId(usize),
    Rule { index: usize, stream: StreamId, event: &'static str, violation: Violation },
    WrongExpectedVersion { index: usize, stream: StreamId, expected: u64, actual: u64 },
    IdempotencyConflict { index: usize, position: u64 },
}

fn refusal_of(error: &AppendError) -> Refusal {
    match error {
        AppendError::Field { index, .. } => Refusal::Field(*index),
        AppendError::DuplicateEventId { index, .. } => Refusal::DuplicateEventId(*index),
        AppendError::Rule { index, stream, event, violation } => {
            let violation = match violation {
                // The message is prose; the kind is what is compared.
                Violation::UnpairedReplacement(_) => Violation::UnpairedReplacement(String::new()),
                other => other.clone(),
            };
            Refusal::Rule { index: *index, stream: stream.clone(), event, violation }
        }
        AppendError::WrongExpectedVersion { index, stream, expected, actual } => Refusal::WrongExpectedVersion {
            index: *index,
            stream: stream.clone(),
            expected: *expected,
            actual: *actual,
        },
        AppendError::IdempotencyConflict { index, position, .. } => {
            Refusal::IdempotencyConflict { index: *index, position: *position }
        }
        other => panic!("the ledger failed instead of refusing: {other}"),
    }
}

fn field_invalid(event: &Event) -> bool {
    match event {
        Event::Terminal(d) => match &d.event {
            TerminalEvent::Flow { amount_fen, .. } => *amount_fen > MAX_FLOW_FEN,
            TerminalEvent::Issued(i) => i.contract.end <= i.contract.start,
            TerminalEvent::ContractRenewed { contract } => contract.end <= contract.start,
            _ => false,
        },
        Event::Directive(d) => {
            let distinct: HashSet<&ModelCode> = d.models.iter().collect();
            d.models.is_empty() || distinct.len() != d.models.len()
        }
    }
}

impl Model {
    fn version(&self, stream: &StreamId) -> u64 {
        match stream {
            StreamId::Terminal(sn) => self.terms.get(sn.as_str()).map_or(0, |t| t.version),
            StreamId::Directives => self.directives_version,
        }
    }

    /// The rule table of docs/LIFECYCLE.md, for one terminal event, against the state so far.
    fn rule(&self, d: &DeviceEvent) -> Result<Term, Violation> {
        let current = self.terms.get(d.device.as_str());
        let wrong = |status: Status| Violation::WrongStatus { event: d.event.type_name(), status };
        let Some(term) = current else {
            return match &d.event {
                TerminalEvent::Issued(i) => Ok(Term {
                    version: 0,
                    status: Status::Issued,
                    expired: false,
                    flow: 0,
                    flags: Vec::new(),
                    model: i.model.as_str().to_owned(),
                }),
                _ => Err(Violation::UnknownTerminal),
            };
        };
        let mut next = term.clone();
        let running = matches!(term.status, Status::Issued | Status::Active);
        match &d.event {
            TerminalEvent::Issued(_) => return Err(Violation::AlreadyIssued),
            TerminalEvent::Flow { amount_fen, .. } => next.flow += amount_fen,
            TerminalEvent::Activated => {
                if term.status != Status::Issued {
                    return Err(wrong(term.status));
                }
                if term.expired {
                    return Err(Violation::ContractExpired);
                }
                if term.flow < ACTIVATION_FLOW_FEN {
                    return Err(Violation::InsufficientFlow { flow_fen: term.flow, needed_fen: ACTIVATION_FLOW_FEN });
                }
                next.status = Status::Active;
            }
            TerminalEvent::ContractRenewed { .. } => {
                if !running {
                    return Err(wrong(term.status));
                }
                next.expired = false;
            }
            TerminalEvent::ContractExpired => {
                if term.status == Status::Replaced {
                    return Err(wrong(term.status));
                }
                next.expired = true;
            }
            TerminalEvent::Flagged { reason, .. } => {
                if term.status == Status::Replaced {
                    return Err(wrong(term.status));
                }
                if !next.flags.contains(reason) {
                    next.flags.push(*reason);
                }
            }
            TerminalEvent::FlagCleared { reason, .. } => {
                if term.status == Status::Replaced {
                    return Err(wrong(term.status));
                }
                if !term.flags.contains(reason) {
                    return Err(Violation::FlagNotOpen { reason: *reason });
                }
                next.flags.retain(|r| r != reason);
            }
            TerminalEvent::Stopped { reason, directive } => {
                if !running {
                    return Err(wrong(term.status));
                }
                match directive {
                    None if *reason == StopReason::ModelRecall => return Err(Violation::RecallWithoutDirective),
                    None => {}
                    Some(id) => match self.directives.get(id.as_str()) {
                        None => return Err(Violation::UnknownDirective(id.clone())),
                        Some(models) if *reason == StopReason::ModelRecall && !models.contains(&term.model) => {
                            return Err(Violation::DirectiveDoesNotListModel(id.clone()))
                        }
                        Some(_) => {}
                    },
                }
                next.status = Status::Stopped;
            }
            TerminalEvent::Replaced { .. } => {
                if term.status != Status::Stopped {
                    return Err(wrong(term.status));
                }
                next.status = Status::Replaced;
            }
        }
        Ok(next)
    }

    /// The append as the model sees it: `Ok((positions, written))` or the refusal. All or nothing.
    fn append(&mut self, events: &[AppendEvent]) -> Result<(Vec<u64>, u64), Refusal> {
        // Field limits and duplicate ids in the request, in request order.
        let mut ids = HashSet::new();
        for (index, e) in events.iter().enumerate() {
            if field_invalid(&e.event) {
                return Err(Refusal::Field(index));
            }
            if let Some(id) = &e.event_id {
                if !ids.insert(id) {
                    return Err(Refusal::DuplicateEventId(index));
                }
            }
        }
        // Replacement pairing within the request: a self-replacement first, else the first unpaired half.
        let device = |e: &AppendEvent| match &e.event {
            Event::Terminal(d) => Some(d.clone()),
            Event::Directive(_) => None,
        };
        let rule_err = |index: usize, e: &AppendEvent, violation| Refusal::Rule {
            index,
            stream: e.event.stream(),
            event: e.event.type_name(),
            violation,
        };
        for (index, e) in events.iter().enumerate() {
            if let Some(d) = device(e) {
                let selfish = match &d.event {
                    TerminalEvent::Replaced { by } => *by == d.device,
                    TerminalEvent::Issued(i) => i.replaces.as_ref() == Some(&d.device),
                    _ => false,
                };
                if selfish {
                    return Err(rule_err(index, e, Violation::SelfReplacement));
                }
            }
        }
        let has = |pred: &dyn Fn(&DeviceEvent) -> bool| events.iter().filter_map(device).any(|d| pred(&d));
        for (index, e) in events.iter().enumerate() {
            let Some(d) = device(e) else { continue };
            let paired = match &d.event {
                TerminalEvent::Replaced { by } => has(&|o: &DeviceEvent| {
                    o.device == *by
                        && matches!(&o.event, TerminalEvent::Issued(i) if i.replaces.as_ref() == Some(&d.device))
                }),
                TerminalEvent::Issued(i) => match &i.replaces {
                    None => true,
                    Some(old) => has(&|o: &DeviceEvent| {
                        o.device == *old && matches!(&o.event, TerminalEvent::Replaced { by } if *by == d.device)
                    }),
                },
                _ => true,
            };
            if !paired {
                return Err(rule_err(index, e, Violation::UnpairedReplacement(String::new())));
            }
        }
        // Idempotent retries: an id already in the log keeps its position, if it names the same event.
        let mut positions = vec![0u64; events.len()];
        let mut fresh = Vec::new();
        for (index, e) in events.iter().enumerate() {
            match e.event_id.as_ref().and_then(|id| self.event_ids.get(id)) {
                Some(&position) => {
                    if self.log[position as usize].event != e.event {
                        return Err(Refusal::IdempotencyConflict { index, position });
                    }
                    positions[index] = position;
                }
                None => fresh.push(index),
            }
        }
        // The rules, in order, on a copy (all or nothing).
        let mut next = self.clone();
        let first = self.log.len() as u64;
        for (i, &index) in fresh.iter().enumerate() {
            let e = &events[index];
            let stream = e.event.stream();
            let version = next.version(&stream);
            let check_version = |next_version: u64| match e.expected_version {
                Some(expected) if expected != next_version => {
                    Err(Refusal::WrongExpectedVersion { index, stream: stream.clone(), expected, actual: next_version })
                }
                _ => Ok(()),
            };
            match &e.event {
                Event::Directive(d) => {
                    if next.directives.contains_key(d.id.as_str()) {
                        return Err(rule_err(index, e, Violation::DuplicateDirective(d.id.clone())));
                    }
                    check_version(version)?;
                    next.directives
                        .insert(d.id.as_str().to_owned(), d.models.iter().map(|m| m.as_str().to_owned()).collect());
                    next.directives_version += 1;
                }
                Event::Terminal(d) => {
                    check_version(version)?;
                    let mut term = next.rule(d).map_err(|v| rule_err(index, e, v))?;
                    term.version = version + 1;
                    next.terms.insert(d.device.as_str().to_owned(), term);
                }
            }
            let position = first + i as u64;
            positions[index] = position;
            if let Some(id) = &e.event_id {
                next.event_ids.insert(id.clone(), position);
            }
            next.streams.entry(stream).or_default().push(position);
            next.log.push(ModelRecord {
                event: e.event.clone(),
                event_id: e.event_id.clone(),
                version,
                commit: i + 1 == fresh.len(),
            });
        }
        *self = next;
        Ok((positions, fresh.len() as u64))
    }

    /// What `stop_models` must stop: every issued or active terminal of the models, in SN order.
    fn running_of(&self, models: &[u8]) -> Vec<Sn> {
        let models: HashSet<String> = models.iter().map(|m| model_of(*m)).collect();
        self.terms
            .iter()
            .filter(|(_, t)| models.contains(&t.model) && matches!(t.status, Status::Issued | Status::Active))
            .map(|(s, _)| sn(s))
            .collect()
    }

    fn state_of(&self, sn: &str) -> Option<(u64, State, ModelCode)> {
        self.terms.get(sn).map(|t| {
            let flags = t.flags.iter().fold(FlagSet::EMPTY, |set, r| set.with(*r));
            let contract = if t.expired { ContractState::Expired } else { ContractState::Current };
            let state = State { status: t.status, contract, flow_fen: t.flow, flags };
            (t.version, state, ModelCode::parse(&t.model).unwrap())
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Checks against the ledger
// ---------------------------------------------------------------------------------------------------------

fn open(dir: &Path, config: Config, faults: &Arc<Faults>) -> Ledger {
    // Relaxed or durable: this test is about the rules and the log's shape, not about what survives a
    // power loss; reopen reads everything back (the page cache survives a drop), and the crash tests cover
    // durability. Durable mode adds an fsync to every append, an I/O point to fail.
    let options = Options {
        durability: if config.durable { Durability::Durable } else { Durability::Relaxed },
        segment_max_bytes: if config.small_segments { SMALL_SEGMENT } else { Options::default().segment_max_bytes },
        faults: Some(faults.clone() as Arc<dyn FaultInjector>),
    };
    Ledger::open_with(dir, options).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// I/O faults
// ---------------------------------------------------------------------------------------------------------

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Sync,
}

/// An I/O point: its kind, the file, and for a write the file's length before it (segments are written
/// in append mode, so that is where the bytes go) and its length.
#[derive(Clone, Debug)]
struct Point {
    kind: Kind,
    path: PathBuf,
    offset: u64,
    len: usize,
}

#[derive(Debug, Default)]
struct FaultState {
    /// The point to fail, counted from the arming, and the bytes a failing write leaves first (a short
    /// write; empty for a plain failure).
    armed: Option<(usize, Vec<u8>)>,
    /// The points seen since the arming.
    points: Vec<Point>,
    /// The point that failed: its kind and errno.
    fired: Option<(Kind, i32)>,
}

/// Fails one I/O point as armed, once, and records the points it sees.
#[derive(Debug, Default)]
struct Faults(Mutex<FaultState>);

impl Faults {
    fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// Starts counting points from here; fails point `n` when given.
    fn arm(&self, fail: Option<(usize, Vec<u8>)>) {
        *self.0.lock().unwrap() = FaultState { armed: fail, ..FaultState::default() };
    }

    /// Disarms; returns the points seen and the fault that fired, if one did.
    fn disarm(&self) -> (Vec<Point>, Option<(Kind, i32)>) {
        let state = std::mem::take(&mut *self.0.lock().unwrap());
        (state.points, state.fired)
    }

    fn point(&self, point: Point) -> std::io::Result<()> {
        let mut state = self.0.lock().unwrap();
        let n = state.points.len();
        state.points.push(point.clone());
        let Point { kind, path, len, .. } = point;
        let prefix = match &state.armed {
            Some((at, prefix)) if *at == n => prefix.clone(),
            _ => return Ok(()),
        };
        state.armed = None;
        // HEAD is written in place: a short write of it is not emulated by appending.
        let in_place = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("HEAD"));
        let errno = if kind == Kind::Write && !prefix.is_empty() && !in_place {
            assert!(prefix.len() < len, "a short write is shorter than the write");
            std::fs::OpenOptions::new().append(true).open(&path)?.write_all(&prefix)?;
            ENOSPC
        } else {
            EIO
        };
        state.fired = Some((kind, errno));
        Err(std::io::Error::from_raw_os_error(errno))
    }
}

impl FaultInjector for Faults {
    fn before_write(&self, path: &Path, len: usize) -> std::io::Result<()> {
        let offset = std::fs::metadata(path).unwrap().len();
        // HEAD is written after the append's records are fsynced: a failure there leaves the append
        // durable but unacknowledged, exactly like a failed fsync, so it is counted as one.
        let kind = if path.file_name() == Some(ledger::source::HEAD_FILE.as_ref()) { Kind::Sync } else { Kind::Write };
        self.point(Point { kind, path: path.to_owned(), offset, len })
    }
    fn before_sync(&self, path: &Path) -> std::io::Result<()> {
        self.point(Point { kind: Kind::Sync, path: path.to_owned(), offset: 0, len: 0 })
    }
}

fn segment_bytes(dir: &Path) -> u64 {
    let dir = dir.join(ledger::source::SEGMENTS_DIR);
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// A recorded-at time for an append that both the ledger and its twin accept: now, or just after the
/// head's (stored in microseconds).
fn next_recorded_at(ledger: &Ledger) -> DateTime<Utc> {
    let size = ledger.head().size;
    let now = Utc::now();
    if size == 0 {
        return now;
    }
    now.max(ledger.read_at(size - 1).unwrap().recorded_at + Duration::microseconds(1))
}

/// The bytes that write point `point` of this append writes, when it is a write of at least two bytes:
/// taken from a twin (a copy of the segments opened with the same options) that makes the same append at
/// the same recorded-at time. The seam gives the injector the length of a write, not its bytes.
fn twin_bytes(dir: &Path, config: Config, events: &[AppendEvent], at: DateTime<Utc>, point: usize) -> Option<Vec<u8>> {
    let twin = tempfile::tempdir().unwrap();
    let (from, to) = (dir.join(ledger::source::SEGMENTS_DIR), twin.path().join(ledger::source::SEGMENTS_DIR));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    std::fs::copy(dir.join(ledger::source::HEAD_FILE), twin.path().join(ledger::source::HEAD_FILE)).unwrap();
    let probe = Faults::new();
    let ledger = open(twin.path(), config, &probe);
    probe.arm(None);
    let _ = ledger.append_at(events.to_vec(), Some(at));
    let (points, _) = probe.disarm();
    let Point { kind, path, offset, len } = points.get(point)?.clone();
    if kind != Kind::Write || len < 2 {
        return None;
    }
    drop(ledger);
    let bytes = std::fs::read(path).unwrap();
    Some(bytes[offset as usize..offset as usize + len].to_vec())
}

/// Where a short write of these bytes may stop: after one byte, half, all but one, and at (and one byte
/// past) the end of each whole frame (a u32 length, a u32 checksum, the body) — a prefix of whole records
/// without the commit marker.
fn cuts(bytes: &[u8]) -> Vec<usize> {
    let len = bytes.len();
    let mut cuts = vec![1, len / 2, len - 1];
    let mut at = 0usize;
    while at + 4 <= len {
        let frame = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize + 8;
        at = at.saturating_add(frame);
        cuts.extend([at, at.saturating_add(1)]);
    }
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn stored_root(ledger: &Ledger) -> [u8; 32] {
    let size = ledger.head().size;
    let mut frames = ledger.frames(0, size);
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    while let Some((position, body, _)) = frames.next_frame().unwrap() {
        assert_eq!(position, bodies.len() as u64, "frames out of order");
        bodies.push(body.to_vec());
    }
    assert_eq!(bodies.len() as u64, size, "the log holds fewer frames than its head says");
    let leaves: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    ledger::merkle::root(&leaves)
}

fn check_head(ledger: &Ledger, model: &Model) {
    let head = ledger.head();
    assert_eq!(head.size, model.log.len() as u64, "log size differs from the model");
    assert_eq!(head.root, stored_root(ledger), "head root is not the Merkle root of the stored bodies");
}

fn check_everything(ledger: &Ledger, model: &Model) {
    check_log(ledger, model);
    for n in 0..SNS {
        let name = sn_of(n);
        assert_eq!(ledger.terminal(&sn(&name)).unwrap(), model.state_of(&name), "state of {name}");
    }
}

/// The head, every published record and every stream, against the model (not the terminals' state,
/// which includes what is written but not published).
fn check_log(ledger: &Ledger, model: &Model) {
    check_head(ledger, model);
    let records: Vec<_> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), model.log.len());
    let mut last_at = None;
    for (position, (record, expected)) in records.iter().zip(&model.log).enumerate() {
        assert_eq!(record.position, position as u64, "positions are not dense");
        assert_eq!(record.event, expected.event, "record {position}");
        assert_eq!(record.event_id, expected.event_id, "record {position}");
        assert_eq!(record.version, expected.version, "record {position} version");
        assert_eq!(record.commit, expected.commit, "record {position} commit marker");
        assert!(last_at <= Some(record.recorded_at), "recorded_at went backwards at {position}");
        last_at = Some(record.recorded_at);
    }
    for n in 0..SNS {
        check_stream(ledger, model, &StreamId::Terminal(sn(&sn_of(n))));
    }
    check_stream(ledger, model, &StreamId::Directives);
}

fn check_stream(ledger: &Ledger, model: &Model, stream: &StreamId) {
    let got = ledger.read_stream(stream).unwrap();
    let want = model.streams.get(stream).cloned().unwrap_or_default();
    let positions: Vec<u64> = got.iter().map(|r| r.position).collect();
    assert_eq!(positions, want, "positions of {stream}");
    for (version, record) in got.iter().enumerate() {
        assert_eq!(record.version, version as u64, "versions of {stream} are not dense");
    }
}

/// An append (or a retry) that ran without a fault: the ledger does what the model does.
fn check_append(
    ledger: &Ledger,
    model: &mut Model,
    accepted: &mut Vec<Vec<AppendEvent>>,
    events: Vec<AppendEvent>,
    got: Result<ledger::Appended, AppendError>,
    before: Head,
    retry: bool,
) {
    let want = model.append(&events);
    match (got, want) {
        (Ok(appended), Ok((positions, written))) => {
            assert_eq!(appended.positions, positions, "positions of {events:?}");
            assert_eq!(appended.written, written);
            assert_eq!(appended.head, ledger.head());
            if written == 0 {
                assert_eq!(appended.head, before, "a pure retry changed the head");
            }
            if retry && events.iter().all(|e| e.event_id.is_some()) {
                assert_eq!(written, 0, "a retry of identified events wrote again");
            }
            accepted.push(events);
        }
        (Err(e), Err(want)) => {
            assert_eq!(refusal_of(&e), want, "{e}\nevents: {events:?}");
            assert_eq!(ledger.head(), before, "a refused append changed the head");
        }
        (got, want) => panic!("append {events:?}:\nledger {got:?}\nmodel {want:?}"),
    }
}

/// What a faulted append did before the reopen.
enum Faulted {
    /// The fault did not fire (fewer I/O points, or the append was refused or a pure retry): the outcome,
    /// to check as a normal append.
    Normal(Result<ledger::Appended, AppendError>),
    /// It fired: the append failed, the ledger is poisoned and must be reopened; the model's positions and
    /// count of written records for the append.
    Failed { kind: Kind, positions: Vec<u64>, written: u64 },
}

/// Runs `events` with I/O point `point` of the append failing, and checks the ledger up to the reopen.
fn fault(
    ledger: &Ledger,
    dir: &Path,
    config: Config,
    faults: &Faults,
    model: &Model,
    (point, short): (usize, Option<u8>),
    events: &[AppendEvent],
) -> Faulted {
    let before = ledger.head();
    let at = next_recorded_at(ledger);
    // The append does I/O only if it writes records; only then does a short write need its bytes.
    let verdict = model.clone().append(events);
    let writes = matches!(&verdict, Ok((_, written)) if *written > 0);
    let prefix = short
        .filter(|_| writes)
        .and_then(|cut| Some((cut, twin_bytes(dir, config, events, at, point)?)))
        .map(|(cut, bytes)| {
            let cuts = cuts(&bytes);
            bytes[..cuts[cut as usize % cuts.len()]].to_vec()
        })
        .unwrap_or_default();
    faults.arm(Some((point, prefix)));
    let got = ledger.append_at(events.to_vec(), Some(at));
    let (points, fired) = faults.disarm();
    let Some((kind, errno)) = fired else { return Faulted::Normal(got) };
    assert_eq!(points.len(), point + 1, "I/O went on after the failed point");
    let (positions, written) = match verdict {
        Ok(outcome) => outcome,
        Err(want) => panic!("the ledger did I/O for an append the model refuses ({want:?}): {events:?}"),
    };
    match &got {
        Err(AppendError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(errno), "{source}"),
        Err(AppendError::Poisoned(why)) => {
            let known = matches!(why, WriterFailure::Sync { .. } | WriterFailure::Anchor { .. });
            assert!(kind == Kind::Sync && known, "refused after a failed {kind:?}: {why}");
        }
        other => panic!("a failed {kind:?} gave {other:?}"),
    }
    // Nothing of the failed append is visible; the ledger refuses appends without writing.
    assert_eq!(ledger.head(), before, "a failed {kind:?} moved the head");
    check_log(ledger, model);
    let len = segment_bytes(dir);
    match ledger.append(events.to_vec()) {
        Err(AppendError::Poisoned(_)) => {}
        other => panic!("an append after a failed {kind:?} was not refused: {other:?}"),
    }
    assert_eq!(segment_bytes(dir), len, "a refused append wrote bytes");
    assert_eq!(ledger.head(), before);
    Faulted::Failed { kind, positions, written }
}

/// Runs a case; returns the faults that fired, each with whether its append was found after the reopen.
fn run(config: Config, actions: &[Action]) -> Vec<(Kind, bool)> {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let mut fired = Vec::new();
    let mut ledger = open(dir.path(), config, &faults);
    let mut model = Model::default();
    let mut accepted: Vec<Vec<AppendEvent>> = Vec::new();
    for action in actions {
        let before = ledger.head();
        match action {
            Action::Reopen => {
                drop(ledger);
                ledger = open(dir.path(), config, &faults);
                assert_eq!(ledger.head(), before, "reopen changed the head");
                check_everything(&ledger, &model);
                continue;
            }
            Action::StopModels { id, models } => {
                let directive = directive_value(*id, models);
                let stops = model.running_of(models);
                let mut events = vec![AppendEvent::from(Event::Directive(directive.clone()))];
                events.extend(stops.iter().map(|s| {
                    AppendEvent::from(Event::Terminal(DeviceEvent {
                        device: s.clone(),
                        at: directive.at,
                        event: TerminalEvent::Stopped {
                            reason: StopReason::ModelRecall,
                            directive: Some(directive.id.clone()),
                        },
                    }))
                }));
                let want = model.append(&events);
                let got = ledger.stop_models(directive, None);
                match (got, want) {
                    (Ok(outcome), Ok((positions, written))) => {
                        assert_eq!(outcome.stopped, stops);
                        assert_eq!(outcome.appended.positions, positions);
                        assert_eq!(outcome.appended.written, written);
                    }
                    (Err(e), Err(want)) => {
                        assert_eq!(refusal_of(&e), want, "{e}");
                        assert_eq!(ledger.head(), before, "a refused stop_models changed the head");
                    }
                    (got, want) => panic!("stop_models: ledger {got:?}, model {want:?}"),
                }
            }
            Action::Append(_) | Action::Retry(_) => {
                let events = match action {
                    Action::Append(gens) => build_append(&model, gens),
                    Action::Retry(i) if !accepted.is_empty() => accepted[i % accepted.len()].clone(),
                    _ => continue,
                };
                let got = ledger.append(events.clone());
                let retry = matches!(action, Action::Retry(_));
                check_append(&ledger, &mut model, &mut accepted, events, got, before, retry);
            }
            Action::Fault { point, short, gens } => {
                let events = build_append(&model, gens);
                let point = (usize::from(*point), *short);
                match fault(&ledger, dir.path(), config, &faults, &model, point, &events) {
                    Faulted::Normal(got) => {
                        check_append(&ledger, &mut model, &mut accepted, events, got, before, false)
                    }
                    Faulted::Failed { kind, positions, written } => {
                        // Reopened without the fault: the failed append is there whole, or not at all.
                        drop(ledger);
                        ledger = open(dir.path(), config, &faults);
                        let size = ledger.head().size;
                        fired.push((kind, size > before.size));
                        if size == before.size + written {
                            assert_eq!(kind, Kind::Sync, "a failed write's append is in the reopened log");
                            assert_eq!(model.append(&events), Ok((positions, written)), "the landed append");
                            accepted.push(events);
                        } else {
                            assert_eq!(size, before.size, "reopened with {size} records: part of an append");
                            assert_eq!(ledger.head(), before, "reopen changed the head");
                        }
                        check_everything(&ledger, &model);
                    }
                }
            }
        }
        check_head(&ledger, &model);
    }
    check_everything(&ledger, &model);
    let head = ledger.head();
    drop(ledger);
    let ledger = open(dir.path(), config, &faults);
    assert_eq!(ledger.head(), head, "reopen gives another head");
    check_everything(&ledger, &model);
    fired
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_the_reference_model(
        config in (proptest::bool::ANY, proptest::bool::ANY)
            .prop_map(|(durable, small_segments)| Config { durable, small_segments }),
        actions in proptest::collection::vec(gen_action(), 1..40),
    ) {
        // Most terminals exist from the start, so that random decisions are often legal.
        let issue = |sn, model| Gen { kind: GenKind::Issue { sn, model }, event_id: None, expect: None };
        let mut all = vec![Action::Append(vec![issue(0, 0), issue(1, 1), issue(2, 2), issue(3, 0)])];
        all.extend(actions);
        run(config, &all);
    }
}

/// A hand-written scenario through the same machinery, so the model itself is known to accept a full,
/// legal life (a model that refused everything would agree with a ledger that refused everything).
#[test]
fn the_model_accepts_a_full_legal_life() {
    let g = |kind, event_id| Gen { kind, event_id, expect: Some(0) };
    let actions = vec![
        Action::Append(vec![
            g(GenKind::Issue { sn: 0, model: 0 }, Some(1)),
            g(GenKind::Issue { sn: 1, model: 1 }, Some(2)),
            g(GenKind::Flow { sn: 0, amount: 10_000 }, Some(3)),
        ]),
        Action::Append(vec![g(GenKind::Activate { sn: 0 }, None), g(GenKind::Flag { sn: 0, reason: 1 }, None)]),
        Action::Retry(0),
        Action::Append(vec![g(GenKind::Clear { sn: 0, reason: 1 }, None), g(GenKind::Expire { sn: 1 }, None)]),
        Action::Append(vec![g(GenKind::Renew { sn: 1, bad_contract: false }, None)]),
        Action::Append(vec![g(GenKind::Directive { id: 0, models: vec![0, 2] }, None)]),
        Action::Append(vec![g(GenKind::Stop { sn: 0, reason: 0, directive: Some(0) }, None)]),
        Action::Reopen,
        Action::Append(vec![
            g(GenKind::Replaced { sn: 0, by: 2 }, None),
            g(GenKind::IssueReplacing { sn: 2, model: 0, replaces: 0 }, None),
        ]),
        Action::StopModels { id: 1, models: vec![0, 1] },
    ];
    run(Config::default(), &actions);
    let mut model = Model::default();
    for action in &actions {
        if let Action::Append(gens) = action {
            let events = build_append(&model, gens);
            model.append(&events).unwrap();
        }
    }
    assert_eq!(model.terms["T0"].status, Status::Replaced);
    assert_eq!(model.terms["T2"].status, Status::Issued);
    assert_eq!(model.log.len(), 12);
}

/// The faults on legal appends, in durable mode: a short write that stops between the two whole frames of
/// an append, a plain failed write, a failed fsync. Each fires; the written-but-unsynced append is found
/// whole after the reopen (the page cache survives), the others are not, and the log goes on.
#[test]
fn faults_on_legal_appends_fire_and_settle() {
    let g = |kind| Gen { kind, event_id: None, expect: None };
    let flow = |sn| g(GenKind::Flow { sn, amount: 10_000 });
    let actions = vec![
        Action::Append(vec![g(GenKind::Issue { sn: 0, model: 0 }), g(GenKind::Issue { sn: 1, model: 1 })]),
        // Two frames of one length: the cuts are 1, the end of the first frame, one byte more, all but one.
        Action::Fault { point: 0, short: Some(1), gens: vec![flow(0), flow(1)] },
        Action::Fault { point: 0, short: None, gens: vec![flow(0)] },
        Action::Fault { point: 1, short: None, gens: vec![flow(0)] },
        Action::Append(vec![g(GenKind::Activate { sn: 0 })]),
    ];
    let fired = run(Config { durable: true, small_segments: false }, &actions);
    assert_eq!(fired, vec![(Kind::Write, false), (Kind::Write, false), (Kind::Sync, true)]);
}

/// Bug found by the model test: with two `replaced` events of one terminal in one append, the pairing
/// check kept only the last one per terminal (a map keyed by SN), and so blamed the correctly paired
/// `issued` (index 1, with a false message) instead of the `replaced` that has no partner (index 3).
#[test]
fn two_replaced_of_one_terminal_blame_the_unpaired_one() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), Config::default(), &Faults::new());
    ledger.append(vec![common::issued("T5", "M-0"), common::stopped("T5", StopReason::Violation)]).unwrap();
    let head = ledger.head();
    let err = ledger
        .append(vec![
            common::flow("T5", 5_000),
            common::issued_with("T0", "M-1", Some("T5")),
            common::replaced("T5", "T0"),
            common::replaced("T5", "T1"),
        ])
        .unwrap_err();
    match &err {
        AppendError::Rule { index: 3, violation: Violation::UnpairedReplacement(message), .. } => {
            assert!(message.contains("T1"), "{message}");
        }
        other => panic!("expected the unpaired replaced at index 3 to be named, got {other}"),
    }
    assert_eq!(ledger.head(), head);
}

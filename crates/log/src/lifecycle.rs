//! The lifecycle state machine: the one copy of the rules.
//!
//! The write path validates every event with [`apply`] before anything is written, and every
//! projection folds the log with the same function, so a rule can never differ between the two.
//! The state here is the minimum the rules need ([`State`], 16 bytes); richer read models keep it
//! beside their own fields.
//!
//! | event | legal when | effect |
//! | --- | --- | --- |
//! | issued | SN never seen; `replaces` pairs with a `replaced` in the same append | issued, contract current, flow 0 |
//! | flow | terminal exists (any status) | cumulative flow += amount |
//! | activated | issued, contract current, flow ≥ 10,000 fen | active |
//! | contract_renewed | issued or active | contract current |
//! | contract_expired | exists, not replaced | contract expired |
//! | flagged | exists, not replaced | flag opened |
//! | flag_cleared | that flag open, not replaced | flag closed |
//! | stopped | issued or active; `model_recall` names a recorded directive listing the model | stopped |
//! | replaced | stopped; the new SN issued in the same append with `replaces` = this SN | replaced |
//! | directive | id never seen; 1..=10,000 distinct models | recorded |

use crate::model::{
    DeviceEvent, Directive, DirectiveId, FlagReason, Sn, StopReason, TerminalEvent, ACTIVATION_FLOW_FEN,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// A terminal's lifecycle status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Issued, not yet activated.
    Issued,
    /// Activated after 100 yuan of flow.
    Active,
    /// Switched off.
    Stopped,
    /// Replaced by another terminal; final.
    Replaced,
}

impl Status {
    /// Every status, in order.
    pub const ALL: [Status; 4] = [Status::Issued, Status::Active, Status::Stopped, Status::Replaced];
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::Active => "active",
            Status::Stopped => "stopped",
            Status::Replaced => "replaced",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the service contract is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ContractState {
    /// In force.
    Current,
    /// Ended without renewal.
    Expired,
}

impl ContractState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractState::Current => "current",
            ContractState::Expired => "expired",
        }
    }
}

/// The set of open flags, one bit per [`FlagReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlagSet(u8);

impl FlagSet {
    /// No flag open.
    pub const EMPTY: FlagSet = FlagSet(0);
    /// Whether `reason` is open.
    pub fn contains(self, reason: FlagReason) -> bool {
        self.0 & reason.bit() != 0
    }
    /// With `reason` open.
    pub fn with(self, reason: FlagReason) -> FlagSet {
        FlagSet(self.0 | reason.bit())
    }
    /// With `reason` closed.
    pub fn without(self, reason: FlagReason) -> FlagSet {
        FlagSet(self.0 & !reason.bit())
    }
    /// Whether no flag is open.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The open reasons, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = FlagReason> {
        FlagReason::ALL.iter().copied().filter(move |r| self.contains(*r))
    }
    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// What the rules know of one terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct State {
    /// Lifecycle status.
    pub status: Status,
    /// Contract state.
    pub contract: ContractState,
    /// Cumulative recorded flow, in fen (saturating).
    pub flow_fen: u64,
    /// Open flags.
    pub flags: FlagSet,
}

/// How a directive named by a `stopped` event relates to the stopped terminal. The caller looks it up
/// (it knows the directives and the terminal's model); the rule decides what is legal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectiveLookup {
    /// No directive of that id has been recorded.
    NotRecorded,
    /// Recorded; `true` when it lists the terminal's model.
    Recorded {
        /// Whether the directive lists the terminal's model.
        lists_model: bool,
    },
}

/// A broken lifecycle rule. The message names the rule; callers add the terminal and position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// `issued` for an SN that already has a stream.
    #[error("terminal was already issued")]
    AlreadyIssued,
    /// Any event but `issued` for an SN that has no stream.
    #[error("terminal was never issued")]
    UnknownTerminal,
    /// The event is not allowed in the terminal's status.
    #[error("{event} is not allowed when status is {status}")]
    WrongStatus {
        /// The event type.
        event: &'static str,
        /// The status it met.
        status: Status,
    },
    /// `activated` on an expired contract.
    #[error("activated is not allowed while the contract is expired")]
    ContractExpired,
    /// `activated` before 100 yuan of flow.
    #[error("activated needs {needed_fen} fen of cumulative flow, terminal has {flow_fen}")]
    InsufficientFlow {
        /// Recorded flow.
        flow_fen: u64,
        /// The threshold.
        needed_fen: u64,
    },
    /// `flag_cleared` for a flag that is not open.
    #[error("no open {reason} flag to clear")]
    FlagNotOpen {
        /// The reason named.
        reason: FlagReason,
    },
    /// `stopped` with reason model_recall but no directive named.
    #[error("stopped with reason model_recall must name a directive")]
    RecallWithoutDirective,
    /// The named directive has not been recorded.
    #[error("directive {0} has not been recorded")]
    UnknownDirective(DirectiveId),
    /// The named directive does not list the terminal's model.
    #[error("directive {0} does not list this terminal's model")]
    DirectiveDoesNotListModel(DirectiveId),
    /// A directive id used twice.
    #[error("directive {0} was already recorded")]
    DuplicateDirective(DirectiveId),
    /// `replaced` by itself, or `issued` replacing itself.
    #[error("a terminal cannot replace itself")]
    SelfReplacement,
    /// The two halves of a replacement are not both in the same append, naming each other.
    #[error("{0}")]
    UnpairedReplacement(String),
}

/// Applies one terminal event to the terminal's state: `Ok(new state)` when legal, else the broken rule.
///
/// `state` is `None` for an SN never seen. `directive` is consulted only for `stopped` events that name a
/// directive. Replacement pairing spans two terminals and is checked per append by [`check_pairs`].
pub fn apply(
    state: Option<&State>,
    event: &TerminalEvent,
    directive: &dyn Fn(&DirectiveId) -> DirectiveLookup,
) -> Result<State, Violation> {
    let Some(state) = state else {
        return match event {
            TerminalEvent::Issued(_) => Ok(State {
                status: Status::Issued,
                contract: ContractState::Current,
                flow_fen: 0,
                flags: FlagSet::EMPTY,
            }),
            _ => Err(Violation::UnknownTerminal),
        };
    };
    let mut next = *state;
    let wrong_status = || Violation::WrongStatus { event: event.type_name(), status: state.status };
    match event {
        TerminalEvent::Issued(_) => return Err(Violation::AlreadyIssued),
        TerminalEvent::Flow { amount_fen, .. } => {
            next.flow_fen = state.flow_fen.saturating_add(*amount_fen);
        }
        TerminalEvent::Activated => {
            if state.status != Status::Issued {
                return Err(wrong_status());
            }
            if state.contract != ContractState::Current {
                return Err(Violation::ContractExpired);
            }
            if state.flow_fen < ACTIVATION_FLOW_FEN {
                return Err(Violation::InsufficientFlow { flow_fen: state.flow_fen, needed_fen: ACTIVATION_FLOW_FEN });
            }
            next.status = Status::Active;
        }
        TerminalEvent::ContractRenewed { .. } => {
            if !matches!(state.status, Status::Issued | Status::Active) {
                return Err(wrong_status());
            }
            next.contract = ContractState::Current;
        }
        TerminalEvent::ContractExpired => {
            if state.status == Status::Replaced {
                return Err(wrong_status());
            }
            next.contract = ContractState::Expired;
        }
        TerminalEvent::Flagged { reason, .. } => {
            if state.status == Status::Replaced {
                return Err(wrong_status());
            }
            next.flags = state.flags.with(*reason);
        }
        TerminalEvent::FlagCleared { reason, .. } => {
            if state.status == Status::Replaced {
                return Err(wrong_status());
            }
            if !state.flags.contains(*reason) {
                return Err(Violation::FlagNotOpen { reason: *reason });
            }
            next.flags = state.flags.without(*reason);
        }
        TerminalEvent::Stopped { reason, directive: named } => {
            if !matches!(state.status, Status::Issued | Status::Active) {
                return Err(wrong_status());
            }
            match (reason, named) {
                (StopReason::ModelRecall, None) => return Err(Violation::RecallWithoutDirective),
                (_, Some(id)) => match directive(id) {
                    DirectiveLookup::NotRecorded => return Err(Violation::UnknownDirective(id.clone())),
                    DirectiveLookup::Recorded { lists_model: false } if *reason == StopReason::ModelRecall => {
                        return Err(Violation::DirectiveDoesNotListModel(id.clone()))
                    }
                    DirectiveLookup::Recorded { .. } => {}
                },
                (_, None) => {}
            }
            next.status = Status::Stopped;
        }
        TerminalEvent::Replaced { .. } => {
            if state.status != Status::Stopped {
                return Err(wrong_status());
            }
            next.status = Status::Replaced;
        }
    }
    Ok(next)
}

/// Checks a directive against the directives already recorded.
pub fn check_directive(directive: &Directive, already_recorded: bool) -> Result<(), Violation> {
    if already_recorded {
        return Err(Violation::DuplicateDirective(directive.id.clone()));
    }
    Ok(())
}

/// Checks that within one append every `replaced {by: NEW}` of OLD is matched by an `issued` of NEW with
/// `replaces = OLD`, and the other way round. Returns the index (within `events`) of the first event
/// that has no partner, with the broken rule.
pub fn check_pairs<'a>(events: impl IntoIterator<Item = &'a DeviceEvent>) -> Result<(), (usize, Violation)> {
    // Every half of every pair, as (index, old SN, new SN). Each event is checked on its own against the
    // other kind's halves, so two `replaced` of one terminal (or two `issued` of one SN) in one append
    // cannot hide each other: the event that has no partner is the one named.
    let mut replaced: Vec<(usize, &Sn, &Sn)> = Vec::new();
    let mut issued: Vec<(usize, &Sn, &Sn)> = Vec::new();
    for (index, e) in events.into_iter().enumerate() {
        match &e.event {
            TerminalEvent::Replaced { by } => {
                if *by == e.device {
                    return Err((index, Violation::SelfReplacement));
                }
                replaced.push((index, &e.device, by));
            }
            TerminalEvent::Issued(issued_event) => {
                if let Some(old) = &issued_event.replaces {
                    if *old == e.device {
                        return Err((index, Violation::SelfReplacement));
                    }
                    issued.push((index, old, &e.device));
                }
            }
            _ => {}
        }
    }
    let issued_pairs: HashSet<(&Sn, &Sn)> = issued.iter().map(|(_, old, new)| (*old, *new)).collect();
    let replaced_pairs: HashSet<(&Sn, &Sn)> = replaced.iter().map(|(_, old, new)| (*old, *new)).collect();
    let mut first: Option<(usize, Violation)> = None;
    let mut note = |index: usize, message: String| {
        if first.as_ref().is_none_or(|(i, _)| index < *i) {
            first = Some((index, Violation::UnpairedReplacement(message)));
        }
    };
    for (index, old, new) in &replaced {
        if !issued_pairs.contains(&(*old, *new)) {
            note(
                *index,
                format!("replaced by {new}, but {new} is not issued with replaces = {old} in the same append"),
            );
        }
    }
    for (index, old, new) in &issued {
        if !replaced_pairs.contains(&(*old, *new)) {
            note(
                *index,
                format!("issued with replaces = {old}, but {old} is not replaced by {new} in the same append"),
            );
        }
    }
    match first {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Contract, ContractId, Issued, MerchantId, ModelCode, ProviderId, RegionCode, Text};
    use chrono::{TimeZone, Utc};

    fn no_directive(_: &DirectiveId) -> DirectiveLookup {
        DirectiveLookup::NotRecorded
    }

    fn issued() -> TerminalEvent {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        TerminalEvent::Issued(Box::new(Issued {
            model: ModelCode::parse("M1").unwrap(),
            merchant: MerchantId::parse("X").unwrap(),
            provider: ProviderId::parse("p").unwrap(),
            region: RegionCode::parse("310000").unwrap(),
            contract: Contract { id: ContractId::parse("C").unwrap(), start: t, end: t + chrono::Duration::days(365) },
            replaces: None,
        }))
    }

    #[test]
    fn activation_needs_100_yuan() {
        let s = apply(None, &issued(), &no_directive).unwrap();
        let err = apply(Some(&s), &TerminalEvent::Activated, &no_directive).unwrap_err();
        assert_eq!(err, Violation::InsufficientFlow { flow_fen: 0, needed_fen: 10_000 });
        let s = apply(Some(&s), &TerminalEvent::Flow { amount_fen: 9_999, transactions: 1 }, &no_directive).unwrap();
        assert!(apply(Some(&s), &TerminalEvent::Activated, &no_directive).is_err());
        let s = apply(Some(&s), &TerminalEvent::Flow { amount_fen: 1, transactions: 1 }, &no_directive).unwrap();
        let s = apply(Some(&s), &TerminalEvent::Activated, &no_directive).unwrap();
        assert_eq!(s.status, Status::Active);
    }

    #[test]
    fn flow_is_recorded_on_a_stopped_terminal() {
        let s = apply(None, &issued(), &no_directive).unwrap();
        let stop = TerminalEvent::Stopped { reason: StopReason::Violation, directive: None };
        let s = apply(Some(&s), &stop, &no_directive).unwrap();
        let s = apply(Some(&s), &TerminalEvent::Flow { amount_fen: 5, transactions: 1 }, &no_directive).unwrap();
        assert_eq!((s.status, s.flow_fen), (Status::Stopped, 5));
    }

    #[test]
    fn model_recall_needs_a_directive_listing_the_model() {
        let s = apply(None, &issued(), &no_directive).unwrap();
        let id = DirectiveId::parse("D1").unwrap();
        let recall = TerminalEvent::Stopped { reason: StopReason::ModelRecall, directive: Some(id.clone()) };
        assert_eq!(apply(Some(&s), &recall, &no_directive), Err(Violation::UnknownDirective(id.clone())));
        let other = |_: &DirectiveId| DirectiveLookup::Recorded { lists_model: false };
        assert_eq!(apply(Some(&s), &recall, &other), Err(Violation::DirectiveDoesNotListModel(id)));
        let lists = |_: &DirectiveId| DirectiveLookup::Recorded { lists_model: true };
        assert_eq!(apply(Some(&s), &recall, &lists).unwrap().status, Status::Stopped);
        let bare = TerminalEvent::Stopped { reason: StopReason::ModelRecall, directive: None };
        assert_eq!(apply(Some(&s), &bare, &lists), Err(Violation::RecallWithoutDirective));
    }

    #[test]
    fn flags_open_and_close() {
        let s = apply(None, &issued(), &no_directive).unwrap();
        let note = Text::parse("n").unwrap();
        let clear = TerminalEvent::FlagCleared { reason: FlagReason::CashOut, note: note.clone() };
        assert!(apply(Some(&s), &clear, &no_directive).is_err());
        let s = apply(Some(&s), &TerminalEvent::Flagged { reason: FlagReason::CashOut, note }, &no_directive).unwrap();
        assert!(s.flags.contains(FlagReason::CashOut));
        let s = apply(Some(&s), &clear, &no_directive).unwrap();
        assert!(s.flags.is_empty());
    }
}

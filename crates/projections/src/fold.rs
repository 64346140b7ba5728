//! Folding one event into the fleet, and the plain sequential fold.
//!
//! [`step`] is the only place a terminal event changes a [`Terminal`]: it asks
//! [`log::lifecycle::apply`] (the one copy of the rules) whether the event is legal and what the new
//! state is, then keeps the fleet's extra fields and the audit's bookkeeping beside it. The sequential
//! fold here and the parallel rebuild ([`crate::rebuild`]) differ only in how they feed [`step`]: the
//! order of events within a terminal, the directives visible at each position and the replacement
//! pairing verdicts are the same in both.

use crate::audit::{self, AuditConfig, AuditTerm, Finding, Rule};
use crate::fleet::{partition_of, Directives, Fleet, Links, Partition, SnKey, Terminal};
use crate::intern::{NameIds, Names};
use log::lifecycle::{self, ContractState, State, Status, Violation};
use log::model::ACTIVATION_FLOW_FEN;
use log::{DeviceEvent, Directive, Event, Record, Sn, TerminalEvent};
use std::collections::HashMap;

/// What [`step`] reads besides the terminal's partition.
pub(crate) struct Ctx<'a> {
    pub names: &'a Names,
    pub directives: &'a Directives,
    pub audit: Option<&'a AuditConfig>,
}

/// What a fold accumulates besides terminal states.
#[derive(Debug, Default)]
pub(crate) struct Acc {
    pub illegal: u64,
    pub findings: Vec<Finding>,
}

/// One terminal event, as [`step`] consumes it.
pub(crate) struct Input<'a> {
    pub position: u64,
    /// Event time, microseconds.
    pub at: i64,
    /// The terminal, as its partition key (inline, so the hot path never allocates for it).
    pub sn: &'a SnKey,
    /// Its slot in the partition, if already looked up and found (`None`: look it up).
    pub slot: Option<usize>,
    pub event: &'a TerminalEvent,
    /// Interned names, for `issued`.
    pub ids: Option<NameIds>,
    /// The replacement pairing verdict of this event's append, for pairing events.
    pub pairing: Option<Violation>,
}

/// Whether an event takes part in replacement pairing (checked per append by [`lifecycle::check_pairs`]).
pub(crate) fn is_pairing(event: &TerminalEvent) -> bool {
    match event {
        TerminalEvent::Replaced { .. } => true,
        TerminalEvent::Issued(issued) => issued.replaces.is_some(),
        _ => false,
    }
}

/// Pairing verdicts for the pairing events of one append (`group`, in position order): every event gets
/// an entry, `Some(violation)` when it is left without a partner.
///
/// [`lifecycle::check_pairs`] names the first unpaired event; it is set aside and the rest checked
/// again, so each event's verdict comes from the ledger's own rule. (Quadratic only in the number of
/// *unpaired* events of one append, which a log that passed the write path never has.)
pub(crate) fn pair_verdicts(group: &[(u64, DeviceEvent)], out: &mut HashMap<u64, Option<Violation>>) {
    let mut live: Vec<usize> = (0..group.len()).collect();
    while let Err((k, violation)) = lifecycle::check_pairs(live.iter().filter_map(|i| group.get(*i).map(|g| &g.1))) {
        let Some(index) = (k < live.len()).then(|| live.remove(k)) else { break };
        if let Some((position, _)) = group.get(index) {
            out.insert(*position, Some(violation));
        }
    }
    for i in live {
        if let Some((position, _)) = group.get(i) {
            out.insert(*position, None);
        }
    }
}

/// Which half of a replacement a pairing event is, and the pair it names: `(old SN, new SN)`.
fn pair_key(e: &DeviceEvent) -> Option<(Half, (Sn, Sn))> {
    match &e.event {
        TerminalEvent::Replaced { by } => Some((Half::Replaced, (e.device.clone(), by.clone()))),
        TerminalEvent::Issued(issued) => {
            issued.replaces.as_ref().map(|old| (Half::Issued, (old.clone(), e.device.clone())))
        }
        _ => None,
    }
}

/// The two halves of a replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Half {
    /// `replaced { by: new }` of the old terminal.
    Replaced,
    /// `issued { replaces: old }` of the new terminal.
    Issued,
}

impl Half {
    fn other(self) -> Half {
        match self {
            Half::Replaced => Half::Issued,
            Half::Issued => Half::Replaced,
        }
    }
}

/// The replacement pairing of the append still open (its commit marker not read yet), decided as early
/// as the rule allows.
///
/// [`lifecycle::check_pairs`] accepts a half exactly when the same append holds the other half of the
/// same pair (and refuses a self-replacement on its own). So a half is accepted the moment its partner
/// is seen, and only a half still without a partner when the append closes waits for the commit marker
/// (its verdict then comes from [`pair_verdicts`], the rule itself). Before this, every pairing event
/// waited for the end of its append, and with it every later event of its partition: on a ledger made by
/// one `posledger append` of 10^7 lines (one append, one commit marker at its end), `replay fleet` held
/// nearly the whole log in memory (1.1 GB) and took 2.8× as long as on the same events in many appends.
///
/// Memory: the pairs seen in the open append (about 100 bytes each), and the halves still waiting.
#[derive(Default)]
pub(crate) struct PairWindow {
    /// Every pair seen in the open append, by half.
    seen: std::collections::HashSet<(Half, (Sn, Sn))>,
    /// Halves without a partner yet.
    waiting: HashMap<(Half, (Sn, Sn)), Vec<(u64, DeviceEvent)>>,
}

impl PairWindow {
    /// The next pairing event of the open append (in position order); records its verdict in `out` when
    /// it is already decided, and the verdicts of the halves it pairs.
    pub fn push(&mut self, position: u64, event: DeviceEvent, out: &mut HashMap<u64, Option<Violation>>) {
        let Some((half, pair)) = pair_key(&event) else { return };
        if let Err((_, violation @ Violation::SelfReplacement)) = lifecycle::check_pairs(std::iter::once(&event)) {
            out.insert(position, Some(violation));
            return;
        }
        let partner = (half.other(), pair);
        // Partners still waiting are in `seen` too: a seen partner decides both.
        let paired = self.seen.contains(&partner);
        for (p, _) in self.waiting.remove(&partner).unwrap_or_default() {
            out.insert(p, None);
        }
        let (_, pair) = partner;
        self.seen.insert((half, pair.clone()));
        if paired {
            out.insert(position, None);
        } else {
            self.waiting.entry((half, pair)).or_default().push((position, event));
        }
    }

    /// Whether the window holds nothing of an open append.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.waiting.is_empty()
    }

    /// The open append closed (its commit marker, or the end of the input): the halves still without a
    /// partner get the rule's verdict, and the window is empty again.
    pub fn close(&mut self, out: &mut HashMap<u64, Option<Violation>>) {
        let mut left: Vec<(u64, DeviceEvent)> = self.waiting.drain().flat_map(|(_, events)| events).collect();
        left.sort_by_key(|(position, _)| *position);
        pair_verdicts(&left, out);
        self.seen.clear();
    }
}

/// Records a directive unless its id was already recorded (an illegal repeat: reported, not applied).
pub(crate) fn record_directive(directives: &mut Directives, position: u64, d: &Directive, audit: bool, acc: &mut Acc) {
    match lifecycle::check_directive(d, directives.contains(&d.id)) {
        Ok(()) => {
            let recorded = directives.record(position, d);
            assert!(recorded, "check_directive accepted an id already recorded");
        }
        Err(violation) => {
            acc.illegal += 1;
            if audit {
                acc.findings.push(Finding {
                    position,
                    rule: Rule::IllegalTransition,
                    device: None,
                    detail: format!("directive rejected: {violation}"),
                });
            }
        }
    }
}

/// Folds one terminal event into its partition. Returns the rule the event broke, if any; a rejected
/// event leaves the terminal unchanged.
pub(crate) fn step(part: &mut Partition, ctx: &Ctx<'_>, input: Input<'_>, acc: &mut Acc) -> Result<(), Violation> {
    // A slot never changes once given, so a hint looked up earlier (to overlap cache misses, see
    // `rebuild::fold_partitions`) is as good as a fresh lookup; only a miss must be looked up again.
    let slot = input.slot.or_else(|| part.slot(input.sn));
    let before = slot.and_then(|s| part.terminals.get(s));
    let before_state: Option<State> = before.map(|t| t.state);
    let issued =
        before.and_then(|t| t.audit.as_ref().map(|a| audit::IssuedAt { at: t.issued_at, position: a.issued_position }));
    let model = before.and_then(|t| ctx.names.models.get(t.model));
    let lookup = |id: &log::DirectiveId| ctx.directives.lookup(id, input.position, model);
    let result = lifecycle::apply(before_state.as_ref(), input.event, &lookup)
        .and_then(|next| input.pairing.clone().map_or(Ok(next), Err));
    if ctx.audit.is_some() {
        observe(before_state.as_ref(), &input, acc);
        if let (Some(issued), Some(state)) = (issued, before_state.as_ref()) {
            audit::observe_history(
                issued,
                state.contract,
                input.event,
                input.at,
                result.is_ok(),
                &mut |rule, detail| {
                    acc.findings.push(Finding { position: input.position, rule, device: input.sn.to_sn(), detail })
                },
            );
        }
    }
    let next = match result {
        Ok(next) => next,
        Err(violation) => {
            acc.illegal += 1;
            if ctx.audit.is_some() {
                acc.findings.push(Finding {
                    position: input.position,
                    rule: Rule::IllegalTransition,
                    device: input.sn.to_sn(),
                    detail: format!("{} rejected: {violation}", input.event.type_name()),
                });
            }
            return Err(violation);
        }
    };
    let Some(terminal) = slot.and_then(|s| part.terminals.get_mut(s)) else {
        // The rules accept only `issued` for an SN never seen.
        let TerminalEvent::Issued(issued) = input.event else {
            unreachable!("lifecycle::apply accepted a non-issued event for an unknown terminal")
        };
        let ids = input.ids.unwrap_or_default();
        part.insert(
            input.sn.clone(),
            Terminal {
                state: next,
                model: ids[0],
                provider: ids[1],
                region: ids[2],
                merchant: ids[3],
                issued_at: input.at,
                contract_end: issued.contract.end.timestamp_micros(),
                last_position: input.position,
                links: issued
                    .replaces
                    .as_ref()
                    .map(|old| Box::new(Links { replaces: Some((old.clone(), input.position)), replaced_by: None })),
                audit: ctx
                    .audit
                    .map(|_| Box::new(AuditTerm { issued_position: input.position, ..AuditTerm::default() })),
            },
        );
        return Ok(());
    };
    terminal.state = next;
    terminal.last_position = input.position;
    match input.event {
        TerminalEvent::ContractRenewed { contract } => terminal.contract_end = contract.end.timestamp_micros(),
        TerminalEvent::Replaced { by } => {
            terminal.links.get_or_insert_with(Box::default).replaced_by = Some((by.clone(), input.position));
        }
        _ => {}
    }
    if let (Some(config), Some(audit)) = (ctx.audit, terminal.audit.as_mut()) {
        match input.event {
            TerminalEvent::Activated => audit.ever_active = true,
            TerminalEvent::Stopped { .. } => {
                audit.stopped_at.get_or_insert(input.at);
            }
            TerminalEvent::Flagged { reason, .. } => audit::flag_opened(audit, *reason, input.at, input.position),
            TerminalEvent::FlagCleared { reason, .. } => {
                if let Some(since) = audit::flag_closed(audit, *reason, input.at, config) {
                    acc.findings.push(Finding {
                        position: input.position,
                        rule: Rule::FlagOpenTooLong,
                        device: input.sn.to_sn(),
                        detail: audit::describe_flag_cleared(*reason, since, input.at),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The audit rules that look at the state just before an event.
fn observe(before: Option<&State>, input: &Input<'_>, acc: &mut Acc) {
    let Some(state) = before else { return };
    let mut emit = |rule: Rule, detail: String| {
        acc.findings.push(Finding { position: input.position, rule, device: input.sn.to_sn(), detail })
    };
    match input.event {
        TerminalEvent::Flow { amount_fen, .. } => {
            if state.status == Status::Stopped {
                emit(Rule::FlowAfterStop, format!("flow of {amount_fen} fen on a stopped terminal"));
            }
            if state.status == Status::Replaced {
                emit(Rule::FlowAfterReplacement, format!("flow of {amount_fen} fen on a replaced terminal"));
            }
            if state.contract == ContractState::Expired {
                emit(Rule::FlowWhileContractExpired, format!("flow of {amount_fen} fen while the contract is expired"));
            }
        }
        TerminalEvent::Activated if state.flow_fen < ACTIVATION_FLOW_FEN => emit(
            Rule::ActivationWithoutFlow,
            format!("activated with {} fen of cumulative flow (needs {ACTIVATION_FLOW_FEN})", state.flow_fen),
        ),
        _ => {}
    }
}

/// What the sequential fold reports for each terminal record it folds: the record, the rule it broke
/// (if any), and the terminal's state after it (`None` while the terminal does not exist).
pub(crate) type Hook<'h> = &'h mut dyn FnMut(&Record, Option<&Violation>, Option<State>);

/// The plain sequential fold: records in position order.
///
/// A record is folded as soon as every pairing verdict before it is decided ([`PairWindow`]): records
/// wait only behind a replacement half whose partner is not read yet, so an append of any length is
/// not held in memory until its commit marker (a one-append ledger of 10^7 records was, whole).
pub(crate) struct Sequential<'a> {
    fleet: &'a mut Fleet,
    /// Records pushed but not yet folded, from the first pairing event still undecided.
    group: std::collections::VecDeque<Record>,
    window: PairWindow,
    /// Verdicts of pairing events not yet folded.
    verdicts: HashMap<u64, Option<Violation>>,
    /// Fold only this terminal (directives and pairing are still read from every record).
    filter: Option<Sn>,
}

impl<'a> Sequential<'a> {
    pub fn new(fleet: &'a mut Fleet, filter: Option<Sn>) -> Self {
        Sequential {
            fleet,
            group: std::collections::VecDeque::new(),
            window: PairWindow::default(),
            verdicts: HashMap::new(),
            filter,
        }
    }

    /// The fleet as folded so far: the state after every record pushed when [`Sequential::at_commit`]
    /// holds; otherwise some records of the open append may be pushed but not yet folded.
    pub fn fleet(&self) -> &Fleet {
        self.fleet
    }

    /// Whether every record pushed has been folded and the last one carried the commit marker.
    pub fn at_commit(&self) -> bool {
        self.group.is_empty() && self.fleet.at_commit
    }

    /// Moves the fold's position forward to `position` without records (for a fold over a subset of a
    /// log, [`crate::history::history_of`]); the records of the open append stay open.
    pub fn skip_to(&mut self, position: u64) {
        assert!(position >= self.fleet.position, "a fold never moves back");
        self.fleet.position = position;
    }

    /// Takes the next record (which must be at the fleet's position).
    pub fn push(&mut self, record: Record, hook: Option<Hook<'_>>) {
        assert_eq!(record.position, self.fleet.position, "records are folded densely, in position order");
        self.fleet.position += 1;
        self.fleet.at_commit = record.commit;
        self.fleet.end_at = Some(record.event.at().timestamp_micros());
        self.fleet.last_recorded_at = Some(record.recorded_at.timestamp_micros());
        if let Event::Terminal(e) = &record.event {
            if is_pairing(&e.event) {
                self.window.push(record.position, e.clone(), &mut self.verdicts);
            }
        }
        let commit = record.commit;
        self.group.push_back(record);
        if commit {
            self.window.close(&mut self.verdicts);
        }
        self.fold_decided(hook);
    }

    /// Folds the records of the open append (at the end of the input): the append closes there.
    pub fn flush(&mut self, hook: Option<Hook<'_>>) {
        self.window.close(&mut self.verdicts);
        self.fold_decided(hook);
        assert!(self.group.is_empty(), "every record is decided once its append is closed");
    }

    /// Folds the waiting records, in order, up to the first pairing event still undecided.
    fn fold_decided(&mut self, mut hook: Option<Hook<'_>>) {
        let fleet = &mut *self.fleet;
        let audit = fleet.audit.as_ref().map(|a| a.config);
        let mut acc = Acc::default();
        loop {
            let undecided = self.group.front().is_some_and(|r| match &r.event {
                Event::Terminal(e) => is_pairing(&e.event) && !self.verdicts.contains_key(&r.position),
                Event::Directive(_) => false,
            });
            if undecided {
                break;
            }
            let Some(record) = self.group.pop_front() else { break };
            let pairing = self.verdicts.remove(&record.position).flatten();
            match &record.event {
                Event::Directive(d) => {
                    record_directive(&mut fleet.directives, record.position, d, audit.is_some(), &mut acc)
                }
                Event::Terminal(e) => {
                    if self.filter.as_ref().is_some_and(|f| *f != e.device) {
                        continue;
                    }
                    let ids = match &e.event {
                        TerminalEvent::Issued(issued) => Some(fleet.names.intern_issued(issued)),
                        _ => None,
                    };
                    let Some(part) = fleet.partitions.get_mut(partition_of(e.device.as_str())) else { continue };
                    let ctx = Ctx { names: &fleet.names, directives: &fleet.directives, audit: audit.as_ref() };
                    let sn = SnKey::new(e.device.as_str());
                    let input = Input {
                        position: record.position,
                        at: e.at.timestamp_micros(),
                        sn: &sn,
                        slot: None,
                        event: &e.event,
                        ids,
                        pairing,
                    };
                    let result = step(part, &ctx, input, &mut acc);
                    if let Some(hook) = hook.as_mut() {
                        hook(&record, result.err().as_ref(), part.get(e.device.as_str()).map(|t| t.state));
                    }
                }
            }
        }
        fleet.illegal += acc.illegal;
        if let Some(log) = fleet.audit.as_mut() {
            log.findings.extend(acc.findings);
        }
    }

    /// Ends the input: folds the open append and puts the findings in their canonical order.
    pub fn finish(mut self, hook: Option<Hook<'_>>) {
        self.flush(hook);
        finalize(self.fleet);
    }
}

/// Canonical order of the findings gathered so far (so fleets built any way compare equal).
///
/// Also gives back the slack of the growing containers, so the fleet holds what its terminals need
/// (a later catch-up grows them again).
pub(crate) fn finalize(fleet: &mut Fleet) {
    use rayon::prelude::*;
    if let Some(log) = fleet.audit.as_mut() {
        log.findings.par_sort_unstable();
    }
    fleet.partitions.par_iter_mut().for_each(|p| {
        p.terminals.shrink_to_fit();
        p.index.shrink_to_fit();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{issued, replaced};
    use proptest::prelude::*;

    fn device_event(event: Event) -> DeviceEvent {
        match event {
            Event::Terminal(e) => e,
            Event::Directive(_) => unreachable!("the generator makes terminal events"),
        }
    }

    proptest! {
        /// The window decides every pairing event of an append exactly as the rule over the whole
        /// append does (`pair_verdicts`, i.e. `lifecycle::check_pairs`): halves before and after their
        /// partner, repeated halves, halves without a partner, self-replacements.
        #[test]
        fn the_window_decides_as_the_rule_over_the_whole_append(
            events in prop::collection::vec((any::<bool>(), 0usize..4, 0usize..4), 0..40),
        ) {
            let group: Vec<(u64, DeviceEvent)> = events
                .iter()
                .enumerate()
                .map(|(i, &(is_replaced, old, new))| {
                    let (old, new) = (format!("S{old}"), format!("S{new}"));
                    let event = if is_replaced { replaced(&old, 1, &new) } else { issued(&new, 1, "M1", Some(&old)) };
                    (i as u64, device_event(event))
                })
                .collect();
            let mut whole = HashMap::new();
            pair_verdicts(&group, &mut whole);
            let mut window = PairWindow::default();
            let mut early = HashMap::new();
            for (position, event) in &group {
                window.push(*position, event.clone(), &mut early);
            }
            window.close(&mut early);
            prop_assert!(window.is_empty());
            prop_assert_eq!(early, whole);
        }
    }
}

//! Checking an append against the view and applying it: the one place the lifecycle rules meet the
//! index. The write path checks and commits each append here; recovery replays the log tail through the
//! same functions, and so does the background follower that keeps the full view (stream positions)
//! current. So the state a record leads to is computed by one piece of code wherever it is computed.

use crate::error::AppendError;
use crate::index::{FastMap, FastSet, Positions, TerminalMem, View};
use crate::lifecycle::{self, DirectiveLookup, State};
use crate::model::AppendEvent;
use crate::model::{DirectiveId, Event, ModelCode, Sn, StreamId, TerminalEvent};

/// Checks that need no state: field limits, pairing of replacements, duplicate ids in the request.
pub(crate) fn precheck(events: &[AppendEvent]) -> Result<(), AppendError> {
    let mut ids = FastSet::default();
    for (index, e) in events.iter().enumerate() {
        e.event.validate().map_err(|error| AppendError::Field { index, error })?;
        if let Some(id) = &e.event_id {
            if !ids.insert(id) {
                return Err(AppendError::DuplicateEventId { index, event_id: id.clone() });
            }
        }
    }
    let device_events: Vec<(usize, &crate::model::DeviceEvent)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.event {
            Event::Terminal(d) => Some((i, d)),
            Event::Directive(_) => None,
        })
        .collect();
    lifecycle::check_pairs(device_events.iter().map(|(_, d)| *d)).map_err(|(i, violation)| {
        #[expect(
            clippy::indexing_slicing,
            reason = "bound proven: check_pairs names an index of the events it is given"
        )]
        let (index, d) = device_events[i];
        AppendError::Rule { index, stream: StreamId::Terminal(d.device.clone()), event: d.event.type_name(), violation }
    })
}

/// Events looked up together before they are checked: enough look-ups in flight to overlap their
/// cache misses, few enough that what they bring in stays in the core's own cache (256 events touch
/// about 100 KiB of events, keys and entries).
const CHECK_BLOCK_EVENTS: usize = 256;

const _: () = assert!(CHECK_BLOCK_EVENTS > 0, "events are checked in blocks of at least one");

/// One terminal's entry as of the append's events so far.
struct PendingTerminal<'e> {
    version: u64,
    state: State,
    /// Where the terminal lives in the view (None until a terminal issued by this append is inserted).
    slot: Option<u32>,
    /// Set when the terminal is issued by this append.
    new_model: Option<&'e ModelCode>,
}

/// A terminal the append touches: by its slot when the view holds it (hashing a `u32` is cheaper than
/// hashing the SN again), by its SN when this append issues it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'e> {
    Slot(u32),
    New(&'e Sn),
}

impl<'e> Key<'e> {
    fn of(slot: Option<u32>, sn: &'e Sn) -> Key<'e> {
        slot.map_or(Key::New(sn), Key::Slot)
    }
}

/// The state changes of one append, checked against the view plus the append's own earlier events.
/// Keys borrow from the request (`'e`), so checking an event allocates nothing.
pub(crate) struct Pending<'v, 'e> {
    view: &'v View,
    terminals: FastMap<Key<'e>, PendingTerminal<'e>>,
    directives: FastMap<&'e DirectiveId, FastSet<&'e ModelCode>>,
    directives_version: u64,
}

impl<'v, 'e> Pending<'v, 'e> {
    fn new(view: &'v View, capacity: usize) -> Self {
        Pending {
            view,
            terminals: FastMap::with_capacity_and_hasher(capacity, Default::default()),
            directives: FastMap::default(),
            directives_version: view.directives_stream.len(),
        }
    }

    /// Checks `events[i]` for every `i` in `fresh`, in order, against `view`; returns the changes with
    /// each checked event's stream version and resulting state, or the index of the first event that
    /// fails. Every index in `fresh` must be an index of `events`.
    #[expect(clippy::indexing_slicing, reason = "bound proven: every index in fresh is below events.len() (asserted)")]
    pub(crate) fn check_all(
        view: &'v View,
        events: &'e [AppendEvent],
        fresh: &[usize],
    ) -> Result<Changes<'e>, (usize, AppendError)> {
        assert!(fresh.iter().all(|&index| index < events.len()), "fresh names events of the request");
        let mut pending = Pending::new(view, fresh.len());
        let mut versions = Vec::with_capacity(fresh.len());
        let mut states = Vec::with_capacity(fresh.len());
        let mut view_slots = Vec::with_capacity(fresh.len());
        // Look up a block of terminals at once (the CPU overlaps the misses), then check the block
        // while what the look-ups brought into cache is still there.
        for block in fresh.chunks(CHECK_BLOCK_EVENTS) {
            let slots = view.slots_of(block.iter().map(|&index| match &events[index].event {
                Event::Terminal(d) => Some(&d.device),
                Event::Directive(_) => None,
            }));
            for (&index, &slot) in block.iter().zip(&slots) {
                let (version, state) = pending.check(index, &events[index], slot).map_err(|e| (index, e))?;
                versions.push(version);
                states.push(state);
            }
            view_slots.extend(slots);
        }
        Ok(Changes { terminals: pending.terminals, view_slots, versions, states })
    }

    /// Checks one event; returns its stream version. `slot` is the terminal's slot in the view, looked
    /// up beforehand ([`View::slots_of`]).
    /// The state is the terminal's after the event (`None` for a directive).
    fn check(
        &mut self,
        index: usize,
        e: &'e AppendEvent,
        slot: Option<u32>,
    ) -> Result<(u64, Option<State>), AppendError> {
        let rule =
            |violation| AppendError::Rule { index, stream: e.event.stream(), event: e.event.type_name(), violation };
        match &e.event {
            Event::Directive(d) => {
                let seen = self.view.directives.contains_key(&d.id) || self.directives.contains_key(&d.id);
                lifecycle::check_directive(d, seen).map_err(rule)?;
                let version = self.directives_version;
                check_expected(index, e, version)?;
                self.directives.insert(&d.id, d.models.iter().collect());
                self.directives_version += 1;
                Ok((version, None))
            }
            Event::Terminal(d) => {
                let view = self.view;
                // One look-up in the (large, cold) view per terminal per append; later events of the same
                // terminal hit the small pending map, and the commit reaches the entry by its slot.
                let key = Key::of(slot, &d.device);
                let (version, state, slot, new_model) = match self.terminals.get(&key) {
                    Some(p) => (p.version, Some(p.state), p.slot, p.new_model),
                    None => match slot.and_then(|slot| Some((slot, view.terminal_at(slot)?))) {
                        Some((slot, m)) => (m.version, Some(m.state), Some(slot), None),
                        None => (0, None, None, None),
                    },
                };
                check_expected(index, e, version)?;
                let new_model = match (&d.event, state) {
                    (TerminalEvent::Issued(issued), None) => Some(&issued.model),
                    (_, Some(_)) => new_model,
                    (_, None) => return Err(rule(lifecycle::Violation::UnknownTerminal)),
                };
                let model: Option<&ModelCode> =
                    new_model.or_else(|| slot.and_then(|slot| view.terminal_at(slot)).map(|m| m.model));
                let directives = &self.directives;
                let lookup = |id: &DirectiveId| {
                    let lists = |found: bool| DirectiveLookup::Recorded { lists_model: found };
                    let covers = |models: &dyn Fn(&ModelCode) -> bool| model.is_some_and(models);
                    match directives.get(id) {
                        Some(models) => lists(covers(&|m| models.contains(m))),
                        None => match view.directives.get(id) {
                            Some(models) => lists(covers(&|m| models.contains(m))),
                            None => DirectiveLookup::NotRecorded,
                        },
                    }
                };
                let state = lifecycle::apply(state.as_ref(), &d.event, &lookup).map_err(rule)?;
                self.terminals.insert(key, PendingTerminal { version: version + 1, state, slot, new_model });
                Ok((version, Some(state)))
            }
        }
    }
}

fn check_expected(index: usize, e: &AppendEvent, actual: u64) -> Result<(), AppendError> {
    match e.expected_version {
        Some(expected) if expected != actual => {
            Err(AppendError::WrongExpectedVersion { index, stream: e.event.stream(), expected, actual })
        }
        _ => Ok(()),
    }
}

/// The checked changes of one append, ready to apply once the records are written.
pub(crate) struct Changes<'e> {
    terminals: FastMap<Key<'e>, PendingTerminal<'e>>,
    /// Per checked event: the terminal's slot in the view before the append (`None` for a terminal
    /// this append issues, and for a directive).
    view_slots: Vec<Option<u32>>,
    /// Per checked event (in `fresh` order): its stream version (events before it in its stream).
    pub(crate) versions: Vec<u64>,
    /// Per checked event: the terminal's state after it (`None` for a directive).
    pub(crate) states: Vec<Option<State>>,
}

/// Marks a directive in [`Steps::slots`].
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Per written event (in log order): where it landed in the view and what it did there.
pub(crate) struct Steps {
    /// The terminal's slot ([`NO_SLOT`] for a directive). Slots are assigned in the same order in every
    /// view (a terminal takes the next free slot at its issue), so the writer's slots are the
    /// follower's too.
    pub(crate) slots: Vec<u32>,
    /// The event's stream version (events before it in its stream).
    pub(crate) versions: Vec<u64>,
    /// The terminal's state after the event (`None` for a directive).
    pub(crate) states: Vec<Option<State>>,
}

/// What the writer hands the follower for one written append: everything the follower needs to apply
/// it to its full view without checking it again (the check ran once, in [`Pending::check_all`]).
pub(crate) struct Written {
    /// The request, moved (it is dropped by the follower, off the append path).
    pub(crate) events: Vec<AppendEvent>,
    /// Indices of the events written, in log order (the others were idempotent retries).
    pub(crate) fresh: Vec<usize>,
    /// Position of `events[fresh[0]]`; `events[fresh[i]]` is at `first + i`.
    pub(crate) first: u64,
    /// What each written event did.
    pub(crate) steps: Steps,
}

impl<'e> Changes<'e> {
    /// Applies the changes to the view: terminals issued by this append enter it at their first event,
    /// stream positions are added in event order (in a full view), then each terminal takes its final
    /// version and state; directives and event ids are recorded. Returns what each event did. `fresh` is
    /// the one these changes were checked with; `positions` has one entry per event of the request.
    #[expect(
        clippy::indexing_slicing,
        reason = "bound proven: every index in fresh is below events.len() == positions.len() (asserted)"
    )]
    pub(crate) fn commit(
        mut self,
        view: &mut View,
        fresh: &[usize],
        events: &'e [AppendEvent],
        positions: &[u64],
    ) -> Steps {
        assert!(positions.len() == events.len() && fresh.iter().all(|&index| index < events.len()));
        assert_eq!(self.view_slots.len(), fresh.len(), "the changes were checked with this fresh");
        let full = view.is_full();
        let mut slots = Vec::with_capacity(fresh.len());
        let view_slots = std::mem::take(&mut self.view_slots);
        for (&index, view_slot) in fresh.iter().zip(view_slots) {
            let e = &events[index];
            let position = positions[index];
            match &e.event {
                Event::Terminal(d) => {
                    let slot = match view_slot {
                        Some(slot) => Some(slot),
                        None => self.slot_for(view, &d.device),
                    };
                    if full {
                        if let Some(positions) = slot.and_then(|slot| view.terminal_at_mut(slot)?.positions) {
                            positions.push(position);
                        }
                    }
                    slots.push(slot.unwrap_or(NO_SLOT));
                }
                Event::Directive(d) => {
                    view.insert_directive(d.id.clone(), &d.models);
                    view.push_directive_position(position);
                    slots.push(NO_SLOT);
                }
            }
            if let Some(id) = &e.event_id {
                view.insert_event_id(id.clone(), position);
            }
        }
        for change in self.terminals.values() {
            if let Some(mem) = change.slot.and_then(|slot| view.terminal_at_mut(slot)) {
                *mem.version = change.version;
                *mem.state = change.state;
                assert_eq!(mem.positions.is_some(), full, "the full view, and only it, keeps positions");
                if let Some(positions) = mem.positions {
                    assert_eq!(positions.len(), change.version, "a stream's positions and version agree");
                }
            }
        }
        Steps { slots, versions: self.versions, states: self.states }
    }

    /// The slot of a terminal this append issues, inserting it into the view at its first event.
    fn slot_for(&mut self, view: &mut View, sn: &'e Sn) -> Option<u32> {
        let change = self.terminals.get_mut(&Key::New(sn))?;
        match (change.slot, change.new_model) {
            (Some(slot), _) => Some(slot),
            (None, Some(model)) => {
                let mem = TerminalMem {
                    version: change.version,
                    state: change.state,
                    model: model.clone(),
                    positions: Positions::default(),
                };
                let slot = view.insert_terminal(sn, mem);
                change.slot = Some(slot);
                Some(slot)
            }
            (None, None) => None,
        }
    }
}

/// Why a written append could not be applied to the follower's full view: the views diverged (or a
/// snapshot loaded into it was corrupt). The follower stops; the next open rebuilds or catches up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[expect(missing_docs, reason = "each field is what its variant's message names")]
pub enum ApplyError {
    /// The writer's steps do not number the written events.
    #[error("{events} fresh events but {steps} steps")]
    StepCount { events: usize, steps: usize },
    /// A written index points past the request.
    #[error("event index {index} out of range")]
    NoEvent { index: usize },
    /// A terminal event without the state the writer computed.
    #[error("position {position}: no state")]
    NoState { position: u64 },
    /// A terminal would enter the view at an event that is not its issue.
    #[error("position {position}: {device} enters the view without being issued")]
    NotIssued { position: u64, device: Sn },
    /// A terminal the view already holds is issued again.
    #[error("position {position}: {device} is issued twice")]
    IssuedTwice { position: u64, device: Sn },
    /// The writer's slot holds another terminal in this view.
    #[error("position {position}: slot {slot} does not hold {device}")]
    WrongSlot { position: u64, slot: u32, device: Sn },
    /// A slot past the view's arena.
    #[error("slot {slot} out of range")]
    NoSlot { slot: u32 },
    /// The stream is at another version than the one the writer wrote.
    #[error("position {position}: {device} is at version {held}, the writer wrote {written}")]
    WrongVersion { position: u64, device: Sn, held: u64, written: u64 },
    /// The stream's positions do not number its version.
    #[error("position {position}: {device} holds {positions} positions at version {version}")]
    PositionCount { position: u64, device: Sn, positions: u64, version: u64 },
    /// The stream is already at or past the position.
    #[error("position {position}: {stream}'s stream is already at position {last}")]
    StreamPast { position: u64, stream: StreamId, last: u64 },
    /// The directives stream is at another version.
    #[error("position {position}: the directives stream is not at version {version}")]
    DirectivesVersion { position: u64, version: u64 },
}

/// Applies a written append to a full view, event by event, trusting the writer's check but not its
/// bookkeeping: every slot must hold the event's terminal (or be the next free slot at its issue) and
/// every version must follow the stream's. A mismatch means the views diverged; the caller stops.
pub(crate) fn apply_written(view: &mut View, written: &Written) -> Result<(), ApplyError> {
    assert!(view.is_full(), "only a full view follows the writer");
    let (n, steps) = (written.fresh.len(), &written.steps);
    if steps.slots.len() != n || steps.versions.len() != n || steps.states.len() != n {
        return Err(ApplyError::StepCount { events: n, steps: steps.slots.len() });
    }
    let per_event = steps.slots.iter().zip(&steps.versions).zip(&steps.states);
    for ((&index, ((&slot, &version), &state)), position) in written.fresh.iter().zip(per_event).zip(written.first..) {
        let Some(e) = written.events.get(index) else { return Err(ApplyError::NoEvent { index }) };
        match &e.event {
            Event::Terminal(d) => {
                let device = || d.device.clone();
                let Some(state) = state else { return Err(ApplyError::NoState { position }) };
                if slot as usize == view.terminal_count() {
                    let TerminalEvent::Issued(issued) = &d.event else {
                        return Err(ApplyError::NotIssued { position, device: device() });
                    };
                    let mem =
                        TerminalMem { version: 0, state, model: issued.model.clone(), positions: Positions::default() };
                    if view.slot_of(&d.device).is_some() {
                        return Err(ApplyError::IssuedTwice { position, device: device() });
                    }
                    view.insert_terminal(&d.device, mem);
                }
                if !view.slot_holds(slot, &d.device) {
                    return Err(ApplyError::WrongSlot { position, slot, device: device() });
                }
                let Some(mem) = view.terminal_at_mut(slot) else { return Err(ApplyError::NoSlot { slot }) };
                let Some(positions) = mem.positions else { return Err(ApplyError::NoSlot { slot }) };
                if *mem.version != version {
                    return Err(ApplyError::WrongVersion {
                        position,
                        device: device(),
                        held: *mem.version,
                        written: version,
                    });
                }
                // The follower's view must agree with what the writer wrote; a view loaded from a
                // corrupt snapshot would not, and is refused here rather than panicking in `push`.
                if positions.len() != version {
                    return Err(ApplyError::PositionCount {
                        position,
                        device: device(),
                        positions: positions.len(),
                        version,
                    });
                }
                if let Some(last) = positions.last().filter(|last| *last >= position) {
                    return Err(ApplyError::StreamPast { position, stream: StreamId::Terminal(device()), last });
                }
                positions.push(position);
                *mem.version = version + 1;
                *mem.state = state;
            }
            Event::Directive(d) => {
                if view.directives_stream.len() != version {
                    return Err(ApplyError::DirectivesVersion { position, version });
                }
                if let Some(last) = view.directives_stream.last().filter(|last| *last >= position) {
                    return Err(ApplyError::StreamPast { position, stream: StreamId::Directives, last });
                }
                view.insert_directive(d.id.clone(), &d.models);
                view.push_directive_position(position);
            }
        }
        if let Some(id) = &e.event_id {
            view.insert_event_id(id.clone(), position);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "a test fails by panicking")]
    use super::*;
    use crate::model::{Contract, ContractId, DeviceEvent, Issued, MerchantId, ProviderId, RegionCode};
    use chrono::{TimeZone, Utc};

    pub(crate) fn dev(device: &str, event: TerminalEvent) -> AppendEvent {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        AppendEvent::from(Event::Terminal(DeviceEvent { device: Sn::parse(device).unwrap(), at, event }))
    }

    pub(crate) fn issued(device: &str) -> AppendEvent {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        // A contract the ledger's field checks accept (it ends after it starts).
        let end = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        dev(
            device,
            TerminalEvent::Issued(Box::new(Issued {
                model: ModelCode::parse("M1").unwrap(),
                merchant: MerchantId::parse("MER").unwrap(),
                provider: ProviderId::parse("p").unwrap(),
                region: RegionCode::parse("310000").unwrap(),
                contract: Contract { id: ContractId::parse("C").unwrap(), start: at, end },
                replaces: None,
            })),
        )
    }

    pub(crate) fn flow(device: &str) -> AppendEvent {
        dev(device, TerminalEvent::Flow { amount_fen: 6_000, transactions: 1 })
    }

    /// Checks and commits `events` (appended at `first`) to the writer's view; returns what the
    /// follower is handed.
    pub(crate) fn write(view: &mut View, events: Vec<AppendEvent>, first: u64) -> Written {
        let fresh: Vec<usize> = (0..events.len()).collect();
        let positions: Vec<u64> = (first..first + events.len() as u64).collect();
        let changes = Pending::check_all(view, &events, &fresh).unwrap();
        let steps = changes.commit(view, &fresh, &events, &positions);
        Written { events, fresh, first, steps }
    }

    #[test]
    fn the_follower_ends_where_a_checked_replay_ends() {
        let mut writer = View::default().writer_copy();
        let mut follower = View::default();
        let mut replayed = View::default();
        let appends = [
            vec![issued("A"), flow("A"), issued("B")],
            vec![flow("B"), flow("A"), issued("C"), flow("C"), flow("B")],
            vec![dev("A", TerminalEvent::Activated), flow("C")],
        ];
        let mut first = 0;
        for events in appends {
            let written = write(&mut writer, events.clone(), first);
            apply_written(&mut follower, &written).unwrap();
            // The reference: the full check and commit, as recovery replays the log.
            write(&mut replayed, events, first);
            first += written.fresh.len() as u64;
        }
        for name in ["A", "B", "C"] {
            let sn = Sn::parse(name).unwrap();
            let (got, want) = (follower.terminal(&sn).unwrap(), replayed.terminal(&sn).unwrap());
            assert_eq!(got, want, "{name}");
            assert_eq!(writer.terminal(&sn).unwrap().version, want.version, "{name}");
            assert!(writer.terminal(&sn).unwrap().positions.is_empty(), "the writer's view keeps no positions");
        }
        assert_eq!(follower.terminal(&Sn::parse("B").unwrap()).unwrap().positions.to_vec().unwrap(), vec![2, 3, 7]);
    }

    #[test]
    fn a_follower_that_diverged_refuses_the_append() {
        let mut writer = View::default().writer_copy();
        let written = write(&mut writer, vec![issued("A"), issued("B")], 0);
        let mut follower = View::default();
        apply_written(&mut follower, &written).unwrap();

        // The writer's slot for B points at A in the follower.
        let mut next = write(&mut writer, vec![flow("B")], 2);
        next.steps.slots[0] = 0;
        let before = follower.terminal(&Sn::parse("A").unwrap()).unwrap().to_mem();
        let why = apply_written(&mut follower, &next).unwrap_err();
        assert!(matches!(why, ApplyError::WrongSlot { slot: 0, ref device, .. } if device.as_str() == "B"), "{why}");
        assert_eq!(follower.terminal(&Sn::parse("A").unwrap()).unwrap().to_mem(), before, "A is untouched");

        // A version the follower's stream is not at.
        let mut stale = write(&mut writer, vec![flow("A")], 3);
        stale.steps.versions[0] = 7;
        let why = apply_written(&mut follower, &stale).unwrap_err();
        assert!(matches!(why, ApplyError::WrongVersion { held: 1, written: 7, .. }), "{why}");

        // A terminal that would enter the follower's view without being issued.
        let mut unissued = write(&mut writer, vec![flow("A")], 4);
        unissued.steps.slots[0] = 2;
        let why = apply_written(&mut follower, &unissued).unwrap_err();
        assert!(matches!(why, ApplyError::NotIssued { .. }), "{why}");
    }

    #[test]
    fn a_follower_refuses_a_second_issue_and_a_position_it_is_past() {
        let mut writer = View::default().writer_copy();
        let written = write(&mut writer, vec![issued("A"), flow("A")], 0);
        let mut follower = View::default();
        apply_written(&mut follower, &written).unwrap();

        // The writer's step says a new terminal enters at the next slot, but the follower holds it.
        let mut again = write(&mut writer, vec![issued("B")], 2);
        again.events[0] = issued("A");
        let why = apply_written(&mut follower.clone(), &again).unwrap_err();
        assert!(matches!(why, ApplyError::IssuedTwice { ref device, .. } if device.as_str() == "A"), "{why}");

        // A position the stream is already past (the follower was handed position 1 again).
        let mut behind = write(&mut writer, vec![flow("A")], 3);
        behind.first = 1;
        behind.steps.versions[0] = 2;
        let why = apply_written(&mut follower, &behind).unwrap_err();
        assert!(matches!(why, ApplyError::StreamPast { last: 1, .. }), "{why}");
        assert_eq!(follower.terminal(&Sn::parse("A").unwrap()).unwrap().version, 2, "A is untouched");
    }
}

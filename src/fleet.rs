//! An interim fleet summary for the operator CLI, folded straight from the log.
//!
//! SWAP: `crates/projections` is building the real fleet projection (parallel rebuild, digest, audits).
//! Once it lands, [`fleet_summary`] should delegate to it; its callers only use [`FleetSummary`].
//! Until then this is a plain sequential fold of every record with [`ledger::lifecycle::apply`] — the
//! same rules the write path uses, so the counts are exactly what the ledger believes.

use ledger::lifecycle::{self, ContractState, DirectiveLookup, State, Status};
use ledger::{DirectiveId, Event, ModelCode, ProviderId, ReadError, Sn, Source, TerminalEvent};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Fleet counts as of the end of a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Records folded.
    pub records: u64,
    /// Terminals ever issued.
    pub devices: u64,
    /// Terminals by lifecycle status, in the order issued, active, stopped, replaced.
    pub by_status: [u64; 4],
    /// Terminals with at least one open flag, whatever their status.
    pub flagged: u64,
    /// Terminals whose contract is expired, whatever their status.
    pub contract_expired: u64,
    /// Terminals by provider: (issued, active, stopped, replaced).
    pub by_provider: BTreeMap<ProviderId, [u64; 4]>,
    /// Directives recorded.
    pub directives: u64,
    /// Records the rules refuse (a well-formed ledger has none; replay's audit explains them).
    pub illegal: u64,
}

fn status_index(status: Status) -> usize {
    match status {
        Status::Issued => 0,
        Status::Active => 1,
        Status::Stopped => 2,
        Status::Replaced => 3,
    }
}

/// Folds every record of `source` into a [`FleetSummary`]. `progress` gets the number of records read.
///
/// SWAP for `projections` once it lands (see the module doc).
pub fn fleet_summary(source: &Source, progress: &mut dyn FnMut(u64)) -> Result<FleetSummary, ReadError> {
    struct Device {
        state: State,
        model: ModelCode,
        provider: ProviderId,
    }
    let mut devices: HashMap<Sn, Device> = HashMap::new();
    let mut directives: HashMap<DirectiveId, HashSet<ModelCode>> = HashMap::new();
    let mut summary = FleetSummary::default();
    for record in source.records(0) {
        let record = record?;
        summary.records += 1;
        if summary.records.is_multiple_of(65_536) {
            progress(summary.records);
        }
        match record.event {
            Event::Directive(d) => {
                directives.insert(d.id, d.models.into_iter().collect());
            }
            Event::Terminal(e) => {
                let current = devices.get(&e.device);
                let model = match (&e.event, current) {
                    (TerminalEvent::Issued(issued), None) => issued.model.clone(),
                    (_, Some(d)) => d.model.clone(),
                    (_, None) => {
                        summary.illegal += 1;
                        continue;
                    }
                };
                let lookup = |id: &DirectiveId| match directives.get(id) {
                    None => DirectiveLookup::NotRecorded,
                    Some(models) => DirectiveLookup::Recorded { lists_model: models.contains(&model) },
                };
                match lifecycle::apply(current.map(|d| &d.state), &e.event, &lookup) {
                    Ok(state) => match (&e.event, devices.get_mut(&e.device)) {
                        (_, Some(d)) => d.state = state,
                        (TerminalEvent::Issued(issued), None) => {
                            devices.insert(e.device, Device { state, model, provider: issued.provider.clone() });
                        }
                        _ => summary.illegal += 1,
                    },
                    Err(_) => summary.illegal += 1,
                }
            }
        }
    }
    progress(summary.records);
    summary.devices = devices.len() as u64;
    summary.directives = directives.len() as u64;
    for d in devices.values() {
        let s = status_index(d.state.status);
        summary.by_status[s] += 1;
        summary.by_provider.entry(d.provider.clone()).or_default()[s] += 1;
        summary.flagged += u64::from(!d.state.flags.is_empty());
        summary.contract_expired += u64::from(d.state.contract == ContractState::Expired);
    }
    Ok(summary)
}

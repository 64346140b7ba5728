//! One terminal's history: each of its records with the state after it (for `replay device`).

use crate::fleet::Fleet;
use crate::fold::Sequential;
use crate::rebuild::{resolve_cut, Cut, RebuildError};
use log::lifecycle::{State, Violation};
use log::{Record, RecordIter, Sn, Source};

/// One record of a terminal's stream, with what the rules made of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The record.
    pub record: Record,
    /// The rule it broke, if the rules rejected it (the state is then unchanged).
    pub violation: Option<Violation>,
    /// The terminal's lifecycle state after it (`None` while the terminal does not exist).
    pub state: Option<State>,
}

/// Every record of `sn` up to `cut`, in position order, each with the state after it.
///
/// Reads the whole log once (directives and replacement pairing depend on other streams) but keeps
/// only this terminal's state.
pub fn history(source: &Source, sn: &Sn, cut: Cut) -> Result<Vec<HistoryEntry>, RebuildError> {
    let to = resolve_cut(source, cut)?;
    let mut fleet = Fleet::new(None);
    let mut fold = Sequential::new(&mut fleet, Some(sn.clone()));
    let mut entries = Vec::new();
    let mut hook = |record: &Record, violation: Option<&Violation>, state: Option<State>| {
        entries.push(HistoryEntry { record: record.clone(), violation: violation.cloned(), state });
    };
    for record in RecordIter::new(source.frames(0, to)) {
        fold.push(record?, Some(&mut hook));
    }
    fold.finish(Some(&mut hook));
    Ok(entries)
}

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

/// The history of `sn` folded from `records` alone, each with the state after it: the same fold as
/// [`history`] (the same [`Sequential`] fold and [`log::lifecycle`] rules), over a subset of a log
/// rather than the whole of it. `records` must be in strictly increasing position order (they need not
/// be dense): the records of `sn`'s stream and whatever its events depend on (the directives they
/// name, the other half of a replacement). `replay evidence check` folds a terminal's evidence with it.
/// Appends are delimited by the commit markers among `records` (or the end), as in [`history`], for the
/// replacement pairing.
///
/// # Panics
/// If the positions are not strictly increasing (the caller checks that first).
pub fn history_of(records: impl IntoIterator<Item = Record>, sn: &Sn) -> Vec<HistoryEntry> {
    let mut fleet = Fleet::new(None);
    let mut entries = Vec::new();
    let mut hook = |record: &Record, violation: Option<&Violation>, state: Option<State>| {
        entries.push(HistoryEntry { record: record.clone(), violation: violation.cloned(), state });
    };
    let mut next = 0u64;
    let mut fold = Sequential::new(&mut fleet, Some(sn.clone()));
    for record in records {
        assert!(record.position >= next, "records are folded in strictly increasing position order");
        next = record.position + 1;
        fold.skip_to(record.position);
        fold.push(record, Some(&mut hook));
    }
    fold.finish(Some(&mut hook));
    entries
}

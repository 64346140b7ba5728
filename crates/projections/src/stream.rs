//! One sequential pass that shows the fleet at chosen times (a report's month ends) and every
//! terminal record as the rules judged it.
//!
//! The fleet shown at a time `t` is the one `rebuild(source, Cut::Time(t), ..)` gives, whenever `t`
//! falls on an append boundary (records of one append share their recorded_at, so a log written by
//! the ledger always has that). When a time falls inside an append (a log whose records of one append
//! have different recorded_at), the fleet there may not hold every record recorded before it (one may
//! wait behind a replacement half whose partner is not read yet), so [`At::InsideAppend`] says so and
//! the caller rebuilds that cut on its own. Memory is the fleet plus the records waiting behind an
//! undecided replacement half (usually none: the two halves are written together).

use crate::audit::AuditConfig;
use crate::fleet::Fleet;
use crate::fold::Sequential;
use crate::rebuild::RebuildError;
use chrono::{DateTime, Utc};
use log::lifecycle::{State, Violation};
use log::{Record, RecordIter, Source};

/// The fleet at one of the times asked for.
#[derive(Debug)]
pub enum At<'a> {
    /// The fleet as of the time: every record recorded at or before it, folded.
    Exact(&'a Fleet),
    /// The time falls inside an append, at this position: rebuild that cut separately.
    InsideAppend {
        /// The first record after the time.
        position: u64,
    },
}

/// What [`stream`] reports along the way.
pub trait Observer {
    /// A terminal record was folded: the rule it broke (if the rules rejected it) and the terminal's
    /// state after it (`None` while the terminal does not exist).
    fn record(&mut self, record: &Record, violation: Option<&Violation>, state: Option<State>);
    /// The fleet at `times[index]`.
    fn at(&mut self, index: usize, fleet: At<'_>);
    /// Records read so far.
    fn progress(&mut self, _records: u64) {}
}

/// Folds positions `0..to` of `source` in order (with the audit rules when `audit` is given), calling
/// `observer.at(i, ..)` once for each of `times` (ascending) as the fold passes it, and returns the
/// fleet at `to`. Times at or after the recorded_at of record `to - 1` are shown the fleet at `to`.
pub fn stream(
    source: &Source,
    to: u64,
    audit: Option<AuditConfig>,
    times: &[DateTime<Utc>],
    observer: &mut dyn Observer,
) -> Result<Fleet, RebuildError> {
    let size = source.head.size;
    if to > size {
        return Err(RebuildError::PastEnd { position: to, size });
    }
    let mut fleet = Fleet::new(audit);
    let mut next = 0usize;
    {
        let mut fold = Sequential::new(&mut fleet, None);
        for (n, record) in RecordIter::new(source.frames(0, to)).enumerate() {
            let record = record?;
            while times.get(next).is_some_and(|t| *t < record.recorded_at) {
                if fold.at_commit() {
                    observer.at(next, At::Exact(fold.fleet()));
                } else {
                    observer.at(next, At::InsideAppend { position: record.position });
                }
                next += 1;
            }
            let mut hook = |r: &Record, v: Option<&Violation>, s: Option<State>| observer.record(r, v, s);
            fold.push(record, Some(&mut hook));
            if n % 65_536 == 0 {
                observer.progress(n as u64);
            }
        }
        let mut hook = |r: &Record, v: Option<&Violation>, s: Option<State>| observer.record(r, v, s);
        fold.finish(Some(&mut hook));
    }
    observer.progress(to);
    for index in next..times.len() {
        observer.at(index, At::Exact(&fleet));
    }
    Ok(fleet)
}

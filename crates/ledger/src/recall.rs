//! The events of a recall ([`crate::Ledger::stop_models`]): the directive, split into several
//! directive records when one would exceed the entry limit, and one `stopped` per terminal naming the
//! part that lists its model. Pure: no ledger, so the simulator builds the very same append.

use crate::codec::{encode_record_ref, RecordRef, MAX_ENTRY_BYTES, MAX_TIMESTAMP_US};
use crate::error::AppendError;
use crate::model::{
    AppendEvent, DeviceEvent, Directive, DirectiveId, Event, ModelCode, Sn, StopReason, TerminalEvent, MAX_ID_LEN,
    MAX_TEXT_LEN,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Bytes a model code takes in a directive's record: its length (one varint byte below 251) and its
/// bytes. Every part is measured again with the encoder before it is used.
fn model_bytes(model: &ModelCode) -> usize {
    const _: () = assert!(MAX_ID_LEN < 251, "an identifier's length is one varint byte");
    1 + model.as_str().len()
}

/// What a model list's length varint may add over the empty list's (one byte up to three for up to
/// 65,535 models; a directive lists at most 10,000).
const LIST_LENGTH_SLACK: usize = 2;

/// The encoded length of `directive`'s record with the largest header any record can have (position,
/// version and recorded-at as large as they encode; commit marker set): a record of it at any position
/// is no longer.
fn worst_case_len(directive: &Directive, out: &mut Vec<u8>) -> Result<usize, AppendError> {
    let event = Event::Directive(directive.clone());
    let recorded_at = DateTime::<Utc>::from_timestamp_micros(MAX_TIMESTAMP_US).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let record =
        RecordRef { position: u64::MAX, version: u64::MAX, event_id: None, recorded_at, commit: true, event: &event };
    out.clear();
    encode_record_ref(&record, out).map_err(|error| AppendError::Codec { index: 0, error })
}

/// Splits `directive` into directive records that each fit [`MAX_ENTRY_BYTES`]: the first keeps the
/// id, the next are `<id>-p2`, `<id>-p3`, …, with the same time, reason and deadline; models are packed
/// greedily in the given order. A directive that fits is returned as it is. Refused with
/// [`AppendError::PartIdTooLong`] when a part's id would be too long.
pub fn split_directive(directive: Directive) -> Result<Vec<Directive>, AppendError> {
    let mut buf = Vec::new();
    if worst_case_len(&directive, &mut buf)? <= MAX_ENTRY_BYTES {
        return Ok(vec![directive]);
    }
    let empty = Directive { models: Vec::new(), ..directive.clone() };
    let base = worst_case_len(&empty, &mut buf)? + LIST_LENGTH_SLACK;
    const _: () = assert!(
        MAX_TEXT_LEN + 4 * MAX_ID_LEN + 200 < MAX_ENTRY_BYTES,
        "a directive with its longest reason and one model fits an entry"
    );
    let mut groups: Vec<Vec<ModelCode>> = vec![Vec::new()];
    let mut len = base;
    for model in directive.models {
        let cost = model_bytes(&model);
        if let Some(last) = groups.last_mut().filter(|g| g.is_empty() || len + cost <= MAX_ENTRY_BYTES) {
            last.push(model);
            len += cost;
        } else {
            groups.push(vec![model]);
            len = base + cost;
        }
    }
    let parts = groups.len();
    let mut out = Vec::with_capacity(parts);
    for (i, models) in groups.into_iter().enumerate() {
        let id = match i {
            0 => directive.id.clone(),
            _ => DirectiveId::parse(&format!("{}-p{}", directive.id, i + 1)).map_err(|_| {
                AppendError::PartIdTooLong { directive: directive.id.clone(), part: i + 1, parts, max: MAX_ID_LEN }
            })?,
        };
        let part = Directive { id, models, ..empty.clone() };
        let part_len = worst_case_len(&part, &mut buf)?;
        assert!(part_len <= MAX_ENTRY_BYTES, "directive part {} of {parts} takes {part_len} bytes", i + 1);
        out.push(part);
    }
    Ok(out)
}

/// A recall's append: the events, the directive ids written (in order) and the terminals stopped.
#[derive(Clone, Debug)]
pub struct Recall {
    /// The directive records (parts), then one `stopped` per terminal, in SN order.
    pub events: Vec<AppendEvent>,
    /// The directive ids written, the given one first.
    pub directives: Vec<DirectiveId>,
    /// The terminals stopped, in SN order.
    pub stopped: Vec<Sn>,
}

/// The append that records `directive` and stops `running` (each terminal with its model, which the
/// directive lists), each stop timed at the directive's `at` and naming the part that lists its model.
pub fn recall(directive: Directive, mut running: Vec<(Sn, ModelCode)>) -> Result<Recall, AppendError> {
    let at = directive.at;
    let parts = split_directive(directive)?;
    let part_of: HashMap<&ModelCode, &DirectiveId> =
        parts.iter().flat_map(|p| p.models.iter().map(move |m| (m, &p.id))).collect();
    running.sort();
    let mut events = Vec::with_capacity(parts.len() + running.len());
    let mut stopped = Vec::with_capacity(running.len());
    for (sn, model) in running {
        // A model the directive does not list names the first part: the lifecycle refuses it.
        let id = part_of.get(&model).copied().or(parts.first().map(|p| &p.id)).cloned();
        events.push(AppendEvent::from(Event::Terminal(DeviceEvent {
            device: sn.clone(),
            at,
            event: TerminalEvent::Stopped { reason: StopReason::ModelRecall, directive: id },
        })));
        stopped.push(sn);
    }
    let directives = parts.iter().map(|p| p.id.clone()).collect();
    let mut all: Vec<AppendEvent> = parts.into_iter().map(|p| AppendEvent::from(Event::Directive(p))).collect();
    all.append(&mut events);
    Ok(Recall { events: all, directives, stopped })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::model::Text;

    fn directive(id: &str, n: usize) -> Directive {
        Directive {
            id: DirectiveId::parse(id).unwrap(),
            at: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(),
            models: (0..n).map(|i| ModelCode::parse(&format!("MODEL-{i:026}")).unwrap()).collect(),
            reason: Text::parse("certificates revoked").unwrap(),
            deadline: None,
        }
    }

    #[test]
    fn a_directive_that_fits_is_one_part() {
        let d = directive("D-1", 100);
        assert_eq!(split_directive(d.clone()).unwrap(), vec![d]);
    }

    #[test]
    fn a_long_directive_splits_into_parts_that_fit_in_order() {
        let d = directive("D-1", 10_000);
        let parts = split_directive(d.clone()).unwrap();
        assert!(parts.len() > 1);
        let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids[..3], ["D-1", "D-1-p2", "D-1-p3"]);
        let models: Vec<ModelCode> = parts.iter().flat_map(|p| p.models.clone()).collect();
        assert_eq!(models, d.models);
        let mut buf = Vec::new();
        for p in &parts {
            assert!(worst_case_len(p, &mut buf).unwrap() <= MAX_ENTRY_BYTES);
            assert_eq!((p.at, &p.reason, p.deadline), (d.at, &d.reason, d.deadline));
        }
        // Greedy: every part but the last is full (the next model would not have fitted).
        let first = worst_case_len(&parts[0], &mut buf).unwrap();
        assert!(first + 1 + 32 + LIST_LENGTH_SLACK > MAX_ENTRY_BYTES, "{first}");
    }

    #[test]
    fn a_part_id_too_long_is_refused() {
        let id = "D".repeat(MAX_ID_LEN - 2);
        let err = split_directive(directive(&id, 10_000)).unwrap_err();
        assert!(matches!(err, AppendError::PartIdTooLong { part: 2, .. }), "{err}");
    }
}

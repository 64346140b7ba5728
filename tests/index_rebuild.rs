//! The sled index holds nothing that cannot be rebuilt from the log: with the index folder deleted, with a
//! file inside it damaged, with an older copy of it (a stale watermark), with another ledger's index, or
//! with the index of a diverged copy of the same ledger, reopening answers every read exactly as before —
//! heads, every stream, every terminal's state, the model index — and goes on refusing and accepting
//! exactly what it did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::lifecycle::State;
use ledger::source::SEGMENTS_DIR;
use ledger::testing::index::{bucket_of, Positions, TerminalMem};
use ledger::{
    AppendError, AppendEvent, Durability, EventId, FlagReason, Head, Ledger, ModelCode, Options, Record, Sn,
    StopReason, StreamId,
};
use std::collections::BTreeMap;
use std::path::Path;

const MODELS: [&str; 3] = ["LKL-A8", "SFT-P2", "RYX-9"];

fn options() -> Options {
    // Small segments, so the log spans several sealed segments.
    Options { durability: Durability::Relaxed, segment_max_bytes: 4_096, ..Options::default() }
}

fn with_id(mut e: AppendEvent, id: &str) -> AppendEvent {
    e.event_id = Some(EventId::parse(id).unwrap());
    e
}

/// Appends a varied history for terminals `{prefix}0 .. {prefix}{n-1}`: issues, flow, activations, flags
/// raised and cleared, stops, replacements, event ids, and one directive through `stop_models`.
fn fill(ledger: &Ledger, prefix: &str, n: usize) {
    let name = |i: usize| format!("{prefix}{i}");
    for i in 0..n {
        let model = MODELS[i % MODELS.len()];
        ledger.append(vec![with_id(issued(&name(i), model), &format!("{prefix}-issue-{i}"))]).unwrap();
    }
    for i in 0..n {
        let mut events = vec![flow(&name(i), 4_000 + 1_000 * (i as u64 % 9))];
        if i % 3 == 0 {
            events.push(flow(&name(i), 6_000));
            events.push(activated(&name(i)));
        }
        ledger.append(events).unwrap();
    }
    for i in (0..n).step_by(4) {
        ledger.append(vec![flagged(&name(i), FlagReason::CashOut), flagged(&name(i), FlagReason::Relocation)]).unwrap();
        ledger
            .append(vec![with_id(
                dev(
                    &name(i),
                    6,
                    ledger::TerminalEvent::FlagCleared { reason: FlagReason::CashOut, note: ledger::Text::default() },
                ),
                &format!("{prefix}-clear-{i}"),
            )])
            .unwrap();
    }
    for i in (1..n).step_by(5) {
        ledger.append(vec![stopped(&name(i), StopReason::MerchantRequest)]).unwrap();
        let new = format!("{prefix}R{i}");
        ledger.append(vec![replaced(&name(i), &new), issued_with(&new, MODELS[0], Some(&name(i)))]).unwrap();
    }
    ledger.stop_models(directive(&format!("D-{prefix}"), &[MODELS[1]]), None).unwrap();
}

/// Everything a reader can ask, for comparison.
#[derive(Clone, Debug, PartialEq)]
struct Answers {
    head: Head,
    records: Vec<Record>,
    streams: BTreeMap<String, Vec<Record>>,
    directives: Vec<Record>,
    states: BTreeMap<String, Option<(u64, State, ModelCode)>>,
    models: BTreeMap<String, Vec<Sn>>,
    persisted_models: BTreeMap<String, Vec<Sn>>,
}

fn answers(ledger: &Ledger) -> Answers {
    let records: Vec<Record> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    let mut sns: Vec<Sn> = records
        .iter()
        .filter_map(|r| match &r.event {
            ledger::Event::Terminal(d) => Some(d.device.clone()),
            ledger::Event::Directive(_) => None,
        })
        .collect();
    sns.sort();
    sns.dedup();
    let mut streams = BTreeMap::new();
    let mut states = BTreeMap::new();
    for sn in &sns {
        let stream = ledger.read_stream(&StreamId::Terminal(sn.clone())).unwrap();
        // The stream index agrees with a scan of the log.
        let scanned: Vec<Record> =
            records.iter().filter(|r| r.stream() == StreamId::Terminal(sn.clone())).cloned().collect();
        assert_eq!(stream, scanned, "read_stream({sn}) differs from a scan");
        streams.insert(sn.to_string(), stream);
        states.insert(sn.to_string(), ledger.terminal(sn).unwrap());
    }
    // A terminal never seen has no stream and no state.
    states.insert("NEVER-SEEN".into(), ledger.terminal(&sn("NEVER-SEEN")).unwrap());
    let mut models = BTreeMap::new();
    let mut persisted_models = BTreeMap::new();
    for model in MODELS.iter().chain(&["NO-SUCH-MODEL"]) {
        let code = ModelCode::parse(model).unwrap();
        let mut list = ledger.terminals_of_model(&code).unwrap();
        list.sort();
        models.insert(model.to_string(), list);
        let mut list = ledger.persisted_terminals_of_model(&code).unwrap();
        list.sort();
        persisted_models.insert(model.to_string(), list);
    }
    assert_eq!(models, persisted_models, "the persisted model index differs from the live one");
    Answers {
        head: ledger.head(),
        directives: ledger.read_stream(&StreamId::Directives).unwrap(),
        records,
        streams,
        states,
        models,
        persisted_models,
    }
}

/// After a rebuild the ledger still refuses and accepts what it did: a duplicate issue, an activation
/// without flow, a wrong expected version and a replayed directive are refused; an idempotent retry gets
/// its original position; and a legal append goes to the next position.
fn check_still_decides(ledger: &Ledger, prefix: &str) {
    let head = ledger.head();
    let err = ledger.append(vec![issued(&format!("{prefix}0"), MODELS[0])]).unwrap_err();
    assert!(matches!(err, AppendError::Rule { .. }), "{err}");
    let err = ledger.stop_models(directive(&format!("D-{prefix}"), &[MODELS[2]]), None).unwrap_err();
    assert!(matches!(err, AppendError::Rule { .. }), "{err}");
    let version = ledger.terminal(&sn(&format!("{prefix}2"))).unwrap().unwrap().0;
    let mut wrong = flow(&format!("{prefix}2"), 1);
    wrong.expected_version = Some(version + 1);
    assert!(matches!(ledger.append(vec![wrong]).unwrap_err(), AppendError::WrongExpectedVersion { .. }));
    assert_eq!(ledger.head(), head, "a refusal changed the head");
    let retry = ledger.append(vec![with_id(issued(&format!("{prefix}3"), MODELS[0]), &format!("{prefix}-issue-3"))]);
    let retry = retry.unwrap();
    assert_eq!(retry.written, 0);
    assert_eq!(retry.positions, vec![3]);
    let mut right = flow(&format!("{prefix}2"), 1);
    right.expected_version = Some(version);
    assert_eq!(ledger.append(vec![right]).unwrap().positions, vec![head.size]);
}

fn build(dir: &Path) -> Answers {
    let ledger = Ledger::open_with(dir, options()).unwrap();
    fill(&ledger, "T", 40);
    let before = answers(&ledger);
    assert_eq!(ledger.close().unwrap().index_warning, None);
    let segments = std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().count();
    assert!(segments >= 3, "expected several segments, got {segments}");
    before
}

fn reopen_and_compare(dir: &Path, before: &Answers, what: &str) {
    let ledger = Ledger::open_with(dir, options()).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let after = answers(&ledger);
    assert_eq!(after.head, before.head, "{what}: head");
    assert_eq!(after.records, before.records, "{what}: records");
    assert_eq!(after.streams, before.streams, "{what}: streams");
    assert_eq!(after.directives, before.directives, "{what}: directives stream");
    assert_eq!(after.states, before.states, "{what}: terminal states");
    assert_eq!(after.models, before.models, "{what}: model index");
    assert_eq!(after.persisted_models, before.persisted_models, "{what}: persisted model index");
    check_still_decides(&ledger, "T");
    let head = ledger.head();
    drop(ledger);
    // And the rebuilt index is itself good for the next open.
    let ledger = Ledger::open_with(dir, options()).unwrap();
    assert_eq!(ledger.head(), head, "{what}: second reopen");
    assert_eq!(answers(&ledger).head, head);
}

#[test]
fn deleted_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let before = build(&dir);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    reopen_and_compare(&dir, &before, "index deleted");
}

#[test]
fn reopen_with_an_intact_index_answers_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let before = build(&dir);
    reopen_and_compare(&dir, &before, "intact index");
}

/// Every file of the sled folder in turn, damaged in several ways: truncated to nothing, cut in half,
/// garbage at its start, middle or end, or removed.
#[test]
fn corrupt_index_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let before = build(&base);
    let mut files = Vec::new();
    let mut stack = vec![base.join("index")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path().strip_prefix(&base).unwrap().to_owned());
            }
        }
    }
    files.sort();
    assert!(!files.is_empty());
    let mut n = 0;
    for file in &files {
        for damage in ["empty", "half", "garbage", "garbage-start", "garbage-end", "removed"] {
            let case = tmp.path().join(format!("case-{n}"));
            n += 1;
            copy_dir(&base, &case);
            let path = case.join(file);
            let mut bytes = std::fs::read(&path).unwrap();
            match damage {
                "empty" => bytes.clear(),
                "half" => bytes.truncate(bytes.len() / 2),
                "garbage" | "garbage-start" | "garbage-end" => {
                    let from = match damage {
                        "garbage" => bytes.len() / 2,
                        "garbage-start" => 0,
                        _ => bytes.len().saturating_sub(64),
                    };
                    let end = (from + 64).min(bytes.len());
                    for (i, b) in bytes[from..end].iter_mut().enumerate() {
                        *b ^= 0xA5 ^ i as u8;
                    }
                }
                _ => {}
            }
            if damage == "removed" {
                std::fs::remove_file(&path).unwrap();
            } else {
                std::fs::write(&path, &bytes).unwrap();
            }
            reopen_and_compare(&case, &before, &format!("{} {damage}", file.display()));
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
}

/// An older copy of the index (its watermark behind the log) is caught up from the log.
#[test]
fn stale_index_is_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let old_index = tmp.path().join("old-index");
    {
        let ledger = Ledger::open_with(&dir, options()).unwrap();
        fill(&ledger, "T", 40);
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    copy_dir(&dir.join("index"), &old_index);
    let before = {
        let ledger = Ledger::open_with(&dir, options()).unwrap();
        fill(&ledger, "U", 30);
        let before = answers(&ledger);
        assert_eq!(ledger.close().unwrap().index_warning, None);
        before
    };
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_dir(&old_index, &dir.join("index"));
    reopen_and_compare(&dir, &before, "stale index");
}

/// The index of another ledger (another ledger id) is not trusted.
#[test]
fn index_of_another_ledger_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let other = tmp.path().join("other");
    let before = build(&dir);
    {
        let ledger = Ledger::open_with(&other, options()).unwrap();
        fill(&ledger, "T", 50); // the same terminal names, a longer and different log
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_dir(&other.join("index"), &dir.join("index"));
    reopen_and_compare(&dir, &before, "another ledger's index");
}

/// A copy of the ledger folder that then diverged (a restored backup, a copy run elsewhere) has the same
/// ledger id and the same size, but another last record: its index must not be trusted either.
#[test]
fn index_of_a_diverged_copy_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let fork = tmp.path().join("fork");
    build(&dir);
    copy_dir(&dir, &fork);
    let before = {
        let ledger = Ledger::open_with(&dir, options()).unwrap();
        ledger.append(vec![issued("MAIN-1", MODELS[2])]).unwrap();
        let before = answers(&ledger);
        assert_eq!(ledger.close().unwrap().index_warning, None);
        before
    };
    {
        let ledger = Ledger::open_with(&fork, options()).unwrap();
        ledger.append(vec![issued("FORK-1", MODELS[2])]).unwrap();
        assert_eq!(ledger.head().size, before.head.size);
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_dir(&fork.join("index"), &dir.join("index"));
    reopen_and_compare(&dir, &before, "a diverged copy's index");
    let ledger = Ledger::open_with(&dir, options()).unwrap();
    assert!(ledger.terminal(&sn("FORK-1")).unwrap().is_none(), "the fork's terminal leaked in through its index");
    assert!(ledger.append(vec![issued("MAIN-1", MODELS[2])]).is_err(), "MAIN-1 could be issued twice");
}

/// Rewrites the sled bucket holding `name`, letting `damage` change that terminal's stored state.
fn damage_bucket(dir: &Path, name: &str, damage: impl Fn(&mut TerminalMem)) {
    let db = sled::open(dir.join("index")).unwrap();
    let buckets = db.open_tree("buckets").unwrap();
    let key = (bucket_of(&sn(name)) as u16).to_be_bytes();
    let bytes = buckets.get(key).unwrap().expect("the terminal's bucket is persisted");
    let (mut entries, _): (Vec<(Sn, TerminalMem)>, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
    let entry = entries.iter_mut().find(|(s, _)| *s == sn(name)).expect("the terminal is in its bucket");
    damage(&mut entry.1);
    buckets.insert(key, postcard::to_stdvec(&entries).unwrap()).unwrap();
    db.flush().unwrap();
}

/// Regression: a snapshot whose position list disagreed with its version was loaded as it was; the
/// follower thread then panicked on the next append to that terminal, and `sync_index` (so `close`)
/// waited for it forever. Such a snapshot is now refused at open and rebuilt from the log. Each case
/// runs on its own thread with a deadline, so a return of the hang fails instead of stalling the suite.
#[test]
fn snapshot_with_positions_out_of_step_with_version_is_rebuilt() {
    type Damage = fn(&mut TerminalMem);
    let cases: [(&str, Damage); 5] = [
        ("no positions", |m| m.positions = Positions::default()),
        ("one position too many", |m| m.positions.push(m.positions.last().unwrap() + 1)),
        ("version zero", |m| m.version = 0),
        ("version one too many", |m| m.version += 1),
        ("a position beyond the watermark", |m| {
            let mut moved = Positions::default();
            for i in 0..m.version {
                moved.push(1_000_000 + i);
            }
            m.positions = moved;
        }),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let before = build(&base);
    for (n, (what, damage)) in cases.into_iter().enumerate() {
        let case = tmp.path().join(format!("case-{n}"));
        copy_dir(&base, &case);
        damage_bucket(&case, "T5", damage);
        let (done, finished) = std::sync::mpsc::channel();
        let worker = {
            let (case, before) = (case.clone(), before.clone());
            std::thread::spawn(move || {
                reopen_and_compare(&case, &before, what);
                let ledger = Ledger::open_with(&case, options()).unwrap();
                let version = ledger.terminal(&sn("T5")).unwrap().unwrap().0;
                ledger.append(vec![flow("T5", 1)]).unwrap();
                ledger.sync_index().unwrap_or_else(|e| panic!("{what}: sync_index: {e}"));
                let stream = ledger.read_stream(&StreamId::Terminal(sn("T5"))).unwrap();
                assert_eq!(stream.len() as u64, version + 1, "{what}: T5's stream");
                assert_eq!(ledger.close().unwrap().index_warning, None);
                let _ = done.send(());
            })
        };
        match finished.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(()) => worker.join().unwrap(),
            Err(_) if worker.is_finished() => std::panic::resume_unwind(worker.join().unwrap_err()),
            Err(_) => panic!("{what}: still running after 120 s (sync_index or close hung)"),
        }
    }
}

/// The same for the other position-bearing pages: a directives stream or an event id pointing past the
/// watermark is refused at open and rebuilt. Loaded as it was, the bogus directive position made the
/// follower refuse the next directive (and `read_stream` fail after it), and the bogus event id answered
/// a retry with a position past the head.
#[test]
fn snapshot_with_directive_or_event_id_positions_past_the_watermark_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let before = build(&base);
    for what in ["directives stream", "event id"] {
        let case = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &case);
        let mut damaged_issue = None;
        {
            let db = sled::open(case.join("index")).unwrap();
            if what == "directives stream" {
                let tree = db.open_tree("directives_stream").unwrap();
                let bytes = tree.get("D").unwrap().expect("the directives stream is persisted");
                let (mut stream, _): (Positions, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
                stream.push(before.head.size + 5);
                tree.insert("D", postcard::to_stdvec(&stream).unwrap()).unwrap();
            } else {
                // The first bucket holding an issue's id: point that id past the head.
                let tree = db.open_tree("event_ids").unwrap();
                for item in tree.iter() {
                    let (key, bytes) = item.unwrap();
                    let (mut ids, _): (Vec<(EventId, u64)>, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
                    let Some(entry) = ids.iter_mut().find(|(id, _)| id.as_str().starts_with("T-issue-")) else {
                        continue;
                    };
                    damaged_issue =
                        Some((entry.0.as_str().trim_start_matches("T-issue-").parse::<usize>().unwrap(), entry.1));
                    entry.1 = before.head.size + 5;
                    tree.insert(key, postcard::to_stdvec(&ids).unwrap()).unwrap();
                    break;
                }
                assert!(damaged_issue.is_some(), "no issue's event id in the index");
            }
            db.flush().unwrap();
        }
        reopen_and_compare(&case, &before, what);
        let ledger = Ledger::open_with(&case, options()).unwrap();
        if let Some((i, position)) = damaged_issue {
            let retry = ledger
                .append(vec![with_id(issued(&format!("T{i}"), MODELS[i % MODELS.len()]), &format!("T-issue-{i}"))]);
            assert_eq!(retry.unwrap().positions, vec![position], "{what}: the retry's answer");
        } else {
            let directives = ledger.read_stream(&StreamId::Directives).unwrap().len();
            ledger.stop_models(directive("D-AFTER", &[MODELS[0]]), None).unwrap();
            ledger.sync_index().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(ledger.read_stream(&StreamId::Directives).unwrap().len(), directives + 1, "{what}");
        }
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
}

/// An index written in another snapshot format (the bincode pages of earlier versions carry no `format`
/// key; a future version may write another number) is not read: it is rebuilt from the log and answers
/// exactly as before.
#[test]
fn an_index_of_another_snapshot_format_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    build(&base);
    let before = {
        let ledger = Ledger::open_with(&base, options()).unwrap();
        let before = answers(&ledger);
        assert_eq!(ledger.close().unwrap().index_warning, None);
        before
    };
    for format in [None, Some(1u8), Some(ledger::testing::index::SNAPSHOT_FORMAT + 1)] {
        let dir = tmp.path().join(format!("case-{format:?}"));
        copy_dir(&base, &dir);
        {
            let db = sled::open(dir.join("index")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            match format {
                None => drop(meta.remove("format").unwrap()),
                Some(f) => drop(meta.insert("format", &[f]).unwrap()),
            }
            db.flush().unwrap();
        }
        // Pages that decode and pass every check but hold a wrong state: read only if the format check
        // let them through.
        damage_bucket(&dir, "T5", |m| m.state.flow_fen += 1);
        reopen_and_compare(&dir, &before, &format!("an index of format {format:?}"));
        let db = sled::open(dir.join("index")).unwrap();
        let stored = db.open_tree("meta").unwrap().get("format").unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(&[ledger::testing::index::SNAPSHOT_FORMAT][..]),
            "rewritten in the current format"
        );
    }
}

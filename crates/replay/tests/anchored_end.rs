//! Regression tests for "a cut log reads as a shorter, valid log" (issue: the end of the log is
//! anchored): a ledger folder whose live segment was truncated or damaged, whose last segments (or all of
//! them) were deleted, or whose HEAD was deleted or garbled, is refused by every `replay` command that
//! reads it (exit 1), naming the size recorded and the size found, instead of being folded as a shorter log.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

use ledger::{AppendEvent, DeviceEvent, Event, Ledger, Options, Sn, TerminalEvent};
use std::path::{Path, PathBuf};
use std::process::Command;

fn at(day: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_767_225_600 + day * 86_400, 0).unwrap()
}

fn terminal(sn: &str, day: i64, event: TerminalEvent) -> AppendEvent {
    AppendEvent::from(Event::Terminal(DeviceEvent { device: Sn::parse(sn).unwrap(), at: at(day), event }))
}

fn issued(sn: &str) -> AppendEvent {
    let line = format!(
        r#"{{"device":"{sn}","type":"issued","at":"2026-01-05T08:00:00Z","model":"M1","merchant":"M001","provider":"lakala","region":"310000","contract":{{"id":"C-{sn}","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}}}"#
    );
    replay::ndjson::parse_line(&line).unwrap()
}

/// A ledger of 40 two-event appends over segments of 2 KB (several sealed segments and a live one).
fn build(dir: &Path) -> u64 {
    let ledger = Ledger::open_with(dir, Options { segment_max_bytes: 2_000, ..Options::default() }).unwrap();
    for i in 0..40 {
        let sn = format!("SN{i:04}");
        ledger
            .append(vec![issued(&sn), terminal(&sn, 10, TerminalEvent::Flow { amount_fen: 20_000, transactions: 2 })])
            .unwrap();
    }
    let size = ledger.head().size;
    assert_eq!(ledger.close().unwrap().index_warning, None);
    size
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("segments")).unwrap();
    for file in segments(from) {
        std::fs::copy(&file, to.join("segments").join(file.file_name().unwrap())).unwrap();
    }
    std::fs::copy(from.join("HEAD"), to.join("HEAD")).unwrap();
}

/// The bytes where each frame of a segment ends (after the 40-byte header).
fn frame_ends(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut ends = Vec::new();
    let mut at = 40;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if len == u32::MAX {
            break;
        }
        at += 8 + len as usize;
        ends.push(at);
    }
    ends
}

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replay")).args(args).output().unwrap()
}

type Damage = fn(&Path);

fn cases() -> Vec<(&'static str, Damage, &'static str)> {
    vec![
        (
            "live segment truncated by 10 bytes",
            |d| {
                let live = segments(d).pop().unwrap();
                let len = std::fs::metadata(&live).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(len - 10).unwrap();
            },
            "HEAD records",
        ),
        (
            "live segment cut at a frame boundary (the last append removed whole)",
            |d| {
                let live = segments(d).pop().unwrap();
                let ends = frame_ends(&live);
                let cut = ends[ends.len() - 3];
                std::fs::OpenOptions::new().write(true).open(&live).unwrap().set_len(cut as u64).unwrap();
            },
            "HEAD records",
        ),
        (
            "last byte of the live segment flipped",
            |d| {
                let live = segments(d).pop().unwrap();
                let mut bytes = std::fs::read(&live).unwrap();
                *bytes.last_mut().unwrap() ^= 0x40;
                std::fs::write(&live, bytes).unwrap();
            },
            "HEAD records",
        ),
        ("live segment deleted", |d| std::fs::remove_file(segments(d).pop().unwrap()).unwrap(), "HEAD records"),
        (
            "last two segments deleted",
            |d| {
                let mut files = segments(d);
                std::fs::remove_file(files.pop().unwrap()).unwrap();
                std::fs::remove_file(files.pop().unwrap()).unwrap();
            },
            "HEAD records",
        ),
        (
            "every segment deleted",
            |d| {
                for file in segments(d) {
                    std::fs::remove_file(file).unwrap();
                }
            },
            "HEAD records",
        ),
        ("segments/ deleted", |d| std::fs::remove_dir_all(d.join("segments")).unwrap(), "HEAD records"),
        ("HEAD deleted", |d| std::fs::remove_file(d.join("HEAD")).unwrap(), "HEAD file is missing"),
        ("HEAD garbled", |d| std::fs::write(d.join("HEAD"), [0x5Au8; 128]).unwrap(), "HEAD file is damaged"),
        ("HEAD truncated", |d| std::fs::write(d.join("HEAD"), [0u8; 0]).unwrap(), "HEAD file is damaged"),
    ]
}

/// Every read command refuses every damaged folder with exit 1 and a message naming what was found.
#[test]
fn a_cut_log_is_refused_by_every_replay_command() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let size = build(&base);
    assert_eq!(replay(&["verify", base.to_str().unwrap()]).status.code(), Some(0));
    for (what, damage, expect) in cases() {
        let case = tmp.path().join(what.replace(' ', "_"));
        copy_dir(&base, &case);
        damage(&case);
        let dir = case.to_str().unwrap();
        let out = tmp.path().join("out.ndjson");
        let commands: Vec<Vec<&str>> = vec![
            vec!["verify", dir],
            vec!["verify", dir, "--json"],
            vec!["fleet", dir],
            vec!["audit", dir],
            vec!["device", dir, "SN0001"],
            vec!["prove", dir, "--position", "0"],
            vec!["export", dir, "--format", "ndjson", "--out", out.to_str().unwrap()],
        ];
        for args in commands {
            let o = replay(&args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(1), "{what}: replay {args:?} exited {:?}\n{stdout}\n{stderr}", o.status);
            let said = format!("{stdout}{stderr}");
            assert!(said.contains(expect), "{what}: replay {args:?} did not say {expect:?}:\n{said}");
            if expect == "HEAD records" {
                assert!(said.contains(&format!("HEAD records {size}")), "{what}: {args:?} names no size: {said}");
            }
            assert!(!out.exists(), "{what}: export wrote {}", out.display());
        }
    }
}

//! replay never writes to its source: every file of a ledger folder and of a bundle keeps its bytes
//! and modification time through every subcommand, every subcommand works on a read-only copy, and
//! (where strace is available) no file of the source is ever opened for writing, created, renamed,
//! truncated or removed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use ledger::source::hex;
use std::path::Path;
use std::process::Command;

/// Every subcommand, with arguments that succeed on the test fleet of `head_size` records.
fn subcommands(out_dir: &Path, root_at_5: &str) -> Vec<Vec<String>> {
    let out = |name: &str| out_dir.join(name).display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
    vec![
        s(&["verify"]),
        s(&["verify", "--json"]),
        s(&["fleet"]),
        s(&["fleet", "--format", "json", "--position", "10"]),
        s(&["fleet", "--format", "csv", "--as-of", "2030-01-01T00:00:00Z"]),
        s(&["device", "SN004"]),
        s(&["device", "SN004", "--format", "json"]),
        s(&["audit"]),
        s(&["audit", "--format", "csv", "--rule", "dormant"]),
        vec!["export".into(), "--format".into(), "ndjson".into(), "--out".into(), out("e.ndjson")],
        vec!["export".into(), "--format".into(), "csv".into(), "--out".into(), out("e.csv")],
        s(&["prove", "--position", "5"]),
        s(&["prove", "--position", "5", "--size", "9"]),
        vec!["consistency".into(), "--old-size".into(), "5".into(), "--old-root".into(), root_at_5.to_owned()],
    ]
}

fn run_all(source: &Path, out_dir: &Path, root_at_5: &str) {
    for args in subcommands(out_dir, root_at_5) {
        let before = snapshot(source);
        let out =
            Command::new(env!("CARGO_BIN_EXE_replay")).arg(&args[0]).arg(source).args(&args[1..]).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?} on {}: {}", source.display(), stderr(&out));
        let after = snapshot(source);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "{args:?}: files added or removed"
        );
        for (path, (bytes, mtime)) in &before {
            let (bytes_after, mtime_after) = &after[path];
            assert!(bytes == bytes_after, "{args:?} changed {}", path.display());
            assert_eq!(mtime, mtime_after, "{args:?} touched {}", path.display());
        }
    }
}

fn sources(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ledger = dir.join("ledger");
    make_ledger(&ledger);
    let bundle = dir.join("fleet.bundle");
    let b = bodies(&ledger);
    write_raw_bundle(&bundle, &b);
    let leaves: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
    let root_at_5 = hex(&ledger::merkle::root(&leaves[..5]));
    (ledger, bundle, root_at_5)
}

#[test]
fn no_subcommand_changes_a_file_of_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, bundle, root_at_5) = sources(dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    run_all(&ledger, &out_dir, &root_at_5);
    run_all(&bundle, &out_dir, &root_at_5);
}

#[test]
fn every_subcommand_works_on_a_read_only_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, bundle, root_at_5) = sources(dir.path());
    let ro = dir.path().join("ro");
    copy_tree(&ledger, &ro.join("ledger"));
    std::fs::copy(&bundle, ro.join("fleet.bundle")).unwrap();
    make_read_only(&ro);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    run_all(&ro.join("ledger"), &out_dir, &root_at_5);
    run_all(&ro.join("fleet.bundle"), &out_dir, &root_at_5);
    make_writable(&ro);
}

/// Tests run as root, for whom permissions do not stop a write: so check the system calls themselves.
#[test]
fn no_file_of_the_source_is_opened_for_writing() {
    let probe = Command::new("strace").args(["-qq", "-e", "trace=none", "true"]).output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        eprintln!("strace is not available here: skipping the system-call check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ledger, bundle, root_at_5) = sources(dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let trace = dir.path().join("trace.txt");
    for source in [&ledger, &bundle] {
        for args in subcommands(&out_dir, &root_at_5) {
            let out = Command::new("strace")
                .args(["-f", "-qq", "-e", "trace=%file,%desc", "-o"])
                .arg(&trace)
                .arg(env!("CARGO_BIN_EXE_replay"))
                .arg(&args[0])
                .arg(source)
                .args(&args[1..])
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
            let text = std::fs::read_to_string(&trace).unwrap();
            let name = source.file_name().unwrap().to_str().unwrap();
            let mut opened = 0;
            for line in text.lines().filter(|l| l.contains(name)) {
                let call = line.split_once(' ').map_or(line, |(_, rest)| rest);
                let call = call.split('(').next().unwrap_or_default().trim();
                let writes = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"];
                let mutating = [
                    "creat",
                    "unlink",
                    "unlinkat",
                    "rename",
                    "renameat",
                    "renameat2",
                    "truncate",
                    "mkdir",
                    "mkdirat",
                    "rmdir",
                    "chmod",
                    "fchmodat",
                    "chown",
                    "fchownat",
                    "utimensat",
                    "utimes",
                    "link",
                    "linkat",
                    "symlink",
                    "symlinkat",
                    "mknod",
                    "mknodat",
                ];
                assert!(!mutating.contains(&call), "{args:?} on {name}: {line}");
                assert!(
                    !(call.starts_with("open") && writes.iter().any(|w| line.contains(w))),
                    "{args:?} on {name}: {line}"
                );
                opened += usize::from(line.contains("openat("));
            }
            assert!(opened > 0, "{args:?}: the trace should show the source being read");
            // sled is never opened: nothing under index/ is touched at all.
            assert!(!text.contains("/index/") && !text.contains("/index\""), "{args:?} opened the sled index");
        }
    }
}

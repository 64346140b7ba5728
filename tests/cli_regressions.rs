//! Regression tests of the operator CLI, one per bug, named for what must now happen. They run the
//! built `posledger` binary (and the `processor` example) as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cli::{ok, posledger, s, stderr, stdout};

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Exit code 2 and a one-line message.
fn usage_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

fn issued(sn: &str, model: &str) -> String {
    format!(
        r#"{{"device":"{sn}","type":"issued","at":"2026-01-05T08:00:00Z","model":"{model}","merchant":"M001","provider":"lakala","region":"310000","contract":{{"id":"C-{sn}","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}}}"#
    )
}

const FLOW: &str = r#"{"device":"T1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":100,"transactions":3}"#;

fn write_input(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A ledger at `dir/ledger` with two terminals and a flow.
fn ledger(dir: &Path) -> PathBuf {
    let ledger = dir.join("ledger");
    let input =
        write_input(dir, "base.ndjson", &format!("{}\n{}\n{FLOW}\n", issued("T1", "LKL-A8"), issued("T2", "M2")));
    ok(posledger(&["append", "--dir", s(&ledger), s(&input)]));
    ledger
}

/// Every file of the log under `root` (not the sled index, which an open may rewrite), with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() && path.file_name().is_some_and(|n| n == "index") {
            continue;
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The bundle `posledger export` writes to a regular file, as bytes.
fn bundle_bytes(ledger: &Path, dir: &Path) -> Vec<u8> {
    let path = dir.join("reference.plb");
    ok(posledger(&["export", "--dir", s(ledger), "--out", s(&path)]));
    std::fs::read(path).unwrap()
}

/// A PID that no process has (a child that has been waited for).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[test]
fn export_to_dev_null_keeps_the_character_device() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    // First a private device node (when we may make one), so that a regression replaces that one and
    // not the machine's /dev/null.
    let private = dir.path().join("null");
    if Command::new("mknod").arg(&private).args(["c", "1", "3"]).status().is_ok_and(|s| s.success()) {
        let before = std::fs::symlink_metadata(&private).unwrap();
        ok(posledger(&["export", "--dir", s(&ledger), "--out", s(&private)]));
        let after = std::fs::symlink_metadata(&private).unwrap();
        assert!(after.file_type().is_char_device(), "the device node was replaced");
        assert_eq!((before.ino(), before.rdev()), (after.ino(), after.rdev()));
        assert_eq!(names(dir.path()).iter().filter(|n| n.contains(".tmp-")).count(), 0);
    }
    let before = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(before.file_type().is_char_device());
    let out = ok(posledger(&["export", "--dir", s(&ledger), "--out", "/dev/null"]));
    assert!(out.contains("exported 3 records to /dev/null"), "{out}");
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device(), "/dev/null is no longer a character device");
    assert_eq!((before.ino(), before.rdev()), (after.ino(), after.rdev()));
}

#[test]
fn export_to_a_fifo_writes_the_bundle_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let expected = bundle_bytes(&ledger, dir.path());
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(posledger(&["export", "--dir", s(&ledger), "--out", s(&fifo)]));
    assert_eq!(reader.join().unwrap(), expected);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
}

#[test]
fn export_to_a_symlink_is_refused_and_the_link_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let target = write_input(dir.path(), "precious.txt", "precious");
    let link = dir.path().join("link.plb");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = usage_error(&posledger(&["export", "--dir", s(&ledger), "--out", s(&link)]));
    assert!(err.contains("link.plb: is a symbolic link"), "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    // A dangling link too: nothing is created where it points.
    let dangling = dir.path().join("dangling.plb");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    usage_error(&posledger(&["export", "--dir", s(&ledger), "--out", s(&dangling)]));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn export_inside_the_ledger_is_refused_and_the_ledger_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let before = tree(&ledger);
    let segment = ledger.join("segments").join("00000000.seg");
    assert!(before.contains_key(&segment));
    // The live segment, a new file in the folder, the folder itself, and the same paths spelled
    // through `..` and through a symbolic link to the folder.
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&ledger, &alias).unwrap();
    let sneaky = ledger.join("segments").join("..").join("segments").join("00000000.seg");
    for out in [
        segment.clone(),
        ledger.join("copy.plb"),
        ledger.join("segments").join("00000001.seg"),
        sneaky,
        alias.join("segments").join("00000000.seg"),
        alias.join("HEAD"),
    ] {
        let err = usage_error(&posledger(&["export", "--dir", s(&ledger), "--out", s(&out)]));
        assert!(err.contains("is inside the source ledger"), "{}: {err}", out.display());
        assert!(tree(&ledger) == before, "{}: the ledger changed", out.display());
    }
    // Run from inside the ledger folder with a relative path.
    let o = Command::new(env!("CARGO_BIN_EXE_posledger"))
        .current_dir(ledger.join("segments"))
        .args(["export", "--dir", "..", "--out", "00000000.seg"])
        .output()
        .unwrap();
    assert!(usage_error(&o).contains("is inside the source ledger"));
    assert!(tree(&ledger) == before, "the ledger changed");
}

#[test]
fn stale_temp_files_of_a_killed_export_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let out = dir.path().join("out.plb");
    let dead = dead_pid();
    let live = std::process::id();
    // What `kill -9` during an export leaves (`.NAME.tmp-PID`), and names it must not touch.
    let stale = [format!(".out.plb.tmp-{dead}")];
    let kept = [
        format!(".out.plb.tmp-{live}"),
        format!(".other.plb.tmp-{dead}"),
        format!(".out.plb.tmp-{dead}x"),
        format!("out.plb.tmp-{dead}"),
        ".out.plb.tmp-".to_owned(),
        format!(".out.plb.partial-{dead}"),
    ];
    for name in stale.iter().chain(&kept) {
        write_input(dir.path(), name, "leftover");
    }
    ok(posledger(&["export", "--dir", s(&ledger), "--out", s(&out)]));
    let now = names(dir.path());
    for name in &stale {
        assert!(!now.contains(name), "{name} is still there: {now:?}");
    }
    for name in &kept {
        assert!(now.contains(name), "{name} was removed: {now:?}");
        assert_eq!(std::fs::read_to_string(dir.path().join(name)).unwrap(), "leftover");
    }
    assert!(now.contains(&"out.plb".to_owned()));
}

/// The `processor` example, which `cargo test` builds (a plain `cargo test` builds every example;
/// `cargo test --test cli_regressions` alone does not: build it first with
/// `cargo build --example processor` in the same profile).
fn processor_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    profile.join("examples").join("processor")
}

#[test]
fn processor_example_removes_its_temporary_ledger() {
    let example = processor_example();
    assert!(
        example.exists(),
        "{} was not built: run `cargo test` (it builds the examples) or `cargo build --example processor`",
        example.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(&example).env("TMPDIR", tmp.path()).output().unwrap();
    let out = ok(o);
    assert!(out.contains("8 records"), "{out}");
    assert_eq!(names(tmp.path()), Vec::<String>::new(), "the example left its ledger behind");
    // Given a folder, it keeps it.
    let kept = tmp.path().join("kept");
    ok(Command::new(&example).arg(&kept).env("TMPDIR", tmp.path()).output().unwrap());
    assert!(kept.join("segments").is_dir());
}

/// `FILE:LINE: reason` with exit 1, and the ledger unchanged.
fn refused(dir: &Path, text: &str) -> String {
    let ledger = ledger(dir);
    let before = tree(&ledger);
    let input = write_input(dir, "bad.ndjson", text);
    let o = posledger(&["append", "--dir", s(&ledger), s(&input)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(tree(&ledger) == before, "the ledger changed");
    err.strip_prefix(&format!("{}:", input.display())).unwrap_or_else(|| panic!("no FILE: prefix: {err}")).to_owned()
}

#[test]
fn duplicate_json_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = FLOW.replace(r#""amount_fen":100"#, r#""amount_fen":100,"amount_fen":999999"#);
    assert_eq!(refused(dir.path(), &format!("{FLOW}\n\n{line}\n")), "3: duplicate field `amount_fen`\n");
    let moved = FLOW.replace(r#""type":"flow""#, r#""type":"flow","device":"T2""#);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(refused(dir.path(), &format!("{moved}\n")), "1: duplicate field `device`\n");
}

#[test]
fn byte_order_mark_at_the_start_of_the_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        refused(dir.path(), &format!("\u{feff}{FLOW}\n")),
        "1: the input starts with a UTF-8 byte-order mark; remove it\n"
    );
    // From standard input, too.
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path());
    let input = write_input(dir.path(), "bom.ndjson", &format!("\u{feff}{FLOW}\n"));
    let o = Command::new(env!("CARGO_BIN_EXE_posledger"))
        .args(["append", "--dir", s(&ledger), "-"])
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap();
    assert_eq!(stderr(&o), "<stdin>:1: the input starts with a UTF-8 byte-order mark; remove it\n");
}

#[test]
fn out_of_range_number_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let line = FLOW.replace(r#""transactions":3"#, r#""transactions":4294967296"#);
    assert_eq!(
        refused(dir.path(), &format!("{line}\n")),
        "1: field `transactions` must be at most 4,294,967,295, got 4294967296\n"
    );
}

#[test]
fn empty_model_list_is_refused_as_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"type":"directive","id":"D1","at":"2026-07-01T00:00:00Z","models":[],"reason":"r"}"#;
    assert_eq!(
        refused(dir.path(), &format!("{line}\n")),
        "1: field `models` must list 1 to 10,000 model codes, got 0\n"
    );
}

#[test]
fn dir_that_is_a_file_is_named_as_not_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_input(dir.path(), "a-file", "not a ledger");
    let input = write_input(dir.path(), "in.ndjson", &format!("{FLOW}\n"));
    let models = write_input(dir.path(), "models.txt", "M1\n");
    let out = dir.path().join("out.plb");
    let expected = format!("{}: exists and is not a folder\n", file.display());
    for args in [
        vec!["append", "--dir", s(&file), s(&input)],
        vec!["head", "--dir", s(&file)],
        vec!["export", "--dir", s(&file), "--out", s(&out)],
        vec!["stop-models", "--dir", s(&file), "--directive", "D1", "--models", s(&models), "--reason", "r"],
        vec!["simulate", "--dir", s(&file), "--devices", "1", "--seed", "1"],
    ] {
        assert_eq!(usage_error(&posledger(&args)), expected, "{args:?}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a ledger");
}

#[test]
fn counts_are_singular_for_one_and_grouped_by_thousands() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let line = issued("T1", "LKL-A8").replace(r#""type""#, r#""event_id":"e1","type""#);
    let one = write_input(dir.path(), "one.ndjson", &format!("{line}\n"));
    let out = ok(posledger(&["append", "--dir", s(&ledger), s(&one)]));
    assert!(out.starts_with("appended 1 event\nhead: size 1 root "), "{out}");
    let out = ok(posledger(&["append", "--dir", s(&ledger), s(&one)]));
    assert!(out.starts_with("appended 0 events (1 already present"), "{out}");
    let models = write_input(dir.path(), "models.txt", "LKL-A8\n");
    let args = ["stop-models", "--dir", s(&ledger), "--directive", "D1", "--models", s(&models), "--reason", "r"];
    let out = ok(posledger(&args));
    assert!(out.contains("stopped 1 terminal of 1 model\n"), "{out}");
    let bundle = dir.path().join("one.plb");
    let out = ok(posledger(&["export", "--dir", s(&ledger), "--out", s(&bundle)]));
    assert!(out.starts_with(&format!("exported 3 records to {}", bundle.display())), "{out}");

    // Thousands: a simulated fleet of more than 1,000 events.
    let fleet = dir.path().join("fleet");
    let out = ok(posledger(&["simulate", "--dir", s(&fleet), "--devices", "500", "--seed", "3", "--months", "1"]));
    assert!(out.contains(" terminals, 1 month, seed 3)"), "{out}");
    let size = ledger::Source::open(&fleet).unwrap().head.size;
    assert!(size >= 1_000, "the fleet is too small for the check: {size}");
    let grouped = posledger::replay::text::thousands(size);
    assert!(grouped.contains(','));
    assert!(out.starts_with(&format!("simulated {grouped} events")), "{out}");
    assert!(out.contains(&format!("head: size {grouped} root")), "{out}");
    assert!(ok(posledger(&["head", "--dir", s(&fleet)])).starts_with(&format!("size {grouped}\n")));
    // --json keeps plain numbers.
    assert!(ok(posledger(&["head", "--dir", s(&fleet), "--json"])).contains(&format!("\"size\": {size},")));
    let out = ok(posledger(&["export", "--dir", s(&fleet), "--out", s(&dir.path().join("f.plb"))]));
    assert!(out.starts_with(&format!("exported {grouped} records")), "{out}");
}

/// `stop-models` read its model list with `BufRead::lines` (an unbounded line): a file of one endless
/// line is refused at line 1 after reading a bounded prefix, and the ledger is unchanged.
#[test]
fn stop_models_refuses_an_endless_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger(tmp.path());
    let before = tree(&dir.join("segments"));
    let models = tmp.path().join("models.txt");
    std::fs::write(&models, vec![b'M'; 8 << 20]).unwrap();
    let o =
        posledger(&["stop-models", "--dir", s(&dir), "--directive", "D-1", "--models", s(&models), "--reason", "x"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("models.txt:1: line is longer than 4,096 bytes"), "{}", stderr(&o));
    assert_eq!(tree(&dir.join("segments")), before);
}

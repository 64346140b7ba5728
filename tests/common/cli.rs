//! Running the built `posledger` binary from a test, and reading what it said.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `posledger` with `args` and waits for it.
pub fn posledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posledger")).args(args).output().expect("run posledger")
}

/// Its standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 0 and returns the standard output.
pub fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

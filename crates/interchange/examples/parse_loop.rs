//! The NDJSON parse alone, on a file: `cargo run --release -p posledger-interchange --example parse_loop -- FILE [ROUNDS]`.
//! Reads FILE into memory, then parses every line with `ndjson::parse_line` ROUNDS times (default 3)
//! and prints the best round's lines/s and MB/s. What `posledger append` pays per line before the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: parse_loop FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(3, |r| r.parse().expect("ROUNDS"));
    let text = std::fs::read_to_string(&path).expect("read FILE");
    let mut best = f64::MAX;
    let mut lines = 0u64;
    for _ in 0..rounds {
        let start = Instant::now();
        lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            std::hint::black_box(interchange::ndjson::parse_line(line).expect("parse"));
            lines += 1;
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{lines} lines in {best:.3} s (best of {rounds}): {:.0} lines/s, {:.0} MB/s",
        lines as f64 / best,
        text.len() as f64 / best / 1e6
    );
}

//! Times a checkpoint's load and the catch-up after it, apart: saves the fleet at the first append
//! boundary after `100 - PERCENT`% of a ledger's records (PERCENT: 1 unless given), then, `ROUNDS`
//! times, loads it (`checkpoint::load`), checks it against the log (`checkpoint::verify`) and catches
//! up to the head (`checkpoint::catch_up`, which verifies again). The harness times the three together (`rebuild_from_checkpoint`).
//!
//! `cargo run --release -p posledger-projections --example checkpoint_catch_up -- DIR [ROUNDS [PERCENT]]`
//!
//! Run with PERCENT 0.1, 1 and 10 to see which part grows with the records after the checkpoint (the
//! catch-up) and which with the fleet (the load).
//!
//! The checkpoint is written to the system temp folder, never beside the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use ledger::codec::decode_view;
use projections::{checkpoint, Cut, Options};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("usage: checkpoint_catch_up DIR [ROUNDS]"));
    let rounds: usize = args.get(2).map_or(5, |a| a.parse().expect("ROUNDS is a number"));
    let percent: f64 = args.get(3).map_or(1.0, |a| a.parse().expect("PERCENT is a number"));
    assert!((0.0..=100.0).contains(&percent), "PERCENT is between 0 and 100");
    let source = ledger::Source::open(&dir).expect("open the ledger");
    let n = source.head.size;
    let after = ((n as f64) * percent / 100.0) as u64;
    let mut frames = source.frames(n - after.min(n), n);
    let mut cut = n;
    while let Some((position, body, _)) = frames.next_frame().expect("read") {
        if decode_view(body).expect("decode").commit {
            cut = position + 1;
            break;
        }
    }
    let options = Options::default();
    let fleet = projections::rebuild(&source, Cut::Position(cut), &options).expect("rebuild");
    let path = std::env::temp_dir().join(format!("posledger-catch-up-{}.checkpoint", std::process::id()));
    checkpoint::save(&fleet, &source, &path).expect("save");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("checkpoint at {cut} of {n} records: {} terminals, {bytes} bytes", fleet.len());
    drop(fleet);
    for _ in 0..rounds {
        let started = Instant::now();
        let loaded = checkpoint::load(&path).expect("load");
        let load = started.elapsed();
        let started = Instant::now();
        checkpoint::verify(&loaded, &source).expect("verify");
        let verify = started.elapsed();
        let started = Instant::now();
        let caught_up = checkpoint::catch_up(loaded, &source, Cut::Head, &options).expect("catch up");
        let catch_up = started.elapsed();
        println!(
            "load {:.1} ms, verify {:.1} ms, catch-up of {} records (verify included) {:.1} ms",
            load.as_secs_f64() * 1e3,
            verify.as_secs_f64() * 1e3,
            n - cut,
            catch_up.as_secs_f64() * 1e3
        );
        assert_eq!(caught_up.position(), n);
    }
    remove_own(&path);
}

#[expect(clippy::disallowed_methods, reason = "removes the temporary checkpoint this example wrote, nothing else")]
fn remove_own(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
}

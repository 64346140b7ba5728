//! Rebuilds a ledger folder's fleet in a loop, for profiling (`perf record`) and quick timing on a
//! shared machine (prints wall and process CPU time, so a loaded machine can be told apart).
//!
//! `cargo run --release -p posledger-projections --example rebuild_loop -- DIR THREADS ROUNDS [prepared]`
//!
//! Each round prints where its wall time went (`rebuild_with_phases`: decode, glue, fold). With
//! `digest` in place of `prepared`: one rebuild, then the fleet digest ROUNDS times (its wall
//! time, the sort of every terminal by SN included).
//!
//! `POSLEDGER_CHUNK_RECORDS` and `POSLEDGER_BATCH_CHUNKS`, when set, replace the options' defaults
//! (records per chunk, chunks per batch), to try other batch shapes.
// A test builds, copies and damages ledgers and bundles on purpose: the read-only rule is the library's.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use projections::rebuild::{prepare, rebuild, rebuild_with_phases, Cut, Options};
use std::time::Instant;

fn cpu_seconds() -> f64 {
    // utime + stime of the process, in clock ticks (100 Hz on Linux), fields 14 and 15 of /proc/self/stat.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let threads: usize = args.get(2).map_or(1, |a| a.parse().unwrap());
    let rounds: usize = args.get(3).map_or(5, |a| a.parse().unwrap());
    let prepared = args.get(4).is_some_and(|a| a == "prepared");
    let opening = Instant::now();
    let source = ledger::Source::open(&dir).expect("open");
    println!("open (HEAD, segments, the anchored end): {:.1} ms", opening.elapsed().as_secs_f64() * 1e3);
    let started = Instant::now();
    let source = if prepared { prepare(&source).expect("prepare") } else { source };
    if prepared {
        println!("prepare (sparse offsets of every file): {:.3}s", started.elapsed().as_secs_f64());
    }
    let n = source.head.size;
    if args.get(4).is_some_and(|a| a == "decode") {
        // Reading frames alone, then with each decoder (one thread): where the decode phase goes.
        for mode in ["frames", "view", "record", "view+owned"] {
            let started = Instant::now();
            let mut frames = source.frames(0, n);
            let mut count = 0u64;
            while let Some((_, body, _)) = frames.next_frame().expect("frame") {
                count += match mode {
                    "frames" => body.len() as u64 & 1,
                    "view" => u64::from(ledger::codec::decode_view(body).expect("decode").commit),
                    "view+owned" => {
                        u64::from(ledger::codec::decode_view(body).and_then(|v| v.to_record()).expect("decode").commit)
                    }
                    _ => u64::from(ledger::codec::decode_record(body).expect("decode").commit),
                };
            }
            let wall = started.elapsed().as_secs_f64();
            println!("{mode}: {:.1} ns/record ({count})", wall * 1e9 / n as f64);
        }
        return;
    }
    if args.get(4).is_some_and(|a| a == "digest") {
        let fleet = rebuild(&source, Cut::Head, &Options::default().threads(threads)).expect("rebuild");
        for _ in 0..rounds {
            let started = Instant::now();
            let digest = fleet.digest_hex();
            let wall = started.elapsed().as_secs_f64();
            println!("digest of {} terminals: {:.1} ms ({digest})", fleet.len(), wall * 1e3);
        }
        return;
    }
    // Many rounds (a small log) print only the summary: the best run and the median one.
    let verbose = rounds <= 20;
    let mut walls = Vec::with_capacity(rounds);
    let mut options = Options::default().threads(threads);
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse().expect("a number"));
    if let Some(chunk) = env("POSLEDGER_CHUNK_RECORDS") {
        options.chunk_records = chunk;
    }
    if let Some(batch) = env("POSLEDGER_BATCH_CHUNKS") {
        options.batch_chunks = usize::try_from(batch).expect("a chunk count");
    }
    for _ in 0..rounds {
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        let (fleet, phases) = rebuild_with_phases(&source, Cut::Head, &options).expect("rebuild");
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        walls.push(wall);
        if verbose {
            println!(
                "{threads}t: {n} events in {wall:.3}s = {:.2} M/s (cpu {cpu:.2}s, {:.2} M/s per cpu-second); {} terminals",
                n as f64 / wall / 1e6,
                n as f64 / cpu.max(1e-9) / 1e6,
                fleet.len()
            );
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            println!(
                "  decode {:.0} ms, glue {:.0} ms, fold {:.0} ms",
                ms(phases.decode),
                ms(phases.glue),
                ms(phases.fold)
            );
            println!("digest {}", fleet.digest_hex());
        }
    }
    walls.sort_by(f64::total_cmp);
    let (best, median) =
        (walls.first().copied().unwrap_or(f64::NAN), walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN));
    println!(
        "best {threads}t: {:.3} ms ({:.2} M/s); median of {rounds}: {:.3} ms",
        best * 1e3,
        n as f64 / best / 1e6,
        median * 1e3
    );
}

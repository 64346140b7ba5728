//! Crash behaviour: acknowledged appends survive `kill -9`, a torn tail is cut on open, a corrupt sealed
//! segment is reported with its position.
//!
//! `kill_and_reopen` re-executes this test binary as a child process (the ignored test `crash_child`, run
//! only when `POSLEDGER_CRASH_CHILD` names a ledger folder). The child appends durable batches of exactly
//! [`K`] events in a loop and prints each acknowledged head on stdout; the parent kills it with SIGKILL after
//! a short random delay, reopens the ledger and checks that every acknowledged head is a prefix of the log,
//! that positions are dense, that no append is visible in part, and that the index agrees with the log.
//! Before each reopen, the crashed folder is also read as it is (`Source::open`, and `replay verify`):
//! a reader that never writes must accept a crashed ledger too, with the same committed records.
//! `POSLEDGER_KILL_CYCLES` sets the number of cycles (default 200: CI runs them all, in well under a
//! minute), `POSLEDGER_KILL_SEED` the random seed (printed, so a failing run can be repeated).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::merkle::{Frontier, Hash};
use ledger::source::{hex, parse_hash, SEGMENTS_DIR};
use ledger::{Durability, Event, Ledger, Options, Record, Sn, Source, StopReason, StreamId, TerminalEvent};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The tests of this file take it. The kill test spawns hundreds of children; while a child is between
/// its fork and its exec it shares the parent's open files, LOCK included, so a test that drops a ledger
/// and reopens it at that moment finds the LOCK still held (`OpenError::Locked`). Serialising the tests
/// of this binary removes that race from the tests (it is no fault of the code under test).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events per append in the kill test: the log size after any number of whole appends is a multiple.
const K: u64 = 5;
/// Small segments, so the child seals and rotates segments while it is being killed.
const CHILD_SEGMENT_BYTES: u64 = 16 << 10;
const CHILD_ENV: &str = "POSLEDGER_CRASH_CHILD";

fn child_options() -> Options {
    Options { segment_max_bytes: CHILD_SEGMENT_BYTES, ..Options::default() }
}

/// Append `n` of the kill test: terminal `Tn` is issued, gets 100 yuan of flow and is activated, and an
/// older terminal `T(n/2)` gets one more fen — two streams in one atomic append. The older terminal's
/// fen sits last, on the commit record, so an append cut anywhere leaves one stream or both incomplete.
fn batch(n: u64) -> Vec<ledger::AppendEvent> {
    let me = format!("T{n}");
    let older = format!("T{}", n / 2);
    vec![issued(&me, "M-K"), flow(&me, 6_000), flow(&me, 4_000), activated(&me), flow(&older, 1)]
}

/// The child: appends durably until killed, printing `ACK <size> <root hex>` after each acknowledged append.
#[test]
#[ignore = "helper process of kill_and_reopen; does nothing unless POSLEDGER_CRASH_CHILD is set"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let ledger = Ledger::open_with(Path::new(&dir), child_options()).unwrap();
    let mut out = std::io::stdout().lock();
    let head = ledger.head();
    assert_eq!(head.size % K, 0, "child opened a log of {} records", head.size);
    writeln!(out, "OPENED {} {}", head.size, head.root_hex()).unwrap();
    out.flush().unwrap();
    let mut n = head.size / K;
    loop {
        let appended = ledger.append(batch(n)).unwrap();
        writeln!(out, "ACK {} {}", appended.head.size, appended.head.root_hex()).unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

/// xorshift64*: deterministic given the seed, enough for delays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Acks {
    /// The child printed `OPENED`: it was killed after its open (and recovery) finished.
    opened: bool,
    heads: Vec<(u64, Hash)>,
}

fn run_child(dir: &Path, delay: Duration, stderr_path: &Path) -> Acks {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // If the child already died on its own, that is a failure of the child (it never stops by itself).
    if let Some(status) = child.try_wait().unwrap() {
        let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
        panic!("the child exited by itself with {status}:\n{stderr}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut heads = Vec::new();
    let mut opened = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        // A line cut by the kill has no newline and may be incomplete: it is simply not an ack. The
        // first line follows the test harness's own `test crash_child ... `.
        let line = line.rsplit(" ... ").next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("OPENED") => opened = true,
            Some("ACK") => {
                let (Some(size), Some(root)) = (words.next(), words.next()) else { continue };
                let (Ok(size), Some(root)) = (size.parse::<u64>(), parse_hash(root)) else { continue };
                heads.push((size, root));
            }
            _ => {}
        }
    }
    Acks { opened, heads }
}

/// Reads the whole log and checks its shape; returns the records.
fn check_log(ledger: &Ledger) -> Vec<Record> {
    let head = ledger.head();
    assert_eq!(head.size % K, 0, "log of {} records: a partial append is visible", head.size);
    let records: Vec<Record> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len() as u64, head.size);
    for (i, record) in records.iter().enumerate() {
        let position = i as u64;
        assert_eq!(record.position, position, "positions are not dense");
        assert_eq!(record.commit, (position + 1).is_multiple_of(K), "commit marker at {position}");
        let want = &batch(position / K)[(position % K) as usize];
        assert_eq!(record.event, want.event, "record {position} is not what append {} wrote", position / K);
    }
    records
}

/// Roots of the log at every whole-append size, in one pass over the frames.
fn roots_by_size(ledger: &Ledger) -> HashMap<u64, Hash> {
    let size = ledger.head().size;
    let mut roots = HashMap::new();
    let mut frontier = Frontier::new();
    roots.insert(0, frontier.root());
    let mut frames = ledger.frames(0, size);
    while let Some((_, body, _)) = frames.next_frame().unwrap() {
        frontier.push_leaf(body);
        if frontier.size().is_multiple_of(K) {
            roots.insert(frontier.size(), frontier.root());
        }
    }
    assert_eq!(frontier.size(), size);
    assert_eq!(frontier.root(), ledger.head().root, "head root differs from the root of the stored bodies");
    roots
}

fn check_index(ledger: &Ledger, records: &[Record], sample: &[u64]) {
    let mut streams: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
    for record in records {
        if let Event::Terminal(d) = &record.event {
            let n: u64 = d.device.as_str()[1..].parse().unwrap();
            streams.entry(n).or_default().push(record);
        }
    }
    for n in sample {
        let sn = Sn::parse(&format!("T{n}")).unwrap();
        let want: Vec<&Record> = streams.get(n).cloned().unwrap_or_default();
        let got = ledger.read_stream(&StreamId::Terminal(sn.clone())).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "read_stream(T{n}) differs from a scan");
        match ledger.terminal(&sn).unwrap() {
            None => assert!(want.is_empty(), "T{n} is in the log but not in the view"),
            Some((version, state, _)) => {
                assert_eq!(version, want.len() as u64, "version of T{n}");
                let flow: u64 = want
                    .iter()
                    .map(|r| match &r.event {
                        Event::Terminal(d) => match d.event {
                            TerminalEvent::Flow { amount_fen, .. } => amount_fen,
                            _ => 0,
                        },
                        Event::Directive(_) => 0,
                    })
                    .sum();
                assert_eq!(state.flow_fen, flow, "flow of T{n}");
                assert_eq!(state.status, ledger::lifecycle::Status::Active, "status of T{n}");
            }
        }
    }
}

/// What the kill loop saw, for its summary line (and docs/RELIABILITY.md).
#[derive(Default, Debug)]
struct KillStats {
    cycles: u64,
    killed_before_open_finished: u64,
    cycles_with_acks: u64,
    torn_tails: u64,
    unacked_appends_found: u64,
}

#[test]
fn kill_and_reopen() {
    let _serial = serial();
    let started = std::time::Instant::now();
    let cycles = env_u64("POSLEDGER_KILL_CYCLES").unwrap_or(200);
    let seed = env_u64("POSLEDGER_KILL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("kill_and_reopen: {cycles} cycles, POSLEDGER_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let stderr_path = tmp.path().join("child.stderr");
    let mut previous = (0u64, Frontier::new().root());
    let mut total_acks = 0usize;
    let mut stats = KillStats::default();
    let mut ever_opened = false;
    for cycle in 0..cycles {
        // Mostly a few to tens of milliseconds of appending (the child needs about 10-20 ms to start
        // and open); one cycle in six is killed within 15 ms, usually while the child is still
        // starting, opening or recovering the ledger.
        let delay = if rng.below(6) == 0 {
            Duration::from_micros(rng.below(15_000))
        } else {
            Duration::from_millis(10 + rng.below(45))
        };
        let acks = run_child(&dir, delay, &stderr_path);
        stats.cycles += 1;
        stats.killed_before_open_finished += u64::from(!acks.opened);
        stats.cycles_with_acks += u64::from(!acks.heads.is_empty());
        total_acks += acks.heads.len();
        if !dir.join(SEGMENTS_DIR).exists() {
            continue; // killed before it created the ledger
        }
        // The crashed folder, read as it is by a reader that never writes: it opens, its committed
        // records are whole appends that extend every acknowledged head, and `replay verify` accepts it.
        let source = match Source::open(&dir) {
            Ok(source) => Some(source),
            // Killed during its very first open, before segment 0 had a header: nothing to read yet.
            Err(_) if !ever_opened => None,
            Err(e) => panic!("cycle {cycle} (seed {seed}): Source::open of the crashed folder: {e}"),
        };
        if let Some(source) = &source {
            assert_eq!(source.head.size % K, 0, "cycle {cycle}: a reader sees a partial append");
            if let Some((size, _)) = acks.heads.last() {
                assert!(source.head.size >= *size, "cycle {cycle}: a reader misses acknowledged records");
            }
            stats.torn_tails += u64::from(source.torn.is_some());
            let verified = replay::verify::verify(source, &mut |_| {})
                .unwrap_or_else(|e| panic!("cycle {cycle} (seed {seed}): replay verify of the crashed folder: {e}"));
            assert_eq!((verified.records, verified.root), (source.head.size, source.head.root), "cycle {cycle}");
        }

        let ledger = Ledger::open_with(&dir, child_options())
            .unwrap_or_else(|e| panic!("cycle {cycle} (seed {seed}): reopen after kill failed: {e}"));
        let head = ledger.head();
        ever_opened = true;
        if let Some(source) = &source {
            assert_eq!(head, source.head, "cycle {cycle}: the reopened head differs from what a reader saw");
        }
        let last_ack = acks.heads.last().map_or(previous.0, |(size, _)| *size);
        stats.unacked_appends_found += head.size.saturating_sub(last_ack.max(previous.0)) / K;
        let records = check_log(&ledger);
        let roots = roots_by_size(&ledger);
        // What was acknowledged before, in this cycle and earlier ones, is a prefix of the log.
        assert!(head.size >= previous.0, "cycle {cycle}: the log shrank from {} to {}", previous.0, head.size);
        assert_eq!(roots.get(&previous.0), Some(&previous.1), "cycle {cycle}: the previous head is not a prefix");
        for (size, root) in &acks.heads {
            assert!(*size <= head.size, "cycle {cycle}: acknowledged size {size} lost, the log has {}", head.size);
            assert_eq!(roots.get(size), Some(root), "cycle {cycle}: acknowledged head {size} {} differs", hex(root));
        }
        if let Some((size, root)) = acks.heads.last() {
            assert_eq!(ledger.root_at(*size).unwrap(), *root, "root_at({size})");
        }
        // The index agrees with the log: the newest terminals, the oldest, and one in the middle.
        let batches = head.size / K;
        let mut sample: Vec<u64> = (batches.saturating_sub(3)..batches + 1).collect();
        sample.extend([0, 1, batches / 2, rng.below(batches.max(1))]);
        check_index(&ledger, &records, &sample);
        previous = (head.size, head.root);
        drop(ledger);
    }
    eprintln!("kill_and_reopen: {stats:?}");
    assert!(total_acks > 0, "the child never acknowledged an append (seed {seed})");
    let segments = std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().count();
    eprintln!(
        "kill_and_reopen: {total_acks} acknowledged appends, {} records, {segments} segments, {:.1} s",
        previous.0,
        started.elapsed().as_secs_f64()
    );
    // At the end, every terminal's stream is checked, with the index rebuilt from scratch too.
    let ledger = Ledger::open_with(&dir, child_options()).unwrap();
    let records = check_log(&ledger);
    let all: Vec<u64> = (0..=ledger.head().size / K).collect();
    check_index(&ledger, &records, &all);
    drop(ledger);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let ledger = Ledger::open_with(&dir, child_options()).unwrap();
    assert_eq!(ledger.head().size, previous.0);
    check_index(&ledger, &records, &all);
    // And the log goes on.
    let n = ledger.head().size / K;
    let appended = ledger.append(batch(n)).unwrap();
    assert_eq!(appended.positions, (n * K..n * K + K).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------------------
// Torn tails
// ---------------------------------------------------------------------------------------------------------

fn last_segment(dir: &Path) -> PathBuf {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.pop().unwrap()
}

fn relaxed() -> Options {
    Options { durability: Durability::Relaxed, ..Options::default() }
}

/// Cuts the live segment at every byte offset inside its last append (a torn, unacknowledged write: the
/// HEAD file and the index are as they were before that append), and also fills the torn part with zeros
/// (a file extended but not written). Every time: the last append is gone, everything before it is intact,
/// and new appends follow at the next position.
#[test]
fn torn_tail_is_cut_at_every_offset_of_the_last_append() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    {
        let ledger = Ledger::open(&base).unwrap();
        ledger.append(vec![issued("SN1", "M"), issued("SN2", "M")]).unwrap();
        ledger.append(vec![flow("SN1", 10_000)]).unwrap();
        ledger.append(vec![activated("SN1"), flagged("SN2", ledger::FlagReason::CashOut)]).unwrap();
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    let before = tmp.path().join("before");
    copy_dir(&base, &before);
    let (head_before, records_before) = {
        let ledger = Ledger::open(&before).unwrap();
        let records: Vec<Record> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
        (ledger.head(), records)
    };
    // The append that will be torn: three records over two streams.
    {
        let ledger = Ledger::open(&base).unwrap();
        let a = ledger.append(vec![flow("SN2", 700), stopped("SN1", StopReason::Violation), flow("SN1", 3)]).unwrap();
        assert_eq!(a.positions, vec![head_before.size, head_before.size + 1, head_before.size + 2]);
    }
    let seg_name = last_segment(&before).file_name().unwrap().to_owned();
    let short = std::fs::read(before.join(SEGMENTS_DIR).join(&seg_name)).unwrap();
    let full = std::fs::read(base.join(SEGMENTS_DIR).join(&seg_name)).unwrap();
    assert!(full.len() > short.len() && full.starts_with(&short));

    let mut checked = 0;
    for cut in short.len()..full.len() {
        for zeros in [false, true] {
            let case = tmp.path().join(format!("cut-{cut}-{zeros}"));
            copy_dir(&before, &case);
            let mut bytes = full[..cut].to_vec();
            if zeros {
                bytes.resize(full.len(), 0);
            }
            std::fs::write(case.join(SEGMENTS_DIR).join(&seg_name), &bytes).unwrap();
            let what = format!("cut at byte {cut} of {} (zero-filled: {zeros})", full.len());

            // A reader sees the committed records only, and reports the torn bytes.
            let source = Source::open(&case).unwrap_or_else(|e| panic!("{what}: Source::open: {e}"));
            assert_eq!(source.head, head_before, "{what}");
            assert_eq!(source.torn.is_some(), cut > short.len() || zeros, "{what}: {:?}", source.torn);

            let ledger = Ledger::open_with(&case, relaxed()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            assert_eq!(ledger.head(), head_before, "{what}");
            let records: Vec<Record> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
            assert_eq!(records, records_before, "{what}");
            assert_eq!(
                ledger.terminal(&sn("SN1")).unwrap().unwrap().1.status,
                ledger::lifecycle::Status::Active,
                "{what}"
            );
            assert_eq!(ledger.read_stream(&StreamId::Terminal(sn("SN2"))).unwrap().len(), 2, "{what}");
            let a = ledger.append(vec![flow("SN2", 1)]).unwrap();
            assert_eq!(a.positions, vec![head_before.size], "{what}");
            let head = ledger.flush().unwrap();
            drop(ledger);
            let len = std::fs::metadata(case.join(SEGMENTS_DIR).join(&seg_name)).unwrap().len();
            assert!(len > short.len() as u64 && len < full.len() as u64, "{what}: segment is {len} bytes");
            let ledger = Ledger::open_with(&case, relaxed()).unwrap();
            assert_eq!(ledger.head(), head, "{what}");
            assert_eq!(ledger.read_at(head_before.size).unwrap().event, flow("SN2", 1).event, "{what}");
            drop(ledger);
            std::fs::remove_dir_all(&case).unwrap();
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (full.len() - short.len()));
}

// ---------------------------------------------------------------------------------------------------------
// Corrupt sealed segments
// ---------------------------------------------------------------------------------------------------------

/// Byte ranges (frame start, frame end) of the records of a segment file.
fn frame_ranges(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut ranges = Vec::new();
    let mut at = ledger::segment::HEADER_LEN;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if len == ledger::segment::TRAILER_TAG {
            break;
        }
        let end = at + 8 + len as usize;
        ranges.push((at, end));
        at = end;
    }
    ranges
}

fn sealed_ledger(dir: &Path) -> (ledger::Head, Vec<Record>) {
    let options = Options { segment_max_bytes: 2_000, ..relaxed() };
    let ledger = Ledger::open_with(dir, options).unwrap();
    for i in 0..60 {
        ledger.append(vec![issued(&format!("SN{i}"), "M"), flow(&format!("SN{i}"), 10)]).unwrap();
    }
    let records: Vec<Record> = ledger.read_from(0).collect::<Result<_, _>>().unwrap();
    let head = ledger.head();
    assert_eq!(ledger.close().unwrap().index_warning, None);
    (head, records)
}

/// Every error must name the file and a position or byte offset, so an operator can find the damage.
fn assert_locates(error: &dyn std::fmt::Display, file: &str, what: &str) {
    let text = error.to_string();
    assert!(text.contains(file), "{what}: the error does not name {file}: {text}");
    assert!(text.contains("offset") || text.contains("position"), "{what}: the error gives no position: {text}");
}

/// Flips each byte of one record of a sealed segment in turn: reading reports an error naming the segment
/// and the position or offset, every record before the damage still reads, nothing panics, and an open
/// that must rebuild the index refuses the log rather than skip the record.
#[test]
fn flipped_byte_in_a_sealed_segment_is_reported_with_its_position() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let (head, records) = sealed_ledger(&base);
    let seg = base.join(SEGMENTS_DIR).join("00000001.seg");
    let seg_name = "00000001.seg";
    assert!(last_segment(&base) != seg, "segment 1 must be sealed");
    let ranges = frame_ranges(&seg);
    let header = ledger::segment::FrameReader::open(&seg).unwrap().header().first_position;
    let victim = 2usize; // the third record of segment 1
    let victim_position = header + victim as u64;
    let (start, end) = ranges[victim];
    let original = std::fs::read(&seg).unwrap();
    for at in start..end {
        let what = format!("byte {at} of {seg_name} (record at position {victim_position})");
        let mut bytes = original.clone();
        bytes[at] ^= 0x5A;
        std::fs::write(&seg, &bytes).unwrap();

        // Read-only: the error comes at the damaged record, after every record before it.
        let source = Source::open(&base).unwrap_or_else(|e| panic!("{what}: Source::open: {e}"));
        let mut read = 0u64;
        let mut failed = None;
        for record in source.records(0) {
            match record {
                Ok(record) => {
                    assert_eq!(record, records[read as usize], "{what}");
                    read += 1;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let error = failed.unwrap_or_else(|| panic!("{what}: the damage was read without an error"));
        assert!(read <= victim_position, "{what}: read {read} records past the damage");
        assert!(read >= header, "{what}: records of the intact segment 0 failed");
        assert_locates(&error, seg_name, &what);
        std::fs::write(&seg, &original).unwrap();
    }

    // The ledger itself: reads fail at the damage with a located error; proofs and roots that need the
    // damaged record fail too; with the index gone, open refuses the log (it cannot fold a damaged record).
    let mut bytes = original.clone();
    bytes[(start + end) / 2] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    // Opening may verify the log against the published HEAD (and so refuse it), or open and leave the
    // damage to the reads; either way the damage is reported, located, and never skipped.
    match Ledger::open(&base) {
        Err(error) => assert_locates(&error, seg_name, "open"),
        Ok(ledger) => {
            assert_eq!(ledger.head(), head, "the head of a sealed segment comes from its trailer");
            let error = ledger.read_at(victim_position).unwrap_err();
            assert_locates(&error, seg_name, "read_at");
            let error = ledger.read_from(0).find_map(Result::err).expect("read_from passed the damage");
            assert_locates(&error, seg_name, "read_from");
            assert!(ledger.root_at(victim_position + 1).is_err());
            let sn = records[victim_position as usize].stream_sn();
            assert!(ledger.read_stream(&StreamId::Terminal(sn)).is_err());
        }
    }
    std::fs::remove_dir_all(base.join("index")).unwrap();
    let error = match Ledger::open(&base) {
        Ok(_) => panic!("a ledger whose index must be rebuilt opened over a damaged record"),
        Err(e) => e,
    };
    assert_locates(&error, seg_name, "open with a rebuild");
}

trait StreamSn {
    fn stream_sn(&self) -> Sn;
}
impl StreamSn for Record {
    fn stream_sn(&self) -> Sn {
        match &self.event {
            Event::Terminal(d) => d.device.clone(),
            Event::Directive(_) => panic!("not a terminal record"),
        }
    }
}

/// A damaged trailer of a sealed segment is an error on open, naming the file, never a panic.
#[test]
fn damaged_trailer_of_a_sealed_segment_is_an_error() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    sealed_ledger(&base);
    let seg = base.join(SEGMENTS_DIR).join("00000000.seg");
    let original = std::fs::read(&seg).unwrap();
    let (_, last_end) = *frame_ranges(&seg).last().unwrap();
    for at in [last_end, last_end + 5, last_end + 20, original.len() - 6, original.len() - 1] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let what = format!("trailer byte {at}");
        match Source::open(&base) {
            Ok(_) => panic!("{what}: Source::open accepted a damaged trailer"),
            Err(e) => assert!(e.to_string().contains("00000000.seg"), "{what}: {e}"),
        }
        match Ledger::open(&base) {
            Ok(_) => panic!("{what}: Ledger::open accepted a damaged trailer"),
            Err(e) => assert!(e.to_string().contains("00000000.seg"), "{what}: {e}"),
        }
    }
    std::fs::write(&seg, &original).unwrap();
    Ledger::open(&base).unwrap();
}

/// Bug found by the torn-tail test: a torn write that leaves the start of a frame followed by zeros (the
/// file was extended, the rest of the data never reached the disk) was reported as corruption — the ledger
/// refused to open — unless the tear fell exactly on a frame boundary. It is a torn tail: nothing follows.
#[test]
fn torn_frame_followed_by_zeros_is_a_torn_tail() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (head, root_before) = {
        let ledger = Ledger::open(&dir).unwrap();
        ledger.append(vec![issued("SN1", "M")]).unwrap();
        let head = ledger.head();
        assert_eq!(ledger.close().unwrap().index_warning, None);
        (head, std::fs::read(dir.join(ledger::source::HEAD_FILE)).unwrap())
    };
    let seg = last_segment(&dir);
    let short = std::fs::metadata(&seg).unwrap().len() as usize;
    {
        let ledger = Ledger::open(&dir).unwrap();
        ledger.append(vec![flow("SN1", 1), flow("SN1", 2), flow("SN1", 3)]).unwrap();
    }
    // The append's first frame keeps its length, checksum and a few body bytes; the rest is zeros. The
    // HEAD file is as it was before the (unacknowledged) append.
    let mut bytes = std::fs::read(&seg).unwrap();
    let full = bytes.len();
    bytes[short + 12..].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(dir.join(ledger::source::HEAD_FILE), root_before).unwrap();
    let source = Source::open(&dir).unwrap();
    assert_eq!(source.head, head);
    assert!(source.torn.is_some());
    let ledger = Ledger::open(&dir).unwrap();
    assert_eq!(ledger.head(), head);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, short, "the torn {} bytes were not cut", full - short);
    assert_eq!(ledger.append(vec![flow("SN1", 4)]).unwrap().positions, vec![1]);
}

// ---------------------------------------------------------------------------------------------------------
// Crash windows the kill loop rarely hits: creating a segment file
// ---------------------------------------------------------------------------------------------------------

/// Options with 1,500-byte segments, so a few appends seal several.
fn small_segments() -> Options {
    Options { segment_max_bytes: 1_500, ..relaxed() }
}

/// 30 two-event appends into a new ledger of small segments, then closed.
fn fill_small_segments(base: &std::path::Path) {
    let ledger = Ledger::open_with(base, small_segments()).unwrap();
    for i in 0..30 {
        ledger.append(vec![issued(&format!("SN{i}"), "M"), flow(&format!("SN{i}"), 10)]).unwrap();
    }
    assert_eq!(ledger.close().unwrap().index_warning, None);
}

/// Writes the HEAD a ledger had when its last segment was just sealed: the end its trailer records.
fn anchor_at_the_last_trailer(base: &std::path::Path) {
    let trailer = ledger::segment::read_trailer_at_end(&last_segment(base)).unwrap();
    let head = ledger::Head { size: trailer.log_size, root: trailer.root };
    std::fs::write(base.join(ledger::source::HEAD_FILE), ledger::anchor::encode_fresh(&head)).unwrap();
}

/// A segment file is created (`create_new`), then its 40-byte header is written and fsynced, then the
/// folder is fsynced. A crash in between leaves the new, last segment shorter than its header: empty, or a
/// prefix of it. Its predecessor is sealed, so nothing acknowledged can be in it. The ledger must open
/// (finishing the rotation), readers must read the log, and appends must go on.
#[test]
fn crash_while_creating_the_next_segment_is_recovered() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let options = small_segments;
    fill_small_segments(&base);
    // The state just after sealing the segment before the live one: drop the live segment (and HEAD,
    // which would name its records).
    let live = last_segment(&base);
    let header = ledger::segment::FrameReader::open(&live).unwrap().header().to_owned();
    assert!(header.seq >= 2, "the test needs sealed segments");
    std::fs::remove_file(&live).unwrap();
    // HEAD as it was then: the end of the sealed segments.
    anchor_at_the_last_trailer(&base);
    let sealed_head = Source::open(&base).unwrap().head;
    assert_eq!(sealed_head.size, header.first_position);
    let header_bytes = header.encode();
    for len in [0usize, 1, 8, 20, 39] {
        let case = tmp.path().join(format!("case-{len}"));
        copy_dir(&base, &case);
        std::fs::write(case.join(SEGMENTS_DIR).join(live.file_name().unwrap()), &header_bytes[..len]).unwrap();
        let what = format!("a new segment of {len} bytes (header is {})", header_bytes.len());
        let source = Source::open(&case).unwrap_or_else(|e| panic!("{what}: Source::open: {e}"));
        assert_eq!(source.head, sealed_head, "{what}");
        let ledger = Ledger::open_with(&case, options()).unwrap_or_else(|e| panic!("{what}: Ledger::open: {e}"));
        assert_eq!(ledger.head(), sealed_head, "{what}");
        assert_eq!(ledger.read_from(0).count() as u64, sealed_head.size, "{what}");
        let a = ledger.append(vec![flow("SN1", 1)]).unwrap();
        assert_eq!(a.positions, vec![sealed_head.size], "{what}");
        assert_eq!(ledger.close().unwrap().index_warning, None);
        let ledger = Ledger::open_with(&case, options()).unwrap();
        assert_eq!(ledger.head().size, sealed_head.size + 1, "{what}");
    }
}

/// The very first open creates `segments/` and then segment 0. A crash in between leaves an empty
/// `segments/` folder, or a segment 0 shorter than its header: nothing was ever appended, so the next
/// open must create the ledger rather than refuse the folder.
#[test]
fn crash_during_the_first_open_is_recovered() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for len in [None, Some(0usize), Some(12), Some(39)] {
        let dir = tmp.path().join(format!("case-{len:?}"));
        std::fs::create_dir_all(dir.join(SEGMENTS_DIR)).unwrap();
        std::fs::write(dir.join("LOCK"), b"").unwrap();
        if let Some(len) = len {
            let header = ledger::segment::Header {
                kind: ledger::segment::FileKind::Segment,
                seq: 0,
                first_position: 0,
                ledger_id: 7,
            };
            std::fs::write(dir.join(SEGMENTS_DIR).join("00000000.seg"), &header.encode()[..len]).unwrap();
        }
        let what = format!("segment 0 of {len:?} bytes");
        let ledger = Ledger::open(&dir).unwrap_or_else(|e| panic!("{what}: Ledger::open: {e}"));
        assert_eq!(ledger.head().size, 0, "{what}");
        assert_eq!(ledger.append(vec![issued("SN1", "M")]).unwrap().positions, vec![0], "{what}");
        drop(ledger);
        assert_eq!(Source::open(&dir).unwrap().head.size, 1, "{what}");
    }
}

/// Sealing writes the trailer to the end of the live segment and fsyncs it before the next segment is
/// created. A crash (power loss) during that write leaves the segment ending in a prefix of its trailer,
/// or that prefix and zeros, with no successor. Every record before it was acknowledged and is intact:
/// the ledger must open with all of them (cutting the partial trailer), readers must read them, and
/// appends must go on.
#[test]
fn torn_trailer_of_the_last_segment_is_a_torn_tail() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let options = small_segments;
    fill_small_segments(&base);
    // Back to the moment the segment before the live one was being sealed.
    let live = last_segment(&base);
    std::fs::remove_file(&live).unwrap();
    anchor_at_the_last_trailer(&base);
    let sealing = last_segment(&base);
    let sealed_bytes = std::fs::read(&sealing).unwrap();
    let records_end = frame_ranges(&sealing).last().unwrap().1;
    let trailer_len = sealed_bytes.len() - records_end;
    let head = Source::open(&base).unwrap().head;
    let mut failures = Vec::new();
    // Every cut inside the tag, length and count fields, then every 9th byte and the very last one.
    let cuts: Vec<usize> = (1..trailer_len).filter(|c| *c <= 13 || c % 9 == 0 || *c == trailer_len - 1).collect();
    for &cut in &cuts {
        for zeros in [false, true] {
            let case = tmp.path().join(format!("cut-{cut}-{zeros}"));
            copy_dir(&base, &case);
            let mut bytes = sealed_bytes[..records_end + cut].to_vec();
            if zeros {
                bytes.resize(sealed_bytes.len(), 0);
            }
            std::fs::write(case.join(SEGMENTS_DIR).join(sealing.file_name().unwrap()), &bytes).unwrap();
            let what = format!("trailer cut after {cut} of {trailer_len} bytes (zero-filled: {zeros})");
            let outcome = (|| -> Result<(), String> {
                let source = Source::open(&case).map_err(|e| format!("Source::open: {e}"))?;
                if source.head != head {
                    return Err(format!("Source head {} != {}", source.head.size, head.size));
                }
                let ledger = Ledger::open_with(&case, options()).map_err(|e| format!("Ledger::open: {e}"))?;
                if ledger.head() != head {
                    return Err(format!("Ledger head {} != {}", ledger.head().size, head.size));
                }
                let a = ledger.append(vec![flow("SN1", 1)]).map_err(|e| format!("append: {e}"))?;
                if a.positions != vec![head.size] {
                    return Err(format!("appended at {:?}", a.positions));
                }
                Ok(())
            })();
            if let Err(e) = outcome {
                failures.push(format!("{what}: {e}"));
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), 2 * cuts.len(), failures.join("\n"));
}

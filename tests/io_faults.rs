//! I/O faults injected through `ledger::testing::FaultInjector`, the seam in the segment writer: a failing write
//! (EIO), a full disk (ENOSPC), a short write (the injector writes a prefix of the bytes itself, then
//! fails), a failing fsync, and a fault at every single I/O point of a script that seals segments.
//!
//! Each time: the append returns a typed error, nothing half-written becomes visible (the head, reads,
//! subscriptions and a fresh `Source::open` show whole appends only), later appends are refused with
//! `AppendError::Poisoned` until the ledger is reopened, and reopening recovers every acknowledged append
//! and accepts new ones. What the seam cannot express is said where it matters (see `short_write`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::source::SEGMENTS_DIR;
use ledger::testing::FaultInjector;
use ledger::{AppendError, AppendEvent, Durability, EventId, Head, Ledger, Options, Record, Source, WriterFailure};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EIO: i32 = 5;
const DEFAULT_SEGMENT: u64 = 64 << 20;
const ENOSPC: i32 = 28;

/// Events per append of the script.
const K: u64 = 3;

/// Append `n` of the script: two streams in one append, every event with an id (so a retry after an
/// unknown outcome is idempotent).
fn batch(n: u64) -> Vec<AppendEvent> {
    let me = format!("T{n}");
    let older = format!("T{}", n / 2);
    let id =
        |e: AppendEvent, i: u64| AppendEvent { event_id: Some(EventId::parse(&format!("e-{n}-{i}")).unwrap()), ..e };
    vec![id(issued(&me, "M-IO"), 0), id(flow(&me, 10_000), 1), id(flow(&older, 1), 2)]
}

/// What bytes a failing write leaves in the file before it fails.
#[derive(Clone, Debug)]
enum Prefix {
    None,
    /// `n` zero bytes (the file grew, the data never reached the disk).
    Zeros(usize),
    /// These bytes (a short write of the real data).
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Plan {
    Off,
    /// Fail the next write, after leaving the prefix.
    NextWrite(i32, Prefix),
    /// Fail the next fsync.
    NextSync(i32),
    /// Fail I/O point number `n` (writes and fsyncs counted together, from 0); a write leaves half its
    /// length in zeros when `zeros` is set.
    Nth {
        n: u64,
        errno: i32,
        zeros: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Sync,
}

#[derive(Debug)]
struct State {
    plan: Plan,
    points: Vec<(Kind, PathBuf, usize)>,
    fired: Option<(Kind, i32)>,
}

/// Fails one I/O point as planned (once), and records every point it saw.
#[derive(Debug)]
struct Injector(Mutex<State>);

impl Injector {
    fn new(plan: Plan) -> Arc<Injector> {
        Arc::new(Injector(Mutex::new(State { plan, points: Vec::new(), fired: None })))
    }
    fn arm(&self, plan: Plan) {
        self.0.lock().unwrap().plan = plan;
    }
    fn fired(&self) -> Option<(Kind, i32)> {
        self.0.lock().unwrap().fired
    }
    fn points(&self) -> Vec<(Kind, PathBuf, usize)> {
        self.0.lock().unwrap().points.clone()
    }
    fn point(&self, kind: Kind, path: &Path, len: usize) -> std::io::Result<()> {
        let mut state = self.0.lock().unwrap();
        let n = state.points.len() as u64;
        state.points.push((kind, path.to_owned(), len));
        let fail = match (&state.plan, kind) {
            (Plan::NextWrite(errno, prefix), Kind::Write) => Some((*errno, prefix.clone())),
            (Plan::NextSync(errno), Kind::Sync) => Some((*errno, Prefix::None)),
            (Plan::Nth { n: at, errno, zeros }, _) if *at == n => {
                Some((*errno, if *zeros && kind == Kind::Write { Prefix::Zeros(len / 2) } else { Prefix::None }))
            }
            _ => None,
        };
        let Some((errno, prefix)) = fail else { return Ok(()) };
        state.plan = Plan::Off;
        state.fired = Some((kind, errno));
        // A short write is emulated by appending; HEAD is written in place, so its faults leave nothing.
        let in_place = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("HEAD"));
        let bytes = match prefix {
            _ if in_place => Vec::new(),
            Prefix::None => Vec::new(),
            Prefix::Zeros(n) => vec![0; n],
            Prefix::Bytes(bytes) => bytes,
        };
        if !bytes.is_empty() {
            assert!(bytes.len() < len, "a short write is shorter than the write");
            std::fs::OpenOptions::new().append(true).open(path)?.write_all(&bytes)?;
        }
        Err(std::io::Error::from_raw_os_error(errno))
    }
}

impl FaultInjector for Injector {
    fn before_write(&self, path: &Path, len: usize) -> std::io::Result<()> {
        self.point(Kind::Write, path, len)
    }
    fn before_sync(&self, path: &Path) -> std::io::Result<()> {
        self.point(Kind::Sync, path, 0)
    }
}

fn options(faults: Option<Arc<Injector>>, segment_max_bytes: u64) -> Options {
    Options { segment_max_bytes, faults: faults.map(|f| f as Arc<dyn FaultInjector>), ..Options::default() }
}

fn read_all(ledger: &Ledger) -> Vec<Record> {
    ledger.read_from(0).collect::<Result<_, _>>().unwrap()
}

/// The records the script writes for its first `appends` appends: whole appends, in order.
fn check_script_log(records: &[Record], appends: u64, what: &str) {
    assert_eq!(records.len() as u64, appends * K, "{what}: log of {} records", records.len());
    for (i, record) in records.iter().enumerate() {
        let position = i as u64;
        assert_eq!(record.position, position, "{what}");
        assert_eq!(record.commit, (position + 1).is_multiple_of(K), "{what}: commit marker at {position}");
        let want = &batch(position / K)[(position % K) as usize];
        assert_eq!(record.event, want.event, "{what}: record {position}");
        assert_eq!(record.event_id, want.event_id, "{what}: record {position}");
    }
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn copy_segments(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join(SEGMENTS_DIR)).unwrap();
    for entry in std::fs::read_dir(from.join(SEGMENTS_DIR)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(SEGMENTS_DIR).join(entry.file_name())).unwrap();
    }
    std::fs::copy(from.join(ledger::source::HEAD_FILE), to.join(ledger::source::HEAD_FILE)).unwrap();
}

fn at() -> chrono::DateTime<chrono::Utc> {
    t(3_000)
}

/// After a failed write, in the same process: the head, reads and a live subscription still show the
/// acknowledged log (`before`), a fresh reader of the folder too, and appends are refused without writing.
fn check_after_failed_write(ledger: &Ledger, dir: &Path, before: Head, records: &[Record], what: &str) {
    assert_eq!(ledger.head(), before, "{what}: head moved");
    assert_eq!(read_all(ledger), records, "{what}: reads changed");
    let mut sub = ledger.subscribe(before.size);
    assert!(sub.next_timeout(Duration::from_millis(20)).unwrap().is_none(), "{what}: a subscriber saw a record");
    let source = Source::open(dir).unwrap_or_else(|e| panic!("{what}: Source::open: {e}"));
    assert_eq!(source.head, before, "{what}: a fresh reader sees another head");
    assert_eq!(source.records(0).collect::<Result<Vec<_>, _>>().unwrap(), records, "{what}");
    let len = segment_bytes(dir);
    match ledger.append_at(batch(4), Some(at())) {
        Err(AppendError::Poisoned(why)) => assert!(
            matches!(
                why,
                WriterFailure::Write { .. }
                    | WriterFailure::Seal { .. }
                    | WriterFailure::Sync { .. }
                    | WriterFailure::Anchor { .. }
            ),
            "{what}: {why}"
        ),
        other => panic!("{what}: an append after the failure was not refused: {other:?}"),
    }
    assert_eq!(segment_bytes(dir), len, "{what}: a refused append wrote bytes");
}

/// Reopens without faults: exactly the acknowledged log, and appends go on.
fn check_reopen(dir: &Path, before: Head, records: &[Record], what: &str) {
    let ledger =
        Ledger::open_with(dir, options(None, DEFAULT_SEGMENT)).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_eq!(ledger.head(), before, "{what}: reopened head");
    assert_eq!(read_all(&ledger), records, "{what}: reopened log");
    let a = ledger.append_at(batch(4), Some(at())).unwrap();
    assert_eq!(a.positions, (before.size..before.size + K).collect::<Vec<_>>(), "{what}");
    drop(ledger);
    let verified = replay::verify::verify(&Source::open(dir).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(verified.records, before.size + K, "{what}");
}

/// A failing write (EIO), a full disk (ENOSPC), and short writes: the real first bytes of the append
/// (1 byte, a frame prefix and a bit more, half, all but one) or zeros. `before_write` gets the path and
/// the length of the whole append (one `write` per append); it does not get the bytes, so the test takes
/// them from a twin ledger that makes the same append with the same recorded-at time.
#[test]
fn failed_write_full_disk_and_short_write_leave_the_acknowledged_log() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    {
        let ledger = Ledger::open(&base).unwrap();
        for n in 0..4 {
            ledger.append_at(batch(n), Some(t(100))).unwrap();
        }
        assert_eq!(ledger.close().unwrap().index_warning, None);
    }
    // The bytes of append 4 as the writer produces them, from a twin (record bodies carry no ledger id).
    let twin = tmp.path().join("twin");
    copy_segments(&base, &twin);
    let twin_before = segment_bytes(&twin) as usize;
    {
        let probe = Injector::new(Plan::Off);
        let ledger = Ledger::open_with(&twin, options(Some(probe.clone()), DEFAULT_SEGMENT)).unwrap();
        ledger.append_at(batch(4), Some(at())).unwrap();
        let writes: Vec<usize> = probe
            .points()
            .iter()
            .filter(|p| p.0 == Kind::Write && p.1.file_name() != Some(ledger::source::HEAD_FILE.as_ref()))
            .map(|p| p.2)
            .collect();
        let twin_after = segment_bytes(&twin) as usize;
        assert_eq!(writes, vec![twin_after - twin_before], "one write of the whole append");
    }
    let live = std::fs::read_dir(twin.join(SEGMENTS_DIR)).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let full = std::fs::read(&live).unwrap();
    let append_bytes = full[full.len() - (segment_bytes(&twin) as usize - twin_before)..].to_vec();
    let len = append_bytes.len();

    let mut cases: Vec<(String, i32, Prefix)> =
        vec![("EIO".into(), EIO, Prefix::None), ("ENOSPC".into(), ENOSPC, Prefix::None)];
    for cut in [1, 8, 9, 20, len / 2, len - 1] {
        cases.push((
            format!("ENOSPC after {cut} of {len} real bytes"),
            ENOSPC,
            Prefix::Bytes(append_bytes[..cut].to_vec()),
        ));
    }
    cases.push((format!("EIO after {} zeros", len / 2), EIO, Prefix::Zeros(len / 2)));
    for (i, (what, errno, prefix)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        copy_segments(&base, &dir);
        let faults = Injector::new(Plan::Off);
        let ledger = Ledger::open_with(&dir, options(Some(faults.clone()), DEFAULT_SEGMENT)).unwrap();
        let before = ledger.head();
        let records = read_all(&ledger);
        let version = ledger.terminal(&sn("T2")).unwrap().unwrap().0;
        faults.arm(Plan::NextWrite(errno, prefix));
        match ledger.append_at(batch(4), Some(at())) {
            Err(AppendError::Io { path, source }) => {
                assert_eq!(source.raw_os_error(), Some(errno), "{what}: {source}");
                assert!(path.starts_with(dir.join(SEGMENTS_DIR)), "{what}: {}", path.display());
                let text = AppendError::Io { path, source }.to_string();
                assert!(text.contains(".seg"), "{what}: the error names the segment: {text}");
            }
            other => panic!("{what}: expected AppendError::Io, got {other:?}"),
        }
        assert_eq!(faults.fired(), Some((Kind::Write, errno)), "{what}");
        assert_eq!(
            ledger.terminal(&sn("T2")).unwrap().unwrap().0,
            version,
            "{what}: the failed append changed a stream"
        );
        check_after_failed_write(&ledger, &dir, before, &records, &what);
        drop(ledger);
        check_reopen(&dir, before, &records, &what);
    }
}

/// A failing fsync: the append is not acknowledged (`Poisoned`, naming the fsync), the head does not
/// move, readers of the open ledger see nothing new, and appends are refused. Its records were written
/// to the OS before the fsync, so a fresh reader of the folder, and the ledger reopened, may see the
/// append — whole (it is in the page cache; whether it reached the disk is unknown). The caller learns
/// the outcome by retrying with the same event ids: the retry is idempotent.
#[test]
fn failed_fsync_is_not_acknowledged_and_its_outcome_is_settled_by_an_idempotent_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let faults = Injector::new(Plan::Off);
    let ledger = Ledger::open_with(&dir, options(Some(faults.clone()), DEFAULT_SEGMENT)).unwrap();
    for n in 0..3 {
        ledger.append(batch(n)).unwrap();
    }
    let before = ledger.head();
    let records = read_all(&ledger);
    faults.arm(Plan::NextSync(EIO));
    match ledger.append(batch(3)) {
        Err(AppendError::Poisoned(why)) => assert!(matches!(why, WriterFailure::Sync { .. }), "{why}"),
        other => panic!("expected a refusal naming the fsync, got {other:?}"),
    }
    assert_eq!(ledger.head(), before);
    assert_eq!(read_all(&ledger), records);
    let mut sub = ledger.subscribe(before.size);
    assert!(sub.next_timeout(Duration::from_millis(20)).unwrap().is_none());
    assert!(matches!(ledger.append(batch(4)), Err(AppendError::Poisoned(_))));
    assert!(ledger.flush().is_err(), "flush after a failed fsync must fail too");
    let source = Source::open(&dir).unwrap();
    assert!(
        source.head.size == before.size || source.head.size == before.size + K,
        "a fresh reader sees {} records: part of an append",
        source.head.size
    );
    drop(ledger);

    let ledger = Ledger::open(&dir).unwrap();
    let size = ledger.head().size;
    assert!(size == before.size || size == before.size + K, "reopened with {size} records: part of an append");
    assert!(size >= before.size, "acknowledged records lost");
    check_script_log(&read_all(&ledger), size / K, "after reopen");
    let retry = ledger.append(batch(3)).unwrap();
    assert_eq!(retry.positions, (before.size..before.size + K).collect::<Vec<_>>());
    assert_eq!(retry.written, if size > before.size { 0 } else { K }, "the retry is idempotent");
    // batch(4) was refused before it was written: it is not in the log.
    assert_eq!(ledger.append(batch(4)).unwrap().written, K);
    check_script_log(&read_all(&ledger), 5, "after the retries");
}

/// A fault at every I/O point of a script of durable appends over small segments, so that sealing a
/// segment (trailer write, fsync) is among the points: writes fail plainly (EIO) or after leaving half
/// their length in zeros (ENOSPC), fsyncs fail (EIO). Every time the failing append gets a typed error,
/// every acknowledged append survives the reopen, the log holds whole appends only, and it goes on.
#[test]
fn a_fault_at_every_io_point_is_recovered() {
    const APPENDS: u64 = 14;
    const SEGMENT: u64 = 700;
    let tmp = tempfile::tempdir().unwrap();
    // A dry run lists the I/O points.
    let points = {
        let dir = tmp.path().join("dry");
        let probe = Injector::new(Plan::Off);
        let ledger = Ledger::open_with(&dir, options(Some(probe.clone()), SEGMENT)).unwrap();
        for n in 0..APPENDS {
            ledger.append(batch(n)).unwrap();
        }
        let points = probe.points();
        drop(ledger);
        assert!(std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().count() >= 4, "the script must seal segments");
        points
    };
    let mut cases = 0;
    let mut landed_after_failure = 0;
    for (n, (kind, path, _)) in points.iter().enumerate() {
        // HEAD is written after the group commit's fsync: a failure there leaves the append durable but
        // unacknowledged, like a failed fsync. Points before the first append are the open's own (the
        // new ledger's HEAD and segment).
        let on_head = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("HEAD"));
        let variants: &[(i32, bool)] = match kind {
            Kind::Write => &[(EIO, false), (ENOSPC, true)],
            Kind::Sync => &[(EIO, false)],
        };
        for &(errno, zeros) in variants {
            let what = format!("{kind:?} point {n} of {} (errno {errno}, zeros {zeros})", points.len());
            let dir = tmp.path().join(format!("case-{n}-{errno}"));
            let faults = Injector::new(Plan::Nth { n: n as u64, errno, zeros });
            let ledger = match Ledger::open_with(&dir, options(Some(faults.clone()), SEGMENT)) {
                Ok(ledger) => ledger,
                Err(e) => {
                    // A fault while the new ledger is created: nothing was acknowledged; the next open
                    // creates it and the script runs.
                    assert!(matches!(e, ledger::OpenError::Io { .. }), "{what}: {e}");
                    let ledger =
                        Ledger::open_with(&dir, options(None, SEGMENT)).unwrap_or_else(|e| panic!("{what}: {e}"));
                    for i in 0..APPENDS {
                        ledger.append(batch(i)).unwrap_or_else(|e| panic!("{what}: append {i}: {e}"));
                    }
                    check_script_log(&read_all(&ledger), APPENDS, &what);
                    drop(ledger);
                    std::fs::remove_dir_all(&dir).unwrap();
                    cases += 1;
                    continue;
                }
            };
            let mut acked = 0;
            let mut failed = None;
            for i in 0..APPENDS {
                match ledger.append(batch(i)) {
                    Ok(a) => {
                        assert_eq!(a.positions, (i * K..i * K + K).collect::<Vec<_>>(), "{what}");
                        acked = i + 1;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let failed = failed.unwrap_or_else(|| panic!("{what}: no append failed"));
            assert_eq!(faults.fired().map(|f| f.0), Some(*kind), "{what}");
            match &failed {
                AppendError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(errno), "{what}"),
                AppendError::Poisoned(why) => {
                    let named = matches!(why, WriterFailure::Sync { .. })
                        || (on_head && matches!(why, WriterFailure::Anchor { .. }));
                    assert!(named, "{what}: {why}")
                }
                other => panic!("{what}: not an I/O error: {other:?}"),
            }
            let before = ledger.head();
            assert_eq!(before.size, acked * K, "{what}: head");
            check_script_log(&read_all(&ledger), acked, &what);
            assert!(matches!(ledger.append(batch(acked + 1)), Err(AppendError::Poisoned(_))), "{what}");
            let source = Source::open(&dir).unwrap_or_else(|e| panic!("{what}: Source::open: {e}"));
            assert!(source.head.size == before.size || source.head.size == before.size + K, "{what}: reader");
            drop(ledger);

            let ledger = Ledger::open_with(&dir, options(None, SEGMENT)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let size = ledger.head().size;
            assert!(size == before.size || size == before.size + K, "{what}: reopened with {size} records");
            if *kind == Kind::Write && !on_head {
                assert_eq!(size, before.size, "{what}: a failed write left records");
            }
            landed_after_failure += u64::from(size > before.size);
            check_script_log(&read_all(&ledger), size / K, &what);
            // The client retries the failed append (idempotent), then the script goes on.
            for i in acked..APPENDS {
                ledger.append(batch(i)).unwrap_or_else(|e| panic!("{what}: append {i} after reopen: {e}"));
            }
            check_script_log(&read_all(&ledger), APPENDS, &what);
            drop(ledger);
            replay::verify::verify(&Source::open(&dir).unwrap(), &mut |_| {})
                .unwrap_or_else(|e| panic!("{what}: verify: {e}"));
            std::fs::remove_dir_all(&dir).unwrap();
            cases += 1;
        }
    }
    eprintln!(
        "a_fault_at_every_io_point_is_recovered: {} I/O points, {cases} cases, {landed_after_failure} failed appends found whole after reopen",
        points.len()
    );
}

/// Group commit: several threads append while an fsync fails. Each append is acknowledged or gets an
/// error; none is acknowledged after the failure; every acknowledged append is in the reopened log.
#[test]
fn an_fsync_failure_under_group_commit_fails_every_waiter_and_loses_no_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let faults = Injector::new(Plan::Nth { n: 60, errno: EIO, zeros: false });
    let ledger = Arc::new(Ledger::open_with(&dir, options(Some(faults.clone()), 4_096)).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut errors = 0;
                for i in 0..40u64 {
                    let n = 1_000 * (t + 1) + i;
                    match ledger.append(vec![issued(&format!("G{n}"), "M"), flow(&format!("G{n}"), 5)]) {
                        Ok(a) => {
                            assert_eq!(errors, 0, "an append was acknowledged after one failed");
                            acked.push((n, a.positions));
                        }
                        Err(AppendError::Io { .. } | AppendError::Poisoned(_)) => errors += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (acked, errors)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(faults.fired().is_some(), "the fault never fired");
    assert!(results.iter().all(|(_, errors)| *errors > 0), "every thread must see the failure");
    let acked_head = ledger.head();
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    assert!(ledger.head().size >= acked_head.size);
    assert_eq!(ledger.root_at(acked_head.size).unwrap(), acked_head.root, "the acknowledged head is a prefix");
    let records = read_all(&ledger);
    for (acked, _) in &results {
        for (n, positions) in acked {
            let sn = format!("G{n}");
            for (i, p) in positions.iter().enumerate() {
                let want = if i == 0 { issued(&sn, "M") } else { flow(&sn, 5) };
                assert_eq!(records[*p as usize].event, want.event, "acknowledged {sn} at {p}");
            }
        }
    }
    assert!(records.last().is_none_or(|r| r.commit), "the log ends inside an append");
}

/// Bug found: in relaxed mode, after `flush` failed (its fsync), appends were still written to the
/// segment and then refused with `Poisoned` — each "refused" append came back after a reopen. A refused
/// append must write nothing.
#[test]
fn append_after_a_failed_flush_is_refused_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let faults = Injector::new(Plan::Off);
    let relaxed = Options { durability: Durability::Relaxed, ..options(Some(faults.clone()), 1 << 20) };
    let ledger = Ledger::open_with(&dir, relaxed).unwrap();
    ledger.append(batch(0)).unwrap();
    ledger.flush().unwrap();
    ledger.append(batch(1)).unwrap();
    faults.arm(Plan::NextSync(EIO));
    assert!(ledger.flush().is_err());
    let len = segment_bytes(&dir);
    match ledger.append(batch(2)) {
        Err(AppendError::Poisoned(_)) => {}
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert_eq!(segment_bytes(&dir), len, "the refused append was written");
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    assert!(ledger.head().size <= 2 * K, "a refused append is in the log: {} records", ledger.head().size);
}

/// Bug found: after an append's fsync failed, `flush` fsynced again, succeeded (on Linux a second fsync
/// can report success though the failed pages never reached the disk) and published the unacknowledged
/// append: readers saw it and the HEAD file named it. `flush` must refuse once an fsync has failed.
#[test]
fn flush_after_a_failed_fsync_does_not_publish_the_unsynced_append() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let faults = Injector::new(Plan::Off);
    let ledger = Ledger::open_with(&dir, options(Some(faults.clone()), DEFAULT_SEGMENT)).unwrap();
    ledger.append(batch(0)).unwrap();
    let before = ledger.head();
    faults.arm(Plan::NextSync(EIO));
    assert!(ledger.append(batch(1)).is_err());
    assert!(matches!(ledger.flush(), Err(AppendError::Poisoned(_))), "flush after a failed fsync");
    assert_eq!(ledger.head(), before, "the unsynced append was published");
    assert_eq!(read_all(&ledger).len() as u64, before.size);
    assert_eq!(ledger::source::read_head(&dir), Some(before), "the HEAD file names the unsynced append");
}

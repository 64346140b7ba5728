//! Hostile input, proptest-driven: the record decoder (`ledger::codec::decode_record`), the bundle reader
//! (`ledger::Source::open` + `records`, and `replay::verify`), and the NDJSON parser
//! (`replay::ndjson::parse_line`, and `posledger::ops::read_ndjson` for raw bytes). Every input gets a
//! clear error or a valid value: never a panic, a hang or an unbounded allocation.
//!
//! Memory: the test binary runs under a global allocator that records the largest single allocation
//! request. A decoder that trusted a length prefix (4 GiB, `u64::MAX`) would ask for it — on Linux such a
//! request may even succeed without touching memory, so only counting catches it — and the tests assert
//! that no request ever exceeded [`LARGEST_ALLOWED`].
//!
//! `POSLEDGER_FUZZ_CASES` multiplies the proptest case counts (default 1; e.g. 20 for a long run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::codec::{decode_record, MAX_RECORD_BYTES};
use ledger::merkle::Frontier;
use ledger::segment::{push_frame, FileKind, Header, Trailer};
use ledger::{Ledger, Record, Source};
use proptest::prelude::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

/// No single allocation may be larger than this: 16 × the 1 MiB record and line limits.
const LARGEST_ALLOWED: usize = 16 << 20;

#[allow(unsafe_code)]
mod probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The largest single allocation (or reallocation) requested so far.
    pub static LARGEST: AtomicUsize = AtomicUsize::new(0);

    /// The system allocator, recording request sizes.
    pub struct Probe;

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
            // SAFETY: same contract as ours.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static GLOBAL: probe::Probe = probe::Probe;

fn assert_memory_bounded(what: &str) {
    let largest = probe::LARGEST.load(Ordering::Relaxed);
    assert!(largest <= LARGEST_ALLOWED, "{what}: an allocation of {largest} bytes was requested");
}

fn cases(base: u32) -> ProptestConfig {
    let factor: u32 = std::env::var("POSLEDGER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    ProptestConfig { cases: base * factor.max(1), failure_persistence: None, ..ProptestConfig::default() }
}

/// A small real log: its record bodies (as stored) and decoded records, built once.
struct Fixture {
    bodies: Vec<Vec<u8>>,
    records: Vec<Record>,
    bundle: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&tmp.path().join("l")).unwrap();
        ledger.append(vec![issued("SN1", "LKL-A8"), issued("SN2", "PAX-A920")]).unwrap();
        ledger.append(vec![flow("SN1", 6_000), flow("SN1", 4_000), activated("SN1")]).unwrap();
        ledger.append(vec![flagged("SN2", ledger::FlagReason::CashOut)]).unwrap();
        ledger.stop_models(directive("D-1", &["PAX-A920"]), None).unwrap();
        ledger.append(vec![issued_with("SN3", "LKL-A8", Some("SN2")), replaced("SN2", "SN3")]).unwrap();
        let head = ledger.head();
        let mut frames = ledger.frames(0, head.size);
        let mut bodies = Vec::new();
        while let Some((_, body, _)) = frames.next_frame().unwrap() {
            bodies.push(body.to_vec());
        }
        let records = ledger.read_from(0).collect::<Result<Vec<_>, _>>().unwrap();
        let bundle = bundle_of(&bodies);
        Fixture { bodies, records, bundle }
    })
}

/// The bytes of a bundle holding these record bodies (docs/FORMAT.md).
fn bundle_of(bodies: &[Vec<u8>]) -> Vec<u8> {
    let header = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id: 42 };
    let mut bytes = header.encode().to_vec();
    let mut frontier = Frontier::new();
    for body in bodies {
        push_frame(&mut bytes, body);
        frontier.push_leaf(body);
    }
    Trailer::new(bodies.len() as u64, &frontier).encode(&mut bytes);
    bytes
}

/// Opens and reads a bundle file the ways a regulator would. Returns the records read before the first
/// error, whether every step succeeded, and the verify outcome. Panics propagate (a panic is a failure).
fn read_bundle(path: &Path) -> (Vec<Record>, bool, Result<(), String>) {
    let Ok(source) = Source::open(path) else { return (Vec::new(), false, Err("open".into())) };
    let mut read = Vec::new();
    let mut clean = true;
    for record in source.records(0) {
        match record {
            Ok(record) => read.push(record),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("position") || text.contains("offset"), "error without a position: {text}");
                clean = false;
                break;
            }
        }
    }
    let verified = replay::verify::verify(&source, &mut |_| {}).map(|_| ()).map_err(|e| e.to_string());
    (read, clean, verified)
}

// ---------------------------------------------------------------------------------------------------------
// Record decoder
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(3_000))]

    /// Random bytes, with the format byte 1 most of the time so bincode gets to see them.
    #[test]
    fn decoder_survives_random_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), v1 in any::<bool>()) {
        if v1 && !bytes.is_empty() {
            bytes[0] = 1;
        }
        if let Ok(record) = decode_record(&bytes) {
            // Anything accepted is a valid record.
            prop_assert!(record.event.validate().is_ok());
        }
    }

    /// Valid bodies with bits flipped, bytes overwritten (0xFF runs make huge varints), cut or extended.
    #[test]
    fn decoder_survives_mutated_bodies(
        which in 0usize..16,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let f = fixture();
        let mut body = f.bodies[which % f.bodies.len()].clone();
        for (at, byte, how) in edits {
            let i = at.index(body.len());
            match how {
                0 => body[i] ^= 1 << (byte % 8),
                1 => body[i] = byte,
                2 => body[i..].iter_mut().take(9).for_each(|b| *b = 0xFF),
                _ => body.insert(i, byte),
            }
        }
        if let Some(cut) = cut {
            body.truncate(cut.index(body.len() + 1));
        }
        if let Ok(record) = decode_record(&body) {
            prop_assert!(record.event.validate().is_ok());
        }
    }
}

/// Length fields that claim 4 GiB, `u64::MAX`, or just more than the body: an error, not an allocation.
#[test]
fn decoder_refuses_huge_lengths_without_allocating_them() {
    let f = fixture();
    // Record 0: `position 0 | version 0 | event_id None | recorded_at | commit | event`. Its event is a
    // terminal event whose first field is the SN string: a varint length, then the bytes.
    let body = &f.bodies[0];
    let sn_at = body.windows(4).position(|w| w == b"\x03SN1").unwrap();
    for (what, varint) in [
        ("u32::MAX", vec![0xFC, 0xFF, 0xFF, 0xFF, 0xFF]),
        ("4 GiB", vec![0xFD, 0, 0, 0, 0, 1, 0, 0, 0]),
        ("u64::MAX", vec![0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ("u128 marker", vec![0xFE; 17]),
        ("2 MiB", vec![0xFC, 0, 0, 0x20, 0]),
        ("200 bytes", vec![0xFB, 200, 0]),
    ] {
        let mut bad = body[..sn_at].to_vec();
        bad.extend(&varint);
        bad.extend(&body[sn_at + 1..]);
        let error = decode_record(&bad).expect_err(what);
        assert!(!error.to_string().is_empty(), "{what}");
    }
    // The same through the `Vec` of a directive's models (a length-prefixed sequence).
    let d = f.records.iter().position(|r| matches!(r.event, ledger::Event::Directive(_))).unwrap();
    let body = &f.bodies[d];
    let models_at = body.windows(9).position(|w| w == b"\x01\x08PAX-A92").unwrap();
    let mut bad = body[..models_at].to_vec();
    bad.extend([0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    bad.extend(&body[models_at + 1..]);
    assert!(decode_record(&bad).is_err());
    // A body over the limit is refused before decoding.
    let mut big = vec![1u8; MAX_RECORD_BYTES + 1];
    big[0] = 1;
    assert!(matches!(decode_record(&big), Err(ledger::codec::CodecError::TooLarge { .. })));
    assert_memory_bounded("decoder");
}

// ---------------------------------------------------------------------------------------------------------
// Bundle reader
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(400))]

    /// Random damage to a bundle: bits flipped, bytes overwritten, a cut. Reading gives a prefix of the
    /// true records and then an error with a position — never a wrong record — and `replay verify`
    /// refuses every changed bundle.
    #[test]
    fn bundle_reader_survives_damage(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..5),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let f = fixture();
        let mut bytes = f.bundle.clone();
        for (at, byte, flip) in edits {
            let i = at.index(bytes.len());
            if flip { bytes[i] ^= 1 << (byte % 8) } else { bytes[i] = byte }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.bundle");
        std::fs::write(&path, &bytes).unwrap();
        let (read, _, verified) = read_bundle(&path);
        prop_assert_eq!(&read[..], &f.records[..read.len()], "a damaged bundle read as other records");
        if bytes != f.bundle {
            prop_assert!(verified.is_err(), "replay verify accepted a changed bundle");
        } else {
            prop_assert!(verified.is_ok());
        }
    }

    /// Length prefixes that claim up to 4 GiB, at a frame boundary, in a bundle's trailer fields, or in
    /// its trailer length: an error naming the offset, no allocation of that size.
    #[test]
    fn bundle_reader_refuses_huge_length_prefixes(frame in 0usize..16, len in prop_oneof![
        Just(u32::MAX - 1), Just(u32::MAX >> 1), Just((MAX_RECORD_BYTES + 1) as u32), 1u32..u32::MAX
    ], field in 0usize..3) {
        let f = fixture();
        let mut bytes = f.bundle.clone();
        let end = bytes.len();
        match field {
            // A frame's length prefix.
            0 => {
                let mut at = ledger::segment::HEADER_LEN;
                for body in f.bodies.iter().take(frame % f.bodies.len()) {
                    at += 8 + body.len();
                }
                bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            // The trailer length at the end of the file.
            1 => bytes[end - 4..].copy_from_slice(&len.to_le_bytes()),
            // The trailer's frontier count (n ≤ 64) and record count.
            _ => {
                let trailer_len = u32::from_le_bytes(bytes[end - 4..].try_into().unwrap()) as usize;
                let t = end - trailer_len;
                bytes[t + 52] = (len % 256) as u8;
                bytes[t + 4..t + 12].copy_from_slice(&(u64::from(len) << 32).to_le_bytes());
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("huge.bundle");
        std::fs::write(&path, &bytes).unwrap();
        let (read, clean, verified) = read_bundle(&path);
        prop_assert_eq!(&read[..], &f.records[..read.len()]);
        if bytes != f.bundle {
            prop_assert!(!clean || verified.is_err());
            prop_assert!(verified.is_err());
        }
        assert_memory_bounded("bundle length prefixes");
    }
}

/// An oversize record (a frame of 1 MiB + 1 bytes with a valid CRC) and a bundle made of nothing but a
/// header and a 4 GiB length prefix: refused with the offset.
#[test]
fn oversize_records_in_a_bundle_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture();
    let header = Header { kind: FileKind::Bundle, seq: 0, first_position: 0, ledger_id: 42 };
    let mut bytes = header.encode().to_vec();
    let body = vec![1u8; MAX_RECORD_BYTES + 1];
    bytes.extend((body.len() as u32).to_le_bytes());
    bytes.extend(crc32c::crc32c(&body).to_le_bytes());
    bytes.extend(&body);
    let mut frontier = Frontier::new();
    frontier.push_leaf(&body);
    Trailer::new(1, &frontier).encode(&mut bytes);
    let path = tmp.path().join("oversize.bundle");
    std::fs::write(&path, &bytes).unwrap();
    let (read, clean, verified) = read_bundle(&path);
    assert!(read.is_empty() && !clean, "an oversize record was read");
    let error = verified.unwrap_err();
    assert!(error.contains("offset 40") || error.contains("position 0"), "{error}");

    let mut bytes = header.encode().to_vec();
    bytes.extend(u32::MAX.to_le_bytes());
    bytes.extend([0u8; 4]);
    let path = tmp.path().join("prefix-only.bundle");
    std::fs::write(&path, &bytes).unwrap();
    assert!(Source::open(&path).is_err());
    // A valid bundle with its first frame's length raised to 4 GiB - 2.
    let mut bytes = f.bundle.clone();
    bytes[40..44].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (read, clean, verified) = read_bundle(&path);
    assert!(read.is_empty() && !clean);
    assert!(verified.unwrap_err().contains("offset 40"));
    assert_memory_bounded("oversize records");
}

// ---------------------------------------------------------------------------------------------------------
// NDJSON
// ---------------------------------------------------------------------------------------------------------

const VALID_LINES: [&str; 6] = [
    r#"{"device":"SN1","type":"issued","at":"2026-01-05T08:00:00Z","model":"LKL-A8","merchant":"M001","provider":"lakala","region":"310000","contract":{"id":"C1","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}}"#,
    r#"{"device":"SN1","type":"flow","at":"2026-01-06T08:00:00Z","amount_fen":5000,"transactions":3}"#,
    r#"{"device":"SN1","type":"activated","at":"2026-01-07T08:00:00Z","event_id":"e-1","expected_version":2}"#,
    r#"{"device":"SN1","type":"flagged","at":"2026-01-08T08:00:00Z","reason":"cash_out","note":"n"}"#,
    r#"{"device":"SN1","type":"stopped","at":"2026-01-09T08:00:00Z","reason":"model_recall","directive":"D-2026-07"}"#,
    r#"{"type":"directive","id":"D-2026-07","at":"2026-01-09T00:00:00Z","models":["LKL-A8","PAX-A920"],"reason":"r","deadline":"2026-02-01T00:00:00Z"}"#,
];

#[test]
fn the_valid_lines_parse() {
    for line in VALID_LINES {
        replay::ndjson::parse_line(line).unwrap();
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn ndjson_survives_random_text(line in "\\PC{0,400}") {
        let _ = replay::ndjson::parse_line(&line);
    }

    /// Valid lines with JSON-ish fragments spliced in, characters deleted or replaced.
    #[test]
    fn ndjson_survives_mutated_lines(
        which in 0usize..VALID_LINES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, prop_oneof![
            Just("[".to_owned()), Just("{".to_owned()), Just("\"".to_owned()), Just("null".to_owned()),
            Just("-1".to_owned()), Just("1e999".to_owned()), Just("18446744073709551616".to_owned()),
            Just("\\u0000".to_owned()), Just("\\ud800".to_owned()), Just("[[[[[[[[".to_owned()),
            "\\PC{0,8}",
        ]), 1..6),
    ) {
        let mut line: Vec<char> = VALID_LINES[which].chars().collect();
        for (at, how, text) in edits {
            let i = at.index(line.len() + 1);
            match how {
                0 => { line.splice(i..i, text.chars()); }
                1 if i < line.len() => { line.remove(i); }
                2 if i < line.len() => { line.splice(i..i + 1, text.chars()); }
                _ => line.truncate(i),
            }
        }
        let line: String = line.into_iter().collect();
        if let Ok(event) = replay::ndjson::parse_line(&line) {
            prop_assert!(event.event.validate().is_ok());
        }
    }

    /// Raw bytes, not necessarily UTF-8, through the reader of `posledger append`: an error names the
    /// input and line, or the events parse.
    #[test]
    fn ndjson_reader_survives_raw_bytes(lines in proptest::collection::vec(prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (0usize..VALID_LINES.len(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(w, at, b)| {
            let mut bytes = VALID_LINES[w].as_bytes().to_vec();
            let i = at.index(bytes.len());
            bytes[i] = b;
            bytes
        }),
    ], 1..6)) {
        let mut input = Vec::new();
        for line in &lines {
            input.extend(line);
            input.push(b'\n');
        }
        match posledger::ops::read_ndjson(&mut &input[..], "input", &mut |_| {}) {
            Ok(parsed) => prop_assert_eq!(parsed.events.len(), parsed.lines.len()),
            Err(e) => prop_assert!(e.to_string().starts_with("input"), "{}", e),
        }
    }
}

#[test]
fn ndjson_deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200usize, 10_000, 400_000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let line = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            if line.len() > replay::ndjson::MAX_LINE_BYTES {
                assert!(matches!(replay::ndjson::parse_line(&line), Err(replay::ndjson::LineError::TooLong { .. })));
                continue;
            }
            let error = replay::ndjson::parse_line(&line).unwrap_err();
            assert!(error.to_string().contains("recursion limit"), "depth {depth}: {error}");
        }
        // Nested inside a field of a valid event.
        let line = VALID_LINES[1].replace("5000", &format!("{}5000{}", "[".repeat(depth), "]".repeat(depth)));
        assert!(replay::ndjson::parse_line(&line).is_err(), "depth {depth}");
    }
    assert_memory_bounded("deep nesting");
}

#[test]
fn ndjson_huge_lines_are_refused_with_bounded_memory() {
    let max = replay::ndjson::MAX_LINE_BYTES;
    // Just over the limit, as a string: refused before parsing.
    let line = format!("{{\"device\":\"{}\"}}", "A".repeat(max));
    assert!(matches!(replay::ndjson::parse_line(&line), Err(replay::ndjson::LineError::TooLong { .. })));
    // A valid event whose note is too long, and a directive with too many models: field errors.
    let note = VALID_LINES[3].replace("\"n\"", &format!("\"{}\"", "x".repeat(5_000)));
    assert!(replay::ndjson::parse_line(&note).unwrap_err().to_string().contains("note"));
    let models: Vec<String> = (0..10_001).map(|i| format!("\"M{i}\"")).collect();
    let directive = VALID_LINES[5].replace(r#"["LKL-A8","PAX-A920"]"#, &format!("[{}]", models.join(",")));
    assert!(replay::ndjson::parse_line(&directive).is_err());
    drop((line, note, directive, models));
    // 64 MiB without a newline through the reader: refused at line 1 after reading at most a line's limit
    // (the input is produced on the fly, so only the reader's own buffer could grow).
    let mut endless = std::io::BufReader::new(std::io::Read::take(std::io::repeat(b'a'), 64 << 20));
    let error = posledger::ops::read_ndjson(&mut endless, "endless", &mut |_| {}).unwrap_err();
    assert!(error.to_string().starts_with("endless:1"), "{error}");
    assert_memory_bounded("huge lines");
}

#[test]
fn ndjson_wrong_types_name_the_field() {
    for (from, to, field) in [
        ("\"amount_fen\":5000", "\"amount_fen\":\"5000\"", "amount_fen"),
        ("\"amount_fen\":5000", "\"amount_fen\":-5", "amount_fen"),
        ("\"amount_fen\":5000", "\"amount_fen\":1.5", "amount_fen"),
        ("\"amount_fen\":5000", "\"amount_fen\":99999999999999999999", "amount_fen"),
        ("\"transactions\":3", "\"transactions\":[3]", "transactions"),
        ("\"device\":\"SN1\"", "\"device\":1", "device"),
        ("\"device\":\"SN1\"", "\"device\":null", "device"),
        ("\"device\":\"SN1\"", "\"device\":\"S N\"", "device"),
        ("\"at\":\"2026-01-06T08:00:00Z\"", "\"at\":20260106", "at"),
        ("\"at\":\"2026-01-06T08:00:00Z\"", "\"at\":\"yesterday\"", "at"),
        ("\"type\":\"flow\"", "\"type\":7", "type"),
        ("\"type\":\"flow\"", "\"type\":\"flowz\"", "flowz"),
    ] {
        let line = VALID_LINES[1].replace(from, to);
        assert_ne!(line, VALID_LINES[1]);
        let error = replay::ndjson::parse_line(&line).expect_err(&line).to_string();
        assert!(error.contains(field), "{line}: {error}");
    }
    for (line, what) in [("", "empty"), ("[]", "array"), ("\"x\"", "string"), ("null", "null"), ("{}", "type")] {
        let error = replay::ndjson::parse_line(line).expect_err(what).to_string();
        assert!(!error.is_empty(), "{what}");
    }
    let models = VALID_LINES[5].replace(r#"["LKL-A8","PAX-A920"]"#, "\"LKL-A8\"");
    assert!(replay::ndjson::parse_line(&models).unwrap_err().to_string().contains("models"));
}

/// Invalid UTF-8 in the middle of a line: the reader names the line.
#[test]
fn ndjson_non_utf8_names_the_line() {
    let mut input = format!("{}\n", VALID_LINES[0]).into_bytes();
    input.extend(b"{\"device\":\"SN\xff\xfe\"}\n");
    let error = posledger::ops::read_ndjson(&mut &input[..], "in.ndjson", &mut |_| {}).unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("in.ndjson:2") && text.contains("UTF-8"), "{text}");
}

/// After all the tests of this file (they run in one process): no allocation ever exceeded the bound.
#[test]
fn zz_no_allocation_exceeded_the_bound() {
    let _ = fixture();
    assert_memory_bounded("the whole test binary so far");
    eprintln!("largest single allocation: {} bytes", probe::LARGEST.load(Ordering::Relaxed));
}

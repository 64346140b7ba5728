//! Any bytes as an NDJSON line: an event or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(line) = std::str::from_utf8(bytes) {
        let _ = replay::ndjson::parse_line(line);
    }
});

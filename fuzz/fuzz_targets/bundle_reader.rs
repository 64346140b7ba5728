//! Any bytes as a bundle file: opening and reading every record must end in records or a clear error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("fuzz.plb");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    if let Ok(source) = ledger::Source::open(&path) {
        for record in source.records(0) {
            if record.is_err() {
                break;
            }
        }
        let _ = replay::verify::verify(&source, &mut |_| {});
    }
});

//! `BundleWriter`: a finished bundle reads back whole; an unfinished one leaves nothing behind.

use ledger::source::Source;
use ledger::{BundleError, BundleWriter};

#[test]
fn a_finished_bundle_reads_back_and_an_unfinished_one_leaves_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("b.plb");
    let mut writer = BundleWriter::create(&out, 7)?;
    writer.push(b"not a record, but framed and hashed all the same")?;
    writer.push(b"second")?;
    assert!(matches!(writer.push(&[]), Err(BundleError::BadRecord { position: 2, len: 0 })));
    let written = writer.finish()?;
    assert_eq!(written.records, 2);
    assert_eq!(written.bytes, std::fs::metadata(&out)?.len());
    let source = Source::open(&out)?;
    assert_eq!((source.head.size, source.head.root), (2, written.root));
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);

    let abandoned = dir.path().join("c.plb");
    let mut writer = BundleWriter::create(&abandoned, 7)?;
    writer.push(b"x")?;
    drop(writer);
    assert!(!abandoned.exists());
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1, "no temporary file is left behind");
    Ok(())
}

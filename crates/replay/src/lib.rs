//! replay: the regulators' tool; has no write path.

pub mod ndjson;

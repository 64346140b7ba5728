//! # posledger-interchange: the formats both CLIs speak
//!
//! Below the operator's `posledger` and the regulators' `replay`, so that neither depends on the other
//! for them: NDJSON events both ways ([`ndjson`], docs/NDJSON.md), the `--out` files a user names
//! ([`output`], docs/CLI.md), and how counts and CSV fields are written for people and spreadsheets
//! ([`text`]).

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod ndjson;
pub mod output;
pub mod text;

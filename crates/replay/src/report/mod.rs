//! `replay report`: the regulator's audit report, one self-contained HTML file (inline SVG and CSS,
//! no script, nothing fetched), byte for byte the same for the same input and options.
//!
//! [`data`] folds the log once ([`projections::stream`]) and gathers every number; [`svg`] draws the
//! charts; [`html`] writes the page, escaping every string that comes from the data. docs/REPORT.md
//! says what each chart shows and which projection it comes from.

pub mod data;
mod html;
mod svg;

use crate::error::Error;
use chrono::{DateTime, Utc};
use log::Source;
use projections::AuditConfig;

/// Default number of models listed by name in the table by model (the rest are summed).
pub const DEFAULT_TOP_MODELS: usize = 15;
/// Default number of example terminals listed per audit rule.
pub const DEFAULT_EXAMPLES: usize = 5;
/// Most models or examples a report lists by name.
pub const MAX_LISTED_NAMES: usize = 1_000;

/// What to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// Fold every record recorded at or before this time (`None`: the whole log).
    pub as_of: Option<DateTime<Utc>>,
    /// The time the report says it was made (`None`: the last recorded_at folded).
    pub generated_at: Option<DateTime<Utc>>,
    /// The audit rules' settings.
    pub audit: AuditConfig,
    /// Models listed by name in the table by model (1 to [`MAX_LISTED_NAMES`]).
    pub top_models: usize,
    /// Example terminals per rule (0 to [`MAX_LISTED_NAMES`]).
    pub examples: usize,
    /// Lines naming the signed checkpoints the source was verified against (the caller checked them).
    pub checkpoints: Vec<String>,
    /// How the `replay device` commands in the report name SOURCE.
    pub source_arg: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            as_of: None,
            generated_at: None,
            audit: AuditConfig::default(),
            top_models: DEFAULT_TOP_MODELS,
            examples: DEFAULT_EXAMPLES,
            checkpoints: Vec::new(),
            source_arg: "SOURCE".into(),
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The log has no record.
    #[error("the log is empty: there is nothing to report")]
    Empty,
    /// `--as-of` is before the first record.
    #[error("--as-of {as_of} is before the first record (recorded at {first})")]
    AsOfBeforeFirstRecord {
        /// The time asked for.
        as_of: DateTime<Utc>,
        /// recorded_at of the first record.
        first: DateTime<Utc>,
    },
    /// The log spans more months than a report charts.
    #[error("the records span more than {max} months, more than one report charts")]
    TooManyMonths {
        /// The limit.
        max: usize,
    },
    /// An option is out of range.
    #[error("{0}")]
    Options(String),
}

/// Gathers the report of `source` and renders it as HTML (`progress` gets the records folded).
pub fn report(source: &Source, options: &ReportOptions, progress: &mut dyn FnMut(u64)) -> Result<String, Error> {
    if options.top_models == 0 || options.top_models > MAX_LISTED_NAMES || options.examples > MAX_LISTED_NAMES {
        return Err(ReportError::Options(format!(
            "--top-models must be 1 to {MAX_LISTED_NAMES} and --examples 0 to {MAX_LISTED_NAMES}"
        ))
        .into());
    }
    let data = data::gather(source, options, progress)?;
    Ok(html::render(&data, options))
}

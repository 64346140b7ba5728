//! A deterministic fleet simulator: a realistic acquirer's POS fleet, month by month.
//!
//! The same [`Config`] always yields the same events in the same order, with the same recorded-at
//! times (taken from the simulated clock, never the wall clock), so the same arguments give the same
//! Merkle root. Randomness comes from a small hand-written [`SplitMix64`] generator seeded by
//! `Config::seed`; every draw is integer arithmetic, so there is no float rounding to differ.
//!
//! The simulator keeps its own copy of every terminal's lifecycle [`State`] and checks each decision
//! with [`log::lifecycle::apply`] (the one copy of the rules) before emitting it, so it emits only
//! legal decisions; a planned decision that has become illegal (a flag clear after the terminal was
//! replaced, say) is simply dropped.
//!
//! # The fleet and its distributions
//!
//! (of [`Shape::Standard`]; [`Shape::IssueHeavy`] changes the flow and flag rates and the notes, as it says)
//!
//! - **Time.** The clock starts at 2025-01-01T00:00:00Z and runs `months` calendar months. A terminal
//!   event happens at a uniformly random second of its month (never in the first two hours, which belong
//!   to directives). Events are sorted by time within each month and appended in batches of about
//!   `batch_events` events; a batch is recorded at the time of its last event.
//! - **Terminals.** `devices` terminals are issued (replacements come on top, about 3%): 35% in month 0,
//!   the rest spread evenly over the first two thirds of the run. SNs are the provider's prefix and ten
//!   digits (`LKL0000001234`); merchants `M` and eight digits, about 1.4 terminals per merchant.
//! - **Models.** 2,400 model codes (`PAX-A07`: six vendors × 400), popularity falling with rank as
//!   1/(rank + 20). Every 12th rank from rank 5 — 196 models, popular and rare alike — is recalled.
//! - **Providers** (acquirers), by share: lakala 30%, shengfutong 18%, ruiyinxin 14%, yinsheng 12%,
//!   hkrt 10%, sumpay 9%, lianlian 7%.
//! - **Regions.** 6-digit GB/T 2260 district codes: one of 24 big cities' prefixes plus a district 01–18.
//! - **Flow.** 82% of terminals are busy: a monthly volume log-uniform between 300 and 300,000 yuan, in
//!   one settlement total a month (a second one with 15% chance), each 50%–150% of its share. 5% trickle
//!   (20–60 yuan in 70% of months) and reach 100 yuan after a few months. 13% are dormant: 60% of them
//!   never transact, 40% report a few yuan now and then, never reaching 100 yuan. So about 85% of
//!   terminals reach 100 yuan of flow and are **activated** 1–48 hours after the flow that crosses it.
//! - **Contracts** last 12 months (70%) or 24 months (30%). Twenty days before the end: 72% are renewed
//!   for 12 months (1–15 days before the end); the rest **expire** (an observation). After an expiry,
//!   55% are stopped for `contract_expired` 1–10 days later, 15% are renewed late (5–30 days), and 30%
//!   stay as they are: most of those stop transacting, but 10% keep going (*flow on an expired
//!   contract*, a violation).
//! - **Flags.** Each running terminal is flagged with probability 0.5% a month, by reason: cash_out 30%,
//!   relocation 20%, code_jumping 20%, abnormal_volume 18%, other 12%. 60% are cleared after 3–40
//!   days, 25% lead to a stop for `violation` 1–10 days later (20% of those terminals are replaced), 15%
//!   stay open. In the month before the directive, 25% of the running terminals of recalled models are
//!   flagged `certificate_revoked`; those flags stay open.
//! - **The directive.** At the start of month `months × 7 / 12` (month 14 of 24; none if `months < 2`)
//!   one emergency-stop directive (`D-2026-03` for the default run) recalls the 196 models, deadline 30
//!   days later, and stops every running terminal of those models in one atomic append
//!   ([`ledger::Ledger::stop_models`]). 55% of the stopped terminals are replaced 3–45 days later.
//!   **Missed:** after the directive, a new terminal that draws a recalled model is redrawn 96% of the
//!   time; the other 4% are issued anyway by an operator who missed the order, and 40% of those are
//!   stopped under the directive 60–150 days later (past its deadline), the rest never.
//! - **Other stops.** Each month a running terminal is upgraded with probability 0.12% (stopped for
//!   `upgrade` and replaced in the same append: stop, `replaced`, `issued` with `replaces`) and stopped
//!   at the merchant's request with probability 0.12%.
//! - **Violations for the audits.** Besides dormant terminals and flow on expired contracts, 3% of
//!   stopped terminals keep reporting flow for 30–75 days (*flow after a stop*, or after replacement).

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use ledger::{AppendError, Ledger};
use log::lifecycle::{self, ContractState, DirectiveLookup, State, Status};
use log::model::FieldError;
use log::{
    AppendEvent, Contract, ContractId, DeviceEvent, Directive, DirectiveId, Event, FlagReason, Issued, MerchantId,
    ModelCode, ProviderId, RegionCode, Sn, StopReason, TerminalEvent, Text,
};
use std::collections::VecDeque;

/// Number of model codes in the simulated market.
pub const MODEL_COUNT: usize = 2_400;
/// Number of models the emergency-stop directive recalls.
pub const RECALLED_MODELS: usize = 196;
/// The most terminals one run may issue (bounds memory: about 200 bytes per terminal).
pub const MAX_DEVICES: u64 = 10_000_000;
/// The longest run, in months.
pub const MAX_MONTHS: u32 = 240;
/// The largest batch (one append).
pub const MAX_BATCH_EVENTS: usize = 1_000_000;
/// Records a terminal makes over 24 months, about (the demo: 1,963,643 records for 100,000 terminals);
/// [`Config::about_events`] sizes a fleet by it.
pub const EVENTS_PER_DEVICE_24_MONTHS: u64 = 19;
/// The same for [`Shape::IssueHeavy`] (160,000 terminals: about 1.3 M records).
pub const EVENTS_PER_DEVICE_ISSUE_HEAVY: u64 = 8;

const RECALL_STRIDE: usize = 12;
const RECALL_OFFSET: usize = 5;
const VENDORS: [&str; 6] = ["PAX", "NLD", "CTM", "LDI", "SZT", "XGD"];
const SERIES: [char; 8] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'];
/// (provider id, SN prefix, share in percent).
const PROVIDERS: [(&str, &str, u64); 7] = [
    ("lakala", "LKL", 30),
    ("shengfutong", "SFT", 18),
    ("ruiyinxin", "RYX", 14),
    ("yinsheng", "YSP", 12),
    ("hkrt", "HKR", 10),
    ("sumpay", "SMP", 9),
    ("lianlian", "LLP", 7),
];
/// City prefixes (GB/T 2260); a district 01..=18 is added.
const CITIES: [u32; 24] = [
    110100, 120100, 310100, 500100, 440100, 440300, 330100, 320500, 320100, 510100, 420100, 610100, 370200, 350200,
    430100, 410100, 210100, 230100, 530100, 450100, 340100, 360100, 130100, 140100,
];
/// Flag reasons raised by risk control (certificate_revoked comes only before the directive), weights in %.
const FLAG_REASONS: [(FlagReason, u64); 5] = [
    (FlagReason::CashOut, 30),
    (FlagReason::Relocation, 20),
    (FlagReason::CodeJumping, 20),
    (FlagReason::AbnormalVolume, 18),
    (FlagReason::Other, 12),
];
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Terminals issued (replacements come on top). 1..=[`MAX_DEVICES`].
    pub devices: u64,
    /// Calendar months simulated from 2025-01. 1..=[`MAX_MONTHS`].
    pub months: u32,
    /// Seed of the random generator: same seed, same fleet.
    pub seed: u64,
    /// Events per append, about (a replacement is never split). 1..=[`MAX_BATCH_EVENTS`].
    pub batch_events: usize,
    /// What the fleet looks like ([`Shape::Standard`]: the fleet described above).
    pub shape: Shape,
}

/// The shape of a simulated fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shape {
    /// The fleet described in the module documentation: about 19 records a terminal over 24 months,
    /// most of them monthly flow.
    #[default]
    Standard,
    /// Many terminals with few events each, and more of them issues: a busy or trickling terminal
    /// reports flow in 10% of months (not every month), dormant ones less; every running terminal is
    /// flagged with probability 10% a month (not 0.5%), each flag with a note of its own (`case N on SN:
    /// ...`, 60–110 bytes), and 80% of flags are cleared with a note of their own. About 7.5 records a
    /// terminal over 24 months (8 per terminal asked for, [`EVENTS_PER_DEVICE_ISSUE_HEAVY`]), a third
    /// of them flags and clears:
    /// the shape of the 1.24 M-event, 200,000-terminal fleet of issue 18. Every decision is checked with
    /// [`log::lifecycle::apply`] as in the standard shape.
    IssueHeavy,
}

impl Shape {
    /// Records a terminal makes over 24 months, about.
    pub fn events_per_device(self) -> u64 {
        match self {
            Shape::Standard => EVENTS_PER_DEVICE_24_MONTHS,
            Shape::IssueHeavy => EVENTS_PER_DEVICE_ISSUE_HEAVY,
        }
    }
}

impl Default for Config {
    /// The demo's fleet: 100,000 terminals over 24 months, seed 42, batches of 10,000 events.
    fn default() -> Self {
        Config { devices: 100_000, months: 24, seed: 42, batch_events: 10_000, shape: Shape::Standard }
    }
}

impl Config {
    /// A 24-month run of about `events` records (at least one terminal), in appends of about
    /// `batch_events`: what tests and benches that need "a legal fleet of this size" ask for.
    pub fn about_events(events: u64, batch_events: usize, seed: u64) -> Config {
        Config::about_events_shaped(events, batch_events, seed, Shape::Standard)
    }

    /// [`Config::about_events`] for a fleet of `shape`.
    pub fn about_events_shaped(events: u64, batch_events: usize, seed: u64, shape: Shape) -> Config {
        let devices = (events / shape.events_per_device()).clamp(1, MAX_DEVICES);
        Config { devices, months: 24, seed, batch_events, shape }
    }

    /// Checks the limits.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.devices == 0 || self.devices > MAX_DEVICES {
            return Err(SimError::Config(format!("devices must be 1 to {MAX_DEVICES}, got {}", self.devices)));
        }
        if self.months == 0 || self.months > MAX_MONTHS {
            return Err(SimError::Config(format!("months must be 1 to {MAX_MONTHS}, got {}", self.months)));
        }
        if self.batch_events == 0 || self.batch_events > MAX_BATCH_EVENTS {
            return Err(SimError::Config(format!(
                "batch size must be 1 to {MAX_BATCH_EVENTS}, got {}",
                self.batch_events
            )));
        }
        Ok(())
    }
}

/// Why a simulation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is out of bounds.
    #[error("{0}")]
    Config(String),
    /// The target ledger already holds records (the simulated clock starts in 2025 and its SNs would clash).
    #[error("the ledger already holds {0} records; simulate into a new, empty ledger")]
    NotEmpty(u64),
    /// A generated identifier failed validation (a bug in the simulator).
    #[error("simulator built an invalid field: {0}")]
    Field(#[from] FieldError),
    /// The ledger refused or failed an append.
    #[error("append failed: {0}")]
    Append(#[from] AppendError),
    /// The ledger stopped other terminals than the simulator expected (its copy of the state diverged).
    #[error("the directive stopped {actual} terminals, the simulator expected {expected}")]
    Diverged {
        /// What the simulator expected.
        expected: usize,
        /// What the ledger stopped.
        actual: usize,
    },
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed 64-bit generator. Good enough for a
/// simulation and, unlike a crate's generator, guaranteed never to change its stream under us.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (Lemire's multiply-shift; `n = 0` gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64) as i64
    }
    /// True with probability `per_10k` / 10,000.
    pub fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }
}

/// One append the simulation makes.
#[derive(Clone, Debug)]
pub enum Batch {
    /// Terminal events, appended atomically at `recorded_at` with [`Ledger::append_at`].
    Events {
        /// The simulated clock when the batch is recorded (the time of its last event).
        recorded_at: DateTime<Utc>,
        /// The events, in time order.
        events: Vec<AppendEvent>,
    },
    /// The emergency-stop directive, recorded with [`Ledger::stop_models`] at the directive's time.
    Directive {
        /// The directive.
        directive: Directive,
        /// The terminals the simulator expects it to stop, with their models, sorted by SN (as
        /// `stop_models` sorts them).
        stops: Vec<(Sn, ModelCode)>,
    },
}

impl Batch {
    /// Number of records this batch appends.
    pub fn len(&self) -> usize {
        match self {
            Batch::Events { events, .. } => events.len(),
            Batch::Directive { stops, .. } => stops.len() + 1,
        }
    }
    /// Whether the batch appends nothing (never true for batches the simulator yields).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The recorded-at time and the events exactly as the ledger records them (for a directive: the
    /// directive, split to fit the entry limit, then one `stopped` per terminal, as
    /// [`Ledger::stop_models`] writes them, through the same [`ledger::recall::recall`]). Lets benches
    /// and tests feed a plain [`Ledger::append_at`].
    pub fn into_append(self) -> Result<(DateTime<Utc>, Vec<AppendEvent>), AppendError> {
        match self {
            Batch::Events { recorded_at, events } => Ok((recorded_at, events)),
            Batch::Directive { directive, stops } => {
                let at = directive.at;
                Ok((at, ledger::recall::recall(directive, stops)?.events))
            }
        }
    }
}

/// A few SNs worth looking at with `replay device`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    /// A terminal stopped by the directive and then replaced.
    pub recalled_and_replaced: Option<Sn>,
    /// A terminal of a recalled model issued after the directive (missed by an operator).
    pub missed_directive: Option<Sn>,
    /// A terminal that reported flow after it was stopped.
    pub flow_after_stop: Option<Sn>,
    /// A terminal that reported flow while its contract was expired.
    pub flow_on_expired_contract: Option<Sn>,
    /// A dormant terminal (issued, never activated).
    pub dormant: Option<Sn>,
}

/// What a run produced: counts of what was simulated, including the violations planted for the audits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Records appended.
    pub events: u64,
    /// Appends made.
    pub appends: u64,
    /// Terminals issued, replacements included.
    pub terminals: u64,
    /// Of which replacements.
    pub replacements: u64,
    /// Activations.
    pub activated: u64,
    /// Flow observations.
    pub flows: u64,
    /// Contract renewals.
    pub renewals: u64,
    /// Contract expiries.
    pub expiries: u64,
    /// Flags raised.
    pub flags_raised: u64,
    /// Flags cleared.
    pub flags_cleared: u64,
    /// Stops, every reason.
    pub stops: u64,
    /// The directive's id, if the run was long enough for one.
    pub directive: Option<DirectiveId>,
    /// Terminals stopped by the directive when it was recorded.
    pub stopped_by_directive: u64,
    /// Terminals of recalled models issued after the directive.
    pub missed_directive: u64,
    /// Of the missed, those stopped under the directive later, past its deadline.
    pub stopped_late: u64,
    /// Flow observations on stopped or replaced terminals (a violation).
    pub flows_after_stop: u64,
    /// Flow observations while the contract was expired (a violation).
    pub flows_on_expired_contract: u64,
    /// Terminals that will never reach 100 yuan of flow.
    pub dormant: u64,
    /// Planned decisions dropped because they had become illegal by their time (benign).
    pub dropped_decisions: u64,
    /// SNs worth a look.
    pub samples: Samples,
}

/// Progress of a run, reported after every append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Months fully generated so far.
    pub month: u32,
    /// Months in the run.
    pub months: u32,
    /// Records appended so far.
    pub events: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persona {
    Busy,
    Trickle,
    DormantSilent,
    DormantTiny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Issue,
    Flow,
    Activate,
    ContractDue,
    Renew,
    Expire,
    Flag(FlagReason),
    Clear(FlagReason),
    Stop(StopReason),
    StopRecall,
    Upgrade,
    Replace,
}

struct Term {
    sn: Sn,
    model: u16,
    provider: u8,
    region: u32,
    merchant: u64,
    replaces: Option<Sn>,
    state: Option<State>,
    persona: Persona,
    /// Monthly volume in fen (busy terminals).
    volume_fen: u64,
    contract_seq: u32,
    contract_start: i64,
    contract_end: i64,
    /// Keeps reporting flow on an expired contract.
    leaks: bool,
    /// Reports flow after a stop until this time (0: never).
    rogue_until: i64,
    activation_pending: bool,
    pending: Vec<(i64, u64, Action)>,
    done: bool,
}

struct Out {
    at: i64,
    seq: u64,
    /// Belongs to the same atomic unit as the next event (a replacement): never split a batch here.
    glue: bool,
    event: AppendEvent,
}

/// Texts used as flag notes and the directive's reason, validated once.
struct Notes {
    flag: Text,
    clear: Text,
    revoked: Text,
    reason: Text,
}

/// The simulator: an iterator of [`Batch`]es, month by month. Use [`run`] to feed a ledger, or iterate
/// it yourself (with [`Batch::into_append`]) to get the events without a ledger.
pub struct Simulator {
    config: Config,
    rng: SplitMix64,
    /// Month starts (seconds since the epoch), `months + 1` of them.
    month_starts: Vec<i64>,
    models: Vec<ModelCode>,
    model_cdf: Vec<u64>,
    recalled: Vec<bool>,
    providers: Vec<ProviderId>,
    notes: Notes,
    terms: Vec<Term>,
    next_index: u64,
    directive_month: Option<u32>,
    directive_id: Option<DirectiveId>,
    directive_at: i64,
    directive_recorded: bool,
    month: u32,
    queue: VecDeque<Batch>,
    seq: u64,
    out: Vec<Out>,
    report: Report,
}

/// Seconds since the epoch to a time (the run's range is far inside chrono's).
fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// `secs` plus `months` calendar months (falls back to 30-day months at the end of chrono's range).
fn add_months(secs: i64, months: u32) -> i64 {
    time(secs).checked_add_months(Months::new(months)).map_or(secs + i64::from(months) * 30 * DAY, |t| t.timestamp())
}

// The simulator indexes only its own tables, by indices it made: terminals by the index it pushed them
// at, models by a rank below `MODEL_COUNT` drawn from `model_cdf`, months below `month_starts.len()`
// (`months + 1`), providers and cities by draws below their constant lengths. No input reaches an index
// (a `Config` is validated first), and a checked rewrite of each site would risk its exact stream of
// draws, which the demo's Merkle root depends on.
#[expect(
    clippy::indexing_slicing,
    reason = "bound proven: every index is one the simulator made below its table's length (see above)"
)]
impl Simulator {
    /// A simulator for `config`.
    pub fn new(config: &Config) -> Result<Simulator, SimError> {
        config.validate()?;
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().map_or(1_735_689_600, |t| t.timestamp());
        let month_starts: Vec<i64> = (0..=config.months).map(|m| add_months(start, m)).collect();
        let mut models = Vec::with_capacity(MODEL_COUNT);
        for rank in 0..MODEL_COUNT {
            let vendor = VENDORS[rank % VENDORS.len()];
            let r = rank / VENDORS.len();
            models.push(ModelCode::parse(&format!("{vendor}-{}{:02}", SERIES[r % SERIES.len()], r / SERIES.len()))?);
        }
        let mut model_cdf = Vec::with_capacity(MODEL_COUNT);
        let mut total = 0u64;
        for rank in 0..MODEL_COUNT as u64 {
            total += 1_000_000 / (rank + 20);
            model_cdf.push(total);
        }
        let recalled: Vec<bool> = (0..MODEL_COUNT)
            .map(|rank| rank % RECALL_STRIDE == RECALL_OFFSET && rank / RECALL_STRIDE < RECALLED_MODELS)
            .collect();
        let providers =
            PROVIDERS.iter().map(|(id, _, _)| ProviderId::parse(id)).collect::<Result<Vec<_>, FieldError>>()?;
        let notes = Notes {
            flag: Text::parse("raised by risk control")?,
            clear: Text::parse("investigated: no violation found")?,
            revoked: Text::parse("model certificate revoked by the regulator")?,
            reason: Text::parse(&format!(
                "model certificates revoked: {RECALLED_MODELS} models to be stopped urgently"
            ))?,
        };
        let directive_month = (config.months >= 2).then(|| (config.months * 7 / 12).max(1));
        let (directive_id, directive_at) = match directive_month {
            Some(m) => {
                let at = month_starts[m as usize];
                let t = time(at);
                (Some(DirectiveId::parse(&format!("D-{}-{:02}", t.year(), t.month()))?), at)
            }
            None => (None, i64::MAX),
        };
        Ok(Simulator {
            config: config.clone(),
            rng: SplitMix64::new(config.seed),
            month_starts,
            models,
            model_cdf,
            recalled,
            providers,
            notes,
            terms: Vec::new(),
            next_index: config.devices,
            directive_month,
            directive_id,
            directive_at,
            directive_recorded: false,
            month: 0,
            queue: VecDeque::new(),
            seq: 0,
            out: Vec::new(),
            report: Report::default(),
        })
    }

    /// What has been simulated so far (complete once the iterator is exhausted).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Months fully generated so far.
    pub fn month(&self) -> u32 {
        self.month
    }

    /// Original terminals issued in months before `m`.
    fn issued_before(&self, m: u32) -> u64 {
        let devices = self.config.devices;
        let months = self.config.months;
        if months <= 1 {
            return if m == 0 { 0 } else { devices };
        }
        let initial = devices * 35 / 100;
        let span = u64::from((months * 2 / 3).max(1).min(months - 1));
        match u64::from(m) {
            0 => 0,
            m if m > span => devices,
            m => initial + (devices - initial) * (m - 1) / span,
        }
    }

    fn pick_weighted<T: Copy>(&mut self, table: &[(T, u64)]) -> T {
        let total: u64 = table.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.below(total);
        for (value, weight) in table {
            if x < *weight {
                return *value;
            }
            x -= weight;
        }
        table[0].0
    }

    fn draw_model(&mut self) -> usize {
        let total = self.model_cdf.last().copied().unwrap_or(1);
        let x = self.rng.below(total);
        self.model_cdf.partition_point(|&c| c <= x).min(MODEL_COUNT - 1)
    }

    /// A model for a terminal issued at `at`. After the directive a recalled model is redrawn, except
    /// (when `may_miss`) 4% of the time: an operator who missed the order. Returns (model, missed).
    fn pick_model(&mut self, at: i64, may_miss: bool) -> (usize, bool) {
        let mut model = self.draw_model();
        if at < self.directive_at || !self.recalled[model] {
            return (model, false);
        }
        if may_miss && self.rng.chance(400) {
            return (model, true);
        }
        while self.recalled[model] {
            model = self.draw_model();
        }
        (model, false)
    }

    fn new_term(
        &mut self,
        index: u64,
        provider: u8,
        region: u32,
        merchant: u64,
        model: usize,
        persona: Persona,
    ) -> Result<Term, SimError> {
        let (_, prefix, _) = PROVIDERS[usize::from(provider)];
        let volume_fen = 30_000 * 10u64.pow(self.rng.below(3) as u32) * (1 + self.rng.below(10));
        Ok(Term {
            sn: Sn::parse(&format!("{prefix}{index:010}"))?,
            model: model as u16,
            provider,
            region,
            merchant,
            replaces: None,
            state: None,
            persona,
            volume_fen,
            contract_seq: 0,
            contract_start: 0,
            contract_end: 0,
            leaks: false,
            rogue_until: 0,
            activation_pending: false,
            pending: Vec::new(),
            done: false,
        })
    }

    fn schedule(&mut self, i: usize, at: i64, action: Action) {
        self.seq += 1;
        self.terms[i].pending.push((at, self.seq, action));
    }

    fn push(&mut self, at: i64, device: &Sn, event: TerminalEvent, glue: bool) {
        self.seq += 1;
        self.out.push(Out {
            at,
            seq: self.seq,
            glue,
            event: AppendEvent::from(Event::Terminal(DeviceEvent { device: device.clone(), at: time(at), event })),
        });
    }

    /// The state after `event`, if the rules allow it.
    fn check(&self, i: usize, event: &TerminalEvent) -> Option<State> {
        let term = &self.terms[i];
        let lists_model = self.recalled[usize::from(term.model)];
        let lookup = |id: &DirectiveId| match &self.directive_id {
            Some(d) if self.directive_recorded && d == id => DirectiveLookup::Recorded { lists_model },
            _ => DirectiveLookup::NotRecorded,
        };
        lifecycle::apply(term.state.as_ref(), event, &lookup).ok()
    }

    /// Applies a decision if legal: emits it and returns true; else counts it as dropped.
    fn decide(&mut self, i: usize, at: i64, event: TerminalEvent, glue: bool) -> bool {
        match self.check(i, &event) {
            Some(state) => {
                self.terms[i].state = Some(state);
                let sn = self.terms[i].sn.clone();
                self.push(at, &sn, event, glue);
                true
            }
            None => {
                self.report.dropped_decisions += 1;
                false
            }
        }
    }

    fn status(&self, i: usize) -> Option<Status> {
        self.terms[i].state.map(|s| s.status)
    }

    fn running(&self, i: usize) -> bool {
        matches!(self.status(i), Some(Status::Issued | Status::Active))
    }

    fn issued_event(&self, i: usize) -> Result<TerminalEvent, SimError> {
        let t = &self.terms[i];
        Ok(TerminalEvent::Issued(Box::new(Issued {
            model: self.models[usize::from(t.model)].clone(),
            merchant: MerchantId::parse(&format!("M{:08}", t.merchant))?,
            provider: self.providers[usize::from(t.provider)].clone(),
            region: RegionCode::try_from(t.region)?,
            contract: Contract {
                id: ContractId::parse(&format!("C-{}-{}", t.sn, t.contract_seq))?,
                start: time(t.contract_start),
                end: time(t.contract_end),
            },
            replaces: t.replaces.clone(),
        })))
    }

    /// The first contract of a terminal issued at `at`: from that day, 12 months (70%) or 24.
    fn start_contract(&mut self, i: usize, at: i64) {
        let months = if self.rng.chance(7_000) { 12 } else { 24 };
        let start = at - at.rem_euclid(DAY);
        self.terms[i].contract_start = start;
        self.terms[i].contract_end = add_months(start, months);
    }

    /// Schedules what follows the issue of terminal `i` at `at` (contract due date, first flow).
    fn after_issue(&mut self, i: usize, at: i64) {
        let due = self.terms[i].contract_end - 20 * DAY;
        self.schedule(i, due, Action::ContractDue);
        if self.terms[i].persona != Persona::DormantSilent {
            let first = at + self.rng.range(DAY, 6 * DAY);
            self.schedule(i, first, Action::Flow);
        }
        self.report.terminals += 1;
        if matches!(self.terms[i].persona, Persona::DormantSilent | Persona::DormantTiny) {
            self.report.dormant += 1;
            if self.report.samples.dormant.is_none() {
                self.report.samples.dormant = Some(self.terms[i].sn.clone());
            }
        }
    }

    /// Issues a replacement for terminal `i` at `at`, emitting `replaced` and `issued` (glued to what came
    /// before, so the stop, if any, lands in the same append).
    fn replace(&mut self, i: usize, at: i64) -> Result<(), SimError> {
        let index = self.next_index;
        self.next_index += 1;
        let (model, _) = self.pick_model(at.max(self.directive_at), false);
        let (provider, region, merchant) = (self.terms[i].provider, self.terms[i].region, self.terms[i].merchant);
        let mut term = self.new_term(index, provider, region, merchant, model, Persona::Busy)?;
        term.replaces = Some(self.terms[i].sn.clone());
        let new_sn = term.sn.clone();
        self.terms.push(term);
        let j = self.terms.len() - 1;
        self.start_contract(j, at);
        self.after_issue(j, at);
        self.report.replacements += 1;
        if !self.decide(i, at, TerminalEvent::Replaced { by: new_sn.clone() }, true) {
            // Cannot happen: callers check the status first. Undo the new terminal.
            self.terms.pop();
            self.report.terminals -= 1;
            self.report.replacements -= 1;
            return Ok(());
        }
        let issued = self.issued_event(j)?;
        self.terms[j].state = self.check(j, &issued);
        self.push(at, &new_sn, issued, false);
        Ok(())
    }

    fn flow(&mut self, i: usize, at: i64) {
        let Some(state) = self.terms[i].state else { return };
        let term = &self.terms[i];
        let allowed = match state.status {
            Status::Issued | Status::Active => state.contract == ContractState::Current || term.leaks,
            Status::Stopped | Status::Replaced => at < term.rogue_until,
        };
        if !allowed {
            return;
        }
        let amount_fen = match term.persona {
            Persona::Busy => term.volume_fen * self.rng.below(101).saturating_add(50) / 100,
            Persona::Trickle => 2_000 + self.rng.below(4_001),
            Persona::DormantTiny => 100 + self.rng.below(401),
            Persona::DormantSilent => return,
        }
        .max(1);
        let transactions = (amount_fen / 30_000).clamp(1, 5_000) as u32 + self.rng.below(5) as u32;
        let event = TerminalEvent::Flow { amount_fen, transactions };
        let Some(next) = self.check(i, &event) else { return };
        if matches!(state.status, Status::Stopped | Status::Replaced) {
            self.report.flows_after_stop += 1;
            self.report.samples.flow_after_stop.get_or_insert_with(|| self.terms[i].sn.clone());
        } else if state.contract == ContractState::Expired {
            self.report.flows_on_expired_contract += 1;
            self.report.samples.flow_on_expired_contract.get_or_insert_with(|| self.terms[i].sn.clone());
        }
        self.report.flows += 1;
        self.terms[i].state = Some(next);
        let sn = self.terms[i].sn.clone();
        self.push(at, &sn, event, false);
        if next.status == Status::Issued
            && next.contract == ContractState::Current
            && next.flow_fen >= log::model::ACTIVATION_FLOW_FEN
            && !self.terms[i].activation_pending
        {
            self.terms[i].activation_pending = true;
            let when = at + self.rng.range(HOUR, 48 * HOUR);
            self.schedule(i, when, Action::Activate);
        }
    }

    fn stop(&mut self, i: usize, at: i64, reason: StopReason, directive: Option<DirectiveId>) -> bool {
        if !self.decide(i, at, TerminalEvent::Stopped { reason, directive }, false) {
            return false;
        }
        self.report.stops += 1;
        if self.rng.chance(300) {
            self.terms[i].rogue_until = at + self.rng.range(30 * DAY, 75 * DAY);
        }
        true
    }

    fn act(&mut self, i: usize, at: i64, action: Action) -> Result<(), SimError> {
        match action {
            Action::Issue => {
                self.start_contract(i, at);
                let issued = self.issued_event(i)?;
                if self.decide(i, at, issued, false) {
                    self.after_issue(i, at);
                }
            }
            Action::Flow => self.flow(i, at),
            Action::Activate => {
                self.terms[i].activation_pending = false;
                if self.decide(i, at, TerminalEvent::Activated, false) {
                    self.report.activated += 1;
                }
            }
            Action::ContractDue => {
                if self.running(i) {
                    let end = self.terms[i].contract_end;
                    if self.rng.chance(7_200) {
                        let when = (end - self.rng.range(DAY, 15 * DAY)).max(at);
                        self.schedule(i, when, Action::Renew);
                    } else {
                        self.schedule(i, end, Action::Expire);
                    }
                }
            }
            Action::Renew => {
                if self.running(i) {
                    let t = &self.terms[i];
                    let (start, seq) = (t.contract_end, t.contract_seq + 1);
                    let end = add_months(start, 12);
                    let contract = Contract {
                        id: ContractId::parse(&format!("C-{}-{seq}", t.sn))?,
                        start: time(start),
                        end: time(end),
                    };
                    if self.decide(i, at, TerminalEvent::ContractRenewed { contract }, false) {
                        self.report.renewals += 1;
                        let t = &mut self.terms[i];
                        t.contract_seq = seq;
                        t.contract_start = start;
                        t.contract_end = end;
                        self.schedule(i, end - 20 * DAY, Action::ContractDue);
                    }
                }
            }
            Action::Expire => {
                if self.decide(i, at, TerminalEvent::ContractExpired, false) {
                    self.report.expiries += 1;
                    let roll = self.rng.below(100);
                    if roll < 55 {
                        let when = at + self.rng.range(DAY, 10 * DAY);
                        self.schedule(i, when, Action::Stop(StopReason::ContractExpired));
                    } else if roll < 70 {
                        let when = at + self.rng.range(5 * DAY, 30 * DAY);
                        self.schedule(i, when, Action::Renew);
                    } else {
                        self.terms[i].leaks = self.rng.chance(1_000);
                    }
                }
            }
            Action::Flag(reason) => {
                let note = if reason == FlagReason::CertificateRevoked {
                    self.notes.revoked.clone()
                } else if self.config.shape == Shape::IssueHeavy {
                    self.case_note(i, "raised by risk control, under review")?
                } else {
                    self.notes.flag.clone()
                };
                let event = TerminalEvent::Flagged { reason, note };
                if self.decide(i, at, event, false) {
                    self.report.flags_raised += 1;
                    if reason != FlagReason::CertificateRevoked {
                        let roll = self.rng.below(100);
                        let clear_pending = self.terms[i].pending.iter().any(|(_, _, a)| *a == Action::Clear(reason));
                        let cleared = if self.config.shape == Shape::IssueHeavy { 80 } else { 60 };
                        if roll < cleared && !clear_pending {
                            let when = at + self.rng.range(3 * DAY, 40 * DAY);
                            self.schedule(i, when, Action::Clear(reason));
                        } else if (cleared..85).contains(&roll) {
                            let when = at + self.rng.range(DAY, 10 * DAY);
                            self.schedule(i, when, Action::Stop(StopReason::Violation));
                        }
                    }
                }
            }
            Action::Clear(reason) => {
                let note = if self.config.shape == Shape::IssueHeavy {
                    self.case_note(i, "closed after investigation: no violation found")?
                } else {
                    self.notes.clear.clone()
                };
                let event = TerminalEvent::FlagCleared { reason, note };
                if self.decide(i, at, event, false) {
                    self.report.flags_cleared += 1;
                }
            }
            Action::Stop(reason) => {
                if self.stop(i, at, reason, None) && reason == StopReason::Violation && self.rng.chance(2_000) {
                    let when = at + self.rng.range(DAY, 20 * DAY);
                    self.schedule(i, when, Action::Replace);
                }
            }
            Action::StopRecall => {
                let id = self.directive_id.clone();
                if self.stop(i, at, StopReason::ModelRecall, id) {
                    self.report.stopped_late += 1;
                }
            }
            Action::Upgrade => {
                if self.running(i) {
                    let event = TerminalEvent::Stopped { reason: StopReason::Upgrade, directive: None };
                    if self.decide(i, at, event, true) {
                        self.report.stops += 1;
                        self.replace(i, at)?;
                    }
                }
            }
            Action::Replace => {
                if self.status(i) == Some(Status::Stopped) {
                    self.replace(i, at)?;
                    if self.directive_recorded
                        && self.recalled[usize::from(self.terms[i].model)]
                        && self.report.samples.recalled_and_replaced.is_none()
                    {
                        self.report.samples.recalled_and_replaced = Some(self.terms[i].sn.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// A note of its own for a flag or a clear of terminal `i` (issue-heavy fleets): a case number, the
    /// terminal and `text`, with one to three reference words (40–90 bytes).
    fn case_note(&mut self, i: usize, text: &str) -> Result<Text, SimError> {
        let case = self.rng.below(10_000_000);
        let refs = ["ticket", "call", "visit"];
        let mut note = format!("case {case:07} on {}: {text}", self.terms[i].sn);
        for r in refs.iter().take(self.rng.below(3) as usize + 1) {
            note.push_str(&format!("; {r} {}", self.rng.below(1_000)));
        }
        Ok(Text::parse(&note)?)
    }

    /// Random monthly happenings of terminal `i` (flows, flags, upgrades, merchant stops).
    fn plan_month(&mut self, i: usize, start: i64, end: i64) {
        let Some(state) = self.terms[i].state else { return };
        let when = |rng: &mut SplitMix64| rng.range(start + 2 * HOUR, end);
        let flowing = match state.status {
            Status::Issued | Status::Active => true,
            Status::Stopped | Status::Replaced => self.terms[i].rogue_until > start,
        };
        let heavy = self.config.shape == Shape::IssueHeavy;
        if flowing {
            let count = match (self.terms[i].persona, heavy) {
                (Persona::Busy, false) => 1 + u64::from(self.rng.chance(1_500)),
                (Persona::Trickle, false) => u64::from(self.rng.chance(7_000)),
                (Persona::DormantTiny, false) => u64::from(self.rng.chance(1_500)),
                (Persona::Busy, true) => u64::from(self.rng.chance(1_000)),
                (Persona::Trickle, true) => u64::from(self.rng.chance(1_000)),
                (Persona::DormantTiny, true) => u64::from(self.rng.chance(500)),
                (Persona::DormantSilent, _) => 0,
            };
            for _ in 0..count {
                let at = when(&mut self.rng);
                self.schedule(i, at, Action::Flow);
            }
        }
        if matches!(state.status, Status::Issued | Status::Active) {
            if self.rng.chance(if heavy { 1_000 } else { 50 }) {
                let reason = self.pick_weighted(&FLAG_REASONS);
                let at = when(&mut self.rng);
                self.schedule(i, at, Action::Flag(reason));
            }
            if self.rng.chance(12) {
                let at = when(&mut self.rng);
                self.schedule(i, at, Action::Upgrade);
            }
            if self.rng.chance(12) {
                let at = when(&mut self.rng);
                self.schedule(i, at, Action::Stop(StopReason::MerchantRequest));
            }
        }
    }

    /// Records the directive: every running terminal of the recalled models is stopped under it.
    fn directive(&mut self, at: i64) {
        let Some(id) = self.directive_id.clone() else { return };
        let models: Vec<ModelCode> =
            (0..MODEL_COUNT).filter(|&m| self.recalled[m]).map(|m| self.models[m].clone()).collect();
        let directive = Directive {
            id: id.clone(),
            at: time(at),
            models,
            reason: self.notes.reason.clone(),
            deadline: Some(time(at + 30 * DAY)),
        };
        self.directive_recorded = true;
        let mut stopped: Vec<(Sn, usize)> = Vec::new();
        for i in 0..self.terms.len() {
            if self.recalled[usize::from(self.terms[i].model)] && self.running(i) {
                stopped.push((self.terms[i].sn.clone(), i));
            }
        }
        stopped.sort();
        let event = TerminalEvent::Stopped { reason: StopReason::ModelRecall, directive: Some(id) };
        for (_, i) in &stopped {
            self.terms[*i].state = self.check(*i, &event);
            if self.rng.chance(5_500) {
                let when = at + self.rng.range(3 * DAY, 45 * DAY);
                self.schedule(*i, when, Action::Replace);
            }
        }
        self.report.stops += stopped.len() as u64;
        self.report.stopped_by_directive = stopped.len() as u64;
        self.report.directive = Some(directive.id.clone());
        self.report.events += stopped.len() as u64 + 1;
        self.report.appends += 1;
        let stops =
            stopped.into_iter().map(|(sn, i)| (sn, self.models[usize::from(self.terms[i].model)].clone())).collect();
        self.queue.push_back(Batch::Directive { directive, stops });
    }

    /// Generates month `m` into the queue.
    fn simulate_month(&mut self, m: u32) -> Result<(), SimError> {
        let start = self.month_starts[m as usize];
        let end = self.month_starts[m as usize + 1];
        if self.directive_month == Some(m) {
            self.directive(start);
        }
        if self.directive_month == Some(m + 1) {
            // Certificates are revoked before the order: risk control flags the recalled models.
            for i in 0..self.terms.len() {
                if self.recalled[usize::from(self.terms[i].model)] && self.running(i) && self.rng.chance(2_500) {
                    let at = self.rng.range(start + 2 * HOUR, end);
                    self.schedule(i, at, Action::Flag(FlagReason::CertificateRevoked));
                }
            }
        }
        // New terminals of this month.
        for index in self.issued_before(m)..self.issued_before(m + 1) {
            let at = self.rng.range(start + 2 * HOUR, end);
            let provider = self.pick_weighted(&[(0u8, 30), (1, 18), (2, 14), (3, 12), (4, 10), (5, 9), (6, 7)]);
            let region = CITIES[self.rng.below(CITIES.len() as u64) as usize] + 1 + self.rng.below(18) as u32;
            let (model, missed) = self.pick_model(at, true);
            let persona = match self.rng.below(100) {
                0..82 => Persona::Busy,
                82..87 => Persona::Trickle,
                87..95 => Persona::DormantSilent,
                _ => Persona::DormantTiny,
            };
            let term = self.new_term(index, provider, region, index * 7 / 10, model, persona)?;
            self.terms.push(term);
            let i = self.terms.len() - 1;
            self.schedule(i, at, Action::Issue);
            if missed {
                self.report.missed_directive += 1;
                self.report.samples.missed_directive.get_or_insert_with(|| self.terms[i].sn.clone());
                if self.rng.chance(4_000) {
                    let when = at + self.rng.range(60 * DAY, 150 * DAY);
                    self.schedule(i, when, Action::StopRecall);
                }
            }
        }
        let count = self.terms.len();
        for i in 0..count {
            if self.terms[i].done {
                continue;
            }
            self.plan_month(i, start, end);
            loop {
                let next = self.terms[i]
                    .pending
                    .iter()
                    .enumerate()
                    .filter(|(_, (at, _, _))| *at < end)
                    .min_by_key(|(_, (at, seq, _))| (*at, *seq))
                    .map(|(k, _)| k);
                let Some(k) = next else { break };
                let (at, _, action) = self.terms[i].pending.swap_remove(k);
                // Anything left over from before this month happens at its start.
                self.act(i, at.max(start + 2 * HOUR), action)?;
            }
            let t = &self.terms[i];
            if matches!(t.state.map(|s| s.status), Some(Status::Stopped | Status::Replaced))
                && t.pending.is_empty()
                && t.rogue_until <= end
            {
                self.terms[i].done = true;
            }
        }
        self.flush_month();
        Ok(())
    }

    /// Sorts the month's events by time and cuts them into batches, never inside a replacement.
    ///
    /// An event is large, so its key (time, sequence number, index) is sorted instead (unstably: the
    /// sequence numbers make the keys unique, so the order is the one a stable sort of the events
    /// gave), then each event is moved once, into its batch. Sorting the events themselves moved each
    /// about log n times and allocated a scratch copy of the month: at 10^8 events (4 M a month) that
    /// copy was most of the simulator's page faults.
    fn flush_month(&mut self) {
        let out = std::mem::take(&mut self.out);
        let mut order: Vec<(i64, u64, usize)> = out.iter().enumerate().map(|(k, o)| (o.at, o.seq, k)).collect();
        order.sort_unstable();
        let mut out: Vec<Option<Out>> = out.into_iter().map(Some).collect();
        let mut events = Vec::with_capacity(self.config.batch_events.min(out.len()));
        let mut last_at = 0;
        for (_, _, k) in order {
            let Some(o) = out.get_mut(k).and_then(Option::take) else {
                unreachable!("every index of the month is in the order once")
            };
            let glue = o.glue;
            last_at = o.at;
            events.push(o.event);
            if events.len() >= self.config.batch_events && !glue {
                self.emit(std::mem::take(&mut events), last_at);
            }
        }
        if !events.is_empty() {
            self.emit(events, last_at);
        }
    }

    fn emit(&mut self, events: Vec<AppendEvent>, at: i64) {
        self.report.events += events.len() as u64;
        self.report.appends += 1;
        self.queue.push_back(Batch::Events { recorded_at: time(at), events });
    }
}

impl Iterator for Simulator {
    type Item = Result<Batch, SimError>;
    fn next(&mut self) -> Option<Self::Item> {
        while self.queue.is_empty() && self.month < self.config.months {
            let m = self.month;
            if let Err(e) = self.simulate_month(m) {
                self.month = self.config.months;
                return Some(Err(e));
            }
            self.month += 1;
        }
        self.queue.pop_front().map(Ok)
    }
}

/// Simulates `config` into `ledger` (which must be empty), one append per batch at the simulated clock.
/// `progress` is called after every append. Open the ledger with `Durability::Relaxed` and `flush` after
/// for speed; the result is the same either way.
pub fn run(ledger: &Ledger, config: &Config, progress: &mut dyn FnMut(Progress)) -> Result<Report, SimError> {
    let size = ledger.head().size;
    if size != 0 {
        return Err(SimError::NotEmpty(size));
    }
    let mut sim = Simulator::new(config)?;
    let mut events = 0u64;
    while let Some(batch) = sim.next() {
        match batch? {
            Batch::Events { recorded_at, events: batch } => {
                events += batch.len() as u64;
                ledger.append_at(batch, Some(recorded_at))?;
            }
            Batch::Directive { directive, stops } => {
                let at = directive.at;
                let outcome = ledger.stop_models(directive, Some(at))?;
                if outcome.stopped.iter().ne(stops.iter().map(|(sn, _)| sn)) {
                    return Err(SimError::Diverged { expected: stops.len(), actual: outcome.stopped.len() });
                }
                events += outcome.appended.written;
            }
        }
        progress(Progress { month: sim.month(), months: config.months, events });
    }
    Ok(sim.report().clone())
}

/// Every batch of `config` without a ledger (for benches): the recorded-at time and the events of each
/// append, exactly as [`run`] would append them.
pub fn generate(config: &Config) -> Result<Vec<(DateTime<Utc>, Vec<AppendEvent>)>, SimError> {
    Simulator::new(config)?.map(|batch| Ok(batch?.into_append()?)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn recalls_196_of_at_least_2000_models() {
        let sim = Simulator::new(&Config { devices: 10, months: 3, ..Config::default() }).unwrap();
        assert!(sim.models.len() >= 2_000);
        assert_eq!(sim.recalled.iter().filter(|r| **r).count(), RECALLED_MODELS);
        let mut codes = sim.models.clone();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), MODEL_COUNT);
    }

    #[test]
    fn generation_is_deterministic_and_issues_every_device() {
        let config = Config { devices: 500, months: 12, seed: 7, batch_events: 1_000, shape: Shape::Standard };
        let a = generate(&config).unwrap();
        let b = generate(&config).unwrap();
        assert_eq!(a, b);
        let mut sim = Simulator::new(&config).unwrap();
        for batch in sim.by_ref() {
            batch.unwrap();
        }
        let report = sim.report();
        assert!(report.terminals >= 500);
        assert!(report.stopped_by_directive > 0, "{report:?}");
        assert_eq!(report.events, a.iter().map(|(_, e)| e.len() as u64).sum::<u64>());
        // recorded-at never decreases.
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn issue_heavy_fleet_has_few_events_and_many_flags_per_terminal() {
        let config = Config { devices: 2_000, shape: Shape::IssueHeavy, ..Config::default() };
        let mut sim = Simulator::new(&config).unwrap();
        for batch in sim.by_ref() {
            batch.unwrap();
        }
        let report = sim.report().clone();
        let per_terminal = report.events as f64 / report.terminals as f64;
        assert!((4.0..10.0).contains(&per_terminal), "{per_terminal} events a terminal: {report:?}");
        assert!((report.flags_raised + report.flags_cleared) * 3 > report.events, "{report:?}");
        assert!(report.flags_cleared * 2 > report.flags_raised, "{report:?}");
        let standard = Config { shape: Shape::Standard, ..config };
        assert_ne!(generate(&standard).unwrap(), generate(&config).unwrap());
    }
}

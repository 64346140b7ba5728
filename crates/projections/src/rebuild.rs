//! Rebuilding the fleet from the log: in parallel, sequentially, as of a position or a time.
//!
//! The parallel rebuild works in batches of `chunk_records × batch_chunks` records:
//! 1. *read and decode* each chunk of the batch in parallel (rayon), splitting its terminal events by
//!    partition ([`partition_of`]) and interning names into a chunk-local table;
//! 2. *glue*, sequential and cheap: merge the chunk name tables in chunk order (so ids are the same as a
//!    sequential fold's), record directives, and decide replacement pairing verdicts
//!    (`fold::PairWindow`: a half as soon as its partner is read, a half still unpaired when
//!    its append's commit marker is read);
//! 3. *fold* each partition's events in position order, partitions in parallel, with [`step`].
//!
//! A pairing event still undecided at the end of a batch (its partner, or its append's commit marker,
//! is in a later batch) stalls its partition: it and every later event of that partition wait for the
//! next batch, so each terminal still sees its events in position order. The shape of the work (chunks, batches,
//! partitions) never depends on the number of threads, which is why the result is identical for any
//! thread count and equal to [`rebuild_sequential`].

use crate::audit::AuditConfig;
use crate::fleet::{partition_of, Fleet, Partition, SnKey, PARTITIONS};
use crate::fold::{self, is_pairing, record_directive, step, Acc, Ctx, Input, PairWindow, Sequential};
use crate::intern::{Interner, NameIds};
use chrono::{DateTime, Utc};
use log::codec::{decode_view, CodecError, EventView, TerminalEventView};
use log::lifecycle::Violation;
use log::source::build_sparse;
use log::{DeviceEvent, Directive, FlagReason, ReadError, RecordIter, Source, TerminalEvent, Text};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// How far into the log to fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Every record.
    Head,
    /// The first `n` records (positions `0..n`).
    Position(u64),
    /// Every record recorded at or before this time (recorded_at never decreases along the log).
    Time(DateTime<Utc>),
}

/// How to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Threads: `None` uses the current rayon pool, `Some(n)` a dedicated pool of `n` threads
    /// (1 to [`MAX_THREADS`]; for `n` up to four times the machine's cores the pool is started once
    /// and kept for later rebuilds, above that it is started for the call).
    pub threads: Option<usize>,
    /// Build with the audit rules' bookkeeping and findings.
    pub audit: Option<AuditConfig>,
    /// Records per read-and-decode chunk (default 65,536; a fold shorter than one batch uses smaller
    /// chunks, down to 2,048 records, so that it still makes up to `batch_chunks` of them).
    pub chunk_records: u64,
    /// Chunks per batch (default 16): a batch is decoded, then folded; memory is proportional to it.
    pub batch_chunks: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { threads: None, audit: None, chunk_records: 1 << 16, batch_chunks: 16 }
    }
}

impl Options {
    /// With a dedicated pool of `n` threads.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
    /// With the audit rules.
    pub fn audit(mut self, config: AuditConfig) -> Self {
        self.audit = Some(config);
        self
    }
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// A record could not be read or decoded.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The cut asks for more records than the log has.
    #[error("position {position} is past the end of the log ({size} records)")]
    PastEnd {
        /// The position asked for.
        position: u64,
        /// Records in the log.
        size: u64,
    },
    /// The thread pool could not be started.
    #[error("cannot start a pool of {threads} threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Why.
        reason: String,
    },
    /// The options are out of range.
    #[error("invalid rebuild options: {0}")]
    Options(&'static str),
}

/// Most threads a dedicated pool may have (`Options::threads`).
pub const MAX_THREADS: usize = 1_024;

/// Runs `f` in the dedicated pool of `threads` threads when `threads` is given.
///
/// Pools are kept, one per thread count, and reused by later rebuilds: starting threads for every call
/// cost a small rebuild more than its fold (a 10^4-record rebuild took 2 to 3 ms, of which the new
/// threads' cold start was a large and varying part). Idle pool threads sleep. Only counts up to
/// `KEPT_POOL_THREADS_PER_CORE` times the cores are kept, so that one call asking for 1,000 threads
/// does not leave them (and their stacks) behind for the life of the process.
pub(crate) fn in_pool<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T, RebuildError> + Send,
) -> Result<T, RebuildError> {
    match threads {
        None => f(),
        Some(n) => pool(n)?.install(f),
    }
}

/// Kept pools have at most this many threads per core (see [`in_pool`]).
const KEPT_POOL_THREADS_PER_CORE: usize = 4;

/// The pool of `n` threads: the kept one (started on first use), or a new one for a count above what
/// is kept.
fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>, RebuildError> {
    type Pools = std::sync::Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>;
    static POOLS: std::sync::OnceLock<Pools> = std::sync::OnceLock::new();
    if n == 0 || n > MAX_THREADS {
        return Err(RebuildError::Threads { threads: n, reason: format!("between 1 and {MAX_THREADS} threads") });
    }
    let build = || {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(move |i| format!("posledger-rebuild-{n}-{i}"))
            .build()
            .map(Arc::new)
            .map_err(|e| RebuildError::Threads { threads: n, reason: e.to_string() })
    };
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    if n > cores.saturating_mul(KEPT_POOL_THREADS_PER_CORE) {
        return build();
    }
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.get(&n) {
        return Ok(Arc::clone(pool));
    }
    let pool = build()?;
    pools.insert(n, Arc::clone(&pool));
    Ok(pool)
}

/// A copy of `source` whose every file has its sparse offsets, so chunks can start anywhere without
/// rescanning their file (built in parallel, one file per task).
pub fn prepare(source: &Source) -> Result<Source, RebuildError> {
    prepare_range(source, 0, source.head.size)
}

/// Like [`prepare`], for the files that hold positions `from..to` only (a catch-up touches only them).
pub fn prepare_range(source: &Source, from: u64, to: u64) -> Result<Source, RebuildError> {
    let mut source = source.clone();
    source.files.par_iter_mut().try_for_each(|meta| -> Result<(), ReadError> {
        let overlaps = meta.end_position() > from && meta.first_position() < to;
        if overlaps && meta.sparse.is_none() {
            // The ledger's walk along the length fields (bodies are CRC-checked when the fold reads them).
            meta.sparse = Some(Arc::new(build_sparse(meta)?));
        }
        Ok(())
    })?;
    Ok(source)
}

fn recorded_at(source: &Source, position: u64) -> Result<DateTime<Utc>, RebuildError> {
    let size = source.head.size;
    let record = RecordIter::new(source.frames(position, position + 1))
        .next()
        .ok_or(RebuildError::PastEnd { position, size })??;
    Ok(record.recorded_at)
}

/// The number of records a cut covers.
pub fn resolve_cut(source: &Source, cut: Cut) -> Result<u64, RebuildError> {
    let size = source.head.size;
    match cut {
        Cut::Head => Ok(size),
        Cut::Position(n) if n > size => Err(RebuildError::PastEnd { position: n, size }),
        Cut::Position(n) => Ok(n),
        Cut::Time(t) => {
            // recorded_at never decreases: binary search for the first record recorded after t. First
            // over files by their first record (no sparse offsets needed), then inside the one file,
            // with its sparse offsets built once.
            let files = &source.files;
            let mut lo_file = 0usize;
            let mut hi_file = files.len();
            while lo_file < hi_file {
                let mid = lo_file + (hi_file - lo_file) / 2;
                let first = files.get(mid).map(|f| f.first_position()).unwrap_or(size);
                if first < size && recorded_at(source, first)? <= t {
                    lo_file = mid + 1;
                } else {
                    hi_file = mid;
                }
            }
            // Files before lo_file start at or before t; the answer lies in file lo_file - 1 (or is 0).
            let Some(file) = lo_file.checked_sub(1).and_then(|i| files.get(i)) else { return Ok(0) };
            let (mut lo, mut hi) = (file.first_position(), file.end_position().min(size));
            let source = prepare_range(source, lo, hi)?;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if recorded_at(&source, mid)? <= t {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        }
    }
}

/// Rebuilds the fleet in parallel, as of `cut`.
pub fn rebuild(source: &Source, cut: Cut, options: &Options) -> Result<Fleet, RebuildError> {
    rebuild_with_phases(source, cut, options).map(|(fleet, _)| fleet)
}

/// Where a parallel fold's wall time went, summed over its batches (for benchmarks: see
/// `examples/rebuild_loop.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Reading and decoding the batches' chunks (in parallel).
    pub decode: std::time::Duration,
    /// The sequential step between them: names interned in chunk order, directives, pairing.
    pub glue: std::time::Duration,
    /// Folding the partitions (in parallel).
    pub fold: std::time::Duration,
}

/// [`rebuild`], and where its time went.
pub fn rebuild_with_phases(source: &Source, cut: Cut, options: &Options) -> Result<(Fleet, Phases), RebuildError> {
    in_pool(options.threads, || {
        let to = resolve_cut(source, cut)?;
        let source = prepare_range(source, 0, to)?;
        let mut fleet = Fleet::new(options.audit);
        let mut phases = Phases::default();
        fold_parallel(&mut fleet, &source, to, options, &mut phases)?;
        Ok((fleet, phases))
    })
}

/// Rebuilds the fleet with a plain sequential fold, record by record (the reference the parallel
/// rebuild is checked against; also fine for small logs).
pub fn rebuild_sequential(source: &Source, cut: Cut, audit: Option<AuditConfig>) -> Result<Fleet, RebuildError> {
    let to = match cut {
        Cut::Time(_) => source.head.size,
        other => resolve_cut(source, other)?,
    };
    let mut fleet = Fleet::new(audit);
    let mut fold = Sequential::new(&mut fleet, None);
    for record in RecordIter::new(source.frames(0, to)) {
        let record = record?;
        if let Cut::Time(t) = cut {
            if record.recorded_at > t {
                break;
            }
        }
        fold.push(record, None);
    }
    fold.finish(None);
    Ok(fleet)
}

/// One terminal event, decoded and routed to its partition (64 bytes: the ops of a batch are written
/// once and read once, so their size is memory traffic).
#[derive(Clone)]
struct Op {
    position: u64,
    at: i64,
    sn: SnKey,
    event: OpEvent,
}

/// The event of an [`Op`] (16 bytes).
///
/// No event allocates in the decoding thread. The frequent ones (flow is ~70% of a fleet's log) are
/// held inline. The others are kept as their record body, copied into the chunk's arena
/// ([`ChunkOut::bodies`]), and decoded again into an owned [`TerminalEvent`] by the thread that folds
/// them, right before [`step`]: the allocations an owned event needs (an `issued` has six) are then
/// made and freed by one thread within microseconds, which glibc serves from its thread cache. Owned
/// events built in one thread and freed in another, a batch later, were ~25% of a 10M-event profile.
#[derive(Clone)]
enum OpEvent {
    Flow {
        amount_fen: u64,
        transactions: u32,
    },
    Activated,
    ContractExpired,
    /// A flag raised (`cleared: false`) or cleared. The note is not kept: the codec checked it when the
    /// record was decoded, and no rule reads it (a fleet keeps the flag's reason), so a fold does not
    /// decode it again, copy it or allocate for it (on a fleet of many flags it was a tenth of a
    /// rebuild).
    Flag {
        reason: FlagReason,
        cleared: bool,
    },
    /// A record body at `bodies[start..start + len]` of the chunk's arena; for an `issued`, followed by
    /// its four chunk-local name ids (little-endian `u32`s).
    Body {
        start: usize,
        len: u32,
        pairing: bool,
    },
    /// An op that waits for a later batch (its chunk's arena is gone by then), decoded and owned.
    Owned(Box<OwnedOp>),
}

/// A decoded event carried over to a later batch.
#[derive(Clone)]
struct OwnedOp {
    event: TerminalEvent,
    /// For `issued`: the chunk-local name ids, and the global number of the chunk that interned them.
    ids: NameIds,
    chunk: u32,
}

/// Ops looked up ahead of folding them (see `fold_partitions`).
const LOOKAHEAD: usize = 16;

/// The bytes of the chunk-local name ids stored after an `issued` body in the arena.
const IDS_LEN: usize = 16;

impl OpEvent {
    fn is_pairing(&self) -> bool {
        match self {
            OpEvent::Body { pairing, .. } => *pairing,
            OpEvent::Owned(owned) => is_pairing(&owned.event),
            _ => false,
        }
    }

    /// The event as the rules take it, with the chunk-local name ids of an `issued`. The inline
    /// variants are rebuilt on the stack (no heap); a body is decoded from `bodies`, the arena of the
    /// chunk it came from.
    fn resolve(&self, bodies: &[u8]) -> Result<(Cow<'_, TerminalEvent>, NameIds), CodecError> {
        Ok(match self {
            OpEvent::Flow { amount_fen, transactions } => (
                Cow::Owned(TerminalEvent::Flow { amount_fen: *amount_fen, transactions: *transactions }),
                NameIds::default(),
            ),
            OpEvent::Activated => (Cow::Owned(TerminalEvent::Activated), NameIds::default()),
            OpEvent::ContractExpired => (Cow::Owned(TerminalEvent::ContractExpired), NameIds::default()),
            OpEvent::Flag { reason, cleared: false } => {
                (Cow::Owned(TerminalEvent::Flagged { reason: *reason, note: Text::default() }), NameIds::default())
            }
            OpEvent::Flag { reason, cleared: true } => {
                (Cow::Owned(TerminalEvent::FlagCleared { reason: *reason, note: Text::default() }), NameIds::default())
            }
            OpEvent::Owned(owned) => (Cow::Borrowed(&owned.event), owned.ids),
            OpEvent::Body { start, len, .. } => {
                let missing = || CodecError::Decode("op body outside its chunk's arena".into());
                let end = start.checked_add(*len as usize).ok_or_else(missing)?;
                let body = bodies.get(*start..end).ok_or_else(missing)?;
                // These bytes decoded as a terminal event when the chunk was read; decoding is a pure
                // function of them, so this cannot fail short of a bug (it would be reported, not hidden).
                let EventView::Terminal(e) = decode_view(body)?.event else {
                    return Err(CodecError::Decode("op body is not a terminal event".into()));
                };
                let mut ids = NameIds::default();
                if let TerminalEventView::Issued(_) = e.event {
                    let raw = bodies.get(end..end + IDS_LEN).ok_or_else(missing)?;
                    for (id, bytes) in ids.iter_mut().zip(raw.chunks_exact(4)) {
                        *id = u32::from_le_bytes(bytes.try_into().unwrap_or_default());
                    }
                }
                (Cow::Owned(e.event.to_terminal_event()?), ids)
            }
        })
    }
}

/// What one chunk of records turns into.
struct ChunkOut {
    parts: Vec<Vec<Op>>,
    /// The arena of [`OpEvent::Body`] ops.
    bodies: Vec<u8>,
    names: [Vec<String>; 4],
    directives: Vec<(u64, Directive)>,
    /// Pairing events, each with the position of the commit marker that closes its append, if read.
    pairing: Vec<(u64, DeviceEvent, Option<u64>)>,
    first_commit: Option<u64>,
    /// Of the last record: commit marker, event time, recorded_at.
    last: Option<(bool, i64, i64)>,
}

/// A region code as its six-digit text, without allocating (what `RegionCode`'s `Display` writes).
fn region_text(region: u32, buf: &mut [u8; 6]) -> &str {
    let mut n = region;
    for digit in buf.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    debug_assert_eq!(n, 0, "a decoded region is at most 999999");
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Decodes records `from..to` into ops by partition, filling `parts` (empty vectors handed back by the
/// previous batch's fold, so a rebuild does not allocate and fault in fresh op buffers every batch).
fn decode_chunk(
    source: &Source,
    from: u64,
    to: u64,
    mut parts: Vec<Vec<Op>>,
    mut bodies: Vec<u8>,
) -> Result<ChunkOut, ReadError> {
    bodies.clear();
    assert!(parts.len() == PARTITIONS && parts.iter().all(Vec::is_empty), "one empty op vector per partition");
    for part in &mut parts {
        // Room for an even spread plus a quarter, so the vectors rarely grow (and copy) while filling.
        part.reserve(((to - from) as usize / PARTITIONS) * 5 / 4 + 4);
    }
    let mut out = ChunkOut {
        parts,
        bodies,
        names: Default::default(),
        directives: Vec::new(),
        pairing: Vec::new(),
        first_commit: None,
        last: None,
    };
    let mut local: [Interner; 4] = Default::default();
    let mut open = 0usize; // pairing[open..] wait for a commit marker
    let mut frames = source.frames(from, to);
    let mut expected = from;
    while let Some((position, body, path)) = frames.next_frame()? {
        let codec = |error| ReadError::Codec { path: path.to_owned(), position, error };
        // Borrowed decoding: no allocation for the frequent events (the SN is copied inline into the op).
        let record = decode_view(body).map_err(codec)?;
        if record.position != position || position != expected {
            return Err(ReadError::Corrupt {
                path: path.to_owned(),
                position,
                what: format!("record holds position {}", record.position),
            });
        }
        expected += 1;
        out.last = Some((record.commit, record.event.at_us(), record.recorded_at_us));
        match &record.event {
            EventView::Directive(d) => out.directives.push((position, d.to_directive().map_err(codec)?)),
            EventView::Terminal(e) => {
                let event = match e.event {
                    TerminalEventView::Flow { amount_fen, transactions } => OpEvent::Flow { amount_fen, transactions },
                    TerminalEventView::Activated => OpEvent::Activated,
                    TerminalEventView::ContractExpired => OpEvent::ContractExpired,
                    TerminalEventView::Flagged { reason, .. } => OpEvent::Flag { reason, cleared: false },
                    TerminalEventView::FlagCleared { reason, .. } => OpEvent::Flag { reason, cleared: true },
                    other => {
                        let pairing = match other {
                            TerminalEventView::Replaced { .. } => true,
                            TerminalEventView::Issued(issued) => issued.replaces.is_some(),
                            _ => false,
                        };
                        if pairing {
                            let device = e.to_device_event().map_err(codec)?;
                            debug_assert!(is_pairing(&device.event), "the view and the owned event agree on pairing");
                            out.pairing.push((position, device, None));
                        }
                        let start = out.bodies.len();
                        out.bodies.extend_from_slice(body);
                        if let TerminalEventView::Issued(issued) = other {
                            let mut buf = [0u8; 6];
                            let region = region_text(issued.region, &mut buf);
                            let values = [issued.model, issued.provider, region, issued.merchant];
                            for (table, value) in local.iter_mut().zip(values) {
                                out.bodies.extend_from_slice(&table.intern(value).to_le_bytes());
                            }
                        }
                        // A body is at most MAX_RECORD_BYTES (checked by the frame reader and the codec).
                        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                        OpEvent::Body { start, len, pairing }
                    }
                };
                let op = Op { position, at: e.at_us, sn: SnKey::new(e.device), event };
                if let Some(part) = out.parts.get_mut(partition_of(e.device)) {
                    part.push(op);
                }
            }
        }
        if record.commit {
            out.first_commit.get_or_insert(position);
            for pending in out.pairing.iter_mut().skip(open) {
                pending.2 = Some(position);
            }
            open = out.pairing.len();
        }
    }
    if expected != to {
        return Err(ReadError::OutOfRange { position: expected, size: to });
    }
    for (names, table) in out.names.iter_mut().zip(&local) {
        *names = table.values().map(str::to_owned).collect();
    }
    Ok(out)
}

/// State of a parallel fold between batches.
#[derive(Default)]
struct Carry {
    /// Per partition: events waiting for a pairing verdict (and every later event of the partition).
    ops: Vec<Vec<Op>>,
    /// Pairing of the append still open.
    window: PairWindow,
    verdicts: HashMap<u64, Option<Violation>>,
    /// Per global chunk number: local name id -> global id, for each of the four tables.
    remaps: Vec<[Vec<u32>; 4]>,
}

/// The smallest chunk a short fold is cut into: below this, a chunk's fixed cost (its 64 partition
/// vectors, its name tables, one rayon task) outweighs its records.
const MIN_CHUNK_RECORDS: u64 = 2_048;

/// Records per chunk for a fold of `records`: `options.chunk_records`, or less for a fold shorter than
/// one batch, so that it still makes `batch_chunks` chunks to share between threads (or as many as the
/// `MIN_CHUNK_RECORDS` floor allows: 5 for 10^4 records, which made a single chunk of 65,536, decoded
/// on one thread). It depends on the fold's length only (the cut minus the fleet's start), never on the
/// thread count, so the result does not either.
fn chunk_records_for(records: u64, options: &Options) -> u64 {
    let spread = records.div_ceil(options.batch_chunks as u64).max(MIN_CHUNK_RECORDS);
    let chunk = options.chunk_records.min(spread);
    assert!(chunk >= 1 && chunk <= options.chunk_records);
    chunk
}

/// Continues `fleet` from its position to `to` (records `fleet.position()..to` of a prepared source).
pub(crate) fn fold_parallel(
    fleet: &mut Fleet,
    source: &Source,
    to: u64,
    options: &Options,
    phases: &mut Phases,
) -> Result<(), RebuildError> {
    use std::time::Instant;
    if options.chunk_records == 0 || options.batch_chunks == 0 {
        return Err(RebuildError::Options("chunk_records and batch_chunks must be at least 1"));
    }
    assert!(fleet.position <= to, "a fold never goes backwards");
    let codec = |(position, error)| ReadError::Codec { path: source.path.clone(), position, error };
    let mut carry = Carry { ops: (0..PARTITIONS).map(|_| Vec::new()).collect(), ..Carry::default() };
    let chunk_records = chunk_records_for(to - fleet.position, options);
    let batch = chunk_records.saturating_mul(options.batch_chunks as u64);
    // Emptied op vectors and body arenas, reused by the next batch.
    let mut pool: Vec<Vec<Op>> = Vec::new();
    let mut arena_pool: Vec<Vec<u8>> = Vec::new();
    let mut pos = fleet.position;
    while pos < to {
        let end = to.min(pos.saturating_add(batch));
        let base = u32::try_from(carry.remaps.len()).unwrap_or(u32::MAX);
        let ranges: Vec<(u64, u64)> = (pos..end)
            .step_by(usize::try_from(chunk_records).unwrap_or(usize::MAX))
            .map(|from| (from, end.min(from + chunk_records)))
            .collect();
        let buffers: Vec<(Vec<Vec<Op>>, Vec<u8>)> = ranges
            .iter()
            .map(|_| {
                let parts = (0..PARTITIONS).map(|_| pool.pop().unwrap_or_default()).collect();
                (parts, arena_pool.pop().unwrap_or_default())
            })
            .collect();
        let started = Instant::now();
        let outs: Vec<ChunkOut> = ranges
            .par_iter()
            .zip(buffers)
            .map(|((from, to), (parts, bodies))| decode_chunk(source, *from, *to, parts, bodies))
            .collect::<Result<_, _>>()?;
        let decoded = Instant::now();
        let (parts, arenas) = glue(fleet, &mut carry, outs, end);
        let glued = Instant::now();
        pool.extend(fold_partitions(fleet, &mut carry, parts, &arenas, base).map_err(codec)?);
        phases.decode += decoded - started;
        phases.glue += glued - decoded;
        phases.fold += glued.elapsed();
        arena_pool.extend(arenas);
        // Every op before the first one still carried has been folded: its verdict is spent. (The map
        // held a verdict for every pairing event of the log: about 50 MB at 10^8 events.)
        let first_carried = carry.ops.iter().filter_map(|ops| ops.first().map(|op| op.position)).min().unwrap_or(end);
        carry.verdicts.retain(|position, _| *position >= first_carried);
        pos = end;
    }
    // The end of the input closes the append still open (a cut inside an append folds what is there).
    carry.window.close(&mut carry.verdicts);
    let base = u32::try_from(carry.remaps.len()).unwrap_or(u32::MAX);
    let started = Instant::now();
    fold_partitions(fleet, &mut carry, (0..PARTITIONS).map(|_| Vec::new()).collect(), &[], base).map_err(codec)?;
    phases.fold += started.elapsed();
    assert!(carry.ops.iter().all(Vec::is_empty), "every event is folded once all appends are closed");
    fold::finalize(fleet);
    Ok(())
}

/// The sequential step between decoding and folding a batch; returns the ops by partition, chunk order,
/// and the chunks' body arenas.
fn glue(fleet: &mut Fleet, carry: &mut Carry, outs: Vec<ChunkOut>, end: u64) -> (Vec<Vec<Vec<Op>>>, Vec<Vec<u8>>) {
    let audit = fleet.audit.is_some();
    let mut acc = Acc::default();
    let mut arenas = Vec::with_capacity(outs.len());
    let mut by_part: Vec<Vec<Vec<Op>>> = (0..PARTITIONS).map(|_| Vec::with_capacity(outs.len())).collect();
    for out in outs {
        let tables = fleet.names.tables_mut();
        let mut remap: [Vec<u32>; 4] = Default::default();
        for ((map, table), names) in remap.iter_mut().zip(tables).zip(&out.names) {
            *map = names.iter().map(|n| table.intern(n)).collect();
        }
        carry.remaps.push(remap);
        for (position, d) in &out.directives {
            record_directive(&mut fleet.directives, *position, d, audit, &mut acc);
        }
        // The window holds the pairing of the append still open; `closes` is where that append ends,
        // once its commit marker is read: for what earlier chunks left open, this chunk's first one.
        let mut closes = out.first_commit;
        for (position, event, closed_at) in out.pairing {
            if !carry.window.is_empty() && closed_at != closes {
                carry.window.close(&mut carry.verdicts);
            }
            carry.window.push(position, event, &mut carry.verdicts);
            closes = closed_at;
        }
        if closes.is_some() && !carry.window.is_empty() {
            carry.window.close(&mut carry.verdicts);
        }
        if let Some((commit, at, recorded_at)) = out.last {
            fleet.at_commit = commit;
            fleet.end_at = Some(at);
            fleet.last_recorded_at = Some(recorded_at);
        }
        for (slot, ops) in by_part.iter_mut().zip(out.parts) {
            slot.push(ops);
        }
        arenas.push(out.bodies);
    }
    fleet.position = end;
    fleet.illegal += acc.illegal;
    if let Some(log) = fleet.audit.as_mut() {
        log.findings.extend(acc.findings);
    }
    (by_part, arenas)
}

/// Folds each partition's carried ops, then its new ops, in position order; partitions in parallel.
/// `arenas` are the body arenas of the batch's chunks, the first of which has global number `base`.
///
/// Returns the emptied op vectors, for reuse; or the position of a body that failed to decode again.
fn fold_partitions(
    fleet: &mut Fleet,
    carry: &mut Carry,
    parts: Vec<Vec<Vec<Op>>>,
    arenas: &[Vec<u8>],
    base: u32,
) -> Result<Vec<Vec<Op>>, (u64, CodecError)> {
    let audit = fleet.audit.as_ref().map(|a| a.config);
    let ctx = Ctx { names: &fleet.names, directives: &fleet.directives, audit: audit.as_ref() };
    let verdicts = &carry.verdicts;
    let remaps = &carry.remaps;
    type Folded = (Acc, Vec<Vec<Op>>);
    let folded: Vec<Result<Folded, (u64, CodecError)>> = fleet
        .partitions
        .par_iter_mut()
        .zip(carry.ops.par_iter_mut())
        .zip(parts.into_par_iter())
        .map(|((part, waiting), chunks)| {
            let mut acc = Acc::default();
            let earlier = std::mem::take(waiting);
            let mut stalled = false;
            // Folds one op; `bodies` is the arena of its chunk, `chunk` the chunk's global number, `slot`
            // the terminal's slot if already found.
            let mut fold_op = |part: &mut Partition,
                               op: &Op,
                               slot: Option<usize>,
                               bodies: &[u8],
                               chunk: u32|
             -> Result<(), (u64, CodecError)> {
                let Op { position, at, ref sn, ref event } = *op;
                let pairing = if event.is_pairing() { verdicts.get(&position) } else { Some(&None) };
                let pairing = match (stalled, pairing) {
                    (false, Some(verdict)) => verdict.clone(),
                    _ => {
                        stalled = true;
                        // Carried to the next batch, when this chunk's arena is gone: decode it now.
                        let event = match event {
                            OpEvent::Body { .. } => {
                                let (decoded, ids) = event.resolve(bodies).map_err(|e| (position, e))?;
                                OpEvent::Owned(Box::new(OwnedOp { event: decoded.into_owned(), ids, chunk }))
                            }
                            other => other.clone(),
                        };
                        waiting.push(Op { position, at, sn: sn.clone(), event });
                        return Ok(());
                    }
                };
                let (decoded, local) = event.resolve(bodies).map_err(|e| (position, e))?;
                let chunk = match event {
                    OpEvent::Owned(owned) => owned.chunk,
                    _ => chunk,
                };
                let ids = match *decoded {
                    TerminalEvent::Issued(_) => remaps.get(chunk as usize).map(|remap| {
                        let mut ids = NameIds::default();
                        for ((id, map), local) in ids.iter_mut().zip(remap).zip(local) {
                            *id = map.get(local as usize).copied().unwrap_or_default();
                        }
                        ids
                    }),
                    _ => None,
                };
                let input = Input { position, at, sn, slot, event: &decoded, ids, pairing };
                let _ = step(part, &ctx, input, &mut acc);
                Ok(())
            };
            for op in &earlier {
                assert!(!matches!(op.event, OpEvent::Body { .. }), "carried ops own their event");
                fold_op(part, op, None, &[], u32::MAX)?;
            }
            let mut spent = Vec::with_capacity(chunks.len());
            for (c, mut ops) in chunks.into_iter().enumerate() {
                let bodies = arenas.get(c).map_or(&[][..], Vec::as_slice);
                let chunk = base.saturating_add(u32::try_from(c).unwrap_or(u32::MAX));
                // The fold is bound by two cache misses per op (the index bucket, then the terminal) in
                // a fleet larger than the cache. Looking up a window of ops first, as independent loads,
                // lets the CPU overlap their misses; the steps then find both in cache.
                for window in ops.chunks(LOOKAHEAD) {
                    let mut slots = [None; LOOKAHEAD];
                    let mut touched = 0u64;
                    for (slot, op) in slots.iter_mut().zip(window) {
                        *slot = part.slot(&op.sn);
                        touched ^= slot.and_then(|s| part.terminals.get(s)).map_or(0, |t| t.last_position);
                    }
                    std::hint::black_box(touched);
                    for (slot, op) in slots.into_iter().zip(window) {
                        fold_op(part, op, slot, bodies, chunk)?;
                    }
                }
                ops.clear();
                spent.push(ops);
            }
            Ok((acc, spent))
        })
        .collect();
    let mut spent = Vec::new();
    for result in folded {
        let (acc, ops) = result?;
        fleet.illegal += acc.illegal;
        if let Some(log) = fleet.audit.as_mut() {
            log.findings.extend(acc.findings);
        }
        spent.extend(ops);
    }
    Ok(spent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn walked_sparse_offsets_equal_the_ledgers_and_damage_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = ledger::Options {
            durability: ledger::Durability::Relaxed,
            segment_max_bytes: 64 << 10,
            ..ledger::Options::default()
        };
        let ledger = ledger::Ledger::open_with(dir.path(), options).unwrap();
        sim::run(&ledger, &sim::Config::about_events(20_000, 300, 7), &mut |_| {}).unwrap();
        assert_eq!(ledger.close().unwrap().index_warning, None);
        let source = Source::open(dir.path()).unwrap();
        assert!(source.files.len() > 3, "several sealed segments");
        for meta in &source.files {
            // The offsets are those a full frame-by-frame read meets.
            let mut reader = log::segment::FrameReader::open(&meta.path).unwrap();
            reader.limit(meta.readable_len);
            let mut offsets = Vec::new();
            let mut seen = 0u64;
            loop {
                let offset = reader.offset();
                match reader.next_item().unwrap() {
                    Some(log::segment::Item::Record { .. }) => {
                        if seen.is_multiple_of(log::source::SPARSE_EVERY_RECORDS) {
                            offsets.push(offset);
                        }
                        seen += 1;
                    }
                    _ => break,
                }
            }
            assert_eq!(build_sparse(meta).unwrap(), offsets, "{}", meta.path.display());
        }
        // A record count the frames do not match is refused.
        let mut wrong = source.files[0].clone();
        wrong.records += 1;
        assert!(build_sparse(&wrong).is_err());
        assert!(prepare(&Source { files: vec![wrong], ..source.clone() }).is_err());
        // And the prepared source rebuilds the same fleet.
        let prepared = prepare(&source).unwrap();
        let options = Options { chunk_records: 1000, batch_chunks: 3, ..Options::default() };
        assert_eq!(
            rebuild(&prepared, Cut::Head, &options).unwrap(),
            rebuild_sequential(&source, Cut::Head, None).unwrap()
        );
    }

    #[test]
    fn a_fold_shorter_than_a_batch_still_makes_batch_chunks_chunks() {
        let options = Options::default();
        let full = options.chunk_records * options.batch_chunks as u64;
        // A long fold keeps the configured chunks.
        assert_eq!(chunk_records_for(10 * full, &options), options.chunk_records);
        assert_eq!(chunk_records_for(full, &options), options.chunk_records);
        // A short one is spread over batch_chunks chunks...
        assert_eq!(chunk_records_for(160_000, &options), 10_000);
        assert_eq!(chunk_records_for(100_001, &options), 6_251);
        // ...but not below the floor.
        assert_eq!(chunk_records_for(10_000, &options), MIN_CHUNK_RECORDS);
        assert_eq!(chunk_records_for(0, &options), MIN_CHUNK_RECORDS);
        // Configured chunks smaller than the floor are kept.
        let tiny = Options { chunk_records: 3, ..Options::default() };
        assert_eq!(chunk_records_for(1_000_000, &tiny), 3);
    }
}

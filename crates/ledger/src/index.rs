//! The derived index: an in-memory [`View`] of current state (per-terminal lifecycle state, stream
//! versions and positions, directives, model → terminals, idempotency keys) that validates decisions and
//! answers stream reads, and its persistent copy in sled, the [`Store`].
//!
//! Nothing here is a source of truth: the whole index can be deleted and is rebuilt from the segments.
//!
//! ## Why snapshots, not one key per event
//! sled with one key per event manages ~100k events/s on this machine; the log takes millions. So the
//! view is persisted as *pages*: terminals are spread over [`BUCKETS`] buckets by a hash of their SN, and
//! a snapshot writes one sled value per bucket that changed since the previous snapshot (in the spirit
//! of EventStoreDB's PTables: a memtable in memory, flushed in large sorted pieces). Snapshots are taken
//! of the follower's full view every [`SNAPSHOT_EVERY_RECORDS`] records (and at least
//! [`SNAPSHOT_RECORDS_PER_TERMINAL`] a terminal) and when the ledger closes, written by a
//! background thread (see `indexer.rs`), and only once every record they cover is durable in the log. The log between the snapshot's watermark and its
//! end is replayed on open, as a database replays its WAL.
//!
//! ## sled layout (keys big-endian, values bincode standard)
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `watermark`, `last_leaf`, `ledger_id` | records covered (u64); leaf hash of record watermark-1; the ledger's id |
//! | `buckets` | bucket number u16 | every terminal of the bucket: SN, version, lifecycle state, model, positions |
//! | `directives_stream` | `D` | version and positions of the directives stream |
//! | `directives` | directive id | the directive's models |
//! | `models` | model | every terminal issued with the model |
//! | `event_ids` | bucket number u16 | every idempotency key of the bucket with its position |
//!
//! The watermark is written last, in the same sled batch sequence, after the values it covers; sled
//! recovers a prefix of its operations, so a crash leaves either the old snapshot or the new one.

use crate::lifecycle::State;
use crate::merkle::Hash;
use crate::model::{DirectiveId, EventId, FieldError, ModelCode, Sn, StreamId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

/// Number of snapshot pages terminals are spread over.
pub const BUCKETS: usize = 4096;
/// A periodic snapshot of the view is taken after at least this many new records, and at least
/// [`SNAPSHOT_RECORDS_PER_TERMINAL`] per terminal of the fleet.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 2_000_000;
/// Records per terminal between periodic snapshots (with [`SNAPSHOT_EVERY_RECORDS`] as the floor).
///
/// A snapshot rewrites every bucket that changed, and between two snapshots a busy fleet changes
/// nearly all of them, so a snapshot costs about the whole fleet's pages (about 100 bytes a terminal
/// to encode and hand to sled). At a fixed 2,000,000 records that cost per record grew with the fleet:
/// a 10^8-event fleet of 5.6 M terminals re-encoded its 5.6 M terminals 50 times (0.05 terminal pages a
/// record at 10^6 events, 2.7 at 10^8), and the writer's cost per event was 2.3–4× its cost at 10^6
/// (BENCHMARKS.md, "Scale"). Spacing snapshots by the fleet's size keeps their cost at most a quarter
/// of a terminal page per record at any size; what it costs is the replay after the watermark on open,
/// at most this many records a terminal, proportional to the fleet as loading the snapshot is.
pub const SNAPSHOT_RECORDS_PER_TERMINAL: u64 = 4;

const _: () = assert!(BUCKETS > 0 && BUCKETS <= 1 << 16, "bucket numbers are stored as u16 keys");

/// A fast hash map (foldhash): keys are SNs and ids chosen by the processor, not by an attacker.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
/// A fast hash set.
pub type FastSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// The bucket of a terminal: FNV-1a (64-bit) of its SN modulo [`BUCKETS`]. Part of the index format,
/// so it is spelled out here rather than borrowed from a hasher whose output may change between versions.
pub fn bucket_of(sn: &Sn) -> usize {
    fnv_bucket(sn.as_str())
}

fn fnv_bucket(text: &str) -> usize {
    (log::hash::fnv1a(text.as_bytes()) % BUCKETS as u64) as usize
}

/// A stream's positions, delta-encoded as varints (about 3 bytes per event in a busy log).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    bytes: Vec<u8>,
    last: u64,
    count: u64,
}

impl Positions {
    /// Appends a position, which must be larger than the last one.
    pub fn push(&mut self, position: u64) {
        assert!(self.count == 0 || position > self.last, "stream positions must increase");
        let mut delta = if self.count == 0 { position } else { position - self.last };
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                self.bytes.push(byte);
                break;
            }
            self.bytes.push(byte | 0x80);
        }
        self.last = position;
        self.count += 1;
    }

    /// Number of positions.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last position, if any.
    pub fn last(&self) -> Option<u64> {
        (self.count > 0).then_some(self.last)
    }

    /// Checks a list read from the index without allocating: the varints decode, increase, number
    /// exactly `count`, end at `last`, and stay below `limit` (the records the index covers). A list
    /// that fails is a corrupt index, which is then rebuilt from the log.
    pub fn check(&self, limit: u64) -> Result<(), PositionsError> {
        self.decode_each(|_| {})?;
        match self.last() {
            Some(last) if last >= limit => Err(PositionsError::Beyond { last, limit }),
            _ => Ok(()),
        }
    }

    /// Decodes every position, in order. A malformed list (only possible from a corrupt index) is an error.
    pub fn to_vec(&self) -> Result<Vec<u64>, PositionsError> {
        // Each position takes at least one byte, so the bytes bound the allocation, not the stored count.
        let mut out = Vec::with_capacity((self.count as usize).min(self.bytes.len()));
        self.decode_each(|position| out.push(position))?;
        Ok(out)
    }

    /// Hands each position to `each`, in order, checking that the varints decode, strictly increase,
    /// number exactly `count` and end at `last`.
    fn decode_each(&self, mut each: impl FnMut(u64)) -> Result<(), PositionsError> {
        let (mut value, mut shift, mut seen, mut last) = (0u64, 0u32, 0u64, 0u64);
        for &byte in &self.bytes {
            if shift > 63 {
                return Err(PositionsError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if seen > 0 && value == 0 {
                    return Err(PositionsError::NotIncreasing);
                }
                last = if seen == 0 { value } else { last.checked_add(value).ok_or(PositionsError::Overflow)? };
                each(last);
                seen += 1;
                (value, shift) = (0, 0);
            }
        }
        if shift != 0 || seen != self.count || (seen > 0 && last != self.last) {
            return Err(PositionsError::CountMismatch);
        }
        Ok(())
    }
}

/// An SN as the view's key ([`log::key::CompactSn`], the one compact SN key: 22 bytes inline, longer
/// SNs boxed). The view holds millions of terminals: a key that had to follow a pointer to compare
/// would cost one more cache miss per event, and a key wide enough for every valid SN inline (65
/// bytes) was most of a terminal's entry.
pub type SnKey = log::key::CompactSn;

/// What the ledger keeps of one terminal, in its owned form: what a snapshot page holds per terminal
/// (the page format) and what a view is loaded from. The view itself keeps it packed ([`Entry`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalMem {
    /// Events in the stream.
    pub version: u64,
    /// Lifecycle state after them.
    pub state: State,
    /// The terminal's model (for directives).
    pub model: ModelCode,
    /// Positions of its events.
    pub positions: Positions,
}

/// A terminal as the view holds it, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalRef<'a> {
    /// Events in the stream.
    pub version: u64,
    /// Lifecycle state after them.
    pub state: State,
    /// The terminal's model.
    pub model: &'a ModelCode,
    /// Positions of its events (empty in the writer's view, which keeps none).
    pub positions: &'a Positions,
}

impl TerminalRef<'_> {
    /// The owned form.
    #[cfg(test)]
    pub fn to_mem(self) -> TerminalMem {
        TerminalMem {
            version: self.version,
            state: self.state,
            model: self.model.clone(),
            positions: self.positions.clone(),
        }
    }
}

/// A terminal as the view holds it, for update.
#[derive(Debug)]
pub struct TerminalMut<'a> {
    /// Events in the stream.
    pub version: &'a mut u64,
    /// Lifecycle state after them.
    pub state: &'a mut State,
    /// Positions of its events; `None` in the writer's view, which keeps none.
    pub positions: Option<&'a mut Positions>,
}

/// The positions of a view that keeps none (the writer's).
static NO_POSITIONS: Positions = Positions { bytes: Vec::new(), last: 0, count: 0 };

/// One terminal in the view's arena: its SN beside its state, so the look-up's key comparison and the
/// check's read of the state touch the same cache line. 56 bytes: the model is an id into the view's
/// model table, and the positions (only the full view has them) live in a vector of their own, so the
/// writer's view pays nothing for them.
#[derive(Clone, Debug)]
struct Entry {
    key: SnKey,
    version: u64,
    state: State,
    model: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 56, "a view entry is at most 56 bytes");

/// The in-memory view of current state.
///
/// Terminals live in an arena (`entries`, indexed by a *slot*); the hash table holds only slots
/// (4 bytes each, hashed by SN and compared against the arena's inline key). With 500 k terminals the
/// table is a few MiB and stays in cache, so a look-up costs one miss, on the arena entry the check
/// needs anyway (a map holding the keys themselves cost a second miss per event). The write path looks
/// a terminal up once per append (to validate) and reaches it again by slot (to commit).
///
/// Models are interned: an entry holds a model id, the view holds each model's code once and, per model,
/// the slots of its terminals (4 bytes a terminal, where a list of SNs took 24).
///
/// A view is *full* (the default) or the *writer's*. A full view keeps every stream's positions and
/// marks what changed for the next snapshot; the background follower keeps one, answers stream reads
/// from it and snapshots it. The writer's view ([`View::writer_copy`]) keeps only what validating an
/// append needs (versions, states, models, directives, idempotency keys), so an append does not pay
/// for the stream index or for snapshots.
#[derive(Clone, Debug)]
pub struct View {
    full: bool,
    slots: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::FixedState,
    entries: Vec<Entry>,
    /// Per slot, in the full view only (empty in the writer's).
    positions: Vec<Positions>,
    bucket_of_slot: Vec<u16>,
    members: Vec<Vec<u32>>,
    dirty: Vec<bool>,
    /// Positions of the directives stream.
    pub directives_stream: Positions,
    /// Recorded directives and their models.
    pub directives: FastMap<DirectiveId, FastSet<ModelCode>>,
    /// Model codes by id.
    model_codes: Vec<ModelCode>,
    /// Model code → id.
    model_ids: FastMap<ModelCode, u32>,
    /// Per model id, the slots of the terminals issued with it, in the order they were issued (not
    /// slot order: a view loaded from a snapshot numbers its slots in bucket order, and takes each
    /// list's order from its model page).
    model_slots: Vec<Vec<u32>>,
    /// Idempotency keys → position, spread over buckets like the terminals.
    event_ids: Vec<FastMap<EventId, u64>>,
    event_ids_dirty: Vec<bool>,
    /// Changes since the last snapshot that are not in the buckets.
    delta: Delta,
}

#[derive(Debug, Default, Clone)]
struct Delta {
    directives: Vec<(DirectiveId, Vec<ModelCode>)>,
    /// Ids of the models with newly issued terminals.
    models: FastSet<u32>,
    directives_stream: bool,
}

impl Default for View {
    fn default() -> Self {
        View {
            full: true,
            slots: hashbrown::HashTable::new(),
            hasher: foldhash::fast::FixedState::default(),
            entries: Vec::new(),
            positions: Vec::new(),
            bucket_of_slot: Vec::new(),
            members: (0..BUCKETS).map(|_| Vec::new()).collect(),
            dirty: vec![false; BUCKETS],
            directives_stream: Positions::default(),
            directives: FastMap::default(),
            model_codes: Vec::new(),
            model_ids: FastMap::default(),
            model_slots: Vec::new(),
            event_ids: (0..BUCKETS).map(|_| FastMap::default()).collect(),
            event_ids_dirty: vec![false; BUCKETS],
            delta: Delta::default(),
        }
    }
}

impl View {
    /// Whether this view keeps stream positions and change marks (see [`View`]).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// A copy for the writer: the same terminals (in the same slots), directives, models and
    /// idempotency keys, without stream positions or change marks.
    pub fn writer_copy(&self) -> View {
        View {
            full: false,
            slots: self.slots.clone(),
            hasher: self.hasher.clone(),
            entries: self.entries.clone(),
            positions: Vec::new(),
            bucket_of_slot: self.bucket_of_slot.clone(),
            members: (0..BUCKETS).map(|_| Vec::new()).collect(),
            dirty: vec![false; BUCKETS],
            directives_stream: self.directives_stream.clone(),
            directives: self.directives.clone(),
            model_codes: self.model_codes.clone(),
            model_ids: self.model_ids.clone(),
            model_slots: self.model_slots.clone(),
            event_ids: self.event_ids.clone(),
            event_ids_dirty: vec![false; BUCKETS],
            delta: Delta::default(),
        }
    }

    /// The slot of a terminal.
    pub fn slot_of(&self, sn: &Sn) -> Option<u32> {
        let text = sn.as_str().as_bytes();
        let entries = &self.entries;
        self.slots
            .find(self.hasher.hash_one(text), |&slot| {
                entries.get(slot as usize).is_some_and(|e| e.key.as_bytes() == text)
            })
            .copied()
    }

    /// The slots of many terminals (`None` for an absent SN or terminal).
    ///
    /// Three passes, so the CPU can overlap the cache misses instead of waiting for each in turn:
    /// probe the table (4 bytes a terminal, it stays in cache) for each SN's first candidate slot
    /// without touching the arena; load every candidate's arena entry (independent loads, no branch on
    /// what they return); then look up for real, finding the entries in cache.
    pub fn slots_of<'a>(&self, sns: impl Iterator<Item = Option<&'a Sn>>) -> Vec<Option<u32>> {
        let sns: Vec<Option<&Sn>> = sns.collect();
        let mut candidates: Vec<u32> = Vec::with_capacity(sns.len());
        for sn in sns.iter().flatten() {
            let mut first = None;
            self.slots.find(self.hasher.hash_one(sn.as_str().as_bytes()), |&slot| {
                first = first.or(Some(slot));
                false
            });
            if let Some(slot) = first {
                candidates.push(slot);
            }
        }
        let mut touched = 0u64;
        for &slot in &candidates {
            if let Some(entry) = self.entries.get(slot as usize) {
                touched = touched
                    .wrapping_add(entry.key.as_bytes().len() as u64)
                    .wrapping_add(entry.version)
                    .wrapping_add(entry.state.flow_fen);
            }
        }
        std::hint::black_box(touched);
        sns.into_iter().map(|sn| sn.and_then(|sn| self.slot_of(sn))).collect()
    }

    /// Whether `slot` holds the terminal `sn`.
    pub fn slot_holds(&self, slot: u32, sn: &Sn) -> bool {
        self.entries.get(slot as usize).is_some_and(|e| e.key.as_bytes() == sn.as_str().as_bytes())
    }

    /// A terminal's entry.
    pub fn terminal(&self, sn: &Sn) -> Option<TerminalRef<'_>> {
        self.slot_of(sn).and_then(|slot| self.terminal_at(slot))
    }

    /// The entry in `slot`.
    pub fn terminal_at(&self, slot: u32) -> Option<TerminalRef<'_>> {
        let e = self.entries.get(slot as usize)?;
        let model = self.model_codes.get(e.model as usize)?;
        let positions = if self.full { self.positions.get(slot as usize)? } else { &NO_POSITIONS };
        Some(TerminalRef { version: e.version, state: e.state, model, positions })
    }

    /// The entry in `slot`, for update; marks its bucket dirty.
    pub fn terminal_at_mut(&mut self, slot: u32) -> Option<TerminalMut<'_>> {
        let bucket = *self.bucket_of_slot.get(slot as usize)?;
        if let Some(dirty) = self.dirty.get_mut(usize::from(bucket)).filter(|_| self.full) {
            *dirty = true;
        }
        let e = self.entries.get_mut(slot as usize)?;
        let positions = match self.full {
            true => Some(self.positions.get_mut(slot as usize)?),
            false => None,
        };
        Some(TerminalMut { version: &mut e.version, state: &mut e.state, positions })
    }

    /// The id of `model`, interned on first use.
    fn model_id(&mut self, model: &ModelCode) -> u32 {
        if let Some(&id) = self.model_ids.get(model) {
            return id;
        }
        let id = u32::try_from(self.model_codes.len()).unwrap_or(u32::MAX);
        assert!(id < u32::MAX, "more than 4 billion models");
        self.model_codes.push(model.clone());
        self.model_slots.push(Vec::new());
        self.model_ids.insert(model.clone(), id);
        id
    }

    /// Adds a newly issued terminal; returns its slot.
    pub fn insert_terminal(&mut self, sn: &Sn, mem: TerminalMem) -> u32 {
        let slot = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        assert!(slot < u32::MAX, "more than 4 billion terminals");
        let bucket = bucket_of(sn);
        let key = SnKey::new(sn.as_str());
        let (entries, hasher) = (&self.entries, &self.hasher);
        let found = self.slots.entry(
            hasher.hash_one(key.as_bytes()),
            |&s| entries.get(s as usize).is_some_and(|e| e.key == key),
            |&s| entries.get(s as usize).map_or(0, |e| hasher.hash_one(e.key.as_bytes())),
        );
        match found {
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(slot);
            }
            hashbrown::hash_table::Entry::Occupied(_) => panic!("a terminal is issued once"),
        }
        let model = self.model_id(&mem.model);
        self.entries.push(Entry { key, version: mem.version, state: mem.state, model });
        if self.full {
            self.positions.push(mem.positions);
        }
        self.bucket_of_slot.push(bucket as u16);
        if let Some(list) = self.model_slots.get_mut(model as usize) {
            list.push(slot);
        }
        if self.full {
            self.delta.models.insert(model);
        }
        if let (true, Some(members), Some(dirty)) =
            (self.full, self.members.get_mut(bucket), self.dirty.get_mut(bucket))
        {
            members.push(slot);
            *dirty = true;
        }
        assert!(!self.full || self.positions.len() == self.entries.len(), "one position list per terminal");
        slot
    }

    /// Terminals issued with `model`, in the order they were issued.
    pub fn terminals_of_model(&self, model: &ModelCode) -> Vec<Sn> {
        self.model_terminals(model).map(|(sn, _)| sn).collect()
    }

    /// Terminals issued with `model` and their entries, in the order they were issued (straight from
    /// the model's slots: a recall of a whole model does not look each terminal up again by SN).
    pub fn model_terminals(&self, model: &ModelCode) -> impl Iterator<Item = (Sn, TerminalRef<'_>)> + '_ {
        let slots = self.model_ids.get(model).and_then(|id| self.model_slots.get(*id as usize));
        slots
            .into_iter()
            .flatten()
            .filter_map(|slot| Some((self.entries.get(*slot as usize)?.key.to_sn()?, self.terminal_at(*slot)?)))
    }

    /// Records a directive.
    pub fn insert_directive(&mut self, id: DirectiveId, models: &[ModelCode]) {
        if self.full {
            self.delta.directives.push((id.clone(), models.to_vec()));
        }
        self.directives.insert(id, models.iter().cloned().collect());
    }

    /// Adds a position to the directives stream.
    pub fn push_directive_position(&mut self, position: u64) {
        self.directives_stream.push(position);
        self.delta.directives_stream = self.full;
    }

    /// Records an idempotency key.
    pub fn insert_event_id(&mut self, id: EventId, position: u64) {
        let bucket = fnv_bucket(id.as_str());
        if let Some(dirty) = self.event_ids_dirty.get_mut(bucket).filter(|_| self.full) {
            *dirty = true;
        }
        if let Some(ids) = self.event_ids.get_mut(bucket) {
            ids.insert(id, position);
        }
    }

    /// The position of the event with this idempotency key.
    pub fn event_id(&self, id: &EventId) -> Option<u64> {
        self.event_ids.get(fnv_bucket(id.as_str())).and_then(|ids| ids.get(id)).copied()
    }

    /// Number of terminals.
    pub fn terminal_count(&self) -> usize {
        self.entries.len()
    }

    /// Copies what changed since the last snapshot and clears the change marks. Only the copy is made
    /// here, under the follower's lock; sorting and encoding ([`Changed::encode`]) happen on the indexer
    /// thread, off the append path (the copy costs a fraction of the encoding). The copy is packed as
    /// the view is (an entry and its positions, the model by id), except the model lists, which are
    /// encoded here, straight from the slots (about 15 bytes a terminal instead of a list of SNs).
    pub fn take_snapshot(&mut self, size: u64, last_leaf: Hash) -> Changed {
        assert!(self.full, "only a full view is snapshotted");
        let mut buckets = Vec::new();
        for (number, (dirty, members)) in self.dirty.iter_mut().zip(&self.members).enumerate() {
            if !*dirty {
                continue;
            }
            *dirty = false;
            let entries: Vec<(Entry, Positions)> = members
                .iter()
                .filter_map(|slot| {
                    Some((self.entries.get(*slot as usize)?.clone(), self.positions.get(*slot as usize)?.clone()))
                })
                .collect();
            buckets.push((number as u16, entries));
        }
        let mut event_ids = Vec::new();
        for (number, (dirty, ids)) in self.event_ids_dirty.iter_mut().zip(&self.event_ids).enumerate() {
            if !*dirty {
                continue;
            }
            *dirty = false;
            let entries: Vec<(EventId, u64)> = ids.iter().map(|(k, v)| (k.clone(), *v)).collect();
            event_ids.push((number as u16, entries));
        }
        let delta = std::mem::take(&mut self.delta);
        let models = delta
            .models
            .into_iter()
            .filter_map(|id| Some((self.model_codes.get(id as usize)?, self.model_slots.get(id as usize)?)))
            .map(|(code, slots)| Ok((code.as_str().to_owned(), encode(&SnsOf { entries: &self.entries, slots })?)))
            .collect();
        Changed {
            size,
            last_leaf,
            buckets,
            model_codes: self.model_codes.clone(),
            directives_stream: delta.directives_stream.then(|| self.directives_stream.clone()),
            directives: delta.directives,
            models,
            event_ids,
        }
    }
}

/// The SNs of some slots, serialized as a list of strings (the format of a model page: a `Vec<Sn>`).
struct SnsOf<'a> {
    entries: &'a [Entry],
    slots: &'a [u32],
}

impl Serialize for SnsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sns: Vec<&str> =
            self.slots.iter().filter_map(|s| self.entries.get(*s as usize)).map(|e| e.key.as_str()).collect();
        assert_eq!(sns.len(), self.slots.len(), "every listed slot holds a terminal");
        serializer.collect_seq(sns)
    }
}

/// A copy of what changed in the view since the last snapshot, not yet (all) encoded.
#[derive(Debug)]
pub struct Changed {
    size: u64,
    last_leaf: Hash,
    buckets: Vec<(u16, Vec<(Entry, Positions)>)>,
    /// The view's model table, for the entries' model ids.
    model_codes: Vec<ModelCode>,
    directives_stream: Option<Positions>,
    directives: Vec<(DirectiveId, Vec<ModelCode>)>,
    /// Encoded model pages (or why one did not encode, returned by [`Changed::encode`]).
    models: Result<Vec<(String, Vec<u8>)>, SnapshotError>,
    event_ids: Vec<(u16, Vec<(EventId, u64)>)>,
}

/// One terminal of a bucket page, as the page format has it: `(SN, TerminalMem)`, serialized exactly
/// as the owned pair (postcard writes a struct as its fields in order).
struct PageEntry<'a> {
    sn: &'a str,
    version: u64,
    state: &'a State,
    model: &'a ModelCode,
    positions: &'a Positions,
}

impl Serialize for PageEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        #[derive(Serialize)]
        struct Mem<'a> {
            version: u64,
            state: &'a State,
            model: &'a ModelCode,
            positions: &'a Positions,
        }
        let mem = Mem { version: self.version, state: self.state, model: self.model, positions: self.positions };
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(self.sn)?;
        tuple.serialize_element(&mem)?;
        tuple.end()
    }
}

impl Changed {
    /// Records the snapshot covers.
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Terminals the snapshot rewrites (every terminal of each changed bucket).
    #[cfg(test)]
    pub(crate) fn terminal_count(&self) -> usize {
        self.buckets.iter().map(|(_, entries)| entries.len()).sum()
    }

    /// Sorts and encodes the pages (the same view always gives the same bytes). Each bucket's copy is
    /// dropped once encoded, so the copy and the pages are not both held whole.
    pub fn encode(self) -> Result<Snapshot, SnapshotError> {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (number, entries) in self.buckets {
            let mut page = Vec::with_capacity(entries.len());
            for (entry, positions) in &entries {
                let model = self.model_codes.get(entry.model as usize).ok_or(SnapshotError::BadValue("model id"))?;
                let sn = entry.key.as_str();
                page.push(PageEntry { sn, version: entry.version, state: &entry.state, model, positions });
            }
            page.sort_unstable_by(|a, b| a.sn.cmp(b.sn));
            buckets.push((number, encode(&page)?));
        }
        let mut event_ids = Vec::with_capacity(self.event_ids.len());
        for (number, entries) in &self.event_ids {
            let mut entries: Vec<(&str, u64)> = entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            entries.sort_unstable();
            event_ids.push((*number, encode(&entries)?));
        }
        Ok(Snapshot {
            size: self.size,
            last_leaf: self.last_leaf,
            buckets,
            directives_stream: match &self.directives_stream {
                Some(stream) => Some(encode(stream)?),
                None => None,
            },
            directives: self.directives,
            models: self.models?,
            event_ids,
        })
    }
}

/// What one snapshot writes to sled.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Records covered (the watermark).
    pub size: u64,
    /// Leaf hash of record `size - 1`.
    pub last_leaf: Hash,
    /// Changed buckets, encoded.
    pub buckets: Vec<(u16, Vec<u8>)>,
    /// The directives stream, if it changed.
    pub directives_stream: Option<Vec<u8>>,
    /// New directives.
    pub directives: Vec<(DirectiveId, Vec<ModelCode>)>,
    /// Models with newly issued terminals, each with its whole encoded terminal list.
    pub models: Vec<(String, Vec<u8>)>,
    /// Changed idempotency-key buckets, encoded.
    pub event_ids: Vec<(u16, Vec<u8>)>,
}

/// The format of the snapshot pages (postcard 1.x, a specified serde format, behind this number in the
/// `meta` tree). An index of another format is not read: it is rebuilt from the log, as a lost one is.
pub const SNAPSHOT_FORMAT: u8 = 2;
/// The largest page the index decodes (a bucket holds ~1/4096 of the fleet: 64 MiB allows for fleets
/// far beyond 10^7 terminals).
const MAX_PAGE_BYTES: usize = 64 << 20;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    let bytes = postcard::to_stdvec(value).map_err(SnapshotError::Encode)?;
    if bytes.len() > MAX_PAGE_BYTES {
        return Err(SnapshotError::PageTooLarge { bytes: bytes.len() });
    }
    Ok(bytes)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() > MAX_PAGE_BYTES {
        return Err(SnapshotError::PageTooLarge { bytes: bytes.len() });
    }
    // postcard allocates no more than the bytes it is given can fill (serde's cautious size hints).
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(SnapshotError::Decode)?;
    if !rest.is_empty() {
        return Err(SnapshotError::TrailingBytes { bytes: rest.len() });
    }
    Ok(value)
}

fn u64_value(bytes: &[u8]) -> Result<u64, SnapshotError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| SnapshotError::BadValue("u64"))?;
    Ok(u64::from_be_bytes(array))
}

fn text(bytes: &[u8]) -> Result<&str, SnapshotError> {
    std::str::from_utf8(bytes).map_err(SnapshotError::NotText)
}

/// Why the sled index failed. The index is derived, so every one of these means "rebuild it from the
/// log" (at open) or "stop persisting it" (later); none fails an append that is already durable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another handle in this process still holds sled's lock (a ledger of this folder being closed).
    #[error("the index is still held by a ledger being closed")]
    Locked,
    /// sled returned an error.
    #[error("sled: {0}")]
    Sled(String),
    /// sled panicked (caught: sled's panics never take the process down).
    #[error("sled panicked: {0}")]
    Panicked(String),
    /// What sled holds does not decode or does not add up.
    #[error(transparent)]
    Invalid(#[from] SnapshotError),
}

/// Why a stream's position list, read from the index, does not add up (a corrupt index).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PositionsError {
    /// A varint longer than a `u64`.
    #[error("position varint too long")]
    VarintTooLong,
    /// Two positions that do not increase.
    #[error("positions do not increase")]
    NotIncreasing,
    /// Positions that add up past `u64::MAX`.
    #[error("position overflow")]
    Overflow,
    /// The bytes do not hold the stored count, or do not end at the stored last position.
    #[error("position list does not match its count")]
    CountMismatch,
    /// A position at or past the records the index covers.
    #[error("position {last} is beyond the {limit} records indexed")]
    Beyond {
        /// The last position.
        last: u64,
        /// The records indexed.
        limit: u64,
    },
}

/// Why a snapshot page could not be encoded, or why what sled holds does not decode or add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A page over the size limit.
    #[error("an index page of {bytes} bytes is over the limit of {MAX_PAGE_BYTES}")]
    PageTooLarge {
        /// The page's size.
        bytes: usize,
    },
    /// A page could not be encoded.
    #[error("an index page does not encode: {0}")]
    Encode(#[source] postcard::Error),
    /// A page does not decode.
    #[error("an index page does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// Bytes after a page.
    #[error("{bytes} bytes after an index page")]
    TrailingBytes {
        /// How many.
        bytes: usize,
    },
    /// A key of the wrong length.
    #[error("bad {0} key")]
    BadKey(&'static str),
    /// A value of the wrong length.
    #[error("bad {0} value")]
    BadValue(&'static str),
    /// A key that is not text.
    #[error("an index key is not UTF-8: {0}")]
    NotText(#[source] std::str::Utf8Error),
    /// A stored identifier the model refuses.
    #[error("an index key is not a valid id: {0}")]
    BadId(#[source] FieldError),
    /// A bucket number past [`BUCKETS`].
    #[error("bucket {0} out of range")]
    BucketOutOfRange(usize),
    /// A terminal or an event id in a bucket its hash does not give.
    #[error("{what} {id} stored in the wrong bucket")]
    WrongBucket {
        /// `terminal` or `event id`.
        what: &'static str,
        /// The SN or id.
        id: String,
    },
    /// A terminal in two pages.
    #[error("terminal {0} stored twice")]
    StoredTwice(Sn),
    /// A terminal whose positions do not number its version.
    #[error("terminal {sn} is at version {version} with {positions} positions")]
    VersionMismatch {
        /// The terminal.
        sn: Sn,
        /// Its version.
        version: u64,
        /// Its positions.
        positions: u64,
    },
    /// A stream's position list does not add up.
    #[error("{stream}: {error}")]
    Positions {
        /// The stream.
        stream: StreamId,
        /// What is wrong.
        #[source]
        error: PositionsError,
    },
    /// An idempotency key at a position the index does not cover.
    #[error("event id {id} at position {position}, beyond the {indexed} records indexed")]
    EventIdBeyond {
        /// The key.
        id: EventId,
        /// Its position.
        position: u64,
        /// The records indexed.
        indexed: u64,
    },
    /// The model index lists a terminal under another model than its bucket.
    #[error("model index lists {sn} under {model}, the buckets disagree")]
    ModelDisagrees {
        /// The terminal.
        sn: Sn,
        /// The model it is listed under.
        model: ModelCode,
    },
    /// The model index does not list exactly the terminals of the buckets.
    #[error("model index lists {listed} terminals, the buckets hold {held}")]
    ModelCount {
        /// Terminals listed.
        listed: usize,
        /// Terminals held.
        held: usize,
    },
    /// An index of another snapshot format.
    #[error("the index is not in snapshot format {SNAPSHOT_FORMAT}")]
    Format,
    /// An index of another ledger, or one ahead of the log.
    #[error("index belongs to another log")]
    AnotherLog,
    /// The watermark's leaf hash is not the log's.
    #[error("index watermark does not match the log")]
    WatermarkMismatch,
}

/// sled's error, without Rust's Debug format (sled prints some I/O errors with `{:?}`).
fn sled_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Sled(match io.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
            None => std::io::Error::from(io.kind()).to_string(),
        }),
        other => StoreError::Sled(other.to_string()),
    }
}

/// Runs one call into sled with its panics caught: sled 0.34 panics on some damaged files and failed
/// devices (e.g. "tried to serialize Uninitialized", ENOTCONN), and the index must never take the
/// ledger down with it.
fn guarded<T>(call: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(StoreError::Panicked(what))
        }
    }
}

/// Whether sled's lock on the database at `path` is free, asked of the OS (a typed answer, never sled's
/// error text): flock locks of two open files conflict even within one process.
fn sled_lock_is_free(path: &std::path::Path) -> Result<bool, StoreError> {
    let db = path.join("db");
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&db) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::Sled(format!("{}: {e}", db.display()))),
    };
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Sled(format!("{}: {e}", db.display()))),
    }
}

/// The sled side of the index.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    buckets: sled::Tree,
    directives_stream: sled::Tree,
    directives: sled::Tree,
    models: sled::Tree,
    event_ids: sled::Tree,
}

/// How far the persisted index reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// Records covered.
    pub size: u64,
    /// Leaf hash of the last covered record.
    pub last_leaf: Hash,
    /// The ledger the index belongs to.
    pub ledger_id: u64,
}

impl Store {
    /// Opens (or creates) the sled database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Store, StoreError> {
        if !sled_lock_is_free(path)? {
            return Err(StoreError::Locked);
        }
        guarded(|| Self::open_unguarded(path))
    }

    fn open_unguarded(path: &std::path::Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .cache_capacity(64 << 20)
            .open()
            .map_err(sled_error)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_error);
        Ok(Store {
            meta: tree("meta")?,
            buckets: tree("buckets")?,
            directives_stream: tree("directives_stream")?,
            directives: tree("directives")?,
            models: tree("models")?,
            event_ids: tree("event_ids")?,
            db,
        })
    }

    /// The watermark, `None` for a fresh index.
    pub fn watermark(&self) -> Result<Option<Watermark>, StoreError> {
        guarded(|| self.watermark_unguarded())
    }

    fn watermark_unguarded(&self) -> Result<Option<Watermark>, StoreError> {
        let get = |key: &str| self.meta.get(key).map_err(sled_error);
        match get("format")? {
            Some(format) if format.as_ref() == [SNAPSHOT_FORMAT] => {}
            // Written before the format was recorded (bincode pages), or by another version.
            Some(_) | None if get("watermark")?.is_some() => {
                return Err(SnapshotError::Format.into());
            }
            _ => {}
        }
        let (Some(size), Some(leaf), Some(id)) = (get("watermark")?, get("last_leaf")?, get("ledger_id")?) else {
            return Ok(None);
        };
        let last_leaf: Hash = leaf.as_ref().try_into().map_err(|_| SnapshotError::BadValue("last_leaf"))?;
        Ok(Some(Watermark { size: u64_value(&size)?, last_leaf, ledger_id: u64_value(&id)? }))
    }

    /// Loads the whole view as of the watermark.
    ///
    /// `indexed` is the number of records the watermark covers. Every stream is checked as it loads
    /// (its positions decode, number exactly its version, and lie below `indexed`), so a corrupt
    /// snapshot is refused and rebuilt from the log rather than handed to the write path.
    pub fn load_view(&self, indexed: u64) -> Result<View, StoreError> {
        guarded(|| self.load_view_unguarded(indexed))
    }

    fn load_view_unguarded(&self, indexed: u64) -> Result<View, StoreError> {
        let mut view = View::default();
        for item in self.buckets.iter() {
            let (key, value) = item.map_err(sled_error)?;
            let number =
                u16::from_be_bytes(key.as_ref().try_into().map_err(|_| SnapshotError::BadKey("bucket"))?) as usize;
            if number >= BUCKETS {
                return Err(SnapshotError::BucketOutOfRange(number).into());
            }
            let entries: Vec<(Sn, TerminalMem)> = decode(&value)?;
            for (sn, mem) in entries {
                if bucket_of(&sn) != number {
                    return Err(SnapshotError::WrongBucket { what: "terminal", id: sn.to_string() }.into());
                }
                if view.slot_of(&sn).is_some() {
                    return Err(SnapshotError::StoredTwice(sn).into());
                }
                if mem.version == 0 || mem.positions.len() != mem.version {
                    let (version, positions) = (mem.version, mem.positions.len());
                    return Err(SnapshotError::VersionMismatch { sn, version, positions }.into());
                }
                mem.positions
                    .check(indexed)
                    .map_err(|error| SnapshotError::Positions { stream: StreamId::Terminal(sn.clone()), error })?;
                view.insert_terminal(&sn, mem);
            }
        }
        if let Some(bytes) = self.directives_stream.get("D").map_err(sled_error)? {
            view.directives_stream = decode(&bytes)?;
            view.directives_stream
                .check(indexed)
                .map_err(|error| SnapshotError::Positions { stream: StreamId::Directives, error })?;
        }
        for item in self.directives.iter() {
            let (key, value) = item.map_err(sled_error)?;
            let id = DirectiveId::parse(text(&key)?).map_err(SnapshotError::BadId)?;
            let models: Vec<ModelCode> = decode(&value)?;
            view.directives.insert(id, models.into_iter().collect());
        }
        for item in self.event_ids.iter() {
            let (key, value) = item.map_err(sled_error)?;
            let number =
                u16::from_be_bytes(key.as_ref().try_into().map_err(|_| SnapshotError::BadKey("event id"))?) as usize;
            let entries: Vec<(EventId, u64)> = decode(&value)?;
            for (id, position) in entries {
                if number >= BUCKETS || fnv_bucket(id.as_str()) != number {
                    return Err(SnapshotError::WrongBucket { what: "event id", id: id.to_string() }.into());
                }
                if position >= indexed {
                    return Err(SnapshotError::EventIdBeyond { id, position, indexed }.into());
                }
                if let Some(ids) = view.event_ids.get_mut(number) {
                    ids.insert(id, position);
                }
            }
        }
        // The model index must cover exactly the terminals of the buckets.
        let mut listed = 0usize;
        let mut seen = vec![false; view.terminal_count()];
        for item in self.models.iter() {
            let (key, value) = item.map_err(sled_error)?;
            let model = ModelCode::parse(text(&key)?).map_err(SnapshotError::BadId)?;
            // The view lists each model's terminals itself (from the buckets); the page must list the
            // same ones.
            let terminals: Vec<Sn> = decode(&value)?;
            let mut slots = Vec::with_capacity(terminals.len());
            for sn in &terminals {
                let slot = view.slot_of(sn).filter(|slot| view.terminal_at(*slot).map(|m| m.model) == Some(&model));
                let Some(slot) = slot else {
                    return Err(SnapshotError::ModelDisagrees { sn: sn.clone(), model }.into());
                };
                match seen.get_mut(slot as usize) {
                    Some(flag) if !*flag => *flag = true,
                    _ => return Err(SnapshotError::StoredTwice(sn.clone()).into()),
                }
                slots.push(slot);
            }
            let id = view.model_ids.get(&model).copied();
            let held = id.and_then(|id| view.model_slots.get(id as usize)).map_or(0, Vec::len);
            if held != terminals.len() {
                return Err(SnapshotError::ModelCount { listed: terminals.len(), held }.into());
            }
            // The page keeps the order the terminals were issued in (bucket order is a hash order), the
            // order `terminals_of_model` answers in, reopened or not.
            if let Some(list) = id.and_then(|id| view.model_slots.get_mut(id as usize)) {
                *list = slots;
            }
            listed += terminals.len();
        }
        if listed != view.terminal_count() {
            return Err(SnapshotError::ModelCount { listed, held: view.terminal_count() }.into());
        }
        // Loaded state is what sled already holds: nothing is dirty.
        view.dirty.iter_mut().for_each(|d| *d = false);
        view.delta = Delta::default();
        Ok(view)
    }

    /// Empties every tree (before a rebuild).
    pub fn clear(&self) -> Result<(), StoreError> {
        guarded(|| {
            for tree in
                [&self.meta, &self.buckets, &self.directives_stream, &self.directives, &self.models, &self.event_ids]
            {
                tree.clear().map_err(sled_error)?;
            }
            Ok(())
        })
    }

    /// Writes a snapshot, then moves the watermark to it, then flushes.
    pub fn write(&self, snapshot: &Snapshot, ledger_id: u64) -> Result<(), StoreError> {
        guarded(|| self.write_unguarded(snapshot, ledger_id))
    }

    fn write_unguarded(&self, snapshot: &Snapshot, ledger_id: u64) -> Result<(), StoreError> {
        let err = sled_error;
        let mut buckets = sled::Batch::default();
        for (number, bytes) in &snapshot.buckets {
            buckets.insert(&number.to_be_bytes(), bytes.as_slice());
        }
        self.buckets.apply_batch(buckets).map_err(err)?;
        if let Some(bytes) = &snapshot.directives_stream {
            self.directives_stream.insert("D", bytes.as_slice()).map_err(err)?;
        }
        let mut directives = sled::Batch::default();
        for (id, models) in &snapshot.directives {
            directives.insert(id.as_str().as_bytes(), encode(models)?);
        }
        self.directives.apply_batch(directives).map_err(err)?;
        let mut models = sled::Batch::default();
        for (model, bytes) in &snapshot.models {
            models.insert(model.as_bytes(), bytes.as_slice());
        }
        self.models.apply_batch(models).map_err(err)?;
        let mut ids = sled::Batch::default();
        for (number, bytes) in &snapshot.event_ids {
            ids.insert(&number.to_be_bytes(), bytes.as_slice());
        }
        self.event_ids.apply_batch(ids).map_err(err)?;
        let mut meta = sled::Batch::default();
        meta.insert("format", &[SNAPSHOT_FORMAT]);
        meta.insert("watermark", &snapshot.size.to_be_bytes());
        meta.insert("last_leaf", &snapshot.last_leaf);
        meta.insert("ledger_id", &ledger_id.to_be_bytes());
        self.meta.apply_batch(meta).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        guarded(|| self.db.flush().map(|_| ()).map_err(sled_error))
    }

    /// Terminals issued with `model`, from the sled model index (as of the last snapshot).
    pub fn terminals_of_model(&self, model: &ModelCode) -> Result<Vec<Sn>, StoreError> {
        guarded(|| match self.models.get(model.as_str().as_bytes()).map_err(sled_error)? {
            Some(bytes) => Ok(decode(&bytes)?),
            None => Ok(Vec::new()),
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let mut p = Positions::default();
        let values = [0u64, 1, 127, 128, 300, 16_384, 1 << 40, (1 << 40) + 1];
        for v in values {
            p.push(v);
        }
        assert_eq!(p.to_vec().unwrap(), values);
        assert_eq!(p.len(), values.len() as u64);
    }

    #[test]
    fn buckets_are_stable() {
        // The bucket of an SN is part of the index format: it must never change.
        let sn = Sn::parse("SN00000001").unwrap();
        assert_eq!(bucket_of(&sn), bucket_of(&sn.clone()));
        assert!(bucket_of(&sn) < BUCKETS);
    }

    /// The packed view writes the pages the owned form did, byte for byte (a bucket page is the
    /// postcard of its sorted `Vec<(Sn, TerminalMem)>`, a model page the postcard of its `Vec<Sn>` in
    /// issue order), and a view loaded back from them holds the same terminals, with each model's list
    /// still in issue order (not the buckets' hash order).
    #[test]
    fn packed_pages_encode_as_the_owned_form_and_load_back_in_issue_order() {
        use crate::lifecycle::{ContractState, FlagSet, Status};
        let state = |flow_fen| State {
            status: Status::Issued,
            contract: ContractState::Current,
            flow_fen,
            flags: FlagSet::default(),
        };
        let models = [ModelCode::parse("PAX-A920").unwrap(), ModelCode::parse("LKL-A8").unwrap()];
        let mut view = View::default();
        let mut owned: Vec<(Sn, TerminalMem)> = Vec::new();
        // SNs issued in an order that is neither sorted nor bucket order; some too long to sit inline.
        for i in 0..300u64 {
            let sn = if i % 7 == 0 {
                format!("SN-LONG-SERIAL-NUMBER-{:06}", 997 * i % 1000)
            } else {
                format!("SN{:05}", 7919 * i % 10_000)
            };
            let sn = Sn::parse(&sn).unwrap();
            let mut positions = Positions::default();
            for p in 0..=(i % 3) {
                positions.push(10 * i + p);
            }
            let model = models.get((i % 2) as usize).unwrap().clone();
            let mem = TerminalMem { version: positions.len(), state: state(i), model, positions };
            view.insert_terminal(&sn, mem.clone());
            owned.push((sn, mem));
        }
        let snapshot = view.take_snapshot(3_000, [7; 32]).encode().unwrap();
        for (number, bytes) in &snapshot.buckets {
            let mut page: Vec<(Sn, TerminalMem)> =
                owned.iter().filter(|(sn, _)| bucket_of(sn) == *number as usize).cloned().collect();
            page.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(bytes, &postcard::to_stdvec(&page).unwrap(), "bucket {number}");
        }
        let pages: usize = snapshot
            .buckets
            .iter()
            .map(|(number, _)| owned.iter().filter(|(sn, _)| bucket_of(sn) == *number as usize).count())
            .sum();
        assert_eq!(pages, owned.len(), "every terminal is in a written bucket");
        let issued_with = |model: &ModelCode| -> Vec<Sn> {
            owned.iter().filter(|(_, m)| &m.model == model).map(|(sn, _)| sn.clone()).collect()
        };
        assert_eq!(snapshot.models.len(), models.len());
        for (code, bytes) in &snapshot.models {
            let model = ModelCode::parse(code).unwrap();
            assert_eq!(bytes, &postcard::to_stdvec(&issued_with(&model)).unwrap(), "model {code}");
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.write(&snapshot, 1).unwrap();
        let loaded = store.load_view(3_000).unwrap();
        assert_eq!(loaded.terminal_count(), owned.len());
        for (sn, mem) in &owned {
            assert_eq!(loaded.terminal(sn).map(TerminalRef::to_mem).as_ref(), Some(mem), "{sn}");
        }
        for model in &models {
            assert_eq!(loaded.terminals_of_model(model), issued_with(model), "{model:?} after loading");
            assert_eq!(view.terminals_of_model(model), issued_with(model), "{model:?} before");
        }
        let writer = loaded.writer_copy();
        assert!(!writer.is_full());
        let (sn, mem) = owned.get(5).unwrap();
        let got = writer.terminal(sn).unwrap();
        assert_eq!((got.version, got.state, got.model), (mem.version, mem.state, &mem.model));
        assert!(got.positions.is_empty(), "the writer's copy keeps no positions");
    }

    /// A position list read from a damaged index is refused, never trusted or over-allocated.
    #[test]
    fn position_lists_that_do_not_add_up_are_refused() {
        let list = |bytes: Vec<u8>, count, last| Positions { bytes, count, last };
        let mut good = Positions::default();
        for position in [0, 1, 200, 70_000] {
            good.push(position);
        }
        assert_eq!(good.check(70_001), Ok(()));
        assert_eq!(good.to_vec().unwrap(), vec![0, 1, 200, 70_000]);
        assert_eq!(good.check(70_000), Err(PositionsError::Beyond { last: 70_000, limit: 70_000 }));
        assert_eq!(Positions::default().check(0), Ok(()));
        // A zero delta: positions that do not increase.
        assert_eq!(list(vec![1, 0], 2, 1).check(10), Err(PositionsError::NotIncreasing));
        // A varint cut short, a count or a last position that disagrees with the bytes.
        assert!(list(vec![0x80], 0, 0).check(10).is_err());
        assert!(list(vec![0, 1], 3, 1).check(10).is_err());
        assert!(list(vec![0, 1], 2, 5).check(10).is_err());
        // A varint longer than a u64, and a sum that overflows.
        assert!(list(vec![0xff; 11], 1, 0).check(u64::MAX).is_err());
        let max = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(list([max.clone(), max].concat(), 2, u64::MAX).check(u64::MAX).is_err());
        // A huge stored count does not size the allocation.
        assert!(list(vec![5], u64::MAX, 5).to_vec().is_err());
    }
}

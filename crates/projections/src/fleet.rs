//! The fleet read model: one compact state per terminal, the directives seen, and the summary.
//!
//! Terminals live in [`PARTITIONS`] partitions chosen by a fixed hash of the SN (FNV-1a), never by the
//! number of threads, so a fleet has the same shape whichever way it was built. Inside a partition a
//! terminal is a slot of a dense `Vec<Terminal>`, found through a `HashMap<SnKey, u32>` index whose keys hold the SN inline: that
//! keeps the per-terminal cost near `size_of::<Terminal>()` + one index bucket (see
//! [`Fleet::memory`]).

use crate::audit::{AuditConfig, AuditTerm, Finding};
use crate::intern::Names;
use log::lifecycle::{ContractState, DirectiveLookup, State, Status};
use log::{DirectiveId, Sn};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The hasher of the fleet's maps: foldhash, randomly seeded per map (fast on short SNs, and no fixed
/// seed an adversarial log could aim collisions at). Map equality does not depend on it.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// The number of partitions terminals are spread over (a constant: the shape never depends on threads).
pub const PARTITIONS: usize = 64;

/// The partition of an SN: FNV-1a of its bytes, modulo [`PARTITIONS`].
pub fn partition_of(sn: &str) -> usize {
    (log::hash::fnv1a(sn.as_bytes()) % PARTITIONS as u64) as usize
}

/// What the fleet keeps of one terminal (80 bytes; the SN is the key).
///
/// Times are microseconds since the Unix epoch (the ledger's own encoding); names are interned ids
/// into [`Fleet::names`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// The lifecycle state, as the ledger's rules computed it.
    pub state: State,
    /// Model id in [`Names::models`].
    pub model: u32,
    /// Provider id in [`Names::providers`].
    pub provider: u32,
    /// Region id in [`Names::regions`].
    pub region: u32,
    /// Merchant id in [`Names::merchants`].
    pub merchant: u32,
    /// Event time of the `issued` event, in microseconds.
    pub issued_at: i64,
    /// End of the contract in force (from `issued` or the latest `contract_renewed`), in microseconds.
    pub contract_end: i64,
    /// Position of the last event that changed this terminal.
    pub last_position: u64,
    /// Replacement links; boxed because few terminals have them.
    pub links: Option<Box<Links>>,
    /// What the audit rules track, when the fleet is built with audit.
    pub audit: Option<Box<AuditTerm>>,
}

/// The two sides of a replacement, each with the position of the event that named it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The old terminal this one replaces (from `issued`), and the position.
    pub replaces: Option<(Sn, u64)>,
    /// The new terminal that replaced this one (from `replaced`), and the position.
    pub replaced_by: Option<(Sn, u64)>,
}

/// An SN as a partition key: [`log::key::CompactSn`], the one compact SN key (22 bytes inline, longer
/// SNs boxed; 24 bytes in all).
pub(crate) use log::key::CompactSn as SnKey;

/// What the fleet asks of a partition key besides the key itself.
pub(crate) trait KeyExt {
    /// Heap bytes held (glibc chunk size), 0 when inline.
    fn heap_bytes(&self) -> usize;
}

impl KeyExt for SnKey {
    fn heap_bytes(&self) -> usize {
        match self.heap_len() {
            0 => 0,
            len => malloc_size(len),
        }
    }
}

/// One partition: a dense vector of terminals and an index from SN to slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Partition {
    pub index: HashMap<SnKey, u32, Hasher>,
    pub terminals: Vec<Terminal>,
}

impl Partition {
    pub fn get(&self, sn: &str) -> Option<&Terminal> {
        self.slot(&SnKey::new(sn)).and_then(|slot| self.terminals.get(slot))
    }

    #[inline]
    pub fn slot(&self, sn: &SnKey) -> Option<usize> {
        self.index.get(sn).map(|slot| *slot as usize)
    }

    pub fn insert(&mut self, sn: SnKey, terminal: Terminal) {
        let fresh = self.try_insert(sn, terminal);
        assert!(fresh, "a terminal is inserted once: issued twice is rejected by the rules");
    }

    /// Inserts a terminal whose SN is not in the partition yet, with one index lookup; `false`, and the
    /// partition unchanged, if it is.
    pub fn try_insert(&mut self, sn: SnKey, terminal: Terminal) -> bool {
        let slot = u32::try_from(self.terminals.len()).unwrap_or(u32::MAX);
        match self.index.entry(sn) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(slot);
                self.terminals.push(terminal);
                true
            }
        }
    }

    /// SNs in slot order.
    pub fn sns_by_slot(&self) -> Vec<&str> {
        let mut out = vec![""; self.terminals.len()];
        for (sn, slot) in &self.index {
            if let Some(entry) = out.get_mut(*slot as usize) {
                *entry = sn.as_str();
            }
        }
        out
    }
}

/// A directive as the fleet remembers it (the first record of each id; a repeated id is illegal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveInfo {
    /// Its id.
    pub id: DirectiveId,
    /// Position of its record.
    pub position: u64,
    /// When it takes effect (event time, microseconds).
    pub at: i64,
    /// By when its terminals must be stopped (microseconds), if set.
    pub deadline: Option<i64>,
    /// The models it names, sorted (binary-searched by the lookup).
    pub models: Vec<Box<str>>,
}

/// The directives seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    pub(crate) list: Vec<DirectiveInfo>,
    pub(crate) by_id: HashMap<DirectiveId, usize>,
}

impl Directives {
    /// Every directive, in position order.
    pub fn list(&self) -> &[DirectiveInfo] {
        &self.list
    }

    /// Whether `id` was recorded (at any position folded so far).
    pub fn contains(&self, id: &DirectiveId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Records a directive; `false` (nothing changed) if its id was already recorded.
    pub(crate) fn record(&mut self, position: u64, directive: &log::Directive) -> bool {
        if self.by_id.contains_key(&directive.id) {
            return false;
        }
        let mut models: Vec<Box<str>> = directive.models.iter().map(|m| m.as_str().into()).collect();
        models.sort_unstable();
        self.by_id.insert(directive.id.clone(), self.list.len());
        self.list.push(DirectiveInfo {
            id: directive.id.clone(),
            position,
            at: directive.at.timestamp_micros(),
            deadline: directive.deadline.map(|d| d.timestamp_micros()),
            models,
        });
        true
    }

    /// What the rules need to know of directive `id` for a stop at `position` of a terminal of `model`:
    /// a directive counts only if recorded *before* that position (the parallel rebuild registers a
    /// whole batch of directives before folding it, so the position check is what keeps it exact).
    pub(crate) fn lookup(&self, id: &DirectiveId, position: u64, model: Option<&str>) -> DirectiveLookup {
        match self.by_id.get(id).and_then(|i| self.list.get(*i)) {
            Some(info) if info.position < position => DirectiveLookup::Recorded {
                lists_model: model.is_some_and(|m| info.models.binary_search_by(|x| (**x).cmp(m)).is_ok()),
            },
            _ => DirectiveLookup::NotRecorded,
        }
    }

    pub(crate) fn from_list(list: Vec<DirectiveInfo>) -> Option<Directives> {
        let mut by_id = HashMap::with_capacity(list.len());
        for (i, info) in list.iter().enumerate() {
            if by_id.insert(info.id.clone(), i).is_some() {
                return None;
            }
        }
        Some(Directives { list, by_id })
    }
}

/// Audit bookkeeping of a fleet built with audit rules on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuditLog {
    pub config: AuditConfig,
    /// Findings met while folding (not yet sorted; sorted when read).
    pub findings: Vec<Finding>,
}

/// The fleet: every terminal's state as of [`Fleet::position`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    pub(crate) partitions: Vec<Partition>,
    pub(crate) names: Names,
    pub(crate) directives: Directives,
    /// Records folded: the fleet is the state after positions `0..position`.
    pub(crate) position: u64,
    /// Whether `position` is an append boundary (0, or the last folded record carries the commit marker).
    pub(crate) at_commit: bool,
    /// Event time of the last folded record (the audit's "end of the log"), microseconds.
    pub(crate) end_at: Option<i64>,
    /// recorded_at of the last folded record, microseconds.
    pub(crate) last_recorded_at: Option<i64>,
    /// Events the rules rejected (each also an `illegal_transition` finding when auditing).
    pub(crate) illegal: u64,
    pub(crate) audit: Option<AuditLog>,
}

impl Fleet {
    /// An empty fleet (position 0); with audit bookkeeping if `audit` is given.
    pub fn new(audit: Option<AuditConfig>) -> Fleet {
        Fleet {
            partitions: (0..PARTITIONS).map(|_| Partition::default()).collect(),
            names: Names::default(),
            directives: Directives::default(),
            position: 0,
            at_commit: true,
            end_at: None,
            last_recorded_at: None,
            illegal: 0,
            audit: audit.map(|config| AuditLog { config, findings: Vec::new() }),
        }
    }

    /// Records folded: this is the fleet after positions `0..position()`.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether [`Fleet::position`] falls on an append boundary (only such a fleet can be checkpointed).
    pub fn at_commit_boundary(&self) -> bool {
        self.at_commit
    }

    /// Event time of the last folded record.
    pub fn end_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.end_at.and_then(chrono::DateTime::from_timestamp_micros)
    }

    /// recorded_at of the last folded record.
    pub fn last_recorded_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.last_recorded_at.and_then(chrono::DateTime::from_timestamp_micros)
    }

    /// How many events the lifecycle rules rejected.
    pub fn illegal_events(&self) -> u64 {
        self.illegal
    }

    /// The interned names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The directives recorded.
    pub fn directives(&self) -> &Directives {
        &self.directives
    }

    /// The audit configuration, when built with audit rules.
    pub fn audit_config(&self) -> Option<&AuditConfig> {
        self.audit.as_ref().map(|a| &a.config)
    }

    /// Number of terminals.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.terminals.len()).sum()
    }

    /// Whether no terminal was issued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One terminal's state.
    pub fn terminal(&self, sn: &str) -> Option<&Terminal> {
        self.partitions.get(partition_of(sn)).and_then(|p| p.get(sn))
    }

    /// Every terminal, in no particular order (use [`Fleet::sorted`] for SN order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Terminal)> {
        self.partitions
            .iter()
            .flat_map(|p| p.index.iter().filter_map(|(sn, slot)| Some((sn.as_str(), p.terminals.get(*slot as usize)?))))
    }

    /// Every terminal sorted by SN (bytewise).
    pub fn sorted(&self) -> Vec<(&str, &Terminal)> {
        self.sorted_by_sn().into_iter().map(|e| (e.key.as_str(), e.terminal)).collect()
    }

    /// Every terminal sorted by SN (bytewise), each with its SN's first bytes as an integer.
    ///
    /// The sort compares those integers and looks at the SNs themselves only on a tie (two SNs longer
    /// than [`SN_PREFIX_LEN`] bytes that start alike): comparing the strings, a `memcmp` call through a
    /// pointer into the partition index a comparison, was most of the fleet digest's sort (63 ms of
    /// 10^7 events' 540,000 terminals, 172 ms of 1.34 M).
    pub(crate) fn sorted_by_sn(&self) -> Vec<BySn<'_>> {
        use rayon::slice::ParallelSliceMut;
        // Collected on one thread into a vector of the exact size: a parallel collect of an unindexed
        // iterator holds its pieces and the whole at once (twice the memory, for a few milliseconds).
        let mut all: Vec<BySn<'_>> = Vec::with_capacity(self.len());
        all.extend(self.partitions.iter().flat_map(|p| {
            p.index.iter().filter_map(|(key, slot)| {
                Some(BySn { prefix: sn_prefix(key.as_str()), key, terminal: p.terminals.get(*slot as usize)? })
            })
        }));
        all.par_sort_unstable_by(|a, b| sn_order(a.prefix, || a.sn(), b.prefix, || b.sn()));
        debug_assert!(all.windows(2).all(|w| w.first().map(BySn::sn) < w.get(1).map(BySn::sn)), "bytewise SN order");
        all
    }

    /// A terminal with its names resolved, for display.
    pub fn view<'a>(&'a self, sn: &'a str) -> Option<TerminalView<'a>> {
        self.terminal(sn).map(|t| self.view_of(sn, t))
    }

    /// Resolves the names of a terminal.
    pub fn view_of<'a>(&'a self, sn: &'a str, terminal: &'a Terminal) -> TerminalView<'a> {
        let [model, provider, region, merchant] = self.names_of(terminal);
        TerminalView { sn, terminal, model, provider, region, merchant }
    }

    /// A terminal's model, provider, region and merchant (empty for an id the tables do not hold).
    pub(crate) fn names_of(&self, terminal: &Terminal) -> [&str; 4] {
        let n = &self.names;
        [
            n.models.get(terminal.model).unwrap_or(""),
            n.providers.get(terminal.provider).unwrap_or(""),
            n.regions.get(terminal.region).unwrap_or(""),
            n.merchants.get(terminal.merchant).unwrap_or(""),
        ]
    }

    /// Counts by status, flagged and contract expired, for the fleet and by model, provider and region.
    pub fn summary(&self) -> Summary {
        use rayon::prelude::*;
        let sizes = [self.names.models.len(), self.names.providers.len(), self.names.regions.len()];
        let empty = || (Counts::default(), sizes.map(|n| vec![Counts::default(); n]));
        let (total, by) = self
            .partitions
            .par_iter()
            .map(|p| {
                let mut acc = empty();
                for t in &p.terminals {
                    acc.0.add(&t.state);
                    for (counts, id) in acc.1.iter_mut().zip([t.model, t.provider, t.region]) {
                        if let Some(c) = counts.get_mut(id as usize) {
                            c.add(&t.state);
                        }
                    }
                }
                acc
            })
            .reduce(empty, |mut a, b| {
                a.0.merge(&b.0);
                for (xs, ys) in a.1.iter_mut().zip(&b.1) {
                    for (x, y) in xs.iter_mut().zip(ys) {
                        x.merge(y);
                    }
                }
                a
            });
        let [models, providers, regions] = by;
        let named = |table: &crate::intern::Interner, counts: Vec<Counts>| -> BTreeMap<String, Counts> {
            counts
                .into_iter()
                .enumerate()
                .filter(|(_, c)| c.total > 0)
                .filter_map(|(id, c)| Some((table.get(u32::try_from(id).ok()?)?.to_owned(), c)))
                .collect()
        };
        Summary {
            position: self.position,
            total,
            by_model: named(&self.names.models, models),
            by_provider: named(&self.names.providers, providers),
            by_region: named(&self.names.regions, regions),
        }
    }

    /// What the fleet holds in memory, measured from its containers' capacities.
    pub fn memory(&self) -> Memory {
        let bucket = std::mem::size_of::<(SnKey, u32)>() + 1;
        let mut m = Memory { terminals: self.len(), ..Memory::default() };
        for p in &self.partitions {
            // hashbrown keeps capacity = 7/8 of a power-of-two bucket count.
            let buckets = if p.index.capacity() == 0 { 0 } else { (p.index.capacity() * 8 / 7).next_power_of_two() };
            m.index_bytes += buckets * bucket;
            m.slot_bytes += p.terminals.capacity() * std::mem::size_of::<Terminal>();
            for (sn, _) in p.index.iter() {
                m.sn_bytes += sn.heap_bytes();
            }
            for t in &p.terminals {
                if let Some(links) = &t.links {
                    m.extra_bytes += malloc_size(std::mem::size_of::<Links>());
                    for (sn, _) in links.replaces.iter().chain(links.replaced_by.iter()) {
                        m.extra_bytes += malloc_size(sn.as_str().len());
                    }
                }
                if t.audit.is_some() {
                    m.extra_bytes += malloc_size(std::mem::size_of::<AuditTerm>());
                }
            }
        }
        m.shared_bytes = self.names.heap_bytes() + self.directives.list.len() * std::mem::size_of::<DirectiveInfo>();
        m
    }
}

/// glibc's chunk size for a request of `n` bytes: n + 8 rounded up to 16, at least 32.
pub(crate) fn malloc_size(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

/// A terminal with its names resolved.
#[derive(Clone, Copy, Debug)]
pub struct TerminalView<'a> {
    /// Its SN.
    pub sn: &'a str,
    /// Its state.
    pub terminal: &'a Terminal,
    /// Model code.
    pub model: &'a str,
    /// Provider.
    pub provider: &'a str,
    /// Region code.
    pub region: &'a str,
    /// Merchant.
    pub merchant: &'a str,
}

/// Memory held by a fleet, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Terminals.
    pub terminals: usize,
    /// The SN → slot index buckets.
    pub index_bytes: usize,
    /// The terminal slots (`size_of::<Terminal>()` × capacity).
    pub slot_bytes: usize,
    /// The SN strings on the heap (glibc chunk sizes).
    pub sn_bytes: usize,
    /// Boxed links and audit states.
    pub extra_bytes: usize,
    /// Intern tables and directives (shared by all terminals).
    pub shared_bytes: usize,
}

impl Memory {
    /// All bytes.
    pub fn total(&self) -> usize {
        self.index_bytes + self.slot_bytes + self.sn_bytes + self.extra_bytes + self.shared_bytes
    }
    /// Bytes per terminal (0 for an empty fleet).
    pub fn per_terminal(&self) -> f64 {
        if self.terminals == 0 {
            0.0
        } else {
            self.total() as f64 / self.terminals as f64
        }
    }
}

/// Counts of terminals by status, with open flags and with an expired contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every terminal.
    pub total: u64,
    /// Status issued.
    pub issued: u64,
    /// Status active.
    pub active: u64,
    /// Status stopped.
    pub stopped: u64,
    /// Status replaced.
    pub replaced: u64,
    /// With at least one open flag.
    pub flagged: u64,
    /// With the contract expired.
    pub contract_expired: u64,
}

impl Counts {
    fn add(&mut self, state: &State) {
        self.total += 1;
        match state.status {
            Status::Issued => self.issued += 1,
            Status::Active => self.active += 1,
            Status::Stopped => self.stopped += 1,
            Status::Replaced => self.replaced += 1,
        }
        self.flagged += u64::from(!state.flags.is_empty());
        self.contract_expired += u64::from(state.contract == ContractState::Expired);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Counts) {
        self.total += other.total;
        self.issued += other.issued;
        self.active += other.active;
        self.stopped += other.stopped;
        self.replaced += other.replaced;
        self.flagged += other.flagged;
        self.contract_expired += other.contract_expired;
    }

    /// The count of one status.
    pub fn status(&self, status: Status) -> u64 {
        match status {
            Status::Issued => self.issued,
            Status::Active => self.active,
            Status::Stopped => self.stopped,
            Status::Replaced => self.replaced,
        }
    }
}

/// The fleet summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Records folded.
    pub position: u64,
    /// The whole fleet.
    pub total: Counts,
    /// By model code.
    pub by_model: BTreeMap<String, Counts>,
    /// By provider.
    pub by_provider: BTreeMap<String, Counts>,
    /// By region.
    pub by_region: BTreeMap<String, Counts>,
}

/// Bytes of an SN held in [`BySn::prefix`].
pub(crate) const SN_PREFIX_LEN: usize = 15;

/// A terminal in SN order ([`Fleet::sorted_by_sn`]): 32 bytes.
#[derive(Clone, Copy)]
pub(crate) struct BySn<'a> {
    /// The SN's first [`SN_PREFIX_LEN`] bytes, zero-padded, then its length (at most 16: "longer"), as a
    /// big-endian integer: see [`sn_prefix`].
    pub prefix: u128,
    /// The SN, as the partition index holds it.
    pub key: &'a SnKey,
    pub terminal: &'a Terminal,
}

impl<'a> BySn<'a> {
    /// The SN.
    #[inline]
    pub fn sn(&self) -> &'a str {
        self.key.as_str()
    }

    /// The SN's bytes, from the prefix when it holds all of them (no load from the partition index,
    /// which in SN order is a cache miss a terminal).
    #[inline]
    pub fn sn_bytes(&self) -> SnBytes<'a> {
        sn_bytes(self.prefix, self.key)
    }
}

/// An SN's bytes, as [`BySn::sn_bytes`] gives them.
pub(crate) enum SnBytes<'a> {
    /// The first `.1` bytes of the array.
    Inline([u8; 16], usize),
    /// Longer than a prefix.
    Borrowed(&'a [u8]),
}

impl SnBytes<'_> {
    /// The bytes.
    #[inline]
    pub fn get(&self) -> &[u8] {
        match self {
            SnBytes::Inline(bytes, len) => bytes.get(..*len).unwrap_or_default(),
            SnBytes::Borrowed(bytes) => bytes,
        }
    }
}

/// The bytes of the SN whose sort key is `prefix` and whose index key is `key`.
#[inline]
fn sn_bytes(prefix: u128, key: &SnKey) -> SnBytes<'_> {
    let bytes = prefix.to_be_bytes();
    let len = usize::from(bytes.last().copied().unwrap_or(u8::MAX));
    if len <= SN_PREFIX_LEN {
        SnBytes::Inline(bytes, len)
    } else {
        SnBytes::Borrowed(key.as_bytes())
    }
}

/// The bytewise order of two SNs from their sort keys ([`sn_prefix`]): the keys, and the SNs themselves
/// (got only then: in a sort, each is a load from the partition index) when the keys are equal.
#[inline]
pub(crate) fn sn_order<'a>(
    a_key: u128,
    a: impl FnOnce() -> &'a str,
    b_key: u128,
    b: impl FnOnce() -> &'a str,
) -> std::cmp::Ordering {
    a_key.cmp(&b_key).then_with(|| a().cmp(b()))
}

/// The sort key of `sn`: its first [`SN_PREFIX_LEN`] bytes, zero-padded, then one byte of its length
/// (16 for any SN longer than the prefix), as a big-endian integer.
///
/// Where two keys differ, their order is the SNs' bytewise order. If the prefixes differ, then at the
/// first byte where they do both are SN bytes, or one SN has ended there (its zero padding against a
/// byte of the other, which is then not zero): either way that byte decides the SNs too. If the
/// prefixes are equal and a length is at most 15, that SN is a prefix of the other, so the shorter is
/// the smaller, as the length bytes say. Only two SNs longer than the prefix that start alike have
/// equal keys, and the sort compares them as strings.
#[inline]
pub(crate) fn sn_prefix(sn: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = sn.len().min(SN_PREFIX_LEN);
    if let (Some(to), Some(from)) = (bytes.get_mut(..n), sn.as_bytes().get(..n)) {
        to.copy_from_slice(from);
    }
    if let Some(len) = bytes.last_mut() {
        *len = u8::try_from(sn.len().min(SN_PREFIX_LEN + 1)).unwrap_or(u8::MAX);
    }
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
        sn_order(sn_prefix(a), || a, sn_prefix(b), || b)
    }

    #[test]
    fn sort_keys_order_sns_bytewise_at_every_length() {
        let sns = ["A", "AA", "AB", "B", "ABCDEFGHIJKLMN", "ABCDEFGHIJKLMNO", "ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOA"];
        for a in sns {
            for b in sns {
                assert_eq!(key_order(a, b), a.cmp(b), "{a} against {b}");
            }
        }
        // Only SNs longer than the prefix that start alike share a key.
        assert_eq!(sn_prefix("ABCDEFGHIJKLMNOP"), sn_prefix("ABCDEFGHIJKLMNOQRS"));
        assert_ne!(sn_prefix("ABCDEFGHIJKLMNO"), sn_prefix("ABCDEFGHIJKLMNOP"));
    }

    proptest! {
        // A two-letter alphabet makes long shared prefixes, and `\0` is there though no SN holds it: the
        // order does not rest on the SN charset.
        #[test]
        fn prop_sort_keys_order_like_the_strings(a in "[AB\0]{0,20}", b in "[AB\0]{0,20}") {
            prop_assert_eq!(key_order(&a, &b), a.cmp(&b));
        }

        #[test]
        fn prop_sn_bytes_from_the_key_are_the_sn(sn in "[A-Za-z0-9_-]{1,64}") {
            let key = SnKey::new(&sn);
            let bytes = sn_bytes(sn_prefix(&sn), &key);
            prop_assert_eq!(bytes.get(), sn.as_bytes());
        }
    }
}

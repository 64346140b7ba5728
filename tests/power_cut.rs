//! Simulated power cuts, in the style of redb's and TigerBeetle's storage simulators.
//!
//! [`SimDisk`] is a [`FaultInjector`] that records every operation the ledger does on its own files
//! ([`DiskOp`]: create, write at an offset, truncate, file sync, folder sync, rename, create folder), in
//! order, and can produce a **crash image** at any moment: a fresh folder holding what a disk would hold
//! after a power cut at that moment.
//!
//! - A file's durable content is its content as of its last `Sync`. Its later writes and truncates are
//!   *pending*: the cut keeps none of them, all of them, a prefix of them, or a prefix and then the next
//!   write **torn** (each 512-byte sector it touches written or not, independently: an earlier sector can
//!   read as zeros or old content while a later one holds the new bytes; the file grew to the write's end
//!   or only to the end of its last written sector).
//! - A directory entry (a created file or folder, a rename's new name) survives only if its parent folder
//!   was fsynced after it; otherwise the file is absent, or, for a rename, the old name holds the old file.
//! - HEAD is written in place (a 64-byte slot at offset 0 or 64): a write at an offset like any other.
//! - The sled index (`index/`, derived data, not observed) is deleted from the image in half the cases
//!   and copied as it is on the real disk at the cut in the other half (sled's state may then be
//!   inconsistent: the ledger must rebuild it).
//!
//! The image is taken inside `observe`, under the simulator's lock, right after the operation it follows:
//! the ledger is single-threaded here (one appending thread), so the acknowledged head at the cut is
//! exactly the last one the test recorded before that operation.
//!
//! `power_cut_keeps_every_acknowledged_append` runs generations of a script of small durable appends
//! over 2,000-byte segments (seals and rotations every few appends), cutting at random operations with
//! more weight on the creation of a ledger, the recovery of a crashed one, and sealing/rotation; each
//! generation starts from a fresh folder or from a crash image of the one before (so cuts also land in
//! the recovery of a crashed ledger). `POSLEDGER_POWER_CYCLES` sets the number of cuts (default 150),
//! `POSLEDGER_POWER_SEED` the seed (printed, to repeat a run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ledger::merkle::{Frontier, Hash};
use ledger::source::SEGMENTS_DIR;
use ledger::testing::{DiskOp, FaultInjector};
use ledger::{AppendEvent, Durability, EventId, Head, Ledger, Options, ReadError, Source, StreamId};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR: u64 = 512;
/// Small segments, so appends seal and rotate segments every few appends.
const SEGMENT_BYTES: u64 = 2_000;

/// splitmix64: deterministic given the seed (any seed, 0 included).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n (0 when n is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Append `n` of the script: terminal `Pn` is issued and gets flow; two appends in three also give an
/// older terminal a fen (two streams in one append), on the commit record. Every event has an id.
fn batch(n: u64) -> Vec<AppendEvent> {
    let me = format!("P{n}");
    let older = format!("P{}", n / 2);
    let id =
        |e: AppendEvent, i: u64| AppendEvent { event_id: Some(EventId::parse(&format!("e-{n}-{i}")).unwrap()), ..e };
    if n % 3 == 2 {
        vec![id(issued(&me, "M-PC"), 0), id(flow(&me, 10_000 + n), 1)]
    } else {
        vec![id(issued(&me, "M-PC"), 0), id(flow(&me, 10_000 + n), 1), id(flow(&older, 1), 2)]
    }
}

// ---------------------------------------------------------------------------------------------------
// The simulated disk
// ---------------------------------------------------------------------------------------------------

/// One operation on a file's content.
#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

fn apply(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, bytes } => {
            let at = *offset as usize;
            if content.len() < at + bytes.len() {
                content.resize(at + bytes.len(), 0);
            }
            content[at..at + bytes.len()].copy_from_slice(bytes);
        }
        FileOp::Truncate(len) => content.resize(*len as usize, 0),
    }
}

/// A file: every operation on its content since it was created, and how many of them were synced.
#[derive(Debug, Default)]
struct Inode {
    ops: Vec<FileOp>,
    synced: usize,
}

impl Inode {
    fn pending(&self) -> &[FileOp] {
        &self.ops[self.synced..]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    File(usize),
    Dir,
}

/// What a power cut keeps of a file's pending (unsynced) operations.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Keep {
    /// The first `n` pending operations, whole (0: none of them; all of them: every one).
    Whole(usize),
    /// The first `whole` pending operations, then the next one (a write) torn: `sectors[i]` says whether
    /// the i-th 512-byte sector it touches reached the disk; the file grew to the write's end (`grown`) or
    /// only to the end of the last sector that was written.
    Torn { whole: usize, sectors: Vec<bool>, grown: bool },
    /// The first `whole` pending operations, then the first `len` bytes of the next one (a write): a
    /// write torn inside a sector, for a disk that does not write a sector atomically.
    Bytes { whole: usize, len: usize },
}

impl Keep {
    /// A torn write with sectors both written and not.
    fn is_mixed_tear(&self) -> bool {
        matches!(self, Keep::Torn { sectors, .. } if sectors.contains(&true) && sectors.contains(&false))
    }
}

/// The parts of a write at `offset` of `len` bytes that fall in each sector, as ranges of its bytes.
fn sector_pieces(offset: u64, len: usize) -> Vec<(usize, usize)> {
    let end = offset + len as u64;
    let mut pieces = Vec::new();
    let mut at = offset;
    while at < end {
        let to = ((at / SECTOR + 1) * SECTOR).min(end);
        pieces.push(((at - offset) as usize, (to - offset) as usize));
        at = to;
    }
    pieces
}

fn tear(content: &mut Vec<u8>, offset: u64, bytes: &[u8], sectors: &[bool], grown: bool) {
    let pieces = sector_pieces(offset, bytes.len());
    assert_eq!(pieces.len(), sectors.len(), "one choice per sector");
    let written_end = pieces.iter().zip(sectors).filter(|(_, w)| **w).map(|(p, _)| p.1).max().unwrap_or(0);
    let at = offset as usize;
    let len = at + if grown { bytes.len() } else { written_end };
    if content.len() < len {
        content.resize(len, 0);
    }
    for ((from, to), written) in pieces.iter().zip(sectors) {
        if *written {
            content[at + from..at + to].copy_from_slice(&bytes[*from..*to]);
        }
    }
}

/// The content a power cut leaves of a file: its synced content, then what `keep` keeps.
fn content_after_cut(inode: &Inode, keep: &Keep) -> Vec<u8> {
    let mut content = Vec::new();
    for op in &inode.ops[..inode.synced] {
        apply(&mut content, op);
    }
    let pending = inode.pending();
    match keep {
        Keep::Whole(n) => pending[..(*n).min(pending.len())].iter().for_each(|op| apply(&mut content, op)),
        Keep::Torn { whole, sectors, grown } => {
            pending[..*whole].iter().for_each(|op| apply(&mut content, op));
            match &pending[*whole] {
                FileOp::Write { offset, bytes } => tear(&mut content, *offset, bytes, sectors, *grown),
                FileOp::Truncate(_) => panic!("only a write is torn"),
            }
        }
        Keep::Bytes { whole, len } => {
            pending[..*whole].iter().for_each(|op| apply(&mut content, op));
            match &pending[*whole] {
                FileOp::Write { offset, bytes } => {
                    apply(&mut content, &FileOp::Write { offset: *offset, bytes: bytes[..*len].to_vec() })
                }
                FileOp::Truncate(_) => panic!("only a write is torn"),
            }
        }
    }
    content
}

fn random_keep(rng: &mut Rng, inode: &Inode) -> Keep {
    let pending = inode.pending();
    let n = pending.len();
    let whole = rng.below(n as u64) as usize;
    // A write over more than one sector is torn half the time, mostly with sectors written and not.
    if let FileOp::Write { offset, bytes } = &pending[whole] {
        let count = sector_pieces(*offset, bytes.len()).len();
        if rng.coin() || (count > 1 && rng.coin()) {
            let mut sectors: Vec<bool> = (0..count).map(|_| rng.coin()).collect();
            if count > 1 && rng.below(3) > 0 {
                // Make it a mix: one sector written, another not.
                let a = rng.below(count as u64) as usize;
                let b = (a + 1 + rng.below(count as u64 - 1) as usize) % count;
                sectors[a] = true;
                sectors[b] = false;
            }
            return Keep::Torn { whole, sectors, grown: rng.coin() };
        }
    }
    match rng.below(3) {
        0 => Keep::Whole(0),
        1 => Keep::Whole(n),
        _ => Keep::Whole(rng.below(n as u64 + 1) as usize),
    }
}

/// What the ledger was doing when the power was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    /// The first open of a new ledger (folder, HEAD.tmp, rename, `segments/`, segment 0).
    Creating,
    /// Opening a crashed ledger (cutting a torn tail, rewriting HEAD, recreating a segment).
    Recovering,
    /// Appending (segment write, fsync, HEAD slot write, fsync).
    Appending,
    /// Sealing the live segment and creating the next (trailer write, fsync, create, header, fsyncs).
    Sealing,
    /// Closing (the final flush).
    Closing,
}

/// One crash image.
#[derive(Debug)]
struct Cut {
    /// The image's ledger folder (absent when the folder's own entry was not durable).
    dir: PathBuf,
    /// The number of operations observed before the cut (the cut follows operation `op - 1`).
    op: usize,
    phase: Phase,
    /// Between the creation of a segment file and the fsync of `segments/` that makes it durable.
    creating_segment: bool,
    /// The last acknowledged head at the cut (`None` before the first open returned).
    ack: Option<Head>,
    /// Appends of this run that had returned at the cut (the append in flight, if any, is the next one).
    returned: usize,
    /// The ledger ran in relaxed mode: an append returns before its fsync, and only a flush acknowledges.
    relaxed: bool,
    /// What the cut kept of each file with pending operations (path relative to the ledger folder).
    keeps: Vec<(PathBuf, Keep)>,
    /// The sled index was copied into the image (else the image has none).
    index_copied: bool,
    /// Name changes (creates, renames) kept although their folder was not fsynced after them: an
    /// extension of the model (a journaling file system may commit them with other metadata), in
    /// order. 0 in the strict model (a name survives only its folder's fsync).
    names_leaked: usize,
}

impl Cut {
    fn torn_write(&self) -> bool {
        self.keeps.iter().any(|(_, k)| k.is_mixed_tear())
    }
}

/// When to cut.
enum Policy {
    /// At random operations, with a probability that depends on the phase.
    Random,
    /// Called after each operation: one image per returned choice, applied to the file the operation
    /// touched (other files with pending operations keep none of them).
    Scripted(Box<dyn FnMut(&DiskOp<'_>) -> Vec<Keep> + Send>),
}

/// Per-mille chance of a cut right after `op`, by phase: most likely while a write to a segment is
/// pending (written, not yet fsynced), and during the short windows of creation, recovery and sealing.
fn cut_chance(phase: Phase, op: &DiskOp<'_>) -> u64 {
    let segment_write = matches!(*op, DiskOp::Write { path, .. } if is_segment(path));
    match phase {
        Phase::Creating => 200,
        Phase::Recovering => 300,
        Phase::Sealing if segment_write => 300,
        Phase::Sealing => 100,
        Phase::Appending if segment_write => 200,
        Phase::Appending => 12,
        Phase::Closing => 50,
    }
}

struct State {
    /// The real ledger folder.
    root: PathBuf,
    /// Where images are made.
    work: PathBuf,
    rng: Rng,
    inodes: Vec<Inode>,
    /// The names as the running system sees them.
    current: BTreeMap<PathBuf, Entry>,
    /// The names as they are durable (as of the last fsync of each one's folder).
    durable: BTreeMap<PathBuf, Entry>,
    /// Name changes not yet made durable by their folder's fsync, in order (a rename is one change of
    /// two names).
    name_log: Vec<Vec<(PathBuf, Option<Entry>)>>,
    trace: Vec<String>,
    phase: Phase,
    creating_segment: bool,
    ack: Option<Head>,
    returned: usize,
    relaxed: bool,
    policy: Policy,
    cuts: Vec<Cut>,
}

/// A simulated disk behind the ledger's fault seam (see the top of this file).
struct SimDisk(Mutex<State>);

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never waits for the lock: this may be called while `observe` holds it.
        match self.0.try_lock() {
            Ok(state) => write!(f, "SimDisk({}, {} ops)", state.root.display(), state.trace.len()),
            Err(_) => write!(f, "SimDisk(busy)"),
        }
    }
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

impl SimDisk {
    /// A simulated disk for the ledger folder `root`; whatever `root` already holds (but the index) is
    /// durable. Images go under `work`.
    fn new(root: &Path, work: &Path, seed: u64, policy: Policy) -> Arc<SimDisk> {
        let mut state = State {
            root: root.to_owned(),
            work: work.to_owned(),
            rng: Rng(seed),
            inodes: Vec::new(),
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            name_log: Vec::new(),
            trace: Vec::new(),
            phase: Phase::Creating,
            creating_segment: false,
            ack: None,
            returned: 0,
            relaxed: false,
            policy,
            cuts: Vec::new(),
        };
        if root.is_dir() {
            state.register(root);
        }
        Arc::new(SimDisk(Mutex::new(state)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_phase(&self, phase: Phase) {
        self.state().phase = phase;
    }

    /// Records an acknowledged (durable) head; `returned`: appends of this run returned so far.
    fn ack(&self, head: Head, returned: usize, phase: Phase) {
        let mut state = self.state();
        state.ack = Some(head);
        state.returned = returned;
        state.phase = phase;
    }

    /// Records that an append returned without being acknowledged as durable (relaxed mode).
    fn returned(&self, returned: usize) {
        self.state().returned = returned;
    }

    fn take(&self) -> (Vec<Cut>, Vec<String>) {
        let mut state = self.state();
        (std::mem::take(&mut state.cuts), std::mem::take(&mut state.trace))
    }
}

impl State {
    fn register(&mut self, dir: &Path) {
        self.current.insert(dir.to_owned(), Entry::Dir);
        self.durable.insert(dir.to_owned(), Entry::Dir);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path == self.root.join("index") {
                continue;
            }
            if path.is_dir() {
                self.register(&path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                self.inodes.push(Inode { ops: vec![FileOp::Write { offset: 0, bytes }], synced: 1 });
                let id = Entry::File(self.inodes.len() - 1);
                self.current.insert(path.clone(), id);
                self.durable.insert(path, id);
            }
        }
    }

    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
    }

    fn file(&self, path: &Path) -> usize {
        match self.current.get(path) {
            Some(Entry::File(id)) => *id,
            other => panic!("{}: an operation on a file the simulated disk holds as {other:?}", path.display()),
        }
    }

    fn apply(&mut self, op: &DiskOp<'_>) {
        let line = match *op {
            DiskOp::Create { path } => {
                // An existing name (a leftover HEAD.tmp, or a segment removed without an observed
                // operation and created again) is truncated to empty.
                match self.current.get(path) {
                    Some(Entry::File(id)) => self.inodes[*id].ops.push(FileOp::Truncate(0)),
                    Some(Entry::Dir) => panic!("{}: created over a folder", path.display()),
                    None => {
                        self.inodes.push(Inode::default());
                        let entry = Entry::File(self.inodes.len() - 1);
                        self.current.insert(path.to_owned(), entry);
                        self.name_log.push(vec![(path.to_owned(), Some(entry))]);
                    }
                }
                format!("create {}", self.show(path))
            }
            DiskOp::CreateDir { path } => {
                self.current.insert(path.to_owned(), Entry::Dir);
                self.name_log.push(vec![(path.to_owned(), Some(Entry::Dir))]);
                format!("create dir {}", self.show(path))
            }
            DiskOp::Write { path, offset, bytes } => {
                let id = self.file(path);
                self.inodes[id].ops.push(FileOp::Write { offset, bytes: bytes.to_vec() });
                format!("write {} at {offset}, {} bytes", self.show(path), bytes.len())
            }
            DiskOp::Truncate { path, len } => {
                let id = self.file(path);
                self.inodes[id].ops.push(FileOp::Truncate(len));
                format!("truncate {} to {len}", self.show(path))
            }
            DiskOp::Sync { path } => {
                let id = self.file(path);
                let inode = &mut self.inodes[id];
                inode.synced = inode.ops.len();
                format!("sync {}", self.show(path))
            }
            DiskOp::SyncDir { path } => {
                let names: Vec<PathBuf> = self
                    .current
                    .keys()
                    .chain(self.durable.keys())
                    .filter(|p| p.parent() == Some(path))
                    .cloned()
                    .collect();
                for name in names {
                    match self.current.get(&name) {
                        Some(entry) => self.durable.insert(name, *entry),
                        None => self.durable.remove(&name),
                    };
                }
                for change in &mut self.name_log {
                    change.retain(|(name, _)| name.parent() != Some(path));
                }
                self.name_log.retain(|change| !change.is_empty());
                format!("sync dir {}", self.show(path))
            }
            DiskOp::Rename { from, to } => {
                let entry =
                    self.current.remove(from).unwrap_or_else(|| panic!("{}: renamed, not there", from.display()));
                self.current.insert(to.to_owned(), entry);
                self.name_log.push(vec![(from.to_owned(), None), (to.to_owned(), Some(entry))]);
                format!("rename {} to {}", self.show(from), self.show(to))
            }
            _ => panic!("an operation the simulated disk does not know: {op:?}"),
        };
        self.trace.push(line);
    }

    /// Makes a crash image of the disk as it is now; `forced` is the choice for one file.
    fn cut(&mut self, forced: Option<(PathBuf, Keep)>) {
        let image = self.work.join(format!("cut-{}", self.cuts.len()));
        std::fs::create_dir_all(&image).unwrap();
        let dir = image.join("ledger");
        let mut keeps = Vec::new();
        // One choice per file, even if two names of the image lead to it.
        let mut chosen: BTreeMap<usize, Keep> = BTreeMap::new();
        let mut index_copied = false;
        // Half the random cuts (an extension of the model, see `Cut::names_leaked`): the first
        // name changes that no folder fsync made durable reached the disk anyway, in order.
        let mut names = self.durable.clone();
        let mut names_leaked = 0;
        if forced.is_none() && !self.name_log.is_empty() && self.rng.coin() {
            names_leaked = 1 + self.rng.below(self.name_log.len() as u64) as usize;
            for change in &self.name_log[..names_leaked] {
                for (name, entry) in change {
                    match entry {
                        Some(entry) => names.insert(name.clone(), *entry),
                        None => names.remove(name),
                    };
                }
            }
        }
        if names.get(&self.root) == Some(&Entry::Dir) {
            std::fs::create_dir(&dir).unwrap();
            for (path, entry) in &names {
                let Ok(rel) = path.strip_prefix(&self.root) else { continue };
                if rel.as_os_str().is_empty() {
                    continue;
                }
                // Every folder between the ledger folder and the entry must be durable too.
                let reachable =
                    path.ancestors().skip(1).take_while(|a| *a != self.root).all(|a| names.get(a) == Some(&Entry::Dir));
                if !reachable {
                    continue;
                }
                match entry {
                    Entry::Dir => std::fs::create_dir(dir.join(rel)).unwrap(),
                    Entry::File(id) => {
                        let inode = &self.inodes[*id];
                        let keep = if inode.pending().is_empty() {
                            Keep::Whole(0)
                        } else {
                            let keep = match (&forced, chosen.get(id)) {
                                (_, Some(keep)) => keep.clone(),
                                (Some((target, keep)), _) if self.current.get(target) == Some(entry) => keep.clone(),
                                (Some(_), _) => Keep::Whole(0),
                                (None, _) => random_keep(&mut self.rng, inode),
                            };
                            chosen.insert(*id, keep.clone());
                            keeps.push((rel.to_owned(), keep.clone()));
                            keep
                        };
                        std::fs::write(dir.join(rel), content_after_cut(inode, &keep)).unwrap();
                    }
                }
            }
            if self.rng.coin() {
                copy_lossy(&self.root.join("index"), &dir.join("index"));
                index_copied = true;
            }
        }
        self.cuts.push(Cut {
            dir,
            op: self.trace.len(),
            phase: self.phase,
            creating_segment: self.creating_segment,
            ack: self.ack,
            returned: self.returned,
            relaxed: self.relaxed,
            keeps,
            index_copied,
            names_leaked,
        });
    }
}

/// Copies a folder that another thread may be writing (sled's): whatever can be read, as it is.
fn copy_lossy(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else { return };
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => copy_lossy(&entry.path(), &target),
            Ok(_) => {
                let _ = std::fs::copy(entry.path(), &target);
            }
            Err(_) => {}
        }
    }
}

impl FaultInjector for SimDisk {
    fn before_write(&self, _path: &Path, _len: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn before_sync(&self, _path: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn observe(&self, op: &DiskOp<'_>) {
        let mut state = self.state();
        state.apply(op);
        match *op {
            DiskOp::Write { path, offset, bytes }
                if is_segment(path)
                    && offset > 0
                    && bytes.starts_with(&[0xFF; 4])
                    && state.phase == Phase::Appending =>
            {
                state.phase = Phase::Sealing;
            }
            DiskOp::Create { path } if is_segment(path) => state.creating_segment = true,
            _ => {}
        }
        let phase = state.phase;
        let st = &mut *state;
        let cuts: Vec<Option<(PathBuf, Keep)>> = match &mut st.policy {
            Policy::Random => {
                if st.rng.chance(cut_chance(phase, op)) {
                    vec![None]
                } else {
                    vec![]
                }
            }
            Policy::Scripted(decide) => {
                let target = match *op {
                    DiskOp::Write { path, .. } | DiskOp::Truncate { path, .. } => path.to_owned(),
                    _ => PathBuf::new(),
                };
                decide(op).into_iter().map(|keep| Some((target.clone(), keep))).collect()
            }
        };
        for forced in cuts {
            state.cut(forced);
        }
        if let DiskOp::SyncDir { path } = *op {
            if path.ends_with(SEGMENTS_DIR) {
                state.creating_segment = false;
                if state.phase == Phase::Sealing {
                    state.phase = Phase::Appending;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Checking an image
// ---------------------------------------------------------------------------------------------------

/// The log the real ledger ended with (every record it wrote), to compare images with.
struct Expected {
    /// Record bodies by position.
    bodies: Vec<Vec<u8>>,
    /// `roots[k]`: the root of the first `k` records.
    roots: Vec<Hash>,
    /// The log size after each append of this run.
    ends: Vec<u64>,
}

impl Expected {
    fn read(dir: &Path, ends: Vec<u64>) -> Expected {
        let source = Source::open(dir).unwrap();
        let mut frames = source.frames(0, source.head.size);
        let mut bodies = Vec::new();
        let mut frontier = Frontier::new();
        let mut roots = vec![frontier.root()];
        while let Some((_, body, _)) = frames.next_frame().unwrap() {
            bodies.push(body.to_vec());
            frontier.push_leaf(body);
            roots.push(frontier.root());
        }
        assert_eq!(bodies.len() as u64, source.head.size);
        Expected { bodies, roots, ends }
    }
}

/// What one image held.
#[derive(Debug, Default)]
struct Seen {
    /// No ledger yet (a cut during the first open, before the log existed).
    unborn: bool,
    size: u64,
    /// Acknowledged appends found whole and byte-identical.
    acked_appends: u64,
    acked_records: u64,
    /// The image held an unacknowledged append, whole.
    in_flight_whole: bool,
    /// The image had bytes after its last commit record (a torn or unacknowledged tail), which the open cut.
    torn_cut: bool,
}

fn is_unborn_error(e: &ReadError, dir: &Path) -> bool {
    match e {
        ReadError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound && !dir.exists(),
        ReadError::NotALedger(_) => !dir.join(SEGMENTS_DIR).exists(),
        _ => false,
    }
}

/// The writer opens a folder without a log as a new ledger, appends to it, and `replay verify` accepts it.
fn check_unborn(dir: &Path) -> Result<Seen, String> {
    let ledger = Ledger::open(dir).map_err(|e| format!("Ledger::open of a half-created folder: {e}"))?;
    if ledger.head().size != 0 {
        return Err(format!("a half-created ledger opened with {} records", ledger.head().size));
    }
    let more = batch(0);
    let k = more.len() as u64;
    let appended = ledger.append(more).map_err(|e| format!("append after the open: {e}"))?;
    if appended.head.size != k {
        return Err(format!("append after the open ended at {}", appended.head.size));
    }
    ledger.close().map_err(|e| format!("close: {e}"))?;
    let after = Source::open(dir).map_err(|e| format!("Source::open after the append: {e}"))?;
    replay::verify::verify(&after, &mut |_| {}).map_err(|e| format!("verify after the append: {e}"))?;
    Ok(Seen { unborn: true, ..Seen::default() })
}

fn check_image(cut: &Cut, exp: &Expected) -> Result<Seen, String> {
    let dir = &cut.dir;
    let ack = cut.ack.map_or(0, |h| h.size);
    // The image holds the acknowledged log, or it and the append in flight, whole; in relaxed mode it and
    // any number of the appends that returned since the last flush (and the one in flight), whole.
    let mut allowed = vec![ack];
    if cut.relaxed && cut.phase != Phase::Recovering {
        let upto = (cut.returned + 1).min(exp.ends.len());
        allowed.extend(exp.ends[..upto].iter().filter(|end| **end > ack));
    } else if matches!(cut.phase, Phase::Appending | Phase::Sealing) {
        allowed.extend(exp.ends.get(cut.returned));
    }
    let source = match Source::open(dir) {
        Ok(source) => source,
        Err(e) if cut.ack.is_none() && is_unborn_error(&e, dir) => return check_unborn(dir),
        Err(e) => return Err(format!("Source::open refused the image: {e}")),
    };
    let size = source.head.size;
    if !allowed.contains(&size) {
        return Err(format!(
            "the image holds {size} records; acknowledged {ack}, allowed {allowed:?} (whole appends only)"
        ));
    }
    if source.head.root != exp.roots[size as usize] {
        return Err(format!("the image's root at {size} is not the real log's"));
    }
    if let Some(head) = cut.ack {
        assert_eq!(exp.roots[head.size as usize], head.root, "the acknowledged root is the real log's");
    }
    // Every record byte-identical to the real log's (and so every acknowledged one is there).
    let mut frames = source.frames(0, size);
    let mut next = 0u64;
    while let Some((position, body, _)) = frames.next_frame().map_err(|e| format!("reading the image: {e}"))? {
        if position != next || body != exp.bodies[position as usize].as_slice() {
            return Err(format!("record {position} differs from the real log's (expected position {next})"));
        }
        next += 1;
    }
    if next != size {
        return Err(format!("the image yields {next} of its {size} records"));
    }
    let mut streams: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    let mut appends = 0u64;
    let mut acked_appends = 0u64;
    let mut last_commit = true;
    for record in source.records(0) {
        let record = record.map_err(|e| format!("decoding the image: {e}"))?;
        streams.entry(record.stream()).or_default().push(record.position);
        last_commit = record.commit;
        if record.commit {
            appends += 1;
            if record.position < ack {
                acked_appends += 1;
            }
        }
    }
    if !last_commit {
        return Err("the image's last record is not a commit record".into());
    }
    // A reader accepts the crashed folder as it is.
    replay::verify::verify(&source, &mut |_| {}).map_err(|e| format!("replay verify of the image as it is: {e}"))?;
    let live = source.files.last().map(|f| (f.path.clone(), f.readable_len));
    // The writer recovers it.
    let ledger = Ledger::open(dir).map_err(|e| format!("Ledger::open of the image: {e}"))?;
    if ledger.head() != source.head {
        return Err(format!("Ledger::open found {} records, the reader {size}", ledger.head().size));
    }
    if let Some(head) = cut.ack {
        let root = ledger.root_at(head.size).map_err(|e| format!("root_at({}): {e}", head.size))?;
        if root != head.root {
            return Err(format!("root_at({}) differs from the acknowledged root", head.size));
        }
    }
    if source.torn.is_some() {
        let (path, committed) = live.ok_or("a torn tail without a live segment")?;
        let len = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
        if len != committed {
            return Err(format!("the open left {} at {len} bytes, its committed end is {committed}", path.display()));
        }
    }
    for (stream, positions) in &streams {
        let got: Vec<u64> = ledger
            .read_stream(stream)
            .map_err(|e| format!("read_stream({stream}): {e}"))?
            .iter()
            .map(|r| r.position)
            .collect();
        if &got != positions {
            return Err(format!("read_stream({stream}) gives positions {got:?}, the log {positions:?}"));
        }
    }
    let more = batch(appends);
    let k = more.len() as u64;
    let appended = ledger.append(more).map_err(|e| format!("append after the open: {e}"))?;
    if appended.head.size != size + k {
        return Err(format!("append after the open ended at {}, expected {}", appended.head.size, size + k));
    }
    let closed = ledger.close().map_err(|e| format!("close: {e}"))?;
    if let Some(warning) = closed.index_warning {
        return Err(format!("close after the open: {warning}"));
    }
    let after = Source::open(dir).map_err(|e| format!("Source::open after the append: {e}"))?;
    if after.head != appended.head {
        return Err(format!("after the append the reader sees {} records", after.head.size));
    }
    replay::verify::verify(&after, &mut |_| {}).map_err(|e| format!("verify after the append: {e}"))?;
    Ok(Seen {
        unborn: false,
        size,
        acked_appends,
        acked_records: ack,
        in_flight_whole: size > ack,
        torn_cut: source.torn.is_some(),
    })
}

fn describe(cut: &Cut, trace: &[String]) -> String {
    let from = cut.op.saturating_sub(14);
    let ops: Vec<String> =
        trace[from..cut.op].iter().enumerate().map(|(i, op)| format!("  #{} {op}", from + i)).collect();
    format!(
        "cut after op #{} ({:?}{}{}), ack {:?}, {} appends of this run returned, index {}, {} unsynced name \
         changes kept, kept {:?}\nlast ops:\n{}",
        cut.op.saturating_sub(1),
        cut.phase,
        if cut.creating_segment { ", creating a segment" } else { "" },
        if cut.relaxed { ", relaxed mode" } else { "" },
        cut.ack.map(|h| h.size),
        cut.returned,
        if cut.index_copied { "copied" } else { "deleted" },
        cut.names_leaked,
        cut.keeps,
        ops.join("\n")
    )
}

// ---------------------------------------------------------------------------------------------------
// The random power-cut run
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Summary {
    cuts: usize,
    generations: usize,
    relaxed_generations: usize,
    appends: usize,
    by_phase: BTreeMap<Phase, usize>,
    creating_segment: usize,
    unborn: usize,
    acked_appends: u64,
    acked_records: u64,
    in_flight_whole: usize,
    torn_writes: usize,
    torn_cut: usize,
    index_copied: usize,
    names_leaked: usize,
}

fn count_commits(source: &Source) -> u64 {
    source.records(0).filter(|r| r.as_ref().is_ok_and(|r| r.commit)).count() as u64
}

fn power_cuts(seed: u64, cycles: usize) -> Summary {
    let work = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let mut summary = Summary::default();
    // A crash image of the previous generation to continue from (`None`: a new ledger).
    let mut base: Option<PathBuf> = None;
    while summary.cuts < cycles {
        let generation = summary.generations;
        let gen_dir = work.path().join(format!("g{generation}"));
        std::fs::create_dir(&gen_dir).unwrap();
        let root = gen_dir.join("ledger");
        if let Some(base) = base.take() {
            copy_dir(&base, &root);
            std::fs::remove_dir_all(base.parent().unwrap()).unwrap();
        }
        let opened_before = if root.exists() { Source::open(&root).ok() } else { None };
        // The script's next append (the base holds appends 0..first).
        let first = opened_before.as_ref().map_or(0, count_commits);
        let sim = SimDisk::new(&root, &gen_dir, rng.next(), Policy::Random);
        // One generation in four runs in relaxed mode, flushing after some appends.
        let relaxed = rng.below(4) == 0;
        sim.state().relaxed = relaxed;
        match &opened_before {
            Some(source) => sim.ack(source.head, 0, Phase::Recovering),
            None => sim.set_phase(Phase::Creating),
        }
        let options = Options {
            durability: if relaxed { Durability::Relaxed } else { Durability::Durable },
            segment_max_bytes: SEGMENT_BYTES,
            faults: Some(sim.clone() as Arc<dyn FaultInjector>),
        };
        let ledger = Ledger::open_with(&root, options)
            .unwrap_or_else(|e| panic!("seed {seed}, generation {generation}: open of the real folder: {e}"));
        let opened = ledger.head();
        if let Some(source) = &opened_before {
            assert_eq!(opened, source.head, "seed {seed}, generation {generation}: the open kept the log");
        }
        sim.ack(opened, 0, Phase::Appending);
        let appends = 3 + rng.below(20) as usize;
        let mut ends = Vec::with_capacity(appends);
        for i in 0..appends {
            let appended = ledger.append(batch(first + i as u64)).unwrap();
            ends.push(appended.head.size);
            if !relaxed {
                sim.ack(appended.head, i + 1, Phase::Appending);
            } else if rng.below(3) == 0 {
                sim.returned(i + 1);
                let flushed = ledger.flush().unwrap();
                assert_eq!(flushed, appended.head);
                sim.ack(flushed, i + 1, Phase::Appending);
            } else {
                sim.returned(i + 1);
            }
        }
        sim.set_phase(Phase::Closing);
        ledger.close().unwrap();
        let (cuts, trace) = sim.take();
        drop(sim);
        let expected = Expected::read(&root, ends);
        // The next generation continues from one of these images (copied before the checks write to it),
        // or, one time in four or once the log is long, from a new ledger.
        let continue_from = if rng.below(4) == 0 || expected.bodies.len() > 1_500 || cuts.is_empty() {
            None
        } else {
            Some(rng.below(cuts.len() as u64) as usize)
        };
        for (i, cut) in cuts.iter().enumerate() {
            if continue_from == Some(i) && cut.dir.exists() {
                let copy = work.path().join(format!("base-{generation}")).join("ledger");
                copy_dir(&cut.dir, &copy);
                base = Some(copy);
            }
            let seen = check_image(cut, &expected).unwrap_or_else(|e| {
                panic!(
                    "POSLEDGER_POWER_SEED={seed}: generation {generation} (from {}), image {i} of {}: {e}\n{}",
                    if opened_before.is_some() { "a crash image" } else { "a new folder" },
                    cuts.len(),
                    describe(cut, &trace)
                )
            });
            summary.cuts += 1;
            *summary.by_phase.entry(cut.phase).or_default() += 1;
            summary.creating_segment += usize::from(cut.creating_segment);
            summary.unborn += usize::from(seen.unborn);
            summary.acked_appends += seen.acked_appends;
            summary.acked_records += seen.acked_records;
            summary.in_flight_whole += usize::from(seen.in_flight_whole);
            summary.torn_writes += usize::from(cut.torn_write());
            summary.torn_cut += usize::from(seen.torn_cut);
            summary.index_copied += usize::from(cut.index_copied);
            summary.names_leaked += usize::from(cut.names_leaked > 0);
            std::fs::remove_dir_all(cut.dir.parent().unwrap()).unwrap();
        }
        summary.appends += appends;
        summary.generations += 1;
        summary.relaxed_generations += usize::from(relaxed);
        std::fs::remove_dir_all(&gen_dir).unwrap();
    }
    summary
}

/// Power cuts at random moments of a script of small durable appends that seals and rotates segments,
/// during the creation of a ledger and during the recovery of a crashed one: every crash image opens
/// (reader and writer), holds every acknowledged append byte for byte with the acknowledged root, shows
/// whole appends only, accepts a further append, and passes `replay verify`.
#[test]
fn power_cut_keeps_every_acknowledged_append() {
    let seed = env_u64("POSLEDGER_POWER_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        nanos as u64 ^ u64::from(std::process::id())
    });
    let cycles = env_u64("POSLEDGER_POWER_CYCLES").unwrap_or(150) as usize;
    println!("power_cut: POSLEDGER_POWER_SEED={seed} POSLEDGER_POWER_CYCLES={cycles}");
    let started = std::time::Instant::now();
    let s = power_cuts(seed, cycles);
    let phase = |p: Phase| s.by_phase.get(&p).copied().unwrap_or(0);
    println!(
        "power_cut summary: {} cuts over {} generations ({} in relaxed mode; {} appends): {} while creating a ledger ({} before it \
         existed), {} while recovering a crashed one, {} while sealing/rotating, {} while appending, {} while \
         closing; {} while a segment file was being created; {} acknowledged appends ({} records) checked \
         byte for byte; {} images held the in-flight append whole; {} torn writes (sectors written and not); \
         {} images had a tail after the last commit, cut on open; index copied into {} images, deleted in {}; \
         {} images kept unsynced name changes; seed {seed}; {:.1} s",
        s.cuts,
        s.generations,
        s.relaxed_generations,
        s.appends,
        phase(Phase::Creating),
        s.unborn,
        phase(Phase::Recovering),
        phase(Phase::Sealing),
        phase(Phase::Appending),
        phase(Phase::Closing),
        s.creating_segment,
        s.acked_appends,
        s.acked_records,
        s.in_flight_whole,
        s.torn_writes,
        s.torn_cut,
        s.index_copied,
        s.cuts - s.index_copied,
        s.names_leaked,
        started.elapsed().as_secs_f64()
    );
    // The run reached the windows it is about (with enough cuts to expect each).
    if cycles >= 100 {
        for p in [Phase::Creating, Phase::Recovering, Phase::Sealing, Phase::Appending] {
            assert!(phase(p) > 0, "no cut landed while {p:?} (seed {seed})");
        }
        assert!(s.creating_segment > 0 && s.torn_writes > 0 && s.torn_cut > 0, "{s:?}");
        assert!(s.index_copied > 0 && s.index_copied < s.cuts, "{s:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// The torn-tail regression
// ---------------------------------------------------------------------------------------------------

/// One append big enough to span several sectors: a terminal issued, then many flows on it.
fn big_append(n: u64) -> Vec<AppendEvent> {
    let me = format!("B{n}");
    let mut events = vec![issued(&me, "M-PC")];
    events.extend((0..60).map(|i| flow(&me, 1_000 + i)));
    events
}

/// Every sector choice for a write of `count` sectors in which an earlier sector did not reach the disk
/// and a later one did (so not a prefix), each with the file grown to the write's end or not.
fn zero_then_data_tears(count: usize) -> Vec<Keep> {
    let mut keeps = Vec::new();
    for mask in 0u32..(1 << count) {
        let sectors: Vec<bool> = (0..count).map(|i| mask & (1 << i) != 0).collect();
        let first_missing = sectors.iter().position(|w| !*w);
        if first_missing.is_some_and(|m| sectors[m..].contains(&true)) {
            for grown in [false, true] {
                keeps.push(Keep::Torn { whole: 0, sectors: sectors.clone(), grown });
            }
        }
    }
    keeps
}

/// Regression: a torn write of an unacknowledged append, in which an earlier sector reads as zeros and a
/// later one holds its bytes, once made the ledger unopenable (damage followed by data looked like
/// corruption). Built exactly: acknowledged appends, then an append of 5 sectors cut while its bytes are
/// written but not fsynced, for every such sector pattern. The reader reports a tail after the
/// acknowledged end, the writer cuts it to that end, every acknowledged record is intact, appends go on.
#[test]
fn torn_unacknowledged_tail_with_a_zero_sector_is_cut() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("ledger");
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let policy = Policy::Scripted(Box::new(move |op: &DiskOp<'_>| match *op {
        DiskOp::Write { path, offset, bytes } if is_segment(path) && bytes.len() as u64 > 4 * SECTOR => {
            let count = sector_pieces(offset, bytes.len()).len();
            seen.lock().unwrap().push((offset, bytes.to_vec()));
            zero_then_data_tears(count)
        }
        _ => Vec::new(),
    }));
    let sim = SimDisk::new(&root, work.path(), 7, policy);
    let ledger =
        Ledger::open_with(&root, Options { faults: Some(sim.clone() as Arc<dyn FaultInjector>), ..Options::default() })
            .unwrap();
    let mut acked = Head { size: 0, root: Frontier::new().root() };
    for n in 0..4 {
        acked = ledger.append(batch(n)).unwrap().head;
        sim.ack(acked, n as usize + 1, Phase::Appending);
    }
    let big = ledger.append(big_append(4)).unwrap().head;
    ledger.close().unwrap();
    let (cuts, trace) = sim.take();
    let writes = writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one write of the big append");
    let (offset, bytes) = &writes[0];
    let pieces = sector_pieces(*offset, bytes.len());
    assert!(pieces.len() >= 5 && offset % SECTOR != 0, "the append spans 5+ sectors from inside one: {pieces:?}");
    assert_eq!(cuts.len(), zero_then_data_tears(pieces.len()).len());
    let expected = Expected::read(&root, vec![]);
    assert_eq!(expected.bodies.len() as u64, big.size);
    let segment = root.join(SEGMENTS_DIR).join(ledger::source::segment_file_name(0));
    for cut in &cuts {
        let context = describe(cut, &trace);
        let Keep::Torn { sectors, .. } = &cut.keeps[0].1 else { panic!("{context}") };
        assert_eq!(cut.keeps.len(), 1, "only the segment had pending operations: {context}");
        // The state is the one described: after the acknowledged end, a sector of zeros (or of the bytes
        // that were there), then, later, a sector of the append's bytes.
        let image_segment = cut.dir.join(segment.strip_prefix(&root).unwrap());
        let image_bytes = std::fs::read(&image_segment).unwrap();
        let missing = sectors.iter().position(|w| !*w).unwrap();
        let later = missing + sectors[missing..].iter().position(|w| *w).unwrap();
        let (from, to) = pieces[missing];
        let at = *offset as usize;
        assert!(image_bytes[at + from..at + to].iter().all(|b| *b == 0), "{context}");
        let (from, to) = pieces[later];
        assert_eq!(&image_bytes[at + from..at + to], &bytes[from..to], "{context}");
        assert!(bytes[from..to].iter().any(|b| *b != 0), "{context}");
        // The reader: the acknowledged log, and a tail after it.
        let source = Source::open(&cut.dir).unwrap_or_else(|e| panic!("Source::open: {e}\n{context}"));
        assert_eq!(source.head, acked, "{context}");
        let torn = source.torn.clone().unwrap_or_else(|| panic!("no tail reported\n{context}"));
        assert_eq!(torn.committed_len, *offset, "{context}");
        replay::verify::verify(&source, &mut |_| {}).unwrap_or_else(|e| panic!("verify: {e}\n{context}"));
        // The writer: cuts the tail, keeps every acknowledged record.
        let seen = check_image(cut, &expected).unwrap_or_else(|e| panic!("{e}\n{context}"));
        assert!(seen.torn_cut && seen.size == acked.size && seen.acked_appends == 4, "{seen:?}\n{context}");
    }
    println!("torn tail: {} sector patterns of a {}-sector append cut and recovered", cuts.len(), pieces.len());
}

/// Bytes of a HEAD slot a cut keeps in `head_slot_torn_inside_its_sector_leaves_the_other_slot`.
const SLOT_PREFIXES: [usize; 9] = [1, 8, 9, 16, 24, 40, 56, 60, 63];

/// A disk that does not write a 512-byte sector atomically may tear HEAD's 64-byte slot write itself:
/// cut while each slot write of a run of appends has reached the disk in part (the first 1..63 bytes).
/// The append's records are durable (fsynced before HEAD is written), the other slot still anchors the
/// log at the previous acknowledged head, so the reader and the writer open the folder; the writer
/// writes HEAD whole again.
#[test]
fn head_slot_torn_inside_its_sector_leaves_the_other_slot() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("ledger");
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let policy = Policy::Scripted(Box::new(move |op: &DiskOp<'_>| match *op {
        DiskOp::Write { path, offset, bytes } if path.file_name().is_some_and(|n| n == "HEAD") => {
            assert_eq!(bytes.len(), 64, "a slot write");
            seen.lock().unwrap().push(offset);
            SLOT_PREFIXES.iter().map(|len| Keep::Bytes { whole: 0, len: *len }).collect()
        }
        _ => Vec::new(),
    }));
    let sim = SimDisk::new(&root, work.path(), 11, policy);
    let ledger =
        Ledger::open_with(&root, Options { faults: Some(sim.clone() as Arc<dyn FaultInjector>), ..Options::default() })
            .unwrap();
    sim.ack(ledger.head(), 0, Phase::Appending);
    let mut ends = Vec::new();
    for n in 0..6 {
        let head = ledger.append(batch(n)).unwrap().head;
        ends.push(head.size);
        sim.ack(head, n as usize + 1, Phase::Appending);
    }
    ledger.close().unwrap();
    let (cuts, trace) = sim.take();
    let writes = writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 6, "one slot write per append");
    assert_eq!(writes.iter().filter(|o| **o == 0).count(), 3, "the slots alternate");
    assert_eq!(cuts.len(), 6 * SLOT_PREFIXES.len());
    let expected = Expected::read(&root, ends);
    let mut damaged = 0;
    for (i, cut) in cuts.iter().enumerate() {
        let context = describe(cut, &trace);
        let slot = (writes[i / SLOT_PREFIXES.len()] / 64) as usize;
        let kept = SLOT_PREFIXES[i % SLOT_PREFIXES.len()];
        let source = Source::open(&cut.dir).unwrap_or_else(|e| panic!("Source::open: {e}\n{context}"));
        let anchor = source.anchor.unwrap_or_else(|| panic!("no anchor\n{context}"));
        // The first 8 bytes (the magic) are the old slot's too; from the generation on, the slot is mixed
        // until its CRC is whole.
        assert_eq!(anchor.damaged_slot, (9..60).contains(&kept).then_some(slot), "{anchor:?}\n{context}");
        // A slot's fields and CRC are its first 60 bytes: with all of them the new anchor is whole; with
        // fewer, the other slot holds the last acknowledged head.
        let anchored = if kept >= 60 { expected.ends[cut.returned] } else { cut.ack.unwrap().size };
        assert_eq!(anchor.head.size, anchored, "{anchor:?}\n{context}");
        assert_eq!(anchor.head.root, expected.roots[anchored as usize], "{context}");
        damaged += usize::from(anchor.damaged_slot.is_some());
        let seen = check_image(cut, &expected).unwrap_or_else(|e| panic!("{e}\n{context}"));
        assert!(seen.in_flight_whole, "the append was fsynced before its slot was written\n{context}");
        let after = ledger::anchor::read(&cut.dir).unwrap().unwrap();
        assert!(after.damaged_slot.is_none(), "the writer rewrote HEAD whole\n{context}");
    }
    assert_eq!(damaged, 6 * 5, "five of the nine prefixes of each slot write leave it damaged");
    println!("HEAD slot: {} cuts inside a slot write, {damaged} left a damaged slot, all opened", cuts.len());
}

// ---------------------------------------------------------------------------------------------------
// The simulator itself
// ---------------------------------------------------------------------------------------------------

/// The simulated disk keeps what a power cut keeps: unsynced names are lost, an unsynced rename leaves
/// the old file, unsynced writes are kept as chosen, a torn write mixes written and unwritten sectors.
#[test]
fn the_simulated_disk_keeps_only_what_was_made_durable() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("ledger");
    let a = root.join("a");
    let b = root.join("b");
    let keeps = Arc::new(Mutex::new(Vec::<Keep>::new()));
    let next = keeps.clone();
    let sim = SimDisk::new(
        &root,
        work.path(),
        1,
        Policy::Scripted(Box::new(move |_: &DiskOp<'_>| std::mem::take(&mut *next.lock().unwrap()))),
    );
    let cut = |keep: Vec<Keep>, op: DiskOp<'_>| {
        *keeps.lock().unwrap() = keep;
        sim.observe(&op);
    };
    let image = |i: usize| work.path().join(format!("cut-{i}")).join("ledger");
    // 0: the folder itself is not durable yet.
    cut(vec![Keep::Whole(0)], DiskOp::CreateDir { path: &root });
    sim.observe(&DiskOp::SyncDir { path: work.path() });
    sim.observe(&DiskOp::Create { path: &a });
    let data: Vec<u8> = (0..1500u32).map(|i| (i % 251 + 1) as u8).collect();
    // 1: `a` written and synced but its name not durable.
    sim.observe(&DiskOp::Write { path: &a, offset: 0, bytes: &data[..100] });
    cut(vec![Keep::Whole(0)], DiskOp::Sync { path: &a });
    sim.observe(&DiskOp::SyncDir { path: &root });
    // 2, 3, 4: an unsynced write of 1,400 bytes at offset 100 (3 sectors): none, all, torn (0 1 0... as
    // the mask says).
    let write = DiskOp::Write { path: &a, offset: 100, bytes: &data[100..1500] };
    let torn = Keep::Torn { whole: 0, sectors: vec![false, true, false], grown: true };
    cut(vec![Keep::Whole(0), Keep::Whole(1), torn], write);
    // 5: a rename over nothing, folder not synced; 6: then synced.
    cut(vec![Keep::Whole(0)], DiskOp::Rename { from: &a, to: &b });
    cut(vec![Keep::Whole(0)], DiskOp::SyncDir { path: &root });
    let (cuts, _) = sim.take();
    assert_eq!(cuts.len(), 7);
    assert!(!image(0).exists());
    assert!(image(1).is_dir() && !image(1).join("a").exists());
    assert_eq!(std::fs::read(image(2).join("a")).unwrap(), &data[..100]);
    assert_eq!(std::fs::read(image(3).join("a")).unwrap(), data);
    let torn = std::fs::read(image(4).join("a")).unwrap();
    assert_eq!(torn.len(), 1500);
    assert_eq!(&torn[..100], &data[..100], "synced bytes stay");
    assert!(torn[100..512].iter().all(|b| *b == 0), "sector 0 of the write not written");
    assert_eq!(&torn[512..1024], &data[512..1024], "sector 1 written");
    assert!(torn[1024..].iter().all(|b| *b == 0), "sector 2 not written");
    assert!(image(5).join("a").exists() && !image(5).join("b").exists(), "unsynced rename: the old name");
    assert!(!image(6).join("a").exists() && image(6).join("b").exists(), "synced rename: the new name");
    assert_eq!(std::fs::read(image(6).join("b")).unwrap().len(), 100, "the write was never synced");
}

//! The derived index: an in-memory view of current state that validates decisions, and its persistent
//! copy in sled (stream index, per-terminal state, idempotency keys, model → terminals, directives, and
//! an indexed-up-to watermark).
//!
//! Nothing here is a source of truth: the whole index can be deleted and is rebuilt from the segments.
//! sled is written by a background thread, off the append path, and only with records that are already
//! durable in the log; the watermark is written after the entries it covers. Replaying records the
//! index already holds is harmless: a stream entry records how many events it covers, and older
//! positions are skipped.
//!
//! sled layout (all integers big-endian in keys, values bincode standard):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `watermark` | u64: records indexed (positions 0..watermark) |
//! | `meta` | `ledger_id`, `last_leaf` | the ledger's id; the leaf hash of record watermark-1 |
//! | `streams` | stream key (`T`+SN, or `D`) | [`StreamEntry`]: version, state, model, last < 256 positions |
//! | `chunks` | stream key, 0x00, chunk u64 | 256 positions of versions chunk·256 .. |
//! | `event_ids` | event id | position u64 |
//! | `models` | model, 0x00, SN | empty |
//! | `directives` | directive id | the directive's models |

use crate::lifecycle::State;
use crate::merkle::Hash;
use crate::model::{DirectiveId, EventId, ModelCode, Sn, StreamId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Positions per sealed chunk of a stream's position list.
pub const CHUNK: u64 = 256;

/// What the ledger keeps in memory per terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalMem {
    /// Events in the stream.
    pub version: u64,
    /// Lifecycle state after them.
    pub state: State,
    /// The terminal's model (for directives).
    pub model: ModelCode,
}

/// The in-memory view of current state, used to validate decisions.
#[derive(Debug, Default)]
pub struct View {
    /// Per-terminal state.
    pub terminals: HashMap<Sn, TerminalMem>,
    /// Events in the directives stream.
    pub directives_version: u64,
    /// Recorded directives and their models.
    pub directives: HashMap<DirectiveId, HashSet<ModelCode>>,
    /// Model → terminals issued with it.
    pub models: HashMap<ModelCode, Vec<Sn>>,
    /// Idempotency keys → position.
    pub event_ids: HashMap<EventId, u64>,
}

/// A stream's entry in sled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// Events in the stream covered by this entry.
    pub version: u64,
    /// Lifecycle state (terminal streams).
    pub state: Option<State>,
    /// Model (terminal streams).
    pub model: Option<ModelCode>,
    /// Positions of versions `version - tail.len() .. version` (fewer than [`CHUNK`]).
    pub tail: Vec<u64>,
}

/// The sled key of a stream.
pub fn stream_key(stream: &StreamId) -> Vec<u8> {
    match stream {
        StreamId::Terminal(sn) => {
            let mut key = Vec::with_capacity(1 + sn.as_str().len());
            key.push(b'T');
            key.extend_from_slice(sn.as_str().as_bytes());
            key
        }
        StreamId::Directives => vec![b'D'],
    }
}

fn chunk_key(stream_key: &[u8], chunk: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream_key.len() + 9);
    key.extend_from_slice(stream_key);
    key.push(0);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

fn model_key(model: &ModelCode, sn: &Sn) -> Vec<u8> {
    let mut key = Vec::with_capacity(model.as_str().len() + 1 + sn.as_str().len());
    key.extend_from_slice(model.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(sn.as_str().as_bytes());
    key
}

/// One stream's change in an [`IndexUpdate`].
#[derive(Clone, Debug)]
pub struct StreamChange {
    /// The stream.
    pub stream: StreamId,
    /// Version of the first new position.
    pub first_version: u64,
    /// New positions, for versions `first_version..`.
    pub positions: Vec<u64>,
    /// State after them (terminal streams).
    pub state: Option<State>,
    /// Model (terminal streams).
    pub model: Option<ModelCode>,
}

/// What one append (or one recovered append) adds to the index.
#[derive(Clone, Debug, Default)]
pub struct IndexUpdate {
    /// Log size after the append.
    pub end_position: u64,
    /// Leaf hash of record `end_position - 1`.
    pub last_leaf: Hash,
    /// Changed streams.
    pub streams: Vec<StreamChange>,
    /// New idempotency keys.
    pub event_ids: Vec<(EventId, u64)>,
    /// Newly issued terminals.
    pub models: Vec<(ModelCode, Sn)>,
    /// New directives.
    pub directives: Vec<(DirectiveId, Vec<ModelCode>)>,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| e.to_string())
}

fn u64_value(bytes: &[u8]) -> Result<u64, String> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| "bad u64 value".to_string())?;
    Ok(u64::from_be_bytes(array))
}

/// The sled side of the index.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    streams: sled::Tree,
    chunks: sled::Tree,
    event_ids: sled::Tree,
    models: sled::Tree,
    directives: sled::Tree,
}

/// What the store says about how far it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// Records indexed.
    pub size: u64,
    /// Leaf hash of the last indexed record (zeros when size is 0).
    pub last_leaf: Hash,
    /// The ledger the index belongs to.
    pub ledger_id: u64,
}

impl Store {
    /// Opens (or creates) the sled database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Store, String> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .cache_capacity(256 << 20)
            .open()
            .map_err(|e| e.to_string())?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| e.to_string());
        Ok(Store {
            meta: tree("meta")?,
            streams: tree("streams")?,
            chunks: tree("chunks")?,
            event_ids: tree("event_ids")?,
            models: tree("models")?,
            directives: tree("directives")?,
            db,
        })
    }

    /// The watermark, `None` for a fresh index.
    pub fn watermark(&self) -> Result<Option<Watermark>, String> {
        let get = |key: &str| self.meta.get(key).map_err(|e| e.to_string());
        let (Some(size), Some(leaf), Some(id)) = (get("watermark")?, get("last_leaf")?, get("ledger_id")?) else {
            return Ok(None);
        };
        let last_leaf: Hash = leaf.as_ref().try_into().map_err(|_| "bad last_leaf".to_string())?;
        Ok(Some(Watermark { size: u64_value(&size)?, last_leaf, ledger_id: u64_value(&id)? }))
    }

    /// Loads the whole in-memory view.
    pub fn load_view(&self) -> Result<View, String> {
        let mut view = View::default();
        for item in self.streams.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let entry: StreamEntry = decode(&value)?;
            match key.first() {
                Some(b'T') => {
                    let sn = std::str::from_utf8(&key[1..]).map_err(|e| e.to_string())?;
                    let sn = Sn::parse(sn).map_err(|e| e.to_string())?;
                    let (Some(state), Some(model)) = (entry.state, entry.model) else {
                        return Err(format!("stream entry of {sn} lacks its state"));
                    };
                    view.terminals.insert(sn, TerminalMem { version: entry.version, state, model });
                }
                Some(b'D') => view.directives_version = entry.version,
                _ => return Err("unknown stream key".into()),
            }
        }
        for item in self.directives.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let id =
                DirectiveId::parse(std::str::from_utf8(&key).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            let models: Vec<ModelCode> = decode(&value)?;
            view.directives.insert(id, models.into_iter().collect());
        }
        for item in self.models.iter() {
            let (key, _) = item.map_err(|e| e.to_string())?;
            let split = key.iter().position(|b| *b == 0).ok_or("bad model key")?;
            let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| e.to_string());
            let model = ModelCode::parse(&text(&key[..split])?).map_err(|e| e.to_string())?;
            let sn = Sn::parse(&text(&key[split + 1..])?).map_err(|e| e.to_string())?;
            view.models.entry(model).or_default().push(sn);
        }
        for item in self.event_ids.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let id =
                EventId::parse(std::str::from_utf8(&key).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            view.event_ids.insert(id, u64_value(&value)?);
        }
        Ok(view)
    }

    /// Empties every tree (before a rebuild).
    pub fn clear(&self) -> Result<(), String> {
        for tree in [&self.meta, &self.streams, &self.chunks, &self.event_ids, &self.models, &self.directives] {
            tree.clear().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Applies updates (in position order), then moves the watermark past them.
    pub fn apply(&self, updates: &[IndexUpdate], ledger_id: u64) -> Result<(), String> {
        let Some(last) = updates.last() else { return Ok(()) };
        // Merge the changes of all updates per stream, so each stream entry is read and written once.
        let mut merged: HashMap<Vec<u8>, (u64, Vec<u64>, Option<State>, Option<ModelCode>)> = HashMap::new();
        let mut ids = sled::Batch::default();
        let mut models = sled::Batch::default();
        let mut directives = sled::Batch::default();
        for update in updates {
            for change in &update.streams {
                let key = stream_key(&change.stream);
                let slot = merged.entry(key).or_insert_with(|| (change.first_version, Vec::new(), None, None));
                assert_eq!(
                    slot.0 + slot.1.len() as u64,
                    change.first_version,
                    "stream versions not dense in index updates"
                );
                slot.1.extend_from_slice(&change.positions);
                slot.2 = change.state;
                if change.model.is_some() {
                    slot.3 = change.model.clone();
                }
            }
            for (id, position) in &update.event_ids {
                ids.insert(id.as_str().as_bytes(), &position.to_be_bytes());
            }
            for (model, sn) in &update.models {
                models.insert(model_key(model, sn), &[][..]);
            }
            for (id, list) in &update.directives {
                directives.insert(id.as_str().as_bytes(), encode(list)?);
            }
        }
        let mut streams = sled::Batch::default();
        let mut chunks = sled::Batch::default();
        for (key, (first_version, positions, state, model)) in merged {
            let mut entry: StreamEntry = match self.streams.get(&key).map_err(|e| e.to_string())? {
                Some(bytes) => decode(&bytes)?,
                None => StreamEntry::default(),
            };
            for (i, position) in positions.into_iter().enumerate() {
                let version = first_version + i as u64;
                if version < entry.version {
                    continue; // already indexed before a crash: replay is idempotent
                }
                assert_eq!(version, entry.version, "gap in a stream's versions");
                entry.tail.push(position);
                entry.version += 1;
                if entry.tail.len() as u64 == CHUNK {
                    let chunk = entry.version / CHUNK - 1;
                    chunks.insert(chunk_key(&key, chunk), encode(&entry.tail)?);
                    entry.tail.clear();
                }
            }
            if state.is_some() {
                entry.state = state;
            }
            if model.is_some() {
                entry.model = model;
            }
            streams.insert(key, encode(&entry)?);
        }
        let err = |e: sled::Error| e.to_string();
        self.chunks.apply_batch(chunks).map_err(err)?;
        self.streams.apply_batch(streams).map_err(err)?;
        self.event_ids.apply_batch(ids).map_err(err)?;
        self.models.apply_batch(models).map_err(err)?;
        self.directives.apply_batch(directives).map_err(err)?;
        let mut meta = sled::Batch::default();
        meta.insert("watermark", &last.end_position.to_be_bytes());
        meta.insert("last_leaf", &last.last_leaf);
        meta.insert("ledger_id", &ledger_id.to_be_bytes());
        self.meta.apply_batch(meta).map_err(err)?;
        Ok(())
    }

    /// Positions of a stream's events, in version order.
    pub fn stream_positions(&self, stream: &StreamId) -> Result<Vec<u64>, String> {
        let key = stream_key(stream);
        let Some(bytes) = self.streams.get(&key).map_err(|e| e.to_string())? else {
            return Ok(Vec::new());
        };
        let entry: StreamEntry = decode(&bytes)?;
        let mut positions = Vec::with_capacity(entry.version as usize);
        let mut prefix = key.clone();
        prefix.push(0);
        for item in self.chunks.scan_prefix(&prefix) {
            let (_, value) = item.map_err(|e| e.to_string())?;
            let chunk: Vec<u64> = decode(&value)?;
            positions.extend(chunk);
        }
        positions.extend(entry.tail);
        if positions.len() as u64 != entry.version {
            return Err(format!("{stream}: index holds {} positions for {} events", positions.len(), entry.version));
        }
        Ok(positions)
    }

    /// Terminals issued with `model`, from the model index.
    pub fn terminals_of_model(&self, model: &ModelCode) -> Result<Vec<Sn>, String> {
        let mut prefix = model.as_str().as_bytes().to_vec();
        prefix.push(0);
        self.models
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, _) = item.map_err(|e| e.to_string())?;
                let sn = std::str::from_utf8(&key[prefix.len()..]).map_err(|e| e.to_string())?;
                Sn::parse(sn).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<(), String> {
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }
}

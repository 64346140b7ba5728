//! String interning: repeated strings (model, provider, region, merchant) stored once, referred to by a
//! small integer id.
//!
//! Ids are assigned in order of first appearance *in position order*. Both the sequential fold and the
//! parallel rebuild (which interns per chunk, then merges the chunk tables in chunk order) reach the same
//! ids for the same log, so two fleets of the same log are equal field by field, ids included.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A table of distinct strings, each with a dense `u32` id (its index).
///
/// Compact on purpose: a fleet has about one merchant per 1.4 terminals, so this table is a large part
/// of the fleet's memory. The strings live end to end in one `String` (`text`, with each id's end offset
/// in `ends`), and the look-up map goes from a 64-bit hash of the string to its id: about 30 bytes a
/// value instead of two boxed copies and a map of boxed keys (~110). A hash shared by two different
/// strings (never seen in practice, but possible) sends the later one to `collisions`, keyed by text.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    text: String,
    ends: Vec<u32>,
    by_hash: HashMap<u64, u32, crate::fleet::Hasher>,
    collisions: HashMap<Box<str>, u32, crate::fleet::Hasher>,
}

impl PartialEq for Interner {
    fn eq(&self, other: &Interner) -> bool {
        // Equal tables hold the same values in the same id order; the maps follow from them.
        self.ends == other.ends && self.text == other.text
    }
}

impl Eq for Interner {}

/// One fixed hash function for the table's keys (a map's own random state would differ per table).
fn hash_of(value: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x696e_7465_726e_6564).hash_one(value)
}

impl Interner {
    /// An empty table.
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The id of `value`, adding it if it is new.
    pub fn intern(&mut self, value: &str) -> u32 {
        if let Some(id) = self.id(value) {
            return id;
        }
        // More than 4 billion distinct values (or 4 GiB of text) cannot occur: every one comes from a
        // record of at most 1 MiB and the log would be petabytes long; saturate rather than wrap.
        let id = u32::try_from(self.ends.len()).unwrap_or(u32::MAX);
        self.text.push_str(value);
        self.ends.push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        match self.by_hash.entry(hash_of(value)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.insert(value.into(), id);
            }
        }
        id
    }

    /// The id of `value`, if it was interned.
    pub fn id(&self, value: &str) -> Option<u32> {
        match self.by_hash.get(&hash_of(value)) {
            Some(id) if self.get(*id) == Some(value) => Some(*id),
            Some(_) => self.collisions.get(value).copied(),
            None => None,
        }
    }

    /// The string of `id`, if it exists.
    pub fn get(&self, id: u32) -> Option<&str> {
        let end = *self.ends.get(id as usize)? as usize;
        let start = match id.checked_sub(1) {
            Some(previous) => *self.ends.get(previous as usize)? as usize,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// How many distinct values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values, in id order.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len()).filter_map(|id| self.get(u32::try_from(id).ok()?))
    }

    /// Heap bytes held by the table (glibc chunk sizes for the text and the id list; hashbrown's
    /// buckets for the maps).
    pub fn heap_bytes(&self) -> usize {
        let buckets = |capacity: usize| if capacity == 0 { 0 } else { (capacity * 8 / 7).next_power_of_two() };
        let collided: usize = self.collisions.keys().map(|k| crate::fleet::malloc_size(k.len())).sum();
        crate::fleet::malloc_size(self.text.capacity())
            + crate::fleet::malloc_size(self.ends.capacity() * std::mem::size_of::<u32>())
            + buckets(self.by_hash.capacity()) * (std::mem::size_of::<(u64, u32)>() + 1)
            + buckets(self.collisions.capacity()) * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + collided
    }

    pub(crate) fn to_image(&self) -> Vec<&str> {
        self.values().collect()
    }

    /// Rebuilds a table from its values in id order; `None` if a value repeats.
    pub(crate) fn from_image(values: Vec<&str>) -> Option<Interner> {
        let mut table = Interner::new();
        for value in values {
            let before = table.len();
            table.intern(value);
            if table.len() == before {
                return None;
            }
        }
        Some(table)
    }
}

/// The four tables of a fleet. Field order in [`Names::KINDS`] is the order ids are carried in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Model codes.
    pub models: Interner,
    /// Providers.
    pub providers: Interner,
    /// Regions (as their six-digit text).
    pub regions: Interner,
    /// Merchants.
    pub merchants: Interner,
}

/// The interned ids of one issued terminal: model, provider, region, merchant.
pub(crate) type NameIds = [u32; 4];

impl Names {
    /// The tables in id-array order (model, provider, region, merchant).
    pub(crate) fn tables_mut(&mut self) -> [&mut Interner; 4] {
        [&mut self.models, &mut self.providers, &mut self.regions, &mut self.merchants]
    }

    /// Interns the four names of an issued terminal.
    pub(crate) fn intern_issued(&mut self, issued: &log::Issued) -> NameIds {
        let region = issued.region.to_string();
        let values = [issued.model.as_str(), issued.provider.as_str(), region.as_str(), issued.merchant.as_str()];
        let mut ids = [0u32; 4];
        for ((id, table), value) in ids.iter_mut().zip(self.tables_mut()).zip(values) {
            *id = table.intern(value);
        }
        ids
    }

    /// Approximate heap bytes of the four tables.
    pub fn heap_bytes(&self) -> usize {
        self.models.heap_bytes() + self.providers.heap_bytes() + self.regions.heap_bytes() + self.merchants.heap_bytes()
    }
}

/// Serializable form of [`Names`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NamesImage<'a> {
    #[serde(borrow)]
    pub models: Vec<&'a str>,
    #[serde(borrow)]
    pub providers: Vec<&'a str>,
    #[serde(borrow)]
    pub regions: Vec<&'a str>,
    #[serde(borrow)]
    pub merchants: Vec<&'a str>,
}

impl Names {
    pub(crate) fn to_image(&self) -> NamesImage<'_> {
        NamesImage {
            models: self.models.to_image(),
            providers: self.providers.to_image(),
            regions: self.regions.to_image(),
            merchants: self.merchants.to_image(),
        }
    }

    pub(crate) fn from_image(image: NamesImage<'_>) -> Option<Names> {
        Some(Names {
            models: Interner::from_image(image.models)?,
            providers: Interner::from_image(image.providers)?,
            regions: Interner::from_image(image.regions)?,
            merchants: Interner::from_image(image.merchants)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_first_appearance() {
        let mut t = Interner::new();
        assert_eq!(t.intern("b"), 0);
        assert_eq!(t.intern("a"), 1);
        assert_eq!(t.intern("b"), 0);
        assert_eq!(t.get(1), Some("a"));
        assert_eq!(t.id("a"), Some(1));
        assert_eq!(Interner::from_image(t.to_image()).unwrap(), t);
        assert!(Interner::from_image(vec!["x", "x"]).is_none());
    }
}

//! String interning: repeated strings (model, provider, region, merchant) stored once, referred to by a
//! small integer id.
//!
//! Ids are assigned in order of first appearance *in position order*. Both the sequential fold and the
//! parallel rebuild (which interns per chunk, then merges the chunk tables in chunk order) reach the same
//! ids for the same log, so two fleets of the same log are equal field by field, ids included.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A table of distinct strings, each with a dense `u32` id (its index).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interner {
    values: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32, crate::fleet::Hasher>,
}

impl Interner {
    /// An empty table.
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The id of `value`, adding it if it is new.
    pub fn intern(&mut self, value: &str) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        // More than 4 billion distinct values cannot occur: every one comes from a record of at most
        // 1 MiB and the log would be petabytes long; saturate rather than wrap if it ever did.
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(value.into());
        self.ids.insert(value.into(), id);
        id
    }

    /// The id of `value`, if it was interned.
    pub fn id(&self, value: &str) -> Option<u32> {
        self.ids.get(value).copied()
    }

    /// The string of `id`, if it exists.
    pub fn get(&self, id: u32) -> Option<&str> {
        self.values.get(id as usize).map(|v| &**v)
    }

    /// How many distinct values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values, in id order.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| &**v)
    }

    /// Heap bytes held by the table (glibc chunk sizes; each string is held twice, in the list and as
    /// the key of the id map).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.values.iter().map(|v| crate::fleet::malloc_size(v.len())).sum();
        let buckets = if self.ids.capacity() == 0 { 0 } else { (self.ids.capacity() * 8 / 7).next_power_of_two() };
        self.values.capacity() * std::mem::size_of::<Box<str>>()
            + buckets * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + 2 * strings
    }

    pub(crate) fn to_image(&self) -> Vec<String> {
        self.values.iter().map(|v| v.to_string()).collect()
    }

    /// Rebuilds a table from its values in id order; `None` if a value repeats.
    pub(crate) fn from_image(values: Vec<String>) -> Option<Interner> {
        let mut table = Interner::new();
        for value in values {
            let before = table.len();
            table.intern(&value);
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
    pub(crate) fn intern_issued(&mut self, issued: &ledger::Issued) -> NameIds {
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
pub(crate) struct NamesImage {
    pub models: Vec<String>,
    pub providers: Vec<String>,
    pub regions: Vec<String>,
    pub merchants: Vec<String>,
}

impl Names {
    pub(crate) fn to_image(&self) -> NamesImage {
        NamesImage {
            models: self.models.to_image(),
            providers: self.providers.to_image(),
            regions: self.regions.to_image(),
            merchants: self.merchants.to_image(),
        }
    }

    pub(crate) fn from_image(image: NamesImage) -> Option<Names> {
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
        assert!(Interner::from_image(vec!["x".into(), "x".into()]).is_none());
    }
}

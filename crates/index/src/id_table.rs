//! [`IdTable`]: a hash index from keys to dense `u32` ids whose keys live elsewhere, once.
//!
//! A `HashMap<String, u32>` beside a `Vec<String>` of the same keys by id (a term table, a
//! slot table) holds every key twice: a second 24-byte `String` and a second heap allocation
//! per key. This table holds only the ids; it hashes and compares keys through a function from
//! id to key that the owner supplies, so each key is stored once, where the owner keeps it.

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

/// Ids by key, the keys kept by the caller (see the module docs). Hashing is SipHash with a
/// per-table random key, as `std::collections::HashMap`'s, because keys come from users.
#[derive(Clone, Default)]
pub struct IdTable {
    table: HashTable<u32>,
    hasher: RandomState,
}

impl std::fmt::Debug for IdTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTable")
            .field("len", &self.table.len())
            .finish()
    }
}

impl IdTable {
    /// An empty table with room for `n` ids.
    pub fn with_capacity(n: usize) -> Self {
        IdTable {
            table: HashTable::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Ids the table has room for without growing (for memory estimates).
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The id whose key equals `key`.
    pub fn get<'k, K, F>(&self, key: &K, key_of: F) -> Option<u32>
    where
        K: Hash + Eq + ?Sized + 'k,
        F: Fn(u32) -> &'k K,
    {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |id| key_of(*id) == key).copied()
    }

    /// Adds `id`, whose key is `key_of(id)`; the caller makes sure no other id has that key.
    pub fn insert<'k, K, F>(&mut self, id: u32, key_of: F)
    where
        K: Hash + Eq + ?Sized + 'k,
        F: Fn(u32) -> &'k K,
    {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key_of(id));
        self.table
            .insert_unique(hash, id, |id| hasher.hash_one(key_of(*id)));
    }

    /// Removes and returns the id whose key equals `key`.
    pub fn remove<'k, K, F>(&mut self, key: &K, key_of: F) -> Option<u32>
    where
        K: Hash + Eq + ?Sized + 'k,
        F: Fn(u32) -> &'k K,
    {
        let hash = self.hasher.hash_one(key);
        match self.table.find_entry(hash, |id| key_of(*id) == key) {
            Ok(entry) => Some(entry.remove().0),
            Err(_) => None,
        }
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a `HashMap<String, u32>` holding the keys itself.
        #[test]
        fn behaves_like_a_hashmap(ops in prop::collection::vec((any::<bool>(), 0u8..40), 0..200)) {
            let mut keys: Vec<String> = Vec::new();
            let mut table = IdTable::default();
            let mut model: HashMap<String, u32> = HashMap::new();
            for (insert, k) in ops {
                let key = format!("k{k}");
                if insert {
                    if table.get(key.as_str(), |id| keys[id as usize].as_str()).is_none() {
                        let id = keys.len() as u32;
                        keys.push(key.clone());
                        table.insert(id, |id| keys[id as usize].as_str());
                        model.insert(key.clone(), id);
                    }
                } else {
                    let got = table.remove(key.as_str(), |id| keys[id as usize].as_str());
                    prop_assert_eq!(got, model.remove(&key));
                }
                prop_assert_eq!(table.len(), model.len());
                for (k, id) in &model {
                    prop_assert_eq!(table.get(k.as_str(), |id| keys[id as usize].as_str()), Some(*id));
                }
            }
        }
    }
}

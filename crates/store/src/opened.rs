//! A small append-only map whose entries are added through a shared reference: the
//! transactions (and tables) of dedicated files that a snapshot or a write begins on first
//! access of their tenant, instead of on every file up front. Entries are never removed or
//! moved (each lives in its own box), so references handed out stay valid for as long as the
//! map is borrowed. It holds the few files one request touches; lookups walk the list.

use std::sync::OnceLock;

pub(crate) struct Opened<K, V> {
    head: OnceLock<Box<Node<K, V>>>,
}

struct Node<K, V> {
    key: K,
    value: V,
    next: OnceLock<Box<Node<K, V>>>,
}

impl<K, V> Default for Opened<K, V> {
    fn default() -> Self {
        Opened {
            head: OnceLock::new(),
        }
    }
}

impl<K: Copy + PartialEq, V> Opened<K, V> {
    /// A map holding one entry.
    pub(crate) fn one(key: K, value: V) -> Self {
        let m = Opened::default();
        let _ = m.head.set(Box::new(Node {
            key,
            value,
            next: OnceLock::new(),
        }));
        m
    }

    pub(crate) fn get(&self, key: K) -> Option<&V> {
        let mut slot = &self.head;
        while let Some(node) = slot.get() {
            if node.key == key {
                return Some(&node.value);
            }
            slot = &node.next;
        }
        None
    }

    /// The value for `key`, made by `open` if there is none yet. When two threads add the same
    /// key at once, the first one's value is kept and the other's dropped.
    pub(crate) fn get_or_try_insert<E>(
        &self,
        key: K,
        open: impl FnOnce() -> Result<V, E>,
    ) -> Result<&V, E> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let mut node = Some(Box::new(Node {
            key,
            value: open()?,
            next: OnceLock::new(),
        }));
        let mut slot = &self.head;
        loop {
            if let Some(held) = slot.get() {
                if held.key == key {
                    // Ours, just added; or another thread's, added first (ours is dropped).
                    return Ok(&held.value);
                }
                slot = &held.next;
            } else if let Some(n) = node.take()
                && let Err(back) = slot.set(n)
            {
                // Another thread filled the slot first: look at its node.
                node = Some(back);
            }
        }
    }

    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        let mut slot = &mut self.head;
        while let Some(node) = slot.get_mut() {
            if node.key == key {
                return Some(&mut node.value);
            }
            slot = &mut node.next;
        }
        None
    }

    /// Every entry, in the order they were added.
    pub(crate) fn into_entries(self) -> Vec<(K, V)> {
        let mut out = Vec::new();
        let mut next = self.head.into_inner();
        while let Some(node) = next {
            let Node {
                key,
                value,
                next: n,
            } = *node;
            out.push((key, value));
            next = n.into_inner();
        }
        out
    }

    /// Every key, in the order they were added.
    pub(crate) fn keys(&self) -> Vec<K> {
        let mut out = Vec::new();
        let mut slot = &self.head;
        while let Some(node) = slot.get() {
            out.push(node.key);
            slot = &node.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once_and_stay_where_they_are() {
        let mut m: Opened<u32, String> = Opened::default();
        let a = m
            .get_or_try_insert(1, || Ok::<_, ()>("one".to_string()))
            .unwrap() as *const String;
        let again = m
            .get_or_try_insert(1, || -> Result<String, ()> { panic!("not opened twice") })
            .unwrap() as *const String;
        assert_eq!(a, again);
        assert!(
            m.get_or_try_insert(2, || Err::<String, _>("failed"))
                .is_err()
        );
        assert!(m.get(2).is_none());
        m.get_or_try_insert(3, || Ok::<_, ()>("three".into()))
            .unwrap();
        m.get_mut(3).unwrap().push('!');
        assert_eq!(m.keys(), vec![1, 3]);
        assert_eq!(
            m.into_entries(),
            vec![(1, "one".to_string()), (3, "three!".to_string())]
        );
    }

    #[test]
    fn threads_adding_the_same_key_share_one_entry() {
        let m: Opened<u32, u32> = Opened::default();
        let seen: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u32)
                .map(|i| {
                    let m = &m;
                    s.spawn(move || *m.get_or_try_insert(i % 2, || Ok::<_, ()>(i)).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(m.keys().len(), 2);
        for (i, v) in seen.iter().enumerate() {
            assert_eq!(Some(v), m.get(i as u32 % 2));
        }
    }
}

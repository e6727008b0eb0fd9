//! An index whose keys can be claimed by several owners at once (e.g. one container IP listed
//! by two pod groups while deployd moves it). Lookups see the entry of the smallest owner, so
//! the result does not depend on the order in which owners were applied.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Key → values, each value owned by one source key, sorted by owner.
#[derive(Clone, Debug)]
pub struct MultiIndex<V> {
    map: BTreeMap<String, Vec<(String, V)>>,
}

impl<V> Default for MultiIndex<V> {
    fn default() -> Self {
        MultiIndex {
            map: BTreeMap::new(),
        }
    }
}

impl<V> MultiIndex<V> {
    /// Sets `owner`'s value for `key`, replacing a previous value of the same owner.
    pub fn insert(&mut self, key: String, owner: &str, value: V) {
        let entries = self.map.entry(key).or_default();
        match entries.binary_search_by(|(o, _)| o.as_str().cmp(owner)) {
            Ok(i) => entries[i].1 = value,
            Err(i) => entries.insert(i, (owner.to_owned(), value)),
        }
    }

    /// Removes `owner`'s value for `key`, if any.
    pub fn remove(&mut self, key: &str, owner: &str) {
        if let Some(entries) = self.map.get_mut(key) {
            entries.retain(|(o, _)| o != owner);
            if entries.is_empty() {
                self.map.remove(key);
            }
        }
    }

    /// The value of the smallest owner of `key`.
    pub fn first(&self, key: &str) -> Option<&V> {
        self.map.get(key).and_then(|e| e.first()).map(|(_, v)| v)
    }

    /// Every owner's value for `key`, in owner order.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &V> {
        self.map.get(key).into_iter().flatten().map(|(_, v)| v)
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The v2 selection (spec §2.1) over the keys, with the first owner's value.
    pub fn select<'a>(&'a self, selector: &str) -> Vec<(&'a str, &'a V)> {
        let firsts =
            |(k, e): (&'a String, &'a Vec<(String, V)>)| e.first().map(|(_, v)| (k.as_str(), v));
        if selector == "*" {
            return self.map.iter().filter_map(firsts).collect();
        }
        if let Some(hit) = self.map.get_key_value(selector) {
            return firsts(hit).into_iter().collect();
        }
        self.map
            .range::<str, _>((Bound::Included(selector), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(selector))
            .filter_map(firsts)
            .collect()
    }
}

/// The v2 selection (spec §2.1) over a map: `*` → everything; an exact key → only that entry;
/// else every entry whose key starts with the selector (a plain string prefix).
pub fn select<'a, V>(map: &'a BTreeMap<String, V>, selector: &str) -> Vec<(&'a str, &'a V)> {
    if selector == "*" {
        return map.iter().map(|(k, v)| (k.as_str(), v)).collect();
    }
    if let Some((k, v)) = map.get_key_value(selector) {
        return vec![(k.as_str(), v)];
    }
    map.range::<str, _>((Bound::Included(selector), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(selector))
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_owner_wins_whatever_the_insertion_order() {
        let mut a = MultiIndex::default();
        a.insert("ip".into(), "b", 2);
        a.insert("ip".into(), "a", 1);
        assert_eq!(a.first("ip"), Some(&1));
        assert_eq!(a.all("ip").copied().collect::<Vec<_>>(), vec![1, 2]);
        a.remove("ip", "a");
        assert_eq!(a.first("ip"), Some(&2));
        a.remove("ip", "b");
        assert!(a.is_empty());
    }

    #[test]
    fn selection_is_star_exact_or_prefix() {
        let map: BTreeMap<String, i32> =
            [("domain", 1), ("domains/a", 2), ("vip", 3), ("vips/x", 4)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        let keys = |s: &str| {
            select(&map, s)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("*").len(), 4);
        assert_eq!(keys("domain"), vec!["domain"]);
        assert_eq!(keys("domains"), vec!["domains/a"]);
        assert_eq!(keys("v"), vec!["vip", "vips/x"]);
        assert!(keys("nonexist").is_empty());
    }
}

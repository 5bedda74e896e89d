//! The priority-weighted LRU policy, pure bookkeeping (no memory, no I/O): which entries are
//! resident, their sizes, use counts, last use and pins, and which to evict to make room.
//!
//! Priority of a resident entry `e` (higher stays longer):
//!
//! ```text
//! priority(e) = 0.7 * frequency(e) + 0.3 * recency(e)
//! frequency(e) = hits(e) / max over resident entries of hits        in [0, 1]
//! recency(e)   = 1 - age(e) / max over resident entries of age      in [0, 1] (1 when all ages are 0)
//! age(e)       = (ticks so far - 1) - tick of e's last use          (the latest use has age 0)
//! ```
//!
//! Every insert or use advances one logical clock ("access ticks"), so ages are counted in
//! accesses, not seconds, and no two uses share a tick. `hits` counts the insert and every later
//! use while the entry stays resident (an evicted entry starts again at 1).
//!
//! Eviction repeatedly removes the unpinned entry of lowest priority (ties cannot happen
//! between different last-use ticks; the older use goes first), re-normalising after each
//! removal, until the request fits. Pinned entries (in use by a running forward pass) are never
//! evicted. A request larger than the whole budget, or one that cannot fit because too much is
//! pinned, is [`Error::OutOfMemory`].
//!
//! Prefetched entries. An entry admitted by a prefetch ([`PolicyTable::insert_prefetched`])
//! and not used since is *protected*. By priority alone it would be the first victim (one use,
//! the fewest of all), so a prefetch running ahead (block i+2 while block i runs) would evict
//! block i+1, prefetched for the very next step, and i+1 would be read twice. Hence:
//! - a prefetch ([`PolicyTable::evict_for_prefetch`]) never evicts a protected entry; when the
//!   room could only come from pinned or protected entries it evicts nothing and the prefetch
//!   is skipped (not an error: the later demand load reads the entry);
//! - a demand load ([`PolicyTable::evict_for`]) takes unprotected entries first and protected
//!   ones only when nothing else makes room (a real use wins over a guess);
//! - the first use ([`PolicyTable::touch`]) makes a protected entry ordinary.
//!
//! Protection only decides which entries a request may take; the priority order among the
//! entries it may take is the formula above.

use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

/// Weight of the frequency term in the priority.
pub const FREQUENCY_WEIGHT: f64 = 0.7;
/// Weight of the recency term in the priority.
pub const RECENCY_WEIGHT: f64 = 0.3;

/// Bookkeeping of one resident entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Bytes the entry occupies.
    pub size: u64,
    /// Uses while resident (the insert counts as one).
    pub hits: u64,
    /// Access tick of the last use.
    pub last: u64,
    /// Outstanding pins; a pinned entry is never evicted.
    pub pins: u32,
    /// Admitted by a prefetch and not used since: only a demand load may evict it.
    pub prefetched: bool,
}

/// VariantCache bookkeeping under a fixed byte budget.
#[derive(Clone, Debug)]
pub struct PolicyTable<K> {
    budget: u64,
    used: u64,
    tick: u64,
    entries: HashMap<K, EntryMeta>,
}

impl<K: Clone + Eq + Hash + Debug> PolicyTable<K> {
    /// An empty table holding at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        PolicyTable {
            budget,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held by resident entries.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Number of resident entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is resident.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bookkeeping of `key`, if resident.
    pub fn get(&self, key: &K) -> Option<&EntryMeta> {
        self.entries.get(key)
    }

    /// Resident keys (in no particular order).
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    fn next_tick(&mut self) -> u64 {
        let t = self.tick;
        self.tick += 1;
        t
    }

    /// Adds `key` of `size` bytes as used once now (a demand load). It must fit in the free
    /// bytes (call [`PolicyTable::evict_for`] first) and not be resident already.
    pub fn insert(&mut self, key: K, size: u64) -> Result<()> {
        self.admit(key, size, false)
    }

    /// Adds `key` of `size` bytes for a prefetch: bookkept as [`PolicyTable::insert`] does,
    /// and protected from other prefetches until its first use (see the module docs). It must
    /// fit in the free bytes (call [`PolicyTable::evict_for_prefetch`] first).
    pub fn insert_prefetched(&mut self, key: K, size: u64) -> Result<()> {
        self.admit(key, size, true)
    }

    fn admit(&mut self, key: K, size: u64, prefetched: bool) -> Result<()> {
        if self.entries.contains_key(&key) {
            return Err(Error::invalid(format!("{key:?} is already resident")));
        }
        if size > self.budget - self.used {
            return Err(Error::OutOfMemory(format!(
                "{key:?} needs {size} bytes, {} of {} free",
                self.budget - self.used,
                self.budget
            )));
        }
        let last = self.next_tick();
        self.used += size;
        self.entries.insert(
            key,
            EntryMeta {
                size,
                hits: 1,
                last,
                pins: 0,
                prefetched,
            },
        );
        Ok(())
    }

    /// Records a use of `key` (which ends a prefetch's protection); false when it is not
    /// resident.
    pub fn touch(&mut self, key: &K) -> bool {
        let t = self.tick;
        match self.entries.get_mut(key) {
            Some(m) => {
                m.hits += 1;
                m.last = t;
                m.prefetched = false;
                self.tick += 1;
                true
            }
            None => false,
        }
    }

    /// Adds a pin to `key`.
    pub fn pin(&mut self, key: &K) -> Result<()> {
        let m = self
            .entries
            .get_mut(key)
            .ok_or_else(|| Error::invalid(format!("pin of {key:?}, which is not resident")))?;
        m.pins += 1;
        Ok(())
    }

    /// Removes a pin from `key`.
    pub fn unpin(&mut self, key: &K) -> Result<()> {
        match self.entries.get_mut(key) {
            Some(m) if m.pins > 0 => {
                m.pins -= 1;
                Ok(())
            }
            _ => Err(Error::Internal(format!(
                "unpin of {key:?}, which is not pinned"
            ))),
        }
    }

    /// Removes `key` (whatever its pins) and returns its bookkeeping.
    pub fn remove(&mut self, key: &K) -> Option<EntryMeta> {
        let m = self.entries.remove(key)?;
        self.used -= m.size;
        Some(m)
    }

    /// The priority of `key` among the resident entries (see the module docs), if resident.
    pub fn priority(&self, key: &K) -> Option<f64> {
        let m = self.entries.get(key)?;
        let (max_hits, max_age) = self.maxima();
        Some(self.priority_of(m, max_hits, max_age))
    }

    fn age(&self, m: &EntryMeta) -> u64 {
        self.tick.saturating_sub(1).saturating_sub(m.last)
    }

    fn maxima(&self) -> (u64, u64) {
        let max_hits = self.entries.values().map(|m| m.hits).max().unwrap_or(0);
        let max_age = self
            .entries
            .values()
            .map(|m| self.age(m))
            .max()
            .unwrap_or(0);
        (max_hits, max_age)
    }

    fn priority_of(&self, m: &EntryMeta, max_hits: u64, max_age: u64) -> f64 {
        let freq = if max_hits == 0 {
            0.0
        } else {
            m.hits as f64 / max_hits as f64
        };
        let recency = if max_age == 0 {
            1.0
        } else {
            1.0 - self.age(m) as f64 / max_age as f64
        };
        FREQUENCY_WEIGHT * freq + RECENCY_WEIGHT * recency
    }

    /// The unpinned entry to evict next: lowest priority, older last use on ties; protected
    /// (prefetched, unused) entries only when `take_protected`.
    fn victim(&self, take_protected: bool) -> Option<K> {
        let (max_hits, max_age) = self.maxima();
        self.entries
            .iter()
            .filter(|(_, m)| m.pins == 0 && (take_protected || !m.prefetched))
            .map(|(k, m)| (self.priority_of(m, max_hits, max_age), m.last, k))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, _, k)| k.clone())
    }

    fn above_budget(&self, need: u64) -> Option<Error> {
        (need > self.budget).then(|| {
            Error::OutOfMemory(format!(
                "request of {need} bytes exceeds the whole budget of {} bytes",
                self.budget
            ))
        })
    }

    /// Bytes of the entries `keep` says no eviction may take.
    fn kept_bytes(&self, keep: impl Fn(&EntryMeta) -> bool) -> u64 {
        self.entries
            .values()
            .filter(|m| keep(m))
            .map(|m| m.size)
            .sum()
    }

    /// Evicts until `need` bytes are free, unprotected entries first, protected ones only when
    /// `take_protected`. The caller has checked that this can succeed.
    fn evict_until(&mut self, need: u64, take_protected: bool) -> Result<Vec<(K, EntryMeta)>> {
        let mut out = Vec::new();
        while self.budget - self.used < need {
            let k = self
                .victim(false)
                .or_else(|| take_protected.then(|| self.victim(true)).flatten())
                .ok_or_else(|| Error::Internal("no evictable entry left".into()))?;
            let m = self
                .remove(&k)
                .ok_or_else(|| Error::Internal("victim vanished".into()))?;
            out.push((k, m));
        }
        Ok(out)
    }

    /// Makes room for a demand load: evicts lowest-priority unpinned entries until `need` bytes
    /// are free, protected (prefetched, unused) entries only when the others do not suffice,
    /// and returns them in eviction order. On error nothing is evicted: a request above the
    /// whole budget, or one that cannot fit because the remaining entries are pinned, is
    /// [`Error::OutOfMemory`].
    pub fn evict_for(&mut self, need: u64) -> Result<Vec<(K, EntryMeta)>> {
        if let Some(e) = self.above_budget(need) {
            return Err(e);
        }
        let pinned = self.kept_bytes(|m| m.pins > 0);
        if need > self.budget - pinned {
            return Err(Error::OutOfMemory(format!(
                "request of {need} bytes cannot fit: {pinned} of {} budget bytes are pinned by \
                 entries in use",
                self.budget
            )));
        }
        self.evict_until(need, true)
    }

    /// Makes room for a prefetch: as [`PolicyTable::evict_for`], but never evicts a protected
    /// (prefetched, unused) entry. `Ok(None)`, with nothing evicted, when the room could only
    /// come from pinned or protected entries: the prefetch is to be skipped. A request above
    /// the whole budget is [`Error::OutOfMemory`], as a demand load of it would be.
    pub fn evict_for_prefetch(&mut self, need: u64) -> Result<Option<Vec<(K, EntryMeta)>>> {
        if let Some(e) = self.above_budget(need) {
            return Err(e);
        }
        let kept = self.kept_bytes(|m| m.pins > 0 || m.prefetched);
        if need > self.budget - kept {
            return Ok(None);
        }
        self.evict_until(need, false).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn priority_arithmetic() {
        let mut t = PolicyTable::new(100);
        t.insert("a", 10).unwrap(); // tick 0
        t.insert("b", 10).unwrap(); // tick 1
        t.insert("c", 10).unwrap(); // tick 2
        t.touch(&"a"); // tick 3: a hits 2
        t.touch(&"a"); // tick 4: a hits 3
        t.touch(&"b"); // tick 5: b hits 2
                       // ages: a = 5-4 = 1, b = 0, c = 5-2 = 3; max age 3; max hits 3.
        assert!(close(
            t.priority(&"a").unwrap(),
            0.7 * 1.0 + 0.3 * (1.0 - 1.0 / 3.0)
        ));
        assert!(close(
            t.priority(&"b").unwrap(),
            0.7 * 2.0 / 3.0 + 0.3 * 1.0
        ));
        assert!(close(t.priority(&"c").unwrap(), 0.7 / 3.0 + 0.3 * 0.0));
        assert_eq!(t.priority(&"zz"), None);
    }

    #[test]
    fn single_entry_has_full_priority() {
        let mut t = PolicyTable::new(10);
        t.insert(1u32, 4).unwrap();
        assert!(close(t.priority(&1).unwrap(), 1.0));
    }

    #[test]
    fn evicts_lowest_priority_first_and_frequency_beats_recency() {
        let mut t = PolicyTable::new(30);
        t.insert("hot", 10).unwrap();
        for _ in 0..5 {
            t.touch(&"hot");
        }
        t.insert("old", 10).unwrap();
        t.insert("new", 10).unwrap();
        // hot: hits 6, age 2 -> 0.7 + 0; old: hits 1, age 1 -> 0.7/6 + 0.15; new: 0.7/6 + 0.3.
        let ev = t.evict_for(10).unwrap();
        assert_eq!(ev.iter().map(|e| e.0).collect::<Vec<_>>(), vec!["old"]);
        assert_eq!(t.used(), 20);
        let ev = t.evict_for(20).unwrap();
        assert_eq!(ev.iter().map(|e| e.0).collect::<Vec<_>>(), vec!["new"]);
        assert!(t.get(&"hot").is_some());
    }

    #[test]
    fn pinned_entries_are_never_evicted() {
        let mut t = PolicyTable::new(30);
        t.insert("a", 10).unwrap();
        t.insert("b", 10).unwrap();
        t.insert("c", 10).unwrap();
        t.pin(&"a").unwrap();
        t.pin(&"a").unwrap();
        let ev = t.evict_for(20).unwrap();
        let mut keys: Vec<_> = ev.iter().map(|e| e.0).collect();
        keys.sort();
        assert_eq!(keys, vec!["b", "c"]);
        // 10 bytes pinned: 21 can never fit, and nothing is evicted trying.
        t.insert("d", 10).unwrap();
        let err = t.evict_for(21).unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory(ref m) if m.contains("pinned")),
            "{err}"
        );
        assert!(t.get(&"d").is_some());
        t.unpin(&"a").unwrap();
        assert!(t.evict_for(21).is_err(), "still pinned once");
        t.unpin(&"a").unwrap();
        assert!(matches!(t.unpin(&"a"), Err(Error::Internal(_))));
        assert_eq!(t.evict_for(30).unwrap().len(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn request_above_budget_is_out_of_memory() {
        let mut t = PolicyTable::new(100);
        t.insert(1u8, 50).unwrap();
        let err = t.evict_for(101).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(ref m) if m.contains("whole budget")));
        assert_eq!(t.len(), 1);
        assert!(matches!(t.insert(2, 51), Err(Error::OutOfMemory(_))));
        assert!(matches!(t.insert(1, 1), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn everything_pinned_is_a_clear_error() {
        let mut t = PolicyTable::new(20);
        t.insert("x", 10).unwrap();
        t.insert("y", 10).unwrap();
        t.pin(&"x").unwrap();
        t.pin(&"y").unwrap();
        assert!(matches!(t.evict_for(1), Err(Error::OutOfMemory(_))));
        assert_eq!(t.len(), 2);
    }

    /// Replays a task trace (the router alternating variants, with a hot shared layer) and
    /// checks the hit count and exactly which entries go, in order.
    #[test]
    fn trace_replay_hits_and_evictions() {
        let mut t = PolicyTable::new(3 * 100);
        let trace = ["e", "a", "e", "b", "e", "a", "c", "e", "d", "a", "b", "e"];
        let (mut hits, mut evicted) = (0, Vec::new());
        for k in trace {
            if t.touch(&k) {
                hits += 1;
                continue;
            }
            for (v, _) in t.evict_for(100).unwrap() {
                evicted.push(v);
            }
            t.insert(k, 100).unwrap();
        }
        // Worked by hand from the formula: b goes at step 7 (one use, oldest), c at step 9
        // (priority 0.325 against a's 0.35: a is older but used twice), d at step 11 (one use
        // against a's three); the frequent e is never evicted.
        assert_eq!(hits, 6);
        assert_eq!(evicted, vec!["b", "c", "d"]);
        let mut left: Vec<_> = t.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec!["a", "b", "e"]);
    }

    fn keys_of<K: Copy>(ev: &[(K, EntryMeta)]) -> Vec<K> {
        ev.iter().map(|e| e.0).collect()
    }

    /// Block i runs (pinned), i+1 was prefetched and is not used yet, and the prefetch of i+2
    /// needs room: it must take the used i-1, not i+1, although i+1 has the lowest priority.
    #[test]
    fn prefetch_ahead_keeps_the_prefetched_unused_next_block() {
        let mut t = PolicyTable::new(30);
        t.insert_prefetched(0, 10).unwrap();
        t.touch(&0); // block i-1: prefetched, then used
        t.insert_prefetched(1, 10).unwrap();
        t.touch(&1); // block i: prefetched, used, running
        t.pin(&1).unwrap();
        t.insert_prefetched(2, 10).unwrap(); // block i+1: prefetched, not used yet
        assert!(!t.get(&0).unwrap().prefetched && t.get(&2).unwrap().prefetched);
        // By priority alone the unused i+1 would go first.
        assert!(t.priority(&2).unwrap() < t.priority(&0).unwrap());
        let ev = t.evict_for_prefetch(10).unwrap().expect("i-1 makes room");
        assert_eq!(keys_of(&ev), vec![0]);
        t.insert_prefetched(3, 10).unwrap(); // block i+2
                                             // Now only the running block and two unused prefetches are resident: a further
                                             // prefetch is skipped, evicting nothing.
        assert_eq!(t.evict_for_prefetch(10).unwrap(), None);
        assert_eq!(t.evict_for_prefetch(1).unwrap(), None);
        assert_eq!(t.len(), 3);
        assert!(t.get(&2).unwrap().prefetched && t.get(&3).unwrap().prefetched);
        // A request above the whole budget stays an error for a prefetch too.
        assert!(matches!(
            t.evict_for_prefetch(31),
            Err(Error::OutOfMemory(ref m)) if m.contains("whole budget")
        ));
    }

    #[test]
    fn demand_load_evicts_protected_entries_only_when_nothing_else_fits() {
        let mut t = PolicyTable::new(30);
        t.insert("hot", 10).unwrap();
        for _ in 0..5 {
            t.touch(&"hot");
        }
        t.insert_prefetched("p1", 10).unwrap();
        t.insert_prefetched("p2", 10).unwrap();
        // The frequent "hot" has by far the highest priority, yet it is the only entry a demand
        // load takes while it suffices.
        assert!(t.priority(&"hot").unwrap() > t.priority(&"p1").unwrap());
        assert_eq!(keys_of(&t.evict_for(10).unwrap()), vec!["hot"]);
        // Then the protected ones, lowest priority first (p1: same uses, older).
        assert_eq!(keys_of(&t.evict_for(20).unwrap()), vec!["p1"]);
        t.pin(&"p2").unwrap();
        assert!(matches!(t.evict_for(21), Err(Error::OutOfMemory(_))));
        assert_eq!(t.evict_for_prefetch(21).unwrap(), None);
        t.unpin(&"p2").unwrap();
        assert_eq!(keys_of(&t.evict_for(30).unwrap()), vec!["p2"]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_used_prefetched_entry_becomes_ordinary() {
        let mut t = PolicyTable::new(20);
        t.insert_prefetched("a", 10).unwrap();
        t.insert_prefetched("b", 10).unwrap();
        assert_eq!(t.evict_for_prefetch(10).unwrap(), None);
        assert!(t.touch(&"a"));
        let m = *t.get(&"a").unwrap();
        assert_eq!((m.hits, m.prefetched), (2, false));
        // Now a prefetch may take "a" (the only unprotected entry, though its priority is the
        // higher of the two).
        assert!(t.priority(&"a").unwrap() > t.priority(&"b").unwrap());
        let ev = t
            .evict_for_prefetch(10)
            .unwrap()
            .expect("a is ordinary now");
        assert_eq!(keys_of(&ev), vec!["a"]);
        assert!(t.get(&"b").unwrap().prefetched);
    }

    /// Plays a streamed pass over `n` blocks of 10 bytes: `step(i)` lists what happens at
    /// block `i` (prefetches, then the use), and returns the blocks in the order they are read.
    fn replay(slots: u64, n: u32, step: impl Fn(u32) -> Vec<Op>) -> Vec<u32> {
        let mut t = PolicyTable::new(slots * 10);
        let mut reads = Vec::new();
        for i in 0..n {
            for op in step(i) {
                match op {
                    Op::Prefetch(k) if k < n && t.get(&k).is_none() => {
                        if t.evict_for_prefetch(10).unwrap().is_some() {
                            t.insert_prefetched(k, 10).unwrap();
                            reads.push(k);
                        }
                    }
                    Op::Prefetch(_) => {}
                    Op::Use(k) => {
                        if !t.touch(&k) {
                            t.evict_for(10).unwrap();
                            t.insert(k, 10).unwrap();
                            reads.push(k);
                        }
                        t.pin(&k).unwrap();
                    }
                    Op::Release(k) => t.unpin(&k).unwrap(),
                }
            }
        }
        reads
    }

    #[derive(Clone, Copy)]
    enum Op {
        Prefetch(u32),
        Use(u32),
        Release(u32),
    }

    /// The race as a streamed pass meets it, with the prefetch always running first. Room for
    /// two blocks, block i+1 asked for before block i is used: at step i+1 the prefetch of
    /// i+2 comes before the use of i+1. Room for three, blocks i+1 and i+2 prefetched while i
    /// runs pinned. Both evicted the unused prefetched block by priority alone (it has the
    /// fewest uses) and read it twice; now every block is read exactly once.
    #[test]
    fn streamed_pass_with_prefetch_ahead_reads_each_block_once() {
        use Op::*;
        let two = replay(2, 8, |i| vec![Prefetch(i + 1), Use(i), Release(i)]);
        assert_eq!(two, vec![1, 0, 2, 3, 4, 5, 6, 7]);
        let three = replay(3, 8, |i| {
            vec![Use(i), Prefetch(i + 1), Prefetch(i + 2), Release(i)]
        });
        assert_eq!(three, (0..8).collect::<Vec<_>>());
    }
}

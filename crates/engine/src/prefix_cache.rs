//! Caches of finished sequences kept for reuse: a new prompt that begins with the same
//! tokens (a shared system prompt, the earlier turns of a conversation) starts from a
//! copy of the longest match instead of recomputing it. Entries are evicted least
//! recently used first, whenever their blocks are needed.

/// One kept cache: the tokens it holds, in order.
struct Entry<C> {
    tokens: Vec<u32>,
    cache: C,
    blocks: usize,
    last_used: u64,
}

pub(crate) struct PrefixCache<C> {
    entries: Vec<Entry<C>>,
    blocks: usize,
    clock: u64,
    max_entries: usize,
}

/// Length of the common prefix of `a` and `b`.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<C> PrefixCache<C> {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            entries: Vec::new(),
            blocks: 0,
            clock: 0,
            max_entries,
        }
    }

    /// Blocks held by the kept caches.
    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Keeps `cache` (holding `tokens`, `blocks` blocks). An entry whose tokens begin the
    /// new ones is replaced by it.
    pub(crate) fn insert(&mut self, tokens: Vec<u32>, cache: C, blocks: usize) {
        if self.max_entries == 0 {
            return;
        }
        self.entries.retain(|e| {
            let covered = common_prefix(&e.tokens, &tokens) == e.tokens.len();
            if covered {
                self.blocks -= e.blocks;
            }
            !covered
        });
        if self.entries.len() >= self.max_entries {
            self.evict_one();
        }
        self.clock += 1;
        self.blocks += blocks;
        self.entries.push(Entry {
            tokens,
            cache,
            blocks,
            last_used: self.clock,
        });
    }

    /// The kept cache sharing the longest prefix with `tokens` (at least `min_len`), with
    /// that length; marks it used.
    pub(crate) fn lookup(&mut self, tokens: &[u32], min_len: usize) -> Option<(&C, usize)> {
        let (i, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, tokens)))
            .filter(|&(_, len)| len >= min_len.max(1))
            .max_by_key(|&(_, len)| len)?;
        self.clock += 1;
        let e = &mut self.entries[i];
        e.last_used = self.clock;
        Some((&e.cache, len))
    }

    /// Drops the least recently used entry; false when there is none.
    pub(crate) fn evict_one(&mut self) -> bool {
        let Some(i) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let e = self.entries.swap_remove(i);
        self.blocks -= e.blocks;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_wins_and_least_recently_used_goes_first() {
        let mut p = PrefixCache::new(8);
        p.insert(vec![1, 2, 3], "a", 1);
        p.insert(vec![1, 2, 3, 4, 5], "b", 2); // covers "a", which goes
        p.insert(vec![9, 9], "c", 1);
        assert_eq!(p.blocks(), 3);
        assert_eq!(p.lookup(&[1, 2, 3, 4, 7], 1), Some((&"b", 4)));
        assert_eq!(p.lookup(&[1, 2, 3, 4, 7], 5), None);
        assert_eq!(p.lookup(&[5], 1), None);
        // "c" is now the least recently used.
        assert!(p.evict_one());
        assert_eq!(p.lookup(&[9, 9], 1), None);
        assert_eq!(p.blocks(), 2);
        assert!(p.evict_one());
        assert!(!p.evict_one());
        assert_eq!(p.blocks(), 0);
    }
}

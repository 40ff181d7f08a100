//! Which traces this gateway already reported the run start of: a bounded in-memory cache in
//! front of `otlp_trace_starts`, so only a trace's first batch at a gateway costs a Postgres
//! round trip. "Started" never turns back (until the two-day expiry), so a stale entry can only
//! be a trace that is still started; a miss (another replica's trace, an evicted entry) asks
//! Postgres, which stays the authority.

use std::collections::HashSet;
use std::sync::Mutex;

use uuid::Uuid;

pub struct StartedTraces {
    seen: Mutex<HashSet<(Uuid, Vec<u8>)>>,
    capacity: usize,
}

impl StartedTraces {
    pub fn new(capacity: usize) -> StartedTraces {
        StartedTraces { seen: Mutex::new(HashSet::new()), capacity: capacity.max(1) }
    }

    pub fn contains(&self, repo_id: Uuid, trace_id: &[u8]) -> bool {
        self.seen.lock().expect("started traces lock").contains(&(repo_id, trace_id.to_vec()))
    }

    /// Remember a started trace. When full, forget everything (misses fall back to Postgres):
    /// simpler than LRU, and a trace lives for minutes while the cache holds many thousands.
    pub fn insert(&self, repo_id: Uuid, trace_id: &[u8]) {
        let mut seen = self.seen.lock().expect("started traces lock");
        if seen.len() >= self.capacity {
            seen.clear();
        }
        seen.insert((repo_id, trace_id.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_repo_and_stays_bounded() {
        let cache = StartedTraces::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.insert(a, b"t1");
        assert!(cache.contains(a, b"t1"));
        assert!(!cache.contains(b, b"t1"), "another repo's trace of the same id");
        cache.insert(a, b"t2");
        cache.insert(a, b"t3");
        assert!(cache.contains(a, b"t3"));
        assert!(!cache.contains(a, b"t1"), "full: forgotten, Postgres answers instead");
    }
}

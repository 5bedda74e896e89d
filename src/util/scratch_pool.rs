//! Reusable per-call buffers for code that runs rayon work: a caller takes a buffer set out of
//! the pool (or gets a fresh one), uses it with no lock held, and gives it back. Holding a
//! lock across rayon work instead would deadlock: while a worker waits for its parallel loop,
//! rayon may run another call of the same code on that worker (work stealing), and that call
//! would block on the lock the worker already holds.

use std::sync::Mutex;

/// Spare buffer sets of type `T`; the lock guards only the push and pop.
pub struct ScratchPool<T> {
    spare: Mutex<Vec<T>>,
}

impl<T> ScratchPool<T> {
    /// An empty pool.
    pub fn new() -> Self {
        ScratchPool {
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A pool holding `first` (for buffers that are costly or fallible to create).
    pub fn with(first: T) -> Self {
        ScratchPool {
            spare: Mutex::new(vec![first]),
        }
    }

    /// A spare buffer set, or `None` when every set is in use (the caller then makes one).
    /// A poisoned lock only means a caller panicked between push and pop: the spares are
    /// still whole buffers, so they are used.
    pub fn take(&self) -> Option<T> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns a buffer set for later calls.
    pub fn give(&self, item: T) {
        self.spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
    }
}

impl<T> Default for ScratchPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_was_given_and_nothing_more() {
        let p = ScratchPool::with(vec![1u8]);
        let a = p.take().unwrap();
        // Every set in use: the caller makes its own.
        assert!(p.take().is_none());
        p.give(a);
        p.give(vec![2]);
        let mut got = [p.take().unwrap(), p.take().unwrap()];
        got.sort();
        assert_eq!(got, [vec![1], vec![2]]);
        assert!(ScratchPool::<u8>::new().take().is_none());
    }
}

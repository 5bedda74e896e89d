//! Registries of live handles. A handle is an opaque, never-reused identifier (not the address
//! of the object), so a closed, freed, foreign or forged handle is always detected and reported
//! instead of being dereferenced; and closing an engine while another thread still runs on it
//! is safe (the engine is dropped when the last call using it returns).

use ac::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Handle values step by this much, so they look like aligned pointers and are never zero.
const HANDLE_STEP: usize = 16;

/// The next handle value, shared by every registry so that an engine handle can never equal a
/// result handle.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(HANDLE_STEP);

/// Live objects of one kind, keyed by handle value.
pub(crate) struct Registry<T> {
    /// What the handles of this registry are called in error messages.
    kind: &'static str,
    live: Mutex<BTreeMap<usize, Arc<T>>>,
}

impl<T> Registry<T> {
    /// An empty registry whose handles are called `kind` in messages.
    pub(crate) const fn new(kind: &'static str) -> Self {
        Registry {
            kind,
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<usize, Arc<T>>>> {
        self.live
            .lock()
            .map_err(|_| Error::Internal(format!("{} registry lock poisoned", self.kind)))
    }

    /// Registers `value` and returns its new handle.
    pub(crate) fn insert(&self, value: T) -> Result<*mut ()> {
        let id = NEXT_HANDLE.fetch_add(HANDLE_STEP, Ordering::Relaxed);
        self.lock()?.insert(id, Arc::new(value));
        Ok(std::ptr::without_provenance_mut(id))
    }

    /// The object behind `handle`, or an error naming why there is none.
    pub(crate) fn get(&self, handle: *const ()) -> Result<Arc<T>> {
        let id = self.check_non_null(handle)?;
        self.lock()?
            .get(&id)
            .cloned()
            .ok_or_else(|| self.not_live(id))
    }

    /// Unregisters `handle`; the object is dropped once no call is using it any more.
    pub(crate) fn remove(&self, handle: *const ()) -> Result<()> {
        let id = self.check_non_null(handle)?;
        let removed = self.lock()?.remove(&id);
        // Drop outside the lock: dropping an engine frees a model.
        match removed {
            Some(v) => {
                drop(v);
                Ok(())
            }
            None => Err(self.not_live(id)),
        }
    }

    fn check_non_null(&self, handle: *const ()) -> Result<usize> {
        if handle.is_null() {
            Err(Error::invalid(format!("{} handle is NULL", self.kind)))
        } else {
            Ok(handle.addr())
        }
    }

    fn not_live(&self, id: usize) -> Error {
        Error::invalid(format!(
            "{} handle {id:#x} is not live (already closed or freed, or never returned by this library)",
            self.kind
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_checked_and_removed_once() {
        let a: Registry<String> = Registry::new("thing");
        let b: Registry<u32> = Registry::new("other");
        let h1 = a.insert("x".into()).unwrap();
        let h2 = b.insert(1).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(*a.get(h1).unwrap(), "x");
        assert!(b.get(h1).unwrap_err().to_string().contains("other handle"));
        let held = a.get(h1).unwrap();
        a.remove(h1).unwrap();
        assert_eq!(*held, "x", "an in-flight user keeps the object alive");
        let again = a.remove(h1).unwrap_err().to_string();
        assert!(again.contains("not live"), "{again}");
        assert!(a.get(std::ptr::null()).unwrap_err().to_string().contains("NULL"));
    }
}

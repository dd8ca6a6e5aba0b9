//! Deferred durability: lets a caller run engine writes on one thread (a worker of the fair
//! pool) and wait for their shared fsync on another, so a pool worker never sits idle through
//! an fsync and concurrent writes of many requests can share one (group commit).
//!
//! Inside [`Engine::deferring_durability`], `write_tenant` returns once its transaction has
//! committed and leaves the wait to the [`Durable`] handed back, which the caller must wait on
//! before acknowledging anything. Everywhere else writes wait for durability before returning.

use std::cell::{Cell, RefCell};

use strata_store::Pending;

use crate::{Engine, EngineError};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static DEFERRED: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Writes that have committed but may not be durable yet.
#[must_use = "writes are not durable until Durable::wait returns Ok"]
pub struct Durable(Vec<Pending>);

impl Durable {
    /// Whether there is nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Blocks until every write is durable (sharing fsyncs with concurrent writes); an error
    /// means they are not known to be durable and must not be acknowledged as such.
    pub fn wait(self) -> Result<(), EngineError> {
        for pending in self.0 {
            pending.wait_durable()?;
        }
        Ok(())
    }

    /// [`Durable::wait`]'s waits for the row log, awaited without holding a thread (the log's
    /// flusher syncs for them); returns what is left to [`Durable::wait`] for on a thread:
    /// usually nothing, see [`strata_store::Pending::wait_logged`]. An error means the writes
    /// are not known to be durable.
    pub async fn flushed(self) -> Result<Durable, EngineError> {
        let mut rest = Vec::new();
        for pending in self.0 {
            rest.extend(pending.wait_logged().await?);
        }
        Ok(Durable(rest))
    }
}

/// Restores the enclosing state when a deferring scope ends, even by a panic.
struct Scope {
    was_active: bool,
    saved: Vec<Pending>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.set(self.was_active);
        let saved = std::mem::take(&mut self.saved);
        DEFERRED.with(|d| *d.borrow_mut() = saved);
    }
}

impl Engine {
    /// Runs `f` so that the tenant writes it makes return once committed instead of once
    /// durable, and returns their [`Durable`]: wait on it (on any thread) before acknowledging
    /// the writes. Scopes nest; each collects its own writes.
    pub fn deferring_durability<R>(&self, f: impl FnOnce() -> R) -> (R, Durable) {
        let scope = Scope {
            was_active: ACTIVE.replace(true),
            saved: DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut())),
        };
        let result = f();
        let mine = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
        drop(scope);
        (result, Durable(mine))
    }
}

/// Waits for `pending` to be durable, or hands it to the enclosing deferring scope.
pub(crate) fn wait_or_defer(pending: Pending) -> Result<(), EngineError> {
    if ACTIVE.get() {
        DEFERRED.with(|d| d.borrow_mut().push(pending));
        Ok(())
    } else {
        Ok(pending.wait_durable()?)
    }
}

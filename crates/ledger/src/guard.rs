//! Lock acquisition. A mutex (or rwlock) whose holder panicked guards state that cannot be trusted, so
//! taking it is an error ([`LockPoisoned`], as redb's `LockPoisoned`), never a silent recovery; the
//! callers turn it into the error of their operation (`AppendError::Poisoned`, `ReadError::LockPoisoned`,
//! `OpenError::LockPoisoned`). The one exception is an infallible read (`Ledger::head`, `Ledger::frames`)
//! of state that is only changed by single whole assignments, which a panicking holder cannot leave
//! half-done: those read through the poison, and say so at the call (`*_assigned_whole`).

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A thread panicked while holding one of the ledger's locks: the state it guards may be half-changed,
/// so the ledger refuses to use it (reopen the ledger; recovery rebuilds that state from the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a thread panicked while holding the ledger's {lock} lock; reopen the ledger")]
pub struct LockPoisoned {
    /// Which lock (`writer`, `durable`, `follower`, ...).
    pub lock: &'static str,
}

/// A mutex that knows its name, so a poisoned one says which it is.
#[derive(Debug)]
pub(crate) struct Lock<T> {
    name: &'static str,
    mutex: Mutex<T>,
}

impl<T> Lock<T> {
    pub(crate) const fn new(name: &'static str, value: T) -> Lock<T> {
        Lock { name, mutex: Mutex::new(value) }
    }

    fn poisoned(&self) -> LockPoisoned {
        LockPoisoned { lock: self.name }
    }

    /// Takes the lock; an error if a holder panicked.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, T>, LockPoisoned> {
        self.mutex.lock().map_err(|_| self.poisoned())
    }

    /// Takes the lock if no one holds it (`Ok(None)` when someone does); an error if a holder panicked.
    pub(crate) fn try_lock(&self) -> Result<Option<MutexGuard<'_, T>>, LockPoisoned> {
        match self.mutex.try_lock() {
            Ok(guard) => Ok(Some(guard)),
            Err(std::sync::TryLockError::WouldBlock) => Ok(None),
            Err(std::sync::TryLockError::Poisoned(_)) => Err(self.poisoned()),
        }
    }

    /// Waits on `cv` (which must be used with this lock only).
    pub(crate) fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, T>) -> Result<MutexGuard<'a, T>, LockPoisoned> {
        cv.wait(guard).map_err(|_| self.poisoned())
    }

    /// Waits on `cv` for at most `timeout`.
    pub(crate) fn wait_timeout<'a>(
        &self,
        cv: &Condvar,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<MutexGuard<'a, T>, LockPoisoned> {
        cv.wait_timeout(guard, timeout).map(|(guard, _)| guard).map_err(|_| self.poisoned())
    }

    /// Takes the lock even if a holder panicked, for a value that is only ever changed by assigning
    /// whole fields computed outside the lock (so a panicking holder cannot have left it half-changed).
    /// Only for infallible reads of such a value ([`crate::Ledger::head`]).
    pub(crate) fn lock_assigned_whole(&self) -> MutexGuard<'_, T> {
        self.mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An rwlock that knows its name.
#[derive(Debug)]
pub(crate) struct RwLockNamed<T> {
    name: &'static str,
    lock: RwLock<T>,
}

impl<T> RwLockNamed<T> {
    pub(crate) const fn new(name: &'static str, value: T) -> RwLockNamed<T> {
        RwLockNamed { name, lock: RwLock::new(value) }
    }

    /// Shared access; an error if a writer panicked.
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, T>, LockPoisoned> {
        self.lock.read().map_err(|_| LockPoisoned { lock: self.name })
    }

    /// Shared access even if a writer panicked, for a value only changed by single operations that
    /// cannot leave it half-changed (an assignment, a push, an extend of plain numbers): the segment lists
    /// readers snapshot in infallible calls ([`crate::Ledger::frames`]).
    pub(crate) fn read_assigned_whole(&self) -> RwLockReadGuard<'_, T> {
        self.lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exclusive access; an error if a writer panicked.
    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, T>, LockPoisoned> {
        self.lock.write().map_err(|_| LockPoisoned { lock: self.name })
    }
}

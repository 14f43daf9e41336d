//! [`MemoryLeases`]: leases held in memory, for a store and holders that share one
//! process, so one monotonic clock (meant as the embedded store; see the crate docs).

use crate::clock::{Clock, MonotonicClock};
use crate::{check, Lease, LeaseStore, Note, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Leases in memory, on a monotonic [`Clock`]. Every operation is one critical
/// section, so racing acquirers get one winner. The last term of every name is kept
/// after a release or an expiry, so terms are never reused while the process lives.
pub struct MemoryLeases {
    clock: Arc<dyn Clock>,
    names: Mutex<HashMap<String, Slot>>,
}

/// One name: its current tenure, if any (possibly expired), and the last term given.
#[derive(Debug, Default)]
struct Slot {
    held: Option<Held>,
    last_term: u64,
    note: Option<Note>,
}

#[derive(Debug, Clone)]
struct Held {
    holder: String,
    term: u64,
    ends: Instant,
}

impl Slot {
    /// The tenure still running at `now`, if any.
    fn live(&self, now: Instant) -> Option<&Held> {
        self.held.as_ref().filter(|held| now < held.ends)
    }
}

impl Default for MemoryLeases {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLeases {
    /// Leases on the process's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock))
    }

    /// Leases on `clock` (tests pass a [`ManualClock`](crate::clock::ManualClock)).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Takes up a tenure granted before this store existed (by a control plane that
    /// ran before this one): `holder` holds `name` in `term` until `until`, unless a
    /// tenure is live already; and later tenures are numbered after `term`, so terms
    /// keep growing across restarts of the process that keeps them.
    pub fn resume(&self, name: &str, holder: &str, term: u64, until: Instant) {
        let now = self.clock.now();
        self.with_names(|names| {
            let slot = names.entry(name.to_owned()).or_default();
            if term > slot.last_term {
                slot.last_term = term;
            }
            if slot.live(now).is_none() && now < until && term == slot.last_term {
                slot.held = Some(Held {
                    holder: holder.to_owned(),
                    term,
                    ends: until,
                });
            }
        })
    }

    fn with_names<T>(&self, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        // A panic cannot leave a slot half-written (each change is one assignment),
        // so a poisoned lock still guards a consistent map.
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut names)
    }

    fn acquire_at(&self, now: Instant, name: &str, holder: &str, ttl: Duration) -> Option<Lease> {
        self.with_names(|names| {
            let slot = names.entry(name.to_owned()).or_default();
            let term = match slot.live(now) {
                Some(held) if held.holder == holder => held.term,
                Some(_) => return None,
                None => slot.last_term + 1,
            };
            slot.last_term = term;
            Some(grant(slot, name, holder, term, ttl, now))
        })
    }

    fn renew_at(
        &self,
        now: Instant,
        name: &str,
        holder: &str,
        term: u64,
        ttl: Duration,
    ) -> Option<Lease> {
        self.with_names(|names| {
            let slot = names.get_mut(name)?;
            let held = slot.live(now)?;
            if held.holder != holder || held.term != term {
                return None;
            }
            Some(grant(slot, name, holder, term, ttl, now))
        })
    }

    fn release_at(&self, now: Instant, name: &str, holder: &str, term: u64) -> bool {
        self.with_names(|names| {
            let Some(slot) = names.get_mut(name) else {
                return false;
            };
            match slot.live(now) {
                Some(held) if held.holder == holder && held.term == term => {
                    slot.held = None;
                    true
                }
                _ => false,
            }
        })
    }

    fn note_at(&self, now: Instant, name: &str, holder: &str, term: u64, text: &str) -> bool {
        self.with_names(|names| {
            let Some(slot) = names.get_mut(name) else {
                return false;
            };
            if !slot
                .live(now)
                .is_some_and(|held| held.holder == holder && held.term == term)
            {
                return false;
            }
            slot.note = Some(Note {
                holder: holder.to_owned(),
                term,
                text: text.to_owned(),
            });
            true
        })
    }

    fn read_at(&self, now: Instant, name: &str) -> Option<Lease> {
        self.with_names(|names| {
            let held = names.get(name)?.live(now)?;
            Some(Lease {
                name: name.to_owned(),
                holder: held.holder.clone(),
                term: held.term,
                ttl: held.ends - now,
                expires: held.ends,
            })
        })
    }
}

/// Starts or extends `holder`'s tenure `term` for `ttl` from `now`. Holder and store
/// share the clock, so the store's end is the holder's `sent + ttl` exactly.
fn grant(
    slot: &mut Slot,
    name: &str,
    holder: &str,
    term: u64,
    ttl: Duration,
    now: Instant,
) -> Lease {
    // `check` bounds the TTL to a day: an instant that far ahead exists.
    let ends = now.checked_add(ttl).unwrap_or(now);
    slot.held = Some(Held {
        holder: holder.to_owned(),
        term,
        ends,
    });
    Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        term,
        ttl,
        expires: ends,
    }
}

#[async_trait]
impl LeaseStore for MemoryLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        check(name, Some(holder), Some(ttl))?;
        Ok(self.acquire_at(self.clock.now(), name, holder, ttl))
    }

    async fn renew(
        &self,
        name: &str,
        holder: &str,
        term: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        check(name, Some(holder), Some(ttl))?;
        Ok(self.renew_at(self.clock.now(), name, holder, term, ttl))
    }

    async fn release(&self, name: &str, holder: &str, term: u64) -> Result<bool> {
        check(name, Some(holder), None)?;
        Ok(self.release_at(self.clock.now(), name, holder, term))
    }

    async fn read(&self, name: &str) -> Result<Option<Lease>> {
        check(name, None, None)?;
        Ok(self.read_at(self.clock.now(), name))
    }

    async fn note(&self, name: &str, holder: &str, term: u64, text: &str) -> Result<bool> {
        check(name, Some(holder), None)?;
        Ok(self.note_at(self.clock.now(), name, holder, term, text))
    }

    async fn last_note(&self, name: &str) -> Result<Option<Note>> {
        check(name, None, None)?;
        Ok(self.with_names(|names| names.get(name).and_then(|s| s.note.clone())))
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;

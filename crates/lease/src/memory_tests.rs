use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const TTL: Duration = Duration::from_secs(10);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_lease_ends_exactly_at_its_ttl_on_the_shared_clock() {
    let store = MemoryLeases::new();
    let t0 = Instant::now();
    let lease = store.acquire_at(t0, "i", "a", TTL).expect("free");
    assert_eq!((lease.term, lease.expires), (1, t0 + TTL));
    let just_before = t0 + TTL - Duration::from_nanos(1);
    assert_eq!(store.read_at(just_before, "i").map(|l| l.term), Some(1));
    assert_eq!(store.acquire_at(just_before, "i", "b", TTL), None);
    assert_eq!(store.read_at(t0 + TTL, "i"), None);
    assert_eq!(store.renew_at(t0 + TTL, "i", "a", 1, TTL), None);
    let next = store.acquire_at(t0 + TTL, "i", "b", TTL).expect("expired");
    assert_eq!((next.holder.as_str(), next.term), ("b", 2));
}

#[test]
fn a_resumed_tenure_holds_until_its_end_and_later_terms_follow_it() {
    let clock = crate::clock::ManualClock::new();
    let store = MemoryLeases::with_clock(Arc::new(clock.clone()));
    let t0 = clock.now();
    store.resume("i", "a", 7, t0 + TTL);
    let held = store.read_at(t0, "i").expect("resumed");
    assert_eq!(
        (held.holder.as_str(), held.term, held.expires),
        ("a", 7, t0 + TTL)
    );
    // Its holder renews it in its term; no one else takes it before its end.
    assert_eq!(store.acquire_at(t0 + secs(1), "i", "b", TTL), None);
    assert_eq!(
        store
            .renew_at(t0 + secs(1), "i", "a", 7, TTL)
            .map(|l| l.term),
        Some(7)
    );
    // After it, a new tenure is numbered after the resumed one.
    let next = store
        .acquire_at(t0 + secs(12), "i", "b", TTL)
        .expect("expired");
    assert_eq!(next.term, 8);
    // A resume never overrides a live tenure, nor takes a term back.
    store.resume("i", "a", 7, t0 + secs(30));
    assert_eq!(
        store.read_at(t0 + secs(12), "i").map(|l| l.holder),
        Some("b".into())
    );
    store.resume("j", "a", 3, t0);
    assert_eq!(store.read_at(t0, "j"), None, "already over");
    assert_eq!(store.acquire_at(t0, "j", "a", TTL).map(|l| l.term), Some(4));
}

#[test]
fn a_read_reports_what_is_left() {
    let store = MemoryLeases::new();
    let t0 = Instant::now();
    store.acquire_at(t0, "i", "a", TTL);
    let read = store.read_at(t0 + secs(4), "i").expect("held");
    assert_eq!((read.ttl, read.expires), (secs(6), t0 + TTL));
}

#[test]
fn renewal_extends_from_now_and_keeps_the_term() {
    let store = MemoryLeases::new();
    let t0 = Instant::now();
    store.acquire_at(t0, "i", "a", TTL);
    let renewed = store
        .renew_at(t0 + secs(9), "i", "a", 1, TTL)
        .expect("held");
    assert_eq!((renewed.term, renewed.expires), (1, t0 + secs(19)));
    let again = store
        .acquire_at(t0 + secs(18), "i", "a", secs(3))
        .expect("own");
    assert_eq!((again.term, again.expires), (1, t0 + secs(21)));
}

#[test]
fn the_same_holder_after_an_expiry_or_a_release_starts_a_new_term() {
    let store = MemoryLeases::new();
    let t0 = Instant::now();
    store.acquire_at(t0, "i", "a", TTL);
    let after_expiry = store.acquire_at(t0 + TTL, "i", "a", TTL).expect("free");
    assert_eq!(after_expiry.term, 2);
    assert!(store.release_at(t0 + TTL, "i", "a", 2));
    assert_eq!(
        store.acquire_at(t0 + TTL, "i", "a", TTL).map(|l| l.term),
        Some(3)
    );
}

#[test]
fn only_the_holder_in_its_term_renews_or_releases() {
    let store = MemoryLeases::new();
    let t0 = Instant::now();
    store.acquire_at(t0, "i", "a", TTL);
    assert_eq!(store.renew_at(t0, "i", "b", 1, TTL), None);
    assert_eq!(store.renew_at(t0, "i", "a", 2, TTL), None);
    assert_eq!(store.renew_at(t0, "other", "a", 1, TTL), None);
    assert!(!store.release_at(t0, "i", "b", 1));
    assert!(!store.release_at(t0, "i", "a", 0));
    assert!(!store.release_at(t0, "other", "a", 1));
    assert!(store.release_at(t0, "i", "a", 1));
    assert!(!store.release_at(t0, "i", "a", 1), "released twice");
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Op {
    Acquire {
        name: usize,
        holder: usize,
        ttl: u64,
    },
    /// Renews with the term the holder was last granted, or (`stale`) one below it.
    Renew {
        name: usize,
        holder: usize,
        ttl: u64,
        stale: bool,
    },
    Release {
        name: usize,
        holder: usize,
        stale: bool,
    },
    Read {
        name: usize,
    },
    Advance {
        ms: u64,
    },
}

const NAMES: [&str; 2] = ["i1", "i2"];
const HOLDERS: [&str; 3] = ["a", "b", "c"];

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let holder = 0..HOLDERS.len();
    prop_oneof![
        (name.clone(), holder.clone(), 1..12u64).prop_map(|(name, holder, ttl)| Op::Acquire {
            name,
            holder,
            ttl
        }),
        (name.clone(), holder.clone(), 1..12u64, any::<bool>()).prop_map(
            |(name, holder, ttl, stale)| Op::Renew {
                name,
                holder,
                ttl,
                stale
            }
        ),
        (name.clone(), holder, any::<bool>()).prop_map(|(name, holder, stale)| Op::Release {
            name,
            holder,
            stale
        }),
        name.prop_map(|name| Op::Read { name }),
        (0..15_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// What the holders were told: per name, every term granted with its holder and the
/// latest end the store gave it (dropped when the holder released it).
#[derive(Default)]
struct Model {
    granted: BTreeMap<(usize, u64), (usize, Instant)>,
    last_term: BTreeMap<usize, u64>,
    /// The term each holder was last granted per name.
    believed: BTreeMap<(usize, usize), u64>,
}

impl Model {
    /// The terms of `name` some holder may still act on at `now`.
    fn live(&self, name: usize, now: Instant) -> Vec<(u64, usize)> {
        self.granted
            .iter()
            .filter(|((n, _), (_, ends))| *n == name && now < *ends)
            .map(|((_, term), (holder, _))| (*term, *holder))
            .collect()
    }

    /// Records a grant and checks the term rules: a new term is the last + 1; an old
    /// one comes back only to its own holder.
    fn granted(&mut self, name: usize, holder: usize, lease: &Lease) {
        let last = self.last_term.entry(name).or_insert(0);
        match self.granted.get(&(name, lease.term)) {
            Some((owner, _)) => assert_eq!(*owner, holder, "term {} changed holder", lease.term),
            None => {
                assert_eq!(lease.term, *last + 1, "a new tenure's term");
                *last = lease.term;
            }
        }
        self.granted
            .insert((name, lease.term), (holder, lease.expires));
        self.believed.insert((name, holder), lease.term);
    }

    fn term_for(&self, name: usize, holder: usize, stale: bool) -> u64 {
        let term = self.believed.get(&(name, holder)).copied().unwrap_or(0);
        if stale {
            term.saturating_sub(1)
        } else {
            term
        }
    }
}

proptest! {
    /// Never two holders with unexpired leases; a new tenure's term is the last + 1;
    /// a read agrees with what the holders were told.
    #[test]
    fn random_histories_keep_one_holder_and_growing_terms(ops in prop::collection::vec(op(), 1..80)) {
        let store = MemoryLeases::new();
        let mut now = Instant::now();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Acquire { name, holder, ttl } => {
                    if let Some(lease) = store.acquire_at(now, NAMES[name], HOLDERS[holder], secs(ttl)) {
                        prop_assert_eq!(lease.expires, now + secs(ttl));
                        model.granted(name, holder, &lease);
                    } else {
                        let live = model.live(name, now);
                        prop_assert!(live.iter().any(|(_, h)| *h != holder), "refused while free: {:?}", live);
                    }
                }
                Op::Renew { name, holder, ttl, stale } => {
                    let term = model.term_for(name, holder, stale);
                    let held = model.live(name, now).contains(&(term, holder));
                    let renewed = store.renew_at(now, NAMES[name], HOLDERS[holder], term, secs(ttl));
                    prop_assert_eq!(renewed.is_some(), held);
                    if let Some(lease) = renewed {
                        prop_assert_eq!(lease.term, term);
                        model.granted(name, holder, &lease);
                    }
                }
                Op::Release { name, holder, stale } => {
                    let term = model.term_for(name, holder, stale);
                    let held = model.live(name, now).contains(&(term, holder));
                    prop_assert_eq!(store.release_at(now, NAMES[name], HOLDERS[holder], term), held);
                    if held {
                        model.granted.remove(&(name, term));
                    }
                }
                Op::Read { name } => {
                    let read = store.read_at(now, NAMES[name]).map(|l| (l.term, HOLDERS.iter().position(|h| *h == l.holder)));
                    let live = model.live(name, now).first().map(|(t, h)| (*t, Some(*h)));
                    prop_assert_eq!(read, live);
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
            }
            for (name, label) in NAMES.iter().enumerate() {
                let live = model.live(name, now);
                prop_assert!(live.len() <= 1, "two live tenures of {}: {:?}", label, live);
            }
        }
    }
}

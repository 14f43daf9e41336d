//! What every [`LeaseStore`] does, written once and run against each store: the
//! in-memory one on a manual clock, etcd with real (short) sleeps.

use berth_lease::{Lease, LeaseStore};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Lets time pass for the store: moves a manual clock, or sleeps.
pub type Advance<'a> = &'a (dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Sync);

fn held(lease: Option<Lease>, what: &str) -> Lease {
    match lease {
        Some(lease) => lease,
        None => panic!("{what}: expected the lease, got None"),
    }
}

/// The trait's contract, on lease names that start with `name` (fresh in this
/// store). `ttl` is the TTL the store grants exactly; `expiry` is how long after the
/// last renewal the store has certainly ended a lease.
pub async fn behaves_as_a_lease_store(
    store: &dyn LeaseStore,
    name: &str,
    ttl: Duration,
    expiry: Duration,
    advance: Advance<'_>,
) {
    let other = format!("{name}-other");
    let read = |n: &str| {
        let n = n.to_owned();
        async move { store.read(&n).await.expect("read") }
    };
    assert_eq!(read(name).await, None, "a name never taken is free");

    // The first tenure is term 1; the holder is told the TTL the store keeps.
    let a = held(
        store.acquire(name, "a", ttl).await.expect("acquire"),
        "free",
    );
    assert_eq!(
        (a.name.as_str(), a.holder.as_str(), a.term, a.ttl),
        (name, "a", 1, ttl)
    );
    let seen = held(read(name).await, "read of a held lease");
    assert_eq!((seen.holder.as_str(), seen.term), ("a", 1));
    assert!(
        seen.ttl <= ttl && !seen.ttl.is_zero(),
        "left: {:?}",
        seen.ttl
    );

    // Held: another holder is refused; the holder itself renews, in its term only.
    assert_eq!(store.acquire(name, "b", ttl).await.expect("acquire"), None);
    let again = held(store.acquire(name, "a", ttl).await.expect("acquire"), "own");
    assert_eq!(again.term, 1, "taking one's own lease is a renewal");
    assert!(again.expires >= a.expires);
    let renewed = held(
        store.renew(name, "a", 1, ttl).await.expect("renew"),
        "renew",
    );
    assert_eq!((renewed.holder.as_str(), renewed.term), ("a", 1));
    assert_eq!(store.renew(name, "b", 1, ttl).await.expect("renew"), None);
    assert_eq!(store.renew(name, "a", 2, ttl).await.expect("renew"), None);
    assert_eq!(store.renew(&other, "a", 1, ttl).await.expect("renew"), None);

    // Release: only the holder in its term; then the next tenure is term 2.
    assert!(!store.release(name, "b", 1).await.expect("release"));
    assert!(!store.release(name, "a", 2).await.expect("release"));
    assert!(store.release(name, "a", 1).await.expect("release"));
    assert_eq!(read(name).await, None, "released");
    assert!(
        !store.release(name, "a", 1).await.expect("release"),
        "twice"
    );
    assert_eq!(store.renew(name, "a", 1, ttl).await.expect("renew"), None);
    let b = held(
        store.acquire(name, "b", ttl).await.expect("acquire"),
        "released",
    );
    assert_eq!((b.holder.as_str(), b.term), ("b", 2));

    // Names are independent: their terms start at 1 of their own.
    let o = held(
        store.acquire(&other, "a", ttl).await.expect("acquire"),
        "other",
    );
    assert_eq!(o.term, 1);

    // Not renewed, it ends: renewal fails, and the next tenure is term 3 — even for
    // the holder it was, since it may have stopped acting as holder meanwhile.
    advance(expiry).await;
    assert_eq!(read(name).await, None, "expired");
    assert_eq!(store.renew(name, "b", 2, ttl).await.expect("renew"), None);
    assert!(!store.release(name, "b", 2).await.expect("release"));
    let b3 = held(
        store.acquire(name, "b", ttl).await.expect("acquire"),
        "expired",
    );
    assert_eq!(b3.term, 3);
    assert!(store.release(name, "b", 3).await.expect("release"));
    let a4 = held(
        store.acquire(name, "a", ttl).await.expect("acquire"),
        "free",
    );
    assert_eq!(
        (a4.holder.as_str(), a4.term),
        ("a", 4),
        "terms are never reused"
    );

    // Notes: kept only from the holder in its term, the last one replacing the one
    // before, and still there once the tenure has ended.
    assert_eq!(store.last_note(name).await.expect("last note"), None);
    assert!(store.note(name, "a", 4, "first").await.expect("note"));
    assert!(store.note(name, "a", 4, "second").await.expect("note"));
    assert!(!store
        .note(name, "b", 4, "not the holder")
        .await
        .expect("note"));
    assert!(!store.note(name, "a", 3, "an old term").await.expect("note"));
    assert!(!store
        .note(&format!("{name}-never"), "a", 1, "free")
        .await
        .expect("note"));
    let note = |holder: &str, term, text: &str| berth_lease::Note {
        holder: holder.into(),
        term,
        text: text.into(),
    };
    assert_eq!(
        store.last_note(name).await.expect("last note"),
        Some(note("a", 4, "second"))
    );
    assert!(store.release(name, "a", 4).await.expect("release"));
    assert!(!store.note(name, "a", 4, "after").await.expect("note"));
    assert_eq!(
        store.last_note(name).await.expect("last note"),
        Some(note("a", 4, "second")),
        "a note outlives its tenure"
    );
    assert_eq!(store.last_note(&other).await.expect("last note"), None);

    // Bad input is refused before the store is asked.
    assert!(store.acquire("", "a", ttl).await.is_err());
    assert!(store.acquire(name, "", ttl).await.is_err());
    assert!(store.acquire(name, "a", Duration::ZERO).await.is_err());
}

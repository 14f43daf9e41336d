//! The trait's contract against [`MemoryLeases`] on a manual clock (no sleeps).

mod common;

use berth_lease::clock::ManualClock;
use berth_lease::{LeaseStore, MemoryLeases};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn memory_leases_behave_as_a_lease_store() {
    let clock = ManualClock::new();
    let store = MemoryLeases::with_clock(Arc::new(clock.clone()));
    let ttl = Duration::from_secs(10);
    let advance = move |by: Duration| {
        clock.advance(by);
        Box::pin(async {}) as _
    };
    common::behaves_as_a_lease_store(&store, "instance-1", ttl, ttl, &advance).await;
}

#[tokio::test]
async fn of_two_concurrent_acquirers_exactly_one_wins() {
    let store = Arc::new(MemoryLeases::new());
    let ttl = Duration::from_secs(30);
    for round in 1..=20u64 {
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|holder| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.acquire("i", holder, ttl).await })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(lease) = task.await.expect("joined").expect("acquire") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = &winners[0];
        assert_eq!(winner.term, round);
        assert!(store
            .release("i", &winner.holder, winner.term)
            .await
            .expect("release"));
    }
}

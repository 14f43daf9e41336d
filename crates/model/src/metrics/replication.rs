//! What a member says about replication in its metrics round
//! ([`ReplicationMetrics`]), and the series it becomes.
//!
//! The engine reports facts (its role, a replica's receiver and lag, a primary's
//! connected replicas and each PostgreSQL slot); the series are derived here. A
//! PostgreSQL primary's `replication_running` comes from its slots (one per replica
//! it serves): a replica that stopped answering altogether reports nothing itself,
//! but its slot goes inactive once the primary's `wal_sender_timeout` passes, so the
//! primary's own view still says that replication stopped.

use super::Metric;
use serde::{Deserialize, Serialize};

/// A member's replication, read in the same round as its other figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicationMetrics {
    /// Whether the member is the primary (not following another member).
    pub is_primary: bool,
    /// On a replica: whether it receives and applies the primary's changes now
    /// (PostgreSQL's WAL receiver is streaming; MariaDB's IO and SQL threads both
    /// run).
    pub running: Option<bool>,
    /// On a replica: bytes received from the primary but not applied yet (MariaDB:
    /// only while both positions are in the same binary log file).
    pub lag_bytes: Option<u64>,
    /// On a replica: how far behind the primary it applies, in seconds (0 when it
    /// has applied everything it received).
    pub lag_seconds: Option<f64>,
    /// On a primary: replicas connected and receiving now.
    pub connected_replicas: Option<u64>,
    /// PostgreSQL's replication slots on this member; `None` where the engine has
    /// no slots.
    pub slots: Option<Vec<SlotUsage>>,
}

/// One replication slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotUsage {
    /// The slot's name (`berth_m<n>` for member n).
    pub name: String,
    /// Whether a replica (or a clone) is using it now.
    pub active: bool,
    /// WAL the slot keeps from being removed, in bytes (from its `restart_lsn` to
    /// the member's current position); `None` when the slot reserves none yet.
    pub retained_bytes: Option<u64>,
}

/// The series of one reading's replication figures.
pub(super) fn samples(r: &ReplicationMetrics, out: &mut Vec<(Metric, f64)>) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    out.push((Metric::ReplicationIsPrimary, flag(r.is_primary)));
    let running = if r.is_primary {
        // Every replica this primary serves has a slot; all active = all connected.
        r.slots
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().all(|s| s.active))
    } else {
        r.running
    };
    if let Some(running) = running {
        out.push((Metric::ReplicationRunning, flag(running)));
    }
    if let Some(b) = r.lag_bytes {
        out.push((Metric::ReplicationLagBytes, b as f64));
    }
    if let Some(s) = r.lag_seconds {
        out.push((Metric::ReplicationLagSeconds, s.max(0.0)));
    }
    if let Some(n) = r.connected_replicas {
        out.push((Metric::ReplicationConnectedReplicas, n as f64));
    }
    if let Some(slots) = &r.slots {
        // No slot keeps any WAL: 0 is a measurement, not a gap.
        let retained = slots.iter().filter_map(|s| s.retained_bytes).max();
        out.push((
            Metric::ReplicationSlotRetainedBytes,
            retained.unwrap_or(0) as f64,
        ));
        let inactive = slots.iter().filter(|s| !s.active).count();
        out.push((Metric::ReplicationSlotsInactive, inactive as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, active: bool, retained: Option<u64>) -> SlotUsage {
        SlotUsage {
            name: name.into(),
            active,
            retained_bytes: retained,
        }
    }

    fn derived(r: &ReplicationMetrics) -> Vec<(Metric, f64)> {
        let mut out = vec![];
        samples(r, &mut out);
        out
    }

    #[test]
    fn a_streaming_replica_gives_its_lag() {
        let r = ReplicationMetrics {
            is_primary: false,
            running: Some(true),
            lag_bytes: Some(4096),
            lag_seconds: Some(1.5),
            slots: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            derived(&r),
            vec![
                (Metric::ReplicationIsPrimary, 0.0),
                (Metric::ReplicationRunning, 1.0),
                (Metric::ReplicationLagBytes, 4096.0),
                (Metric::ReplicationLagSeconds, 1.5),
                (Metric::ReplicationSlotRetainedBytes, 0.0),
                (Metric::ReplicationSlotsInactive, 0.0),
            ]
        );
        let stopped = ReplicationMetrics {
            running: Some(false),
            lag_seconds: None,
            ..r
        };
        assert!(derived(&stopped).contains(&(Metric::ReplicationRunning, 0.0)));
        assert!(!derived(&stopped)
            .iter()
            .any(|(m, _)| *m == Metric::ReplicationLagSeconds));
    }

    #[test]
    fn a_primary_reports_its_replicas_and_the_worst_slot() {
        let r = ReplicationMetrics {
            is_primary: true,
            connected_replicas: Some(1),
            slots: Some(vec![
                slot("berth_m1", true, Some(100)),
                slot("berth_m2", false, Some(5000)),
                slot("berth_m3", true, None),
            ]),
            ..Default::default()
        };
        assert_eq!(
            derived(&r),
            vec![
                (Metric::ReplicationIsPrimary, 1.0),
                // A slot nobody uses: a replica is not connected.
                (Metric::ReplicationRunning, 0.0),
                (Metric::ReplicationConnectedReplicas, 1.0),
                (Metric::ReplicationSlotRetainedBytes, 5000.0),
                (Metric::ReplicationSlotsInactive, 1.0),
            ]
        );
    }

    #[test]
    fn a_primary_without_replicas_says_nothing_about_replication_running() {
        // PostgreSQL alone: no slot, so nothing is running or stopped.
        let alone = ReplicationMetrics {
            is_primary: true,
            connected_replicas: Some(0),
            slots: Some(vec![]),
            ..Default::default()
        };
        let s = derived(&alone);
        assert!(!s.iter().any(|(m, _)| *m == Metric::ReplicationRunning));
        assert!(s.contains(&(Metric::ReplicationSlotRetainedBytes, 0.0)));
        // MariaDB has no slots: no slot series at all.
        let mariadb = ReplicationMetrics {
            slots: None,
            ..alone
        };
        assert_eq!(
            derived(&mariadb),
            vec![
                (Metric::ReplicationIsPrimary, 1.0),
                (Metric::ReplicationConnectedReplicas, 0.0),
            ]
        );
        let all_active = ReplicationMetrics {
            is_primary: true,
            slots: Some(vec![slot("berth_m1", true, Some(1))]),
            ..Default::default()
        };
        assert!(derived(&all_active).contains(&(Metric::ReplicationRunning, 1.0)));
    }
}

//! Monitoring values: what an agent reports about its member ([`AgentMetrics`],
//! [`EngineMetrics`]), the named series the control plane keeps ([`Metric`]), and
//! the rollup arithmetic of the history ([`rollup`]).
//!
//! Counters stay counters here (commits, cache reads, temporary bytes since the
//! engine started): rates are computed by the control plane from two samples, and a
//! counter that went down (the engine restarted) gives no rate for that interval
//! rather than a negative or a huge one ([`rate`]).

pub mod alarm;
pub mod backups;
mod replication;
pub mod rollup;
mod series;

pub use replication::{ReplicationMetrics, SlotUsage};
pub use series::{
    derive_samples, unanswered_replica, ContainerUsage, Metric, Reading, UnknownMetric,
};

use serde::{Deserialize, Serialize};

/// What the engine says about itself, read over the member's local socket by a
/// low-privilege monitoring account, in one bounded round of queries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EngineMetrics {
    /// When the engine process started (Unix seconds): a later value than last time
    /// is a restart.
    pub started_at: i64,
    /// Client sessions now (the engine's own background processes not counted).
    pub connections: u64,
    /// The most sessions the engine accepts.
    pub max_connections: u64,
    /// Transactions committed since the engine started (counter).
    pub commits: u64,
    /// Transactions rolled back since the engine started (counter).
    pub rollbacks: u64,
    /// Page or buffer-pool reads served from memory (counter).
    pub cache_hits: u64,
    /// Page reads that went to disk (counter).
    pub cache_misses: u64,
    /// Deadlocks detected (counter).
    pub deadlocks: u64,
    /// Temporary files written by queries (counter).
    pub temp_files: u64,
    /// Bytes of temporary files written by queries (counter; `None` where the engine
    /// does not count them).
    pub temp_bytes: Option<u64>,
    /// Size of each database, in bytes.
    pub database_bytes: Vec<DatabaseSize>,
    /// Age of the oldest open transaction, in seconds (0 when none is open).
    pub longest_transaction_seconds: f64,
    /// Sessions waiting for a lock now.
    pub lock_waits: u64,
    /// Age of the oldest transaction ID of any database (PostgreSQL's wraparound
    /// horizon); `None` where the engine has none.
    pub xid_age: Option<u64>,
    /// The member's replication: its role, a replica's lag, a primary's replicas
    /// and slots; `None` when not read (an agent older than these figures).
    #[serde(default)]
    pub replication: Option<ReplicationMetrics>,
}

/// One database's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatabaseSize {
    /// The database's name.
    pub name: String,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Space on the member's data volume, as the file system reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskUsage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in all (used plus available to the engine).
    pub total_bytes: u64,
}

/// The member's network traffic since the container started (counters, every
/// interface but loopback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// The agent's `GET /metrics` answer: each part is absent when it could not be read
/// this time (with the reason for the engine), never filled with zeros.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentMetrics {
    /// Whether the engine answered.
    pub engine_up: bool,
    /// The engine's values, when it answered.
    pub engine: Option<EngineMetrics>,
    /// Why the engine's values are missing.
    pub engine_error: Option<String>,
    /// The data volume's space.
    pub disk: Option<DiskUsage>,
    /// Network counters.
    pub network: Option<NetworkCounters>,
}

/// The per-second rate of a counter between two readings `seconds` apart; `None`
/// when the counter went down (a restart reset it) or no time passed.
pub fn rate(before: u64, after: u64, seconds: f64) -> Option<f64> {
    (after >= before && seconds > 0.0).then(|| (after - before) as f64 / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_went_down_has_no_rate() {
        assert_eq!(rate(10, 30, 10.0), Some(2.0));
        assert_eq!(rate(30, 10, 10.0), None);
        assert_eq!(rate(10, 10, 0.0), None);
        assert_eq!(rate(10, 10, 5.0), Some(0.0));
    }

    #[test]
    fn agent_metrics_round_trip_as_json() {
        let m = AgentMetrics {
            engine_up: true,
            engine: Some(EngineMetrics {
                connections: 3,
                xid_age: Some(7),
                ..Default::default()
            }),
            engine_error: None,
            disk: Some(DiskUsage {
                used_bytes: 1,
                total_bytes: 2,
            }),
            network: None,
        };
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(
            serde_json::from_str::<AgentMetrics>(&json).expect("back"),
            m
        );
    }
}

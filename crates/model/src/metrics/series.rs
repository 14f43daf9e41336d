//! The named series Berth keeps per member, and how one reading (with the one
//! before it) becomes their values.
//!
//! A value is written only when it was measured: an agent that did not answer
//! gives no `engine_up` (missing data), an engine that did not answer gives
//! `engine_up = 0` and nothing else from the engine, and a rate needs two readings
//! of the same engine run.

use super::{rate, AgentMetrics};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A series kept in the history and usable by alarms.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 1 when the engine answered the agent, 0 when the agent answered but the
    /// engine did not.
    EngineUp,
    /// 1 when the engine started again since the previous reading, else 0.
    EngineRestarted,
    /// Seconds since the engine started.
    UptimeSeconds,
    /// Client sessions.
    Connections,
    /// The most sessions the engine accepts.
    ConnectionsMax,
    /// Sessions as a percentage of the maximum.
    ConnectionsPercent,
    /// Transactions (committed and rolled back) per second.
    Tps,
    /// Commits per second.
    CommitsPerSecond,
    /// Rollbacks per second.
    RollbacksPerSecond,
    /// Share of reads served from memory over the interval, 0..1.
    CacheHitRatio,
    /// Deadlocks per second.
    DeadlocksPerSecond,
    /// Temporary files written per second.
    TempFilesPerSecond,
    /// Temporary bytes written per second.
    TempBytesPerSecond,
    /// All databases' size, in bytes.
    DatabaseBytes,
    /// Age of the oldest open transaction, in seconds.
    LongestTransactionSeconds,
    /// Sessions waiting for a lock.
    LockWaits,
    /// Oldest transaction ID age (PostgreSQL).
    XidAge,
    /// 1 on the primary, 0 on a replica.
    ReplicationIsPrimary,
    /// 1 when replication runs, 0 when it stopped: on a replica, whether it
    /// receives and applies; on a PostgreSQL primary with replicas, whether every
    /// replica's slot is in use (absent on a primary without replicas).
    ReplicationRunning,
    /// A replica's changes received but not applied yet, in bytes.
    ReplicationLagBytes,
    /// How far behind the primary a replica applies, in seconds.
    ReplicationLagSeconds,
    /// Replicas connected to the primary.
    ReplicationConnectedReplicas,
    /// WAL kept by the replication slot that keeps the most, in bytes (PostgreSQL).
    ReplicationSlotRetainedBytes,
    /// Replication slots nobody uses (PostgreSQL).
    ReplicationSlotsInactive,
    /// Bytes used on the data volume.
    DiskUsedBytes,
    /// Data volume used, as a percentage.
    DiskUsedPercent,
    /// Bytes received per second.
    NetworkRxBytesPerSecond,
    /// Bytes sent per second.
    NetworkTxBytesPerSecond,
    /// CPU used, as a percentage of one core.
    CpuPercent,
    /// Memory in use (working set), in bytes.
    MemoryBytes,
    /// Memory in use as a percentage of the limit.
    MemoryPercent,
    /// 1 when the instance's newest backup failed, or the newest complete one
    /// failed its verification; else 0 (the control plane's, kept under the
    /// primary).
    BackupFailed,
    /// How long the schedule's latest slot has gone without a complete backup taken
    /// at or after it, in seconds; 0 when it has one (absent with no schedule).
    BackupOverdueSeconds,
}

impl Metric {
    /// Every metric, in the order they are listed to people.
    pub const ALL: [Metric; 33] = [
        Metric::EngineUp,
        Metric::EngineRestarted,
        Metric::UptimeSeconds,
        Metric::Connections,
        Metric::ConnectionsMax,
        Metric::ConnectionsPercent,
        Metric::Tps,
        Metric::CommitsPerSecond,
        Metric::RollbacksPerSecond,
        Metric::CacheHitRatio,
        Metric::DeadlocksPerSecond,
        Metric::TempFilesPerSecond,
        Metric::TempBytesPerSecond,
        Metric::DatabaseBytes,
        Metric::LongestTransactionSeconds,
        Metric::LockWaits,
        Metric::XidAge,
        Metric::ReplicationIsPrimary,
        Metric::ReplicationRunning,
        Metric::ReplicationLagBytes,
        Metric::ReplicationLagSeconds,
        Metric::ReplicationConnectedReplicas,
        Metric::ReplicationSlotRetainedBytes,
        Metric::ReplicationSlotsInactive,
        Metric::DiskUsedBytes,
        Metric::DiskUsedPercent,
        Metric::NetworkRxBytesPerSecond,
        Metric::NetworkTxBytesPerSecond,
        Metric::CpuPercent,
        Metric::MemoryBytes,
        Metric::MemoryPercent,
        Metric::BackupFailed,
        Metric::BackupOverdueSeconds,
    ];

    /// The name in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::EngineUp => "engine_up",
            Metric::EngineRestarted => "engine_restarted",
            Metric::UptimeSeconds => "uptime_seconds",
            Metric::Connections => "connections",
            Metric::ConnectionsMax => "connections_max",
            Metric::ConnectionsPercent => "connections_percent",
            Metric::Tps => "tps",
            Metric::CommitsPerSecond => "commits_per_second",
            Metric::RollbacksPerSecond => "rollbacks_per_second",
            Metric::CacheHitRatio => "cache_hit_ratio",
            Metric::DeadlocksPerSecond => "deadlocks_per_second",
            Metric::TempFilesPerSecond => "temp_files_per_second",
            Metric::TempBytesPerSecond => "temp_bytes_per_second",
            Metric::DatabaseBytes => "database_bytes",
            Metric::LongestTransactionSeconds => "longest_transaction_seconds",
            Metric::LockWaits => "lock_waits",
            Metric::XidAge => "xid_age",
            Metric::ReplicationIsPrimary => "replication_is_primary",
            Metric::ReplicationRunning => "replication_running",
            Metric::ReplicationLagBytes => "replication_lag_bytes",
            Metric::ReplicationLagSeconds => "replication_lag_seconds",
            Metric::ReplicationConnectedReplicas => "replication_connected_replicas",
            Metric::ReplicationSlotRetainedBytes => "replication_slot_retained_bytes",
            Metric::ReplicationSlotsInactive => "replication_slots_inactive",
            Metric::DiskUsedBytes => "disk_used_bytes",
            Metric::DiskUsedPercent => "disk_used_percent",
            Metric::NetworkRxBytesPerSecond => "network_rx_bytes_per_second",
            Metric::NetworkTxBytesPerSecond => "network_tx_bytes_per_second",
            Metric::CpuPercent => "cpu_percent",
            Metric::MemoryBytes => "memory_bytes",
            Metric::MemoryPercent => "memory_percent",
            Metric::BackupFailed => "backup_failed",
            Metric::BackupOverdueSeconds => "backup_overdue_seconds",
        }
    }

    /// Every name, comma-separated (for messages that say which exist).
    pub fn names() -> String {
        Metric::ALL.map(Metric::as_str).join(", ")
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric name Berth does not keep.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no metric {given:?}; the metrics are: {}", Metric::names())]
pub struct UnknownMetric {
    /// What was asked for.
    pub given: String,
}

impl FromStr for Metric {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMetric { given: s.into() })
    }
}

/// What Docker says a container uses (the control plane's reading).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    /// CPU seconds since the container started (counter).
    pub cpu_seconds: f64,
    /// Working set, in bytes.
    pub memory_bytes: u64,
    /// The memory limit, in bytes.
    pub memory_limit: Option<u64>,
}

/// One reading of a member at a time: what answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// When (Unix seconds).
    pub at: f64,
    /// The agent's answer; `None` when it did not answer.
    pub agent: Option<AgentMetrics>,
    /// Docker's; `None` when it did not answer.
    pub container: Option<ContainerUsage>,
}

/// What a reading of a replica whose agent did not answer says: its container should
/// run (it is running or paused) but nothing answered for a whole round, so it
/// cannot be replicating — `replication_running` 0, which the primary's own view may
/// take much longer to show (MariaDB keeps a frozen replica's connection open).
pub fn unanswered_replica(replica: bool, cur: &Reading) -> Option<(Metric, f64)> {
    (replica && cur.agent.is_none()).then_some((Metric::ReplicationRunning, 0.0))
}

/// The values of one reading, given the reading before it of the same member.
pub fn derive_samples(prev: Option<&Reading>, cur: &Reading) -> Vec<(Metric, f64)> {
    let mut out = vec![];
    let dt = prev.map(|p| cur.at - p.at).unwrap_or(0.0);
    if let Some(a) = &cur.agent {
        out.push((Metric::EngineUp, if a.engine_up { 1.0 } else { 0.0 }));
        if let Some(e) = &a.engine {
            let prev_e = prev
                .and_then(|p| p.agent.as_ref())
                .and_then(|a| a.engine.as_ref());
            if let Some(p) = prev_e {
                let restarted = p.started_at != e.started_at;
                out.push((Metric::EngineRestarted, if restarted { 1.0 } else { 0.0 }));
                if !restarted {
                    let per_second = |m, b: u64, a: u64, out: &mut Vec<_>| {
                        if let Some(r) = rate(b, a, dt) {
                            out.push((m, r));
                        }
                    };
                    per_second(
                        Metric::Tps,
                        p.commits + p.rollbacks,
                        e.commits + e.rollbacks,
                        &mut out,
                    );
                    per_second(Metric::CommitsPerSecond, p.commits, e.commits, &mut out);
                    per_second(
                        Metric::RollbacksPerSecond,
                        p.rollbacks,
                        e.rollbacks,
                        &mut out,
                    );
                    per_second(
                        Metric::DeadlocksPerSecond,
                        p.deadlocks,
                        e.deadlocks,
                        &mut out,
                    );
                    per_second(
                        Metric::TempFilesPerSecond,
                        p.temp_files,
                        e.temp_files,
                        &mut out,
                    );
                    if let (Some(b), Some(a)) = (p.temp_bytes, e.temp_bytes) {
                        per_second(Metric::TempBytesPerSecond, b, a, &mut out);
                    }
                    let hits = e.cache_hits.checked_sub(p.cache_hits);
                    let misses = e.cache_misses.checked_sub(p.cache_misses);
                    if let (Some(h), Some(m)) = (hits, misses) {
                        if h + m > 0 {
                            out.push((Metric::CacheHitRatio, h as f64 / (h + m) as f64));
                        }
                    }
                }
            }
            out.push((
                Metric::UptimeSeconds,
                (cur.at - e.started_at as f64).max(0.0),
            ));
            out.push((Metric::Connections, e.connections as f64));
            out.push((Metric::ConnectionsMax, e.max_connections as f64));
            if e.max_connections > 0 {
                out.push((
                    Metric::ConnectionsPercent,
                    100.0 * e.connections as f64 / e.max_connections as f64,
                ));
            }
            out.push((
                Metric::DatabaseBytes,
                e.database_bytes.iter().map(|d| d.bytes as f64).sum(),
            ));
            out.push((
                Metric::LongestTransactionSeconds,
                e.longest_transaction_seconds,
            ));
            out.push((Metric::LockWaits, e.lock_waits as f64));
            if let Some(x) = e.xid_age {
                out.push((Metric::XidAge, x as f64));
            }
            if let Some(r) = &e.replication {
                super::replication::samples(r, &mut out);
            }
        }
        if let Some(d) = a.disk {
            out.push((Metric::DiskUsedBytes, d.used_bytes as f64));
            if d.total_bytes > 0 {
                out.push((
                    Metric::DiskUsedPercent,
                    100.0 * d.used_bytes as f64 / d.total_bytes as f64,
                ));
            }
        }
        let prev_net = prev.and_then(|p| p.agent.as_ref()).and_then(|a| a.network);
        if let (Some(p), Some(n)) = (prev_net, a.network) {
            if let Some(r) = rate(p.rx_bytes, n.rx_bytes, dt) {
                out.push((Metric::NetworkRxBytesPerSecond, r));
            }
            if let Some(r) = rate(p.tx_bytes, n.tx_bytes, dt) {
                out.push((Metric::NetworkTxBytesPerSecond, r));
            }
        }
    }
    if let Some(c) = cur.container {
        let prev_cpu = prev.and_then(|p| p.container).map(|p| p.cpu_seconds);
        if let Some(b) = prev_cpu {
            if c.cpu_seconds >= b && dt > 0.0 {
                out.push((Metric::CpuPercent, 100.0 * (c.cpu_seconds - b) / dt));
            }
        }
        out.push((Metric::MemoryBytes, c.memory_bytes as f64));
        if let Some(limit) = c.memory_limit.filter(|l| *l > 0) {
            out.push((
                Metric::MemoryPercent,
                100.0 * c.memory_bytes as f64 / limit as f64,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::EngineMetrics;

    #[test]
    fn a_replica_that_answers_nothing_is_not_replicating() {
        let silent = Reading {
            at: 1.0,
            agent: None,
            container: None,
        };
        assert_eq!(
            unanswered_replica(true, &silent),
            Some((Metric::ReplicationRunning, 0.0))
        );
        // The primary's silence is engine-down's business, not replication's.
        assert_eq!(unanswered_replica(false, &silent), None);
        let answered = Reading {
            agent: Some(AgentMetrics::default()),
            ..silent
        };
        assert_eq!(unanswered_replica(true, &answered), None);
    }

    fn reading(at: f64, commits: u64, started_at: i64) -> Reading {
        Reading {
            at,
            agent: Some(AgentMetrics {
                engine_up: true,
                engine: Some(EngineMetrics {
                    started_at,
                    commits,
                    connections: 8,
                    max_connections: 100,
                    cache_hits: commits * 9,
                    cache_misses: commits,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            container: None,
        }
    }

    fn value(samples: &[(Metric, f64)], m: Metric) -> Option<f64> {
        samples.iter().find(|(k, _)| *k == m).map(|(_, v)| *v)
    }

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_those_that_exist() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
            assert_eq!(
                serde_json::to_value(m).expect("json"),
                serde_json::json!(m.as_str())
            );
        }
        let e = "tpx".parse::<Metric>().expect_err("unknown");
        assert!(e.to_string().contains("tps, commits_per_second"), "{e}");
    }

    #[test]
    fn rates_come_from_two_readings_of_one_engine_run() {
        let first = derive_samples(None, &reading(100.0, 50, 1));
        assert_eq!(value(&first, Metric::Tps), None);
        assert_eq!(value(&first, Metric::ConnectionsPercent), Some(8.0));
        let s = derive_samples(Some(&reading(100.0, 50, 1)), &reading(110.0, 150, 1));
        assert_eq!(value(&s, Metric::Tps), Some(10.0));
        assert_eq!(value(&s, Metric::CacheHitRatio), Some(0.9));
        assert_eq!(value(&s, Metric::EngineRestarted), Some(0.0));
        let restarted = derive_samples(Some(&reading(100.0, 50, 1)), &reading(110.0, 3, 105));
        assert_eq!(value(&restarted, Metric::Tps), None);
        assert_eq!(value(&restarted, Metric::EngineRestarted), Some(1.0));
    }

    #[test]
    fn what_did_not_answer_is_missing_never_zero() {
        let silent = Reading {
            at: 5.0,
            agent: None,
            container: None,
        };
        assert!(derive_samples(Some(&reading(0.0, 1, 1)), &silent).is_empty());
        let down = Reading {
            at: 5.0,
            agent: Some(AgentMetrics {
                engine_up: false,
                engine_error: Some("refused".into()),
                ..Default::default()
            }),
            container: None,
        };
        assert_eq!(derive_samples(None, &down), vec![(Metric::EngineUp, 0.0)]);
    }

    #[test]
    fn replication_figures_become_named_series_and_an_old_agent_gives_none() {
        let mut r = reading(0.0, 1, 1);
        if let Some(e) = r.agent.as_mut().and_then(|a| a.engine.as_mut()) {
            e.replication = Some(crate::metrics::ReplicationMetrics {
                is_primary: false,
                running: Some(true),
                lag_seconds: Some(2.0),
                ..Default::default()
            });
        }
        let s = derive_samples(None, &r);
        assert_eq!(value(&s, Metric::ReplicationIsPrimary), Some(0.0));
        assert_eq!(value(&s, Metric::ReplicationRunning), Some(1.0));
        assert_eq!(value(&s, Metric::ReplicationLagSeconds), Some(2.0));
        assert_eq!(value(&s, Metric::ReplicationLagBytes), None);
        let old = derive_samples(None, &reading(0.0, 1, 1));
        assert!(!old
            .iter()
            .any(|(m, _)| m.as_str().starts_with("replication_")));
        // An agent from before these figures still parses.
        let json = serde_json::json!({"engine_up": true, "engine": {
            "started_at": 1, "connections": 0, "max_connections": 1, "commits": 0,
            "rollbacks": 0, "cache_hits": 0, "cache_misses": 0, "deadlocks": 0,
            "temp_files": 0, "temp_bytes": null, "database_bytes": [],
            "longest_transaction_seconds": 0.0, "lock_waits": 0, "xid_age": null}});
        let parsed: AgentMetrics = serde_json::from_value(json).expect("old agent");
        assert_eq!(parsed.engine.and_then(|e| e.replication), None);
        assert_eq!(
            "replication_lag_seconds".parse::<Metric>(),
            Ok(Metric::ReplicationLagSeconds)
        );
    }

    #[test]
    fn cpu_is_a_share_of_one_core_and_memory_of_the_limit() {
        let at = |at: f64, cpu: f64| Reading {
            at,
            agent: None,
            container: Some(ContainerUsage {
                cpu_seconds: cpu,
                memory_bytes: 256,
                memory_limit: Some(1024),
            }),
        };
        let s = derive_samples(Some(&at(0.0, 1.0)), &at(10.0, 6.0));
        assert_eq!(value(&s, Metric::CpuPercent), Some(50.0));
        assert_eq!(value(&s, Metric::MemoryPercent), Some(25.0));
    }
}

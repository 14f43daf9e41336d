//! The contract between the control plane and the agent in each member container.

/// The port the agent API listens on inside the container.
pub const AGENT_PORT: u16 = 8008;

/// Where the agent binary's volume is mounted, read-only, in every member.
pub const AGENT_DIR: &str = "/opt/berth";

/// Where the member's data volume is mounted.
pub const DATA_DIR: &str = "/var/lib/berth";

/// Environment variables the control plane sets and the agent reads.
pub mod env {
    /// Engine kind (`postgres`).
    pub const ENGINE: &str = "BERTH_ENGINE";
    /// Engine major version.
    pub const VERSION: &str = "BERTH_ENGINE_VERSION";
    /// Memory limit in MiB.
    pub const MEMORY_MIB: &str = "BERTH_MEMORY_MIB";
    /// CPU limit in thousandths of a core.
    pub const CPU_MILLIS: &str = "BERTH_CPU_MILLIS";
    /// SHA-256 (hex) of the token the control plane presents to the agent.
    pub const TOKEN_SHA256: &str = "BERTH_AGENT_TOKEN_SHA256";
}

/// The file on a member's data volume, beside the data directory, that says how the
/// member replicates. The control plane writes it before a member's first start and
/// sends it to a running agent (`POST /replication`); the agent renders the engine's
/// configuration from it at every start. No file: a lone primary.
pub const REPLICATION_FILE: &str = "berth-replication.json";

/// The replication account, the same on every engine.
pub const REPLICATION_USER: &str = "berth_replicator";

/// How one member replicates: its role, whom it follows, whom it serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replication {
    /// This member.
    pub member: crate::MemberId,
    /// What Berth made it.
    pub role: crate::member::Role,
    /// For a replica: the primary's host name on the instance's network (its
    /// container name) and client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<(String, u16)>,
    /// The replication account's password.
    pub password: crate::Secret,
    /// For a primary: every replica it serves (a slot for each on PostgreSQL).
    #[serde(default)]
    pub replicas: Vec<crate::MemberId>,
    /// How many replicas confirm a commit.
    #[serde(default)]
    pub sync: u8,
    /// Whether commits wait for a missing synchronous replica.
    #[serde(default)]
    pub sync_mode: crate::member::SyncMode,
}

/// The agent's unauthenticated route that reports the member's role and lag
/// ([`RoleReport`]). It carries no secret — only role, lag and counts — so the
/// per-instance endpoint can probe it without holding the agent token (as Patroni's
/// REST health checks do). Every other agent route needs the token.
pub const ROLE_PATH: &str = "/role";

/// `GET /role`: what the engine said about itself just now (one bounded probe over
/// the local socket). `role` is `None` when the engine did not answer: unknown is a
/// value of its own, never guessed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoleReport {
    /// Primary or replica; `None` when the engine did not answer.
    pub role: Option<crate::member::Role>,
    /// The engine answered, and, on a replica, replication is running. A replica
    /// whose replication stopped is not ready: its data would silently grow old.
    pub ready: bool,
    /// The engine refuses writes (recovery or `default_transaction_read_only` in
    /// PostgreSQL, `@@read_only` in MariaDB).
    pub read_only: bool,
    /// On a replica: whether it is receiving and applying changes (PostgreSQL: the WAL
    /// receiver is streaming; MariaDB: both the IO and SQL threads run). `None` on a
    /// primary or when unknown.
    pub replication_running: Option<bool>,
    /// On a replica: bytes received but not yet applied (PostgreSQL: receive LSN
    /// minus replay LSN; MariaDB: read minus executed position of the same binlog
    /// file, `None` when they are in different files).
    pub lag_bytes: Option<u64>,
    /// On a replica: seconds behind its primary (PostgreSQL: now minus the last
    /// replayed commit's time, 0 when everything received is replayed; MariaDB:
    /// `Seconds_Behind_Master`). `None` when the engine cannot say.
    pub lag_seconds: Option<f64>,
    /// Client sessions now open (the probe's own not counted).
    pub connections: Option<u32>,
    /// The engine's `max_connections`.
    pub max_connections: Option<u32>,
    /// How long the probe's query took, in milliseconds.
    pub probe_ms: Option<f64>,
    /// On a primary: each connected replica, as the engine sees it.
    #[serde(default)]
    pub replicas: Vec<ReplicaReport>,
    /// Why the report is incomplete or the member not ready, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RoleReport {
    /// Whether a member of this role with this replication state may take
    /// connections: a primary that answers is; a replica only while replication runs.
    pub fn ready_for(role: crate::member::Role, replication_running: Option<bool>) -> bool {
        match role {
            crate::member::Role::Primary => true,
            crate::member::Role::Replica => replication_running == Some(true),
        }
    }

    /// A report with only role, readiness and lag set (tests' stand-in members).
    #[cfg(any(test, feature = "testing"))]
    pub fn example(role: crate::member::Role, ready: bool, lag_seconds: Option<f64>) -> Self {
        Self {
            role: Some(role),
            ready,
            lag_seconds,
            ..Self::default()
        }
    }

    /// The report of an engine that did not answer.
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::default()
        }
    }
}

/// One replica connected to a primary, as the primary's engine reports it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaReport {
    /// PostgreSQL: `application_name`; MariaDB: the replica's host.
    pub name: String,
    /// The engine's word for the connection's state (`streaming`, `catchup`, …).
    pub state: String,
    /// PostgreSQL's `sync_state` (`async`, `sync`, `quorum`, `potential`); `None`
    /// where the engine does not say per replica (MariaDB).
    pub sync: Option<String>,
    /// Bytes the replica has not replayed yet, when the primary knows.
    pub lag_bytes: Option<u64>,
    /// Seconds the replica's replay is behind, when the primary knows.
    pub lag_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_lowercase_in_json_and_unknown_is_null() {
        let r = RoleReport {
            role: Some(crate::member::Role::Primary),
            ready: true,
            ..RoleReport::default()
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["role"], "primary");
        assert_eq!(
            serde_json::to_value(crate::member::Role::Replica).expect("json"),
            "replica"
        );
        let u = serde_json::to_value(RoleReport::unknown("down")).expect("json");
        assert!(u["role"].is_null() && u["ready"] == false && u["reason"] == "down");
        let back: RoleReport = serde_json::from_value(v).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn a_replica_is_ready_only_while_replication_runs() {
        assert!(RoleReport::ready_for(crate::member::Role::Primary, None));
        assert!(RoleReport::ready_for(
            crate::member::Role::Replica,
            Some(true)
        ));
        assert!(!RoleReport::ready_for(
            crate::member::Role::Replica,
            Some(false)
        ));
        assert!(!RoleReport::ready_for(crate::member::Role::Replica, None));
    }
}

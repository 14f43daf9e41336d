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

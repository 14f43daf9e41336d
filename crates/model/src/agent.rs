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

//! The contract of the per-instance endpoint process (`berth endpoint`): the ports it
//! listens on inside its container, the environment it reads, and the status it
//! reports. The control plane creates the container; the endpoint probes the members'
//! agents (`GET /role`) and forwards client connections to the right member.

use crate::member::Role;
use std::collections::BTreeMap;

/// Read-write listener inside the endpoint container: always reaches the primary.
pub const RW_PORT: u16 = 6432;
/// Read-only listener inside the endpoint container: spreads over healthy replicas.
pub const RO_PORT: u16 = 6433;
/// Status listener (`GET /status`, unauthenticated, [`EndpointStatus`]).
pub const STATUS_PORT: u16 = 8008;
/// The status route.
pub const STATUS_PATH: &str = "/status";
/// The route that asks for a probe round now (`POST`).
pub const PROBE_PATH: &str = "/probe";
/// Default `--max-lag`: a replica further behind gets no new read-only connections.
pub const DEFAULT_MAX_LAG_MS: u64 = crate::member::DEFAULT_MAX_LAG_MS;
/// Default probe interval.
pub const DEFAULT_PROBE_INTERVAL_MS: u64 = 1_000;
/// Default bound of one probe of one member.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 800;
/// Default time a client connection waits for a target before it is closed.
pub const DEFAULT_HOLD_MS: u64 = 2_000;

/// Environment variables the control plane sets and `berth endpoint` reads.
pub mod env {
    /// Candidate members: comma-separated host names (container names, resolved by
    /// Docker's DNS at every probe; a name that does not resolve is simply absent).
    pub const MEMBERS: &str = "BERTH_ENDPOINT_MEMBERS";
    /// The engine's client port on the members.
    pub const ENGINE_PORT: &str = "BERTH_ENDPOINT_ENGINE_PORT";
    /// The agent port on the members (default [`crate::agent::AGENT_PORT`]).
    pub const AGENT_PORT: &str = "BERTH_ENDPOINT_AGENT_PORT";
    /// The instance's `--max-lag`, in milliseconds (default
    /// [`super::DEFAULT_MAX_LAG_MS`]).
    pub const MAX_LAG_MS: &str = "BERTH_ENDPOINT_MAX_LAG_MS";
    /// Probe interval in milliseconds (default [`super::DEFAULT_PROBE_INTERVAL_MS`]).
    pub const PROBE_INTERVAL_MS: &str = "BERTH_ENDPOINT_PROBE_INTERVAL_MS";
    /// How long a client connection waits for a target, in milliseconds (default
    /// [`super::DEFAULT_HOLD_MS`]).
    pub const HOLD_MS: &str = "BERTH_ENDPOINT_HOLD_MS";
}

/// `GET /status` of an endpoint: what it routes to now and why.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointStatus {
    /// The member new read-write connections go to; `None` when there is none.
    pub rw_target: Option<String>,
    /// Why there is no read-write target, when there is none.
    pub rw_reason: Option<String>,
    /// Members new read-only connections are spread over, with their weights.
    pub ro_targets: Vec<WeightedTarget>,
    /// Read-only connections go to the primary because no replica qualifies.
    pub ro_fallback: bool,
    /// Why read-only connections go to the primary (`ro_fallback`), or nowhere.
    pub ro_reason: Option<String>,
    /// The lag above which a replica gets no new read-only connections.
    pub max_lag_ms: u64,
    /// Every candidate's last probe.
    pub members: Vec<MemberProbe>,
    /// Open client connections per member, per listener.
    pub connections: BTreeMap<String, TargetConnections>,
    /// Probe rounds done since start.
    pub rounds: u64,
}

/// A read-only target and its share of new connections.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightedTarget {
    /// The member.
    pub member: String,
    /// Relative weight (higher gets more new connections).
    pub weight: u32,
}

/// One candidate's last probe, as the endpoint judged it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberProbe {
    /// The host name probed.
    pub member: String,
    /// Whether it answered at all (`false`: did not resolve, refused, timed out).
    pub answered: bool,
    /// Its role, when its engine said.
    pub role: Option<Role>,
    /// Ready as its agent reports it.
    pub ready: bool,
    /// Replication lag in seconds, when known.
    pub lag_seconds: Option<f64>,
    /// Replication lag in bytes, when known.
    pub lag_bytes: Option<u64>,
    /// Time of the engine's probe query, in milliseconds.
    pub probe_ms: Option<f64>,
    /// Open sessions on the engine.
    pub connections: Option<u32>,
    /// The engine's `max_connections`.
    pub max_connections: Option<u32>,
    /// Why it gets no new connections, when it gets none.
    pub excluded: Option<String>,
}

/// Open client connections to one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetConnections {
    /// Through the read-write listener.
    pub rw: u64,
    /// Through the read-only listener.
    pub ro: u64,
}

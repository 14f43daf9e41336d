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
    /// The lease store the agents elect through (`etcd://host:port,…`); unset:
    /// the control plane grants the lease (the embedded store).
    pub const LEASE_STORE: &str = "BERTH_LEASE_STORE";
    /// The key prefix in the lease store (per installation).
    pub const LEASE_PREFIX: &str = "BERTH_LEASE_PREFIX";
    /// The instance's lease name in the store.
    pub const LEASE_NAME: &str = "BERTH_LEASE_NAME";
}

/// The file on a member's data volume, beside the data directory, that says how the
/// member replicates. The control plane writes it before a member's first start and
/// sends it to a running agent (`POST /replication`); the agent renders the engine's
/// configuration from it at every start. No file: a lone primary.
pub const REPLICATION_FILE: &str = "berth-replication.json";

/// File on a member's volume (under [`DATA_DIR`]) that says its data is left from an
/// earlier member (a scale-down without purge, then a scale-up): the agent clones
/// the primary afresh before it starts, whatever the volume holds (its position may
/// be older than anything the primary still keeps). It says why.
pub const STALE_FILE: &str = "berth-stale";

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
    /// For a primary: its replicas' host names on the instance's network, for the
    /// failsafe (see [`lease`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_hosts: Vec<String>,
    /// Every member of the instance and its host name, for agents that elect a new
    /// primary among themselves (an external lease store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<(crate::MemberId, String)>,
    /// Whether the members may promote one of themselves when the primary fails
    /// (automatic failover, not paused).
    #[serde(default)]
    pub auto_failover: bool,
    /// The most an asynchronous promotion may lack, in bytes.
    #[serde(default)]
    pub max_failover_lag: u64,
    /// How many replicas confirm a commit.
    #[serde(default)]
    pub sync: u8,
    /// Whether commits wait for a missing synchronous replica.
    #[serde(default)]
    pub sync_mode: crate::member::SyncMode,
    /// The name every member's certificate carries (`tls::internal_name`), for a
    /// member that connects to another over TLS and checks who answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The leader lease as the control plane grants it to a primary's agent, and the
/// failsafe between a primary and its replicas (see `ARCHITECTURE.md`, "Leases and
/// failover").
///
/// Timing: the control plane notes the instant `s` before it *sends* a grant of
/// `ttl`, and treats the lease as held until `s + ttl`. The grant carries the
/// control plane's wall-clock time of sending. The agent, receiving it at `r`,
/// counts from when it was *sent*, `r − (its wall clock − the grant's)`
/// ([`lease::sent_at`]), never from `r`: a grant that waited in a frozen agent's
/// socket would otherwise give it a lease the control plane has long counted as
/// expired. It takes writes only until `sent + ttl − margin(ttl)` and its watchdog
/// stops the engine at that plus `WATCHDOG_GRACE`, both on the monotonic clock; a
/// grant that arrives after that point is refused. This holds while the two clocks'
/// rates differ by less than `margin/ttl` (30 % here; real clocks differ by parts
/// per million, and the members of one Docker host share one clock) and their wall
/// clocks by less than [`lease::CLOCK_SKEW`] (one host: not at all).
pub mod lease {
    use std::time::Duration;

    /// `POST /lease` (control plane's token): a grant or renewal.
    pub const LEASE_PATH: &str = "/lease";
    /// `POST /failsafe` (replication password): a primary asks a replica to confirm
    /// it still follows and will not promote for a while.
    pub const FAILSAFE_PATH: &str = "/failsafe";
    /// How long a grant lasts.
    pub const TTL: Duration = Duration::from_secs(5);
    /// How often the control plane renews.
    pub const RENEW_EVERY: Duration = Duration::from_millis(1000);
    /// How much later the watchdog acts than the agent itself.
    pub const WATCHDOG_GRACE: Duration = Duration::from_millis(300);

    /// What the holder takes off a grant's TTL: its own reaction time and any
    /// difference in clock rates are inside it.
    pub fn margin(ttl: Duration) -> Duration {
        ttl * 3 / 10
    }

    /// Until when a holder may write under a grant of `ttl` sent at `sent` (on the
    /// holder's monotonic clock, see [`sent_at`]).
    pub fn holder_deadline(sent: std::time::Instant, ttl: Duration) -> std::time::Instant {
        sent + ttl.saturating_sub(margin(ttl))
    }

    /// How far the wall clocks of the control plane and of the members' host may
    /// disagree (one host: they are one clock).
    pub const CLOCK_SKEW: Duration = Duration::from_millis(500);

    /// The shortest grant sent: below it the margin (30 % of the grant) no longer
    /// covers wall clocks [`CLOCK_SKEW`] apart.
    pub const MIN_GRANT: Duration = Duration::from_millis(1700);

    /// How long the next grant to a primary may last, sent at `now`: the whole TTL
    /// when the last grant was answered (or none was sent); otherwise only what is
    /// left until `granted_until`, the furthest any grant already sent may reach
    /// (`None`: not worth sending). A grant whose answer was lost may still have
    /// been taken, so the sender counts every grant it *sent*, and an unanswered
    /// primary's lease stops moving: it runs out at a bound the sender knows, yet
    /// the primary keeps it if it answers again in time.
    pub fn next_grant_ttl(
        now: std::time::Instant,
        granted_until: Option<std::time::Instant>,
        last_answered: bool,
    ) -> Option<Duration> {
        let ttl = match granted_until {
            Some(until) if !last_answered => until.saturating_duration_since(now).min(TTL),
            _ => TTL,
        };
        (ttl >= MIN_GRANT).then_some(ttl)
    }

    /// The wall clock now, in milliseconds since the Unix epoch (what a grant
    /// carries as its time of sending).
    pub fn unix_ms_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// When a grant of `ttl` sent at `sent_unix_ms` (the sender's wall clock) was
    /// sent, on this side's monotonic clock, given that it was received at
    /// `received` when this side's wall clock read `now_unix_ms`: `received` less
    /// the time it was on its way. Refused, saying why, when it was on its way so
    /// long that it no longer gives any time to write, or when it claims to come
    /// from further in the future than [`CLOCK_SKEW`] allows. A sender slightly
    /// ahead counts as no delay at all.
    pub fn sent_at(
        received: std::time::Instant,
        now_unix_ms: u64,
        sent_unix_ms: u64,
        ttl: Duration,
    ) -> Result<std::time::Instant, String> {
        if sent_unix_ms > now_unix_ms + CLOCK_SKEW.as_millis() as u64 {
            return Err(format!(
                "the grant was sent {} ms in this host's future: the clocks of the control \
                 plane and this host disagree by more than {} ms",
                sent_unix_ms - now_unix_ms,
                CLOCK_SKEW.as_millis()
            ));
        }
        let delay = Duration::from_millis(now_unix_ms.saturating_sub(sent_unix_ms));
        if delay >= ttl.saturating_sub(margin(ttl)) {
            return Err(format!(
                "the grant was sent {} ms ago and has no time left to write in: refused",
                delay.as_millis()
            ));
        }
        received
            .checked_sub(delay)
            .ok_or_else(|| "the grant's time of sending is before this host's clock began".into())
    }

    /// A grant or renewal.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Grant {
        /// The lease's term; older terms are refused.
        pub term: u64,
        /// How long it lasts from when the control plane sent it.
        pub ttl_ms: u64,
        /// When the control plane sent it (its wall clock, ms since the Unix epoch;
        /// missing reads as long ago, so the grant is refused).
        #[serde(default)]
        pub sent_unix_ms: u64,
    }

    /// The agent's answer to a grant.
    #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Held {
        /// The term the agent holds now.
        pub term: u64,
        /// The engine runs and answers.
        pub ready: bool,
        /// What the primary has written (see [`super::RoleReport::position`]).
        pub position: Option<u64>,
    }

    /// A primary's failsafe request to a replica.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Failsafe {
        /// The primary asking.
        pub primary: crate::MemberId,
        /// The term it holds.
        pub term: u64,
        /// For how long the replica promises not to promote.
        pub ttl_ms: u64,
    }

    /// `POST /promote`: the replica becomes the primary holding this lease.
    #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Promote {
        /// The new term.
        #[serde(default)]
        pub term: u64,
        /// The grant's TTL (0: no grant, a lone primary needs none).
        #[serde(default)]
        pub ttl_ms: u64,
        /// When the control plane sent it (as [`Grant::sent_unix_ms`]).
        #[serde(default)]
        pub sent_unix_ms: u64,
        /// The control plane saw the old primary's container stopped: a failsafe
        /// promise to it no longer holds anything back.
        #[serde(default)]
        pub old_primary_stopped: bool,
    }
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
    /// How far this member is in its primary's change stream: on a primary what it
    /// wrote, on a replica what it received and keeps (PostgreSQL: the LSN as a byte
    /// count; MariaDB: the primary's binlog file number × 2³² + offset). Comparable
    /// between members that follow the same primary; a failover promotes the highest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The leader-lease term this agent last held or was granted, when it knows one:
    /// of two members that say they are primary, only the higher term may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
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

#[cfg(test)]
mod lease_timing_tests {
    use super::lease::{holder_deadline, margin, sent_at, CLOCK_SKEW, TTL};
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_grant_counts_from_when_it_was_sent() {
        let received = Instant::now() + Duration::from_secs(60);
        let at = sent_at(received, 1_000_000, 999_000, TTL).expect("fresh enough");
        assert_eq!(received - at, Duration::from_millis(1000));
        // The sender's clock a little ahead: no delay, not a refusal.
        let at = sent_at(received, 1_000_000, 1_000_300, TTL).expect("within the skew");
        assert_eq!(at, received);
    }

    #[test]
    fn a_grant_held_up_past_its_use_or_from_the_future_is_refused() {
        let received = Instant::now() + Duration::from_secs(60);
        // A grant that waited while the agent was frozen.
        let late = TTL.saturating_sub(margin(TTL)).as_millis() as u64;
        let err = sent_at(received, 1_000_000, 1_000_000 - late, TTL).expect_err("late");
        assert!(err.contains("no time left"), "{err}");
        let ahead = CLOCK_SKEW.as_millis() as u64 + 1;
        let err = sent_at(received, 1_000_000, 1_000_000 + ahead, TTL).expect_err("future");
        assert!(err.contains("disagree"), "{err}");
        // A grant with no time of sending reads as sent long ago.
        assert!(sent_at(received, 1_000_000, 0, TTL).is_err());
    }

    #[test]
    fn an_unanswered_primary_gets_no_grant_past_what_was_already_granted() {
        use super::lease::{next_grant_ttl, MIN_GRANT};
        let t0 = Instant::now();
        // Answered, or nothing sent yet: a whole TTL.
        assert_eq!(next_grant_ttl(t0, None, false), Some(TTL));
        assert_eq!(next_grant_ttl(t0, Some(t0 + TTL), true), Some(TTL));
        // Unanswered: what is left of the furthest grant, and nothing once too little.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            next_grant_ttl(later, Some(t0 + TTL), false),
            Some(TTL - Duration::from_secs(2))
        );
        let end = t0 + TTL - MIN_GRANT / 2;
        assert_eq!(next_grant_ttl(end, Some(t0 + TTL), false), None);
    }

    proptest! {
        /// However the answers come and go, the furthest reach of the grants sent
        /// never passes the last answered grant's sending plus TTL plus one renewal
        /// (the first unanswered grant is whole), so an unanswered primary's lease
        /// runs out at a bound the sender knows.
        #[test]
        fn grants_to_a_silent_primary_stop_moving(
            answered in proptest::collection::vec(any::<bool>(), 1..40),
        ) {
            use super::lease::{next_grant_ttl, RENEW_EVERY};
            let t0 = Instant::now();
            let mut granted_until: Option<Instant> = None;
            let mut last_answered = true;
            let mut last_answered_sent = t0;
            for (i, ok) in answered.iter().enumerate() {
                let now = t0 + RENEW_EVERY * i as u32;
                if let Some(ttl) = next_grant_ttl(now, granted_until, last_answered) {
                    let until = now + ttl;
                    granted_until = Some(granted_until.map_or(until, |g| g.max(until)));
                    last_answered = *ok;
                    if *ok {
                        last_answered_sent = now;
                    }
                }
                let bound = last_answered_sent + TTL + RENEW_EVERY;
                prop_assert!(granted_until.is_some_and(|g| g <= bound));
            }
        }

        /// Whatever the delay and a wall-clock disagreement within the bound, the
        /// holder stops writing before the sender can count the lease expired
        /// (`s + ttl`, with the sender and receiver sharing one monotonic clock).
        #[test]
        fn the_holder_stops_before_the_sender_counts_the_lease_free(
            delay_ms in 0u64..20_000,
            skew_ms in -(CLOCK_SKEW.as_millis() as i64)..=CLOCK_SKEW.as_millis() as i64,
            ttl_ms in super::lease::MIN_GRANT.as_millis() as u64..=TTL.as_millis() as u64,
        ) {
            let ttl = Duration::from_millis(ttl_ms);
            let s = Instant::now() + Duration::from_secs(100);
            let received = s + Duration::from_millis(delay_ms);
            let sent_unix = 5_000_000u64;
            // The receiver's wall clock, off by the skew.
            let now_unix = (sent_unix + delay_ms) as i64 + skew_ms;
            if let Ok(at) = sent_at(received, now_unix as u64, sent_unix, ttl) {
                let until = holder_deadline(at, ttl);
                prop_assert!(until <= s + ttl, "writes until {:?} after s", until - s);
                prop_assert!(delay_ms as i64 + skew_ms < (ttl - margin(ttl)).as_millis() as i64);
            }
        }
    }
}

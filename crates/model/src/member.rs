//! Members: the containers an instance is made of, one primary and its replicas, and
//! the rules for how many there may be and how many must confirm a commit.
//!
//! The topology is stored with the instance. Member ids are small numbers that name
//! the member's container and volume (`berth-<name>-<id8>-<n>`); a scale-up takes the
//! lowest free ids, a scale-down removes the highest replicas, and the primary is
//! never removed. Which member is primary changes only by switchover (and, later,
//! failover), never by scaling.

use crate::{EngineKind, MemberId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default `--max-lag`, in milliseconds: a replica further behind gets no new
/// read-only connections.
pub const DEFAULT_MAX_LAG_MS: u64 = 10_000;

/// The most members an instance may have.
pub const MAX_MEMBERS: u16 = 5;

/// Whether commits wait for synchronous replicas that are missing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Commits wait until K replicas have them, even when fewer than K are up: an
    /// acknowledged commit is never on one member only.
    #[default]
    Strict,
    /// Commits go on asynchronously while a synchronous replica is missing (an event
    /// records it), and wait again once it is back.
    Available,
}

impl SyncMode {
    /// The mode as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Available => "available",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "available" => Ok(Self::Available),
            _ => Err(format!(
                "unknown sync mode {s:?}; use strict (commits wait for the replicas) or \
                 available (commits go on asynchronously while a replica is missing)"
            )),
        }
    }
}

/// A member's role as Berth assigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Takes writes; the replicas follow it.
    Primary,
    /// Follows the primary, read-only.
    Replica,
}

impl Role {
    /// The role as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// The instance's members and how they replicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Every member, ascending.
    pub members: Vec<MemberId>,
    /// The member that takes writes.
    pub primary: MemberId,
    /// How many replicas must have a commit before it returns (0: asynchronous).
    #[serde(default)]
    pub sync: u8,
    /// What happens while fewer than `sync` replicas are there.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// A replica further behind than this gets no new read-only connections.
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// The leader lease's term: raised at every change of primary (switchover and
    /// failover). An agent refuses a grant of an older term.
    #[serde(default)]
    pub term: u64,
    /// Whether the control plane promotes a replica by itself when the primary fails.
    #[serde(default)]
    pub failover: FailoverMode,
    /// Asynchronous instances: the most a replica may be behind (bytes of the
    /// primary's change stream) and still be promoted by an automatic failover.
    #[serde(default = "default_max_failover_lag")]
    pub max_failover_lag: u64,
    /// Automatic failover is held for maintenance (`berth failover pause`): like
    /// `manual` until resumed, whatever `failover` says.
    #[serde(default)]
    pub failover_paused: bool,
}

fn default_max_lag_ms() -> u64 {
    DEFAULT_MAX_LAG_MS
}

fn default_max_failover_lag() -> u64 {
    DEFAULT_MAX_FAILOVER_LAG
}

/// Default `--max-failover-lag`: 1 MiB of the primary's change stream.
pub const DEFAULT_MAX_FAILOVER_LAG: u64 = 1024 * 1024;

/// Whether failover is automatic.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverMode {
    /// The control plane promotes the best replica when the primary fails.
    #[default]
    Auto,
    /// Only `berth failover` promotes; a failed primary is restarted in place.
    Manual,
}

impl FailoverMode {
    /// The mode as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for FailoverMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailoverMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "manual" => Ok(Self::Manual),
            _ => Err(format!(
                "unknown failover mode {s:?}; use auto (a replica is promoted when the \
                 primary fails) or manual (only `berth failover` promotes)"
            )),
        }
    }
}

impl Default for Topology {
    /// One member, the primary, asynchronous: every instance before members existed.
    fn default() -> Self {
        Self {
            members: vec![MemberId(0)],
            primary: MemberId(0),
            sync: 0,
            sync_mode: SyncMode::Strict,
            max_lag_ms: default_max_lag_ms(),
            term: 0,
            failover: FailoverMode::Auto,
            max_failover_lag: DEFAULT_MAX_FAILOVER_LAG,
            failover_paused: false,
        }
    }
}

/// Why a member count or sync setting was refused. Each message says what to ask for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// Out of range.
    #[error("an instance has from 1 to {MAX_MEMBERS} members; {0} was asked")]
    Count(u16),
    /// More synchronous replicas than replicas.
    #[error(
        "--sync {sync} needs at least {} members (a primary and {sync} replicas); \
         ask for --members {} or a smaller --sync",
        u16::from(*sync) + 1,
        u16::from(*sync) + 1
    )]
    SyncBeyondReplicas {
        /// What was asked.
        sync: u8,
    },
    /// Out of range.
    #[error("--max-lag must be from 100 ms to 24 h; {0} ms was asked")]
    MaxLag(u64),
    /// The engine cannot wait for that many.
    #[error(
        "MariaDB's semi-synchronous replication waits for one replica only, so --sync {0} \
         cannot be honoured; use --sync 1 (or 0 for asynchronous)"
    )]
    EngineSyncLimit(u8),
    /// A bad `--max-failover-lag`.
    #[error(transparent)]
    MaxFailoverLag(#[from] crate::bytes::BytesError),
}

/// Checks a `--max-lag` in milliseconds.
pub fn check_max_lag(ms: u64) -> Result<u64, MemberError> {
    if (100..=86_400_000).contains(&ms) {
        Ok(ms)
    } else {
        Err(MemberError::MaxLag(ms))
    }
}

/// Checks a member count and sync setting for an engine.
pub fn check(engine: EngineKind, members: u16, sync: u8) -> Result<(), MemberError> {
    if members == 0 || members > MAX_MEMBERS {
        return Err(MemberError::Count(members));
    }
    if u16::from(sync) >= members {
        return Err(MemberError::SyncBeyondReplicas { sync });
    }
    if engine == EngineKind::Mariadb && sync > 1 {
        return Err(MemberError::EngineSyncLimit(sync));
    }
    Ok(())
}

impl Topology {
    /// A new instance's topology: member 0 is the primary.
    pub fn new(members: u16, sync: u8, sync_mode: SyncMode) -> Self {
        Self {
            members: (0..members.clamp(1, MAX_MEMBERS)).map(MemberId).collect(),
            primary: MemberId(0),
            sync,
            sync_mode,
            max_lag_ms: default_max_lag_ms(),
            term: 0,
            failover: FailoverMode::Auto,
            max_failover_lag: DEFAULT_MAX_FAILOVER_LAG,
            failover_paused: false,
        }
    }

    /// Whether the control plane promotes a replica by itself when the primary
    /// fails: there is a replica, the mode is `auto` and it is not paused. When not,
    /// a failed primary is repaired in place and only `berth failover` promotes.
    pub fn fails_over_automatically(&self) -> bool {
        self.members.len() > 1 && self.failover == FailoverMode::Auto && !self.failover_paused
    }

    /// The replicas, ascending.
    pub fn replicas(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.iter().copied().filter(|m| *m != self.primary)
    }

    /// The member's role.
    pub fn role(&self, member: MemberId) -> Option<Role> {
        if member == self.primary {
            Some(Role::Primary)
        } else if self.members.contains(&member) {
            Some(Role::Replica)
        } else {
            None
        }
    }

    /// The topology with `count` members: new replicas take the lowest free ids, and
    /// a scale-down removes the highest replicas; the primary always stays.
    pub fn scaled(&self, count: u16) -> Topology {
        let count = count.clamp(1, MAX_MEMBERS) as usize;
        let mut members = self.members.clone();
        let mut next = 0u16;
        while members.len() < count {
            if !members.contains(&MemberId(next)) {
                members.push(MemberId(next));
            }
            next += 1;
        }
        members.sort();
        while members.len() > count {
            let Some(victim) = members.iter().rev().copied().find(|m| *m != self.primary) else {
                break;
            };
            members.retain(|m| *m != victim);
        }
        Topology {
            members,
            ..self.clone()
        }
    }

    /// Members of `self` that `other` no longer has.
    pub fn removed_in(&self, other: &Topology) -> Vec<MemberId> {
        self.members
            .iter()
            .copied()
            .filter(|m| !other.members.contains(m))
            .collect()
    }
}

/// The name a replica's replication connection and (PostgreSQL) slot carry, the same
/// on both sides: `berth_m<n>`.
pub fn replication_name(member: MemberId) -> String {
    format!("berth_m{}", member.0)
}

/// The member's name as users see it: `<instance>-<n>`.
pub fn display_name(instance: &crate::InstanceName, member: MemberId) -> String {
    format!("{instance}-{}", member.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_and_sync_are_checked_with_what_to_ask() {
        assert!(check(EngineKind::Postgres, 3, 1).is_ok());
        assert!(check(EngineKind::Postgres, 5, 4).is_ok());
        assert!(check(EngineKind::Postgres, 1, 0).is_ok());
        assert_eq!(
            check(EngineKind::Postgres, 0, 0),
            Err(MemberError::Count(0))
        );
        assert_eq!(
            check(EngineKind::Postgres, 6, 0),
            Err(MemberError::Count(6))
        );
        let e = check(EngineKind::Postgres, 2, 2).expect_err("refused");
        assert!(e.to_string().contains("--members 3"), "{e}");
        let e = check(EngineKind::Mariadb, 3, 2).expect_err("refused");
        assert!(e.to_string().contains("one replica only"), "{e}");
        assert!(check(EngineKind::Mariadb, 3, 1).is_ok());
    }

    #[test]
    fn only_auto_unpaused_with_a_replica_fails_over_by_itself() {
        let mut t = Topology::new(2, 1, SyncMode::Strict);
        assert!(t.fails_over_automatically());
        t.failover_paused = true;
        assert!(!t.fails_over_automatically());
        t.failover_paused = false;
        t.failover = FailoverMode::Manual;
        assert!(!t.fails_over_automatically());
        assert!(!Topology::new(1, 0, SyncMode::Strict).fails_over_automatically());
    }

    #[test]
    fn a_topology_stored_before_failover_control_reads_as_auto_unpaused() {
        let old = r#"{"members":[0,1],"primary":0,"sync":1}"#;
        let t: Topology = serde_json::from_str(old).expect("old topology");
        assert_eq!(t.failover, FailoverMode::Auto);
        assert!(!t.failover_paused);
        assert_eq!(t.max_failover_lag, DEFAULT_MAX_FAILOVER_LAG);
    }

    #[test]
    fn scaling_keeps_the_primary_and_reuses_low_ids() {
        let mut t = Topology::new(3, 1, SyncMode::Strict);
        t.primary = MemberId(2);
        let down = t.scaled(1);
        assert_eq!(down.members, vec![MemberId(2)]);
        assert_eq!(t.removed_in(&down), vec![MemberId(0), MemberId(1)]);
        let up = down.scaled(3);
        assert_eq!(up.members, vec![MemberId(0), MemberId(1), MemberId(2)]);
        assert_eq!(up.primary, MemberId(2));
        assert_eq!(up.role(MemberId(0)), Some(Role::Replica));
        assert_eq!(up.role(MemberId(4)), None);
    }

    proptest! {
        #[test]
        fn any_scale_keeps_the_primary_and_the_count(
            start in 1u16..=5, primary_pick in 0u16..5, steps in proptest::collection::vec(1u16..=5, 1..8)
        ) {
            let mut t = Topology::new(start, 0, SyncMode::Strict);
            t.primary = t.members[(primary_pick as usize) % t.members.len()];
            let primary = t.primary;
            for n in steps {
                let next = t.scaled(n);
                prop_assert_eq!(next.members.len(), n as usize);
                prop_assert!(next.members.contains(&primary));
                prop_assert!(next.members.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(next.members.iter().all(|m| m.0 < MAX_MEMBERS));
                // Members that stay keep their ids: a scale never renames a volume.
                let kept: Vec<_> = t.members.iter().filter(|m| next.members.contains(m)).collect();
                prop_assert_eq!(kept.len(), t.members.len().min(n as usize));
                t = next;
            }
        }
    }
}

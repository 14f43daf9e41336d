//! The event log: what changed, in order, for people and tools to follow.
//!
//! Kinds are one enum so that the kinds of later issues (members, roles,
//! switchover, sync) slot in with their serde names, and every consumer matches
//! them exhaustively. Which lifecycle event a status change is, is decided here
//! ([`for_transition`]), purely, so the store only writes what this says.
//!
//! Invariant: no secret appears in an event. Events are built from names, kinds,
//! statuses, sizes and reasons; never from a request body, a password or a token.

use crate::{InstanceEvent, InstanceStatus, TaskKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What kind of change an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    /// The create task finished: the instance serves.
    #[serde(rename = "instance.created")]
    InstanceCreated,
    /// The start task finished.
    #[serde(rename = "instance.started")]
    InstanceStarted,
    /// The stop task finished.
    #[serde(rename = "instance.stopped")]
    InstanceStopped,
    /// The restart task finished.
    #[serde(rename = "instance.restarted")]
    InstanceRestarted,
    /// A task gave up and left the instance failed (the message says why).
    #[serde(rename = "instance.failed")]
    InstanceFailed,
    /// A repair brought a member back.
    #[serde(rename = "instance.repaired")]
    InstanceRepaired,
    /// The instance is gone.
    #[serde(rename = "instance.deleted")]
    InstanceDeleted,
    /// CPU or memory changed (details: `from`, `to`).
    #[serde(rename = "instance.resized")]
    InstanceResized,
    /// Reconcile saw the instance down.
    #[serde(rename = "status.down")]
    StatusDown,
    /// Reconcile saw the instance healthy again.
    #[serde(rename = "status.healthy")]
    StatusHealthy,
    /// A member received its group's settings (details: group, revision, pending restart).
    #[serde(rename = "parameters.applied")]
    ParametersApplied,
    /// A parameter group's settings changed (details: revision, names set and unset).
    #[serde(rename = "parameters.group-changed")]
    ParamGroupChanged,
    /// A group was attached to or detached from an instance.
    #[serde(rename = "parameters.attached")]
    ParamGroupAttached,
    /// A member received a new server certificate.
    #[serde(rename = "certificate.renewed")]
    CertificateRenewed,
    /// A task began.
    #[serde(rename = "task.began")]
    TaskBegan,
    /// A task finished its last step.
    #[serde(rename = "task.succeeded")]
    TaskSucceeded,
    /// A task gave up.
    #[serde(rename = "task.failed")]
    TaskFailed,
    /// An API call changed something (details: method, path template, status, token name).
    #[serde(rename = "api")]
    Api,
    /// A member joined an instance (replicas; not emitted yet).
    #[serde(rename = "member.added")]
    MemberAdded,
    /// A member left an instance (replicas; not emitted yet).
    #[serde(rename = "member.removed")]
    MemberRemoved,
    /// A member's role changed (replicas; not emitted yet).
    #[serde(rename = "member.role-changed")]
    RoleChanged,
    /// A switchover began (not emitted yet).
    #[serde(rename = "switchover.begun")]
    SwitchoverBegun,
    /// A switchover finished (not emitted yet).
    #[serde(rename = "switchover.done")]
    SwitchoverDone,
    /// A switchover failed (not emitted yet).
    #[serde(rename = "switchover.failed")]
    SwitchoverFailed,
    /// Synchronous replication fell behind (not emitted yet).
    #[serde(rename = "sync.degraded")]
    SyncDegraded,
    /// Synchronous replication caught up (not emitted yet).
    #[serde(rename = "sync.restored")]
    SyncRestored,
    /// The schedule started a backup, or skipped a run it could not start (details:
    /// slot, backup or reason).
    #[serde(rename = "backup.scheduled")]
    BackupScheduled,
    /// Retention deleted a backup (details: backup, started_at, the rule).
    #[serde(rename = "backup.expired")]
    BackupExpired,
    /// An instance's backup schedule or retention changed (details: the new policy).
    #[serde(rename = "backup.policy-changed")]
    BackupPolicyChanged,
    /// A backup was restored into a throwaway instance and checked: it is good
    /// (details: backup, detail).
    #[serde(rename = "backup.verified")]
    BackupVerified,
    /// A backup could not be restored, or what it restored is damaged (details:
    /// backup, reason).
    #[serde(rename = "backup.verify-failed")]
    BackupVerifyFailed,
    /// A backup's verification could not run to its end for a reason that is not
    /// the backup's (details: backup, reason).
    #[serde(rename = "backup.verify-inconclusive")]
    BackupVerifyInconclusive,
    /// An alarm went to another state (details: alarm, from, to, reason).
    #[serde(rename = "alarm.state-changed")]
    AlarmStateChanged,
    /// A notification was sent to a webhook (details: alarm, webhook, attempt, outcome).
    #[serde(rename = "notification.attempted")]
    NotificationAttempted,
    /// The primary failed and a replica was promoted (details: primary, was,
    /// reason, may_lose_bytes, fenced_by).
    #[serde(rename = "failover.done")]
    FailoverDone,
    /// The primary failed and no replica could be promoted (details: was, reason).
    #[serde(rename = "failover.declined")]
    FailoverDeclined,
    /// A former primary came back as a replica (details: member, how, discarded).
    #[serde(rename = "member.rejoined")]
    MemberRejoined,
    /// The control plane judged the primary failed (details: member, reason,
    /// silent_ms).
    #[serde(rename = "primary.failed")]
    PrimaryFailed,
    /// A failed primary was fenced: it can write no more (details: member, how,
    /// waited_ms).
    #[serde(rename = "member.fenced")]
    MemberFenced,
    /// Automatic failover was paused for maintenance (details: failover mode).
    #[serde(rename = "failover.paused")]
    FailoverPaused,
    /// Automatic failover was resumed (details: failover mode).
    #[serde(rename = "failover.resumed")]
    FailoverResumed,
}

impl EventKind {
    /// Every kind, for exhaustive tests and parsing.
    pub const ALL: [EventKind; 41] = [
        Self::InstanceCreated,
        Self::InstanceStarted,
        Self::InstanceStopped,
        Self::InstanceRestarted,
        Self::InstanceFailed,
        Self::InstanceRepaired,
        Self::InstanceDeleted,
        Self::InstanceResized,
        Self::StatusDown,
        Self::StatusHealthy,
        Self::ParametersApplied,
        Self::ParamGroupChanged,
        Self::ParamGroupAttached,
        Self::CertificateRenewed,
        Self::TaskBegan,
        Self::TaskSucceeded,
        Self::TaskFailed,
        Self::Api,
        Self::MemberAdded,
        Self::MemberRemoved,
        Self::RoleChanged,
        Self::SwitchoverBegun,
        Self::SwitchoverDone,
        Self::SwitchoverFailed,
        Self::SyncDegraded,
        Self::SyncRestored,
        Self::BackupScheduled,
        Self::BackupExpired,
        Self::BackupPolicyChanged,
        Self::BackupVerified,
        Self::BackupVerifyFailed,
        Self::BackupVerifyInconclusive,
        Self::AlarmStateChanged,
        Self::NotificationAttempted,
        Self::FailoverDone,
        Self::FailoverDeclined,
        Self::MemberRejoined,
        Self::PrimaryFailed,
        Self::MemberFenced,
        Self::FailoverPaused,
        Self::FailoverResumed,
    ];

    /// The kind as stored and as the API spells it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceCreated => "instance.created",
            Self::InstanceStarted => "instance.started",
            Self::InstanceStopped => "instance.stopped",
            Self::InstanceRestarted => "instance.restarted",
            Self::InstanceFailed => "instance.failed",
            Self::InstanceRepaired => "instance.repaired",
            Self::InstanceDeleted => "instance.deleted",
            Self::InstanceResized => "instance.resized",
            Self::StatusDown => "status.down",
            Self::StatusHealthy => "status.healthy",
            Self::ParametersApplied => "parameters.applied",
            Self::ParamGroupChanged => "parameters.group-changed",
            Self::ParamGroupAttached => "parameters.attached",
            Self::CertificateRenewed => "certificate.renewed",
            Self::TaskBegan => "task.began",
            Self::TaskSucceeded => "task.succeeded",
            Self::TaskFailed => "task.failed",
            Self::Api => "api",
            Self::MemberAdded => "member.added",
            Self::MemberRemoved => "member.removed",
            Self::RoleChanged => "member.role-changed",
            Self::SwitchoverBegun => "switchover.begun",
            Self::SwitchoverDone => "switchover.done",
            Self::SwitchoverFailed => "switchover.failed",
            Self::SyncDegraded => "sync.degraded",
            Self::SyncRestored => "sync.restored",
            Self::BackupScheduled => "backup.scheduled",
            Self::BackupExpired => "backup.expired",
            Self::BackupPolicyChanged => "backup.policy-changed",
            Self::BackupVerified => "backup.verified",
            Self::BackupVerifyFailed => "backup.verify-failed",
            Self::BackupVerifyInconclusive => "backup.verify-inconclusive",
            Self::AlarmStateChanged => "alarm.state-changed",
            Self::NotificationAttempted => "notification.attempted",
            Self::FailoverDone => "failover.done",
            Self::FailoverDeclined => "failover.declined",
            Self::MemberRejoined => "member.rejoined",
            Self::PrimaryFailed => "primary.failed",
            Self::MemberFenced => "member.fenced",
            Self::FailoverPaused => "failover.paused",
            Self::FailoverResumed => "failover.resumed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// An event about to be written (the store gives it its `seq` and time).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The instance it is about, by id, if any.
    pub instance_id: Option<crate::InstanceId>,
    /// The instance's name then (kept: names are reused, and a deleted instance's
    /// history stays findable by it).
    pub instance_name: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// One sentence for people.
    pub message: String,
    /// Facts for tools (never a secret).
    pub details: serde_json::Value,
}

impl NewEvent {
    /// An event about an instance.
    pub fn instance(
        id: crate::InstanceId,
        name: &str,
        kind: EventKind,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            instance_id: Some(id),
            instance_name: Some(name.to_owned()),
            kind,
            message: message.into(),
            details,
        }
    }
}

/// An event as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the log: strictly increasing, the cursor to resume after.
    pub seq: i64,
    /// When it was written (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The instance's id, when the event is about one.
    pub instance_id: Option<String>,
    /// The instance's name then.
    pub instance: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// One sentence for people.
    pub message: String,
    /// Facts for tools; by kind.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The lifecycle event a status change is, if any: `event` moved the instance from
/// `from` to `to`; `detail` is the reason a failure or an observation gave.
pub fn for_transition(
    from: InstanceStatus,
    to: InstanceStatus,
    event: InstanceEvent,
    detail: Option<&str>,
) -> Option<(EventKind, String)> {
    use EventKind as K;
    use InstanceEvent as E;
    use InstanceStatus as S;
    let why = detail.map(|d| format!(": {d}")).unwrap_or_default();
    Some(match event {
        E::Began(_) => return None,
        E::Succeeded(kind) => match kind {
            TaskKind::Create => (K::InstanceCreated, "instance created".to_owned()),
            TaskKind::Start => (K::InstanceStarted, "instance started".to_owned()),
            TaskKind::Stop => (K::InstanceStopped, "instance stopped".to_owned()),
            TaskKind::Restart => (K::InstanceRestarted, "instance restarted".to_owned()),
            TaskKind::Repair => (K::InstanceRepaired, "instance repaired".to_owned()),
            TaskKind::Delete => (K::InstanceDeleted, "instance deleted".to_owned()),
            // Their own events (resized, parameters applied, the backup task) say
            // what changed.
            // (the members added and removed, for a scale).
            TaskKind::Resize
            | TaskKind::Reconfigure
            | TaskKind::Backup
            | TaskKind::Scale
            | TaskKind::Switchover
            | TaskKind::Failover
            // A verification's own events (verified, verify failed) name the backup.
            | TaskKind::Verify => return None,
        },
        E::Failed(TaskKind::Verify) => return None,
        E::Failed(kind) if to == S::Failed => (K::InstanceFailed, format!("{kind} failed{why}")),
        // A failed repair leaves it unavailable, a failed live change as it was:
        // the task's own event says so.
        E::Failed(_) => return None,
        E::ObservedDown if to == S::Unavailable && from != S::Unavailable => {
            (K::StatusDown, format!("observed down{why}"))
        }
        E::ObservedHealthy if to == S::Available && from != S::Available => {
            (K::StatusHealthy, "observed healthy again".to_owned())
        }
        E::ObservedDown | E::ObservedHealthy => return None,
    })
}

/// The least retention `berth serve` accepts: history is never silently shorter.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The retention when none is given.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses an age like `90s`, `10m`, `2h`, `30d` or `1w` (a whole number and a unit).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let usage = || format!("{s:?} is not an age like 90s, 10m, 2h, 30d or 1w");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (n, unit) = s.split_at(split);
    if n.is_empty() || n.len() > 9 {
        return Err(usage());
    }
    let n: u64 = n.parse().map_err(|_| usage())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        "w" => 7 * 24 * 3600,
        _ => return Err(usage()),
    };
    Ok(Duration::from_secs(n * secs))
}

/// Parses `--event-retention`: an age of at least [`MIN_RETENTION`]; a shorter one
/// is refused rather than quietly raised.
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = parse_age(s)?;
    if d < MIN_RETENTION {
        return Err(format!(
            "an event retention of {s} is shorter than the least Berth keeps (1d); give 1d or more"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip_through_their_serde_names() {
        for k in EventKind::ALL {
            let json = serde_json::to_value(k).expect("serialise");
            assert_eq!(json, k.as_str());
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
    }

    #[test]
    fn lifecycle_transitions_name_their_event() {
        use InstanceEvent as E;
        use InstanceStatus as S;
        let cases = [
            (
                S::Creating,
                E::Succeeded(TaskKind::Create),
                Some(EventKind::InstanceCreated),
            ),
            (
                S::Stopping,
                E::Succeeded(TaskKind::Stop),
                Some(EventKind::InstanceStopped),
            ),
            (
                S::Starting,
                E::Succeeded(TaskKind::Start),
                Some(EventKind::InstanceStarted),
            ),
            (
                S::Restarting,
                E::Succeeded(TaskKind::Restart),
                Some(EventKind::InstanceRestarted),
            ),
            (
                S::Repairing,
                E::Succeeded(TaskKind::Repair),
                Some(EventKind::InstanceRepaired),
            ),
            (
                S::Deleting,
                E::Succeeded(TaskKind::Delete),
                Some(EventKind::InstanceDeleted),
            ),
            (
                S::Creating,
                E::Failed(TaskKind::Create),
                Some(EventKind::InstanceFailed),
            ),
            (S::Repairing, E::Failed(TaskKind::Repair), None),
            (S::Modifying, E::Succeeded(TaskKind::Resize), None),
            (S::Available, E::ObservedDown, Some(EventKind::StatusDown)),
            (S::Unavailable, E::ObservedDown, None),
            (
                S::Unavailable,
                E::ObservedHealthy,
                Some(EventKind::StatusHealthy),
            ),
            (
                S::Failed,
                E::ObservedHealthy,
                Some(EventKind::StatusHealthy),
            ),
            (S::Available, E::ObservedHealthy, None),
            (S::Stopped, E::ObservedDown, None),
            (S::Available, E::Began(TaskKind::Stop), None),
        ];
        for (from, event, want) in cases {
            let to = from.transition(event).expect("valid edge");
            let got = for_transition(from, to, event, Some("why")).map(|(k, _)| k);
            assert_eq!(got, want, "{from} on {event:?}");
        }
        let (_, msg) = for_transition(
            S::Creating,
            S::Failed,
            E::Failed(TaskKind::Create),
            Some("image missing"),
        )
        .expect("failed");
        assert_eq!(msg, "create failed: image missing");
    }

    #[test]
    fn ages_and_retention_parse_strictly() {
        assert_eq!(parse_age("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_age("30d"), Ok(DEFAULT_RETENTION));
        for bad in [
            "",
            "10",
            "m",
            "-1d",
            "1.5d",
            "10 years",
            "1y",
            "9999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_retention("1d"), Ok(MIN_RETENTION));
        assert!(parse_retention("23h").is_err());
        assert!(parse_retention("0d").is_err());
        assert!(parse_retention("soon").is_err());
    }

    proptest! {
        #[test]
        fn parse_age_never_panics(s in "\\PC{0,12}") {
            let _ = parse_age(&s);
        }

        #[test]
        fn whole_ages_round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec!["s", "m", "h", "d", "w"])) {
            let d = parse_age(&format!("{n}{unit}")).expect("valid");
            prop_assert_eq!(d.as_secs() % n.max(1), 0);
        }
    }
}

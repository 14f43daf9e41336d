//! The instance lifecycle as a state machine.
//!
//! Tasks move an instance through transitional states; reconcile reports what it
//! observed. Both go through [`InstanceStatus::transition`], so a status can only
//! change along an edge tested below.

use crate::TaskKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    /// The create task is running.
    Creating,
    /// Running and answering.
    Available,
    /// Meant to run, but reconcile found it down or not answering.
    Unavailable,
    /// The stop task is running.
    Stopping,
    /// Stopped by the user.
    Stopped,
    /// The start task is running.
    Starting,
    /// The restart task is running.
    Restarting,
    /// Reconcile is bringing back a member that went missing.
    Repairing,
    /// A live change is being applied (resize, settings); the instance keeps serving.
    Modifying,
    /// The delete task is running.
    Deleting,
    /// Gone.
    Deleted,
    /// The last task failed; the instance's task tells why.
    Failed,
}

impl InstanceStatus {
    /// Every status, for exhaustive tests.
    pub const ALL: [InstanceStatus; 12] = [
        Self::Creating,
        Self::Available,
        Self::Unavailable,
        Self::Stopping,
        Self::Stopped,
        Self::Starting,
        Self::Restarting,
        Self::Repairing,
        Self::Modifying,
        Self::Deleting,
        Self::Deleted,
        Self::Failed,
    ];

    /// The status's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Unavailable => "unavailable",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Restarting => "restarting",
            Self::Repairing => "repairing",
            Self::Modifying => "modifying",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }

    /// A task is working on the instance; no other may begin.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Self::Creating
                | Self::Stopping
                | Self::Starting
                | Self::Restarting
                | Self::Repairing
                | Self::Modifying
                | Self::Deleting
        )
    }

    /// The user wants it running (as opposed to stopped or gone).
    pub fn wants_running(self) -> bool {
        matches!(self, Self::Available | Self::Unavailable)
    }

    /// Moves along one edge of the lifecycle, or says why it cannot.
    pub fn transition(self, event: InstanceEvent) -> Result<InstanceStatus, InvalidTransition> {
        use InstanceEvent as E;
        use InstanceStatus as S;
        use TaskKind as K;
        let invalid = Err(InvalidTransition { from: self, event });
        match (self, event) {
            (S::Deleted, _) => invalid,
            // Beginning a task: only from a resting state that makes sense for it.
            (
                S::Creating
                | S::Stopping
                | S::Starting
                | S::Restarting
                | S::Repairing
                | S::Modifying
                | S::Deleting,
                E::Began(_),
            ) => invalid,
            // A verification's throwaway instance is made with its task, like a create.
            (_, E::Began(K::Create | K::Verify)) => invalid,
            (S::Available | S::Unavailable | S::Failed, E::Began(K::Stop)) => Ok(S::Stopping),
            (S::Stopped, E::Began(K::Stop)) => invalid,
            (S::Stopped | S::Failed | S::Unavailable, E::Began(K::Start)) => Ok(S::Starting),
            (S::Available, E::Began(K::Start)) => invalid,
            (S::Available | S::Unavailable | S::Failed, E::Began(K::Restart)) => Ok(S::Restarting),
            (S::Stopped, E::Began(K::Restart)) => invalid,
            (S::Available | S::Unavailable, E::Began(K::Repair)) => Ok(S::Repairing),
            // A failover is a repair of the instance's primary.
            (S::Available | S::Unavailable, E::Began(K::Failover)) => Ok(S::Repairing),
            (S::Stopped | S::Failed, E::Began(K::Failover)) => invalid,
            (S::Stopped | S::Failed, E::Began(K::Repair)) => invalid,
            (S::Available | S::Unavailable | S::Stopped | S::Failed, E::Began(K::Delete)) => {
                Ok(S::Deleting)
            }
            // Live changes need a running instance: they are applied to the engine.
            // A backup reads from the running engine while it keeps serving: like a
            // live change it holds the instance (one task at a time) as `modifying`.
            (
                S::Available,
                E::Began(K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover),
            ) => Ok(S::Modifying),
            (
                S::Unavailable | S::Stopped | S::Failed,
                E::Began(K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover),
            ) => invalid,
            // Finishing: only the task that is running can finish.
            (S::Creating, E::Succeeded(K::Create | K::Verify))
            | (S::Starting, E::Succeeded(K::Start))
            | (S::Restarting, E::Succeeded(K::Restart))
            | (S::Repairing, E::Succeeded(K::Repair | K::Failover)) => Ok(S::Available),
            (S::Stopping, E::Succeeded(K::Stop)) => Ok(S::Stopped),
            (S::Deleting, E::Succeeded(K::Delete)) => Ok(S::Deleted),
            (S::Creating, E::Failed(K::Create | K::Verify))
            | (S::Starting, E::Failed(K::Start))
            | (S::Restarting, E::Failed(K::Restart))
            | (S::Stopping, E::Failed(K::Stop))
            | (S::Deleting, E::Failed(K::Delete)) => Ok(S::Failed),
            (S::Repairing, E::Failed(K::Repair | K::Failover)) => Ok(S::Unavailable),
            // A live change that failed left the instance running as it was.
            // A failed backup changed nothing in the instance either.
            (
                S::Modifying,
                E::Succeeded(K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover)
                | E::Failed(K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover),
            ) => Ok(S::Available),
            (_, E::Succeeded(_) | E::Failed(_)) => invalid,
            // Observations never override a task or the user's choice to stop.
            (S::Available | S::Unavailable | S::Failed, E::ObservedHealthy) => Ok(S::Available),
            (S::Available | S::Unavailable, E::ObservedDown) => Ok(S::Unavailable),
            (S::Failed, E::ObservedDown) => Ok(S::Failed),
            (
                S::Stopped
                | S::Creating
                | S::Stopping
                | S::Starting
                | S::Restarting
                | S::Repairing
                | S::Modifying
                | S::Deleting,
                E::ObservedHealthy | E::ObservedDown,
            ) => Ok(self),
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InstanceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance status {s:?}"))
    }
}

/// Something that happens to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceEvent {
    /// A task of this kind begins.
    Began(TaskKind),
    /// A task of this kind finished its last step.
    Succeeded(TaskKind),
    /// A task of this kind gave up.
    Failed(TaskKind),
    /// Reconcile saw every member running and the engine answering.
    ObservedHealthy,
    /// Reconcile saw a member down, missing or not answering.
    ObservedDown,
}

/// An event that does not apply to the instance's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the instance is {from}, so it cannot {}", describe(*.event))]
pub struct InvalidTransition {
    /// The status it was in.
    pub from: InstanceStatus,
    /// What was attempted.
    pub event: InstanceEvent,
}

fn describe(event: InstanceEvent) -> &'static str {
    match event {
        InstanceEvent::Began(k) => match k {
            TaskKind::Create => "be created again",
            TaskKind::Start => "be started",
            TaskKind::Stop => "be stopped",
            TaskKind::Restart => "be restarted",
            TaskKind::Delete => "be deleted now",
            TaskKind::Repair => "be repaired",
            TaskKind::Resize => "be resized (it must be available)",
            TaskKind::Reconfigure => "take new settings live (it must be available)",
            TaskKind::Backup => "be backed up (it must be available)",
            TaskKind::Scale => "change its members (it must be available)",
            TaskKind::Switchover => "switch over (it must be available)",
            TaskKind::Failover => "fail over (it must be meant to run, with no task running)",
            TaskKind::Verify => "verify a backup again (its throwaway instance is made once)",
        },
        InstanceEvent::Succeeded(_) => "finish a task it is not running",
        InstanceEvent::Failed(_) => "fail a task it is not running",
        InstanceEvent::ObservedHealthy | InstanceEvent::ObservedDown => "take an observation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceEvent as E;
    use InstanceStatus as S;
    use TaskKind as K;

    fn events() -> Vec<InstanceEvent> {
        let mut v = vec![E::ObservedHealthy, E::ObservedDown];
        for k in TaskKind::ALL {
            v.extend([E::Began(k), E::Succeeded(k), E::Failed(k)]);
        }
        v
    }

    /// The whole table: every (status, event) pair, with the expected outcome.
    /// `None` means the transition is refused.
    fn expected(s: S, e: E) -> Option<S> {
        let busy = s.is_busy();
        match e {
            _ if s == S::Deleted => None,
            E::Began(_) if busy => None,
            E::Began(K::Create | K::Verify) => None,
            E::Began(K::Stop) => {
                matches!(s, S::Available | S::Unavailable | S::Failed).then_some(S::Stopping)
            }
            E::Began(K::Start) => {
                matches!(s, S::Stopped | S::Failed | S::Unavailable).then_some(S::Starting)
            }
            E::Began(K::Restart) => {
                matches!(s, S::Available | S::Unavailable | S::Failed).then_some(S::Restarting)
            }
            E::Began(K::Repair | K::Failover) => {
                matches!(s, S::Available | S::Unavailable).then_some(S::Repairing)
            }
            E::Began(K::Delete) => Some(S::Deleting),
            E::Began(K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover) => {
                (s == S::Available).then_some(S::Modifying)
            }
            E::Succeeded(k) => match (s, k) {
                (S::Creating, K::Create | K::Verify)
                | (S::Starting, K::Start)
                | (S::Restarting, K::Restart)
                | (S::Repairing, K::Repair | K::Failover) => Some(S::Available),
                (S::Stopping, K::Stop) => Some(S::Stopped),
                (S::Deleting, K::Delete) => Some(S::Deleted),
                (
                    S::Modifying,
                    K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover,
                ) => Some(S::Available),
                _ => None,
            },
            E::Failed(k) => match (s, k) {
                (S::Repairing, K::Repair | K::Failover) => Some(S::Unavailable),
                (
                    S::Modifying,
                    K::Resize | K::Reconfigure | K::Backup | K::Scale | K::Switchover,
                ) => Some(S::Available),
                (S::Creating, K::Create | K::Verify)
                | (S::Starting, K::Start)
                | (S::Restarting, K::Restart)
                | (S::Stopping, K::Stop)
                | (S::Deleting, K::Delete) => Some(S::Failed),
                _ => None,
            },
            E::ObservedHealthy => Some(if matches!(s, S::Unavailable | S::Failed) {
                S::Available
            } else {
                s
            }),
            E::ObservedDown => Some(if s == S::Available { S::Unavailable } else { s }),
        }
    }

    #[test]
    fn every_status_and_event_pair() {
        let mut checked = 0;
        for s in S::ALL {
            for e in events() {
                assert_eq!(s.transition(e).ok(), expected(s, e), "{s:?} + {e:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 12 * (2 + 3 * TaskKind::ALL.len()));
    }

    #[test]
    fn refusals_explain_themselves() {
        let err = S::Stopped
            .transition(E::Began(K::Stop))
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the instance is stopped, so it cannot be stopped"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
        }
    }
}

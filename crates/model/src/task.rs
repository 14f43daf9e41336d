//! Tasks: every operation a user (or reconcile) starts, as a durable list of steps.
//!
//! A task's steps are fixed when it is created ([`TaskKind::plan`]), each named for
//! what it ensures. Steps are idempotent, so a task interrupted anywhere is resumed by
//! running its first unfinished step again.

use crate::member::Topology;
use crate::MemberId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Create an instance.
    Create,
    /// Start a stopped instance.
    Start,
    /// Stop an instance (its data stays).
    Stop,
    /// Stop and start an instance.
    Restart,
    /// Delete an instance (the data volume only with purge).
    Delete,
    /// Bring back a member that went missing or down, on its existing volume.
    Repair,
    /// Change CPU and memory limits live, then the settings that follow memory.
    Resize,
    /// Apply the instance's parameter group to the running engine.
    Reconfigure,
    /// Take a backup of the running instance into the backup store.
    Backup,
    /// Add or remove replicas, or change how many confirm a commit, online.
    Scale,
    /// Make a replica the primary with no transaction lost; the old primary follows it.
    Switchover,
    /// The primary failed: fence it, promote the replica chosen, and let the old
    /// primary rejoin as a replica when it is back.
    Failover,
    /// Restore a backup into a throwaway instance and check what was restored; the
    /// throwaway instance is deleted afterwards, whatever was found.
    Verify,
}

impl TaskKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [TaskKind; 13] = [
        Self::Create,
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Delete,
        Self::Repair,
        Self::Resize,
        Self::Reconfigure,
        Self::Backup,
        Self::Scale,
        Self::Switchover,
        Self::Failover,
        Self::Verify,
    ];

    /// Whether a task of this kind may be stopped mid-way (`berth task cancel`, or a
    /// failover taking over the instance): it only changes a running instance live
    /// (limits, settings) or reads from it (a backup), every step is idempotent, and
    /// the instance stays available as the steps done so far left it. The others
    /// (create, scale, switchover, …) must run to their end or fail by themselves.
    pub fn stops_safely(self) -> bool {
        matches!(self, Self::Resize | Self::Reconfigure | Self::Backup)
    }

    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Delete => "delete",
            Self::Repair => "repair",
            Self::Resize => "resize",
            Self::Reconfigure => "reconfigure",
            Self::Backup => "backup",
            Self::Scale => "scale",
            Self::Switchover => "switchover",
            Self::Failover => "failover",
            Self::Verify => "verify",
        }
    }

    /// The steps a task of this kind runs, in order.
    pub fn plan(self, options: TaskOptions) -> Vec<StepName> {
        use StepName as S;
        match self {
            // Only a create makes a data volume. Everything else brings the member
            // back on the volume it has — and fails, saying so, when that is gone —
            // so a lost volume is never silently replaced by an empty database.
            Self::Create => {
                // A restore checks the backup's bytes before anything is made, so a
                // corrupt backup leaves no instance that looks usable.
                let mut steps = if options.backup.is_some() {
                    vec![S::VerifyBackup]
                } else {
                    vec![]
                };
                steps.extend(make_primary());
                // Loaded before replicas exist: they clone what is there.
                if options.backup.is_some() {
                    steps.push(S::LoadBackup);
                }
                steps.extend([S::EnsureReplication, S::EnsureReplicas, S::EnsureEndpoint]);
                steps
            }
            // A restore into an instance nobody connects to (no endpoint, no
            // replicas), then the engine's own check of what was restored.
            Self::Verify => {
                let mut steps = vec![S::VerifyBackup];
                steps.extend(make_primary());
                steps.extend([S::LoadBackup, S::CheckRestored]);
                steps
            }
            Self::Repair | Self::Start => bring_back(),
            // Also how a server certificate is renewed: a task the user sees, live.
            Self::Reconfigure => vec![S::EnsureTls, S::ApplySettings],
            Self::Resize => vec![S::UpdateLimits, S::ApplySettings],
            Self::Stop => vec![S::EnsureStopped],
            Self::Backup => vec![S::EnsureBackupStored],
            // Removed replicas go first, so their slots are inactive when dropped.
            Self::Scale => vec![
                S::EnsureTopology,
                S::EnsureImage,
                S::EnsureAgent,
                S::RemoveExtraMembers,
                S::EnsureReplication,
                S::EnsureReplicas,
                S::EnsureEndpoint,
            ],
            // Writes stop on the old primary before the target is promoted, and the
            // old primary then follows the new one like any replica.
            Self::Switchover => vec![
                S::HandOverWrites,
                S::PromoteTarget,
                S::EnsureReplication,
                S::EnsureReplicas,
                S::EnsureEndpoint,
            ],
            // The old primary is fenced (stopped through Docker, or its lease has run
            // out) before the target takes writes; it rejoins as a replica.
            // The endpoint follows before the old primary is brought back, which
            // may take long (or wait for its host).
            Self::Failover => vec![
                S::FenceOldPrimary,
                S::PromoteTarget,
                S::EnsureReplication,
                S::EnsureEndpoint,
                S::EnsureReplicas,
            ],
            // Rolling, when there is a replica to hand over to: replicas first, then
            // a switchover, whose last steps start the old primary again as a replica.
            Self::Restart if options.target_member.is_some() => vec![
                S::RestartReplicas,
                S::HandOverWrites,
                S::PromoteTarget,
                S::EnsureReplication,
                S::EnsureReplicas,
                S::EnsureEndpoint,
            ],
            Self::Restart => {
                let mut steps = vec![S::EnsureStopped];
                steps.extend(bring_back());
                steps
            }
            Self::Delete => {
                let mut steps = Vec::new();
                // The final backup, taken while the instance still serves.
                if options.backup.is_some() {
                    steps.push(S::EnsureBackupStored);
                }
                steps.extend([S::EnsureStopped, S::RemoveContainer, S::RemoveNetwork]);
                if options.purge {
                    steps.push(S::RemoveVolume);
                }
                steps.push(S::Forget);
                steps
            }
        }
    }
}

/// The steps that make a new instance's primary, from its image to an engine that
/// answers (a create's, and a verification's throwaway instance's).
fn make_primary() -> [StepName; 9] {
    use StepName as S;
    [
        S::EnsureImage,
        S::EnsureAgent,
        S::EnsureNetwork,
        S::EnsureVolume,
        S::EnsureContainer,
        S::EnsureParams,
        S::EnsureTls,
        S::EnsureRunning,
        S::WaitReady,
    ]
}

/// The steps that bring a member up on its existing data volume: the container is
/// recreated if it went missing, with this Berth's agent and the group's settings.
fn bring_back() -> Vec<StepName> {
    use StepName as S;
    vec![
        S::EnsureImage,
        S::EnsureAgent,
        S::EnsureNetwork,
        S::EnsureContainer,
        S::EnsureParams,
        S::EnsureTls,
        S::EnsureRunning,
        S::WaitReady,
        S::EnsureReplication,
        S::EnsureReplicas,
        S::EnsureEndpoint,
    ]
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown task kind {s:?}"))
    }
}

/// Options that change a task's plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskOptions {
    /// Delete: also remove the data volume.
    #[serde(default)]
    pub purge: bool,
    /// Resize: the CPU limit asked for, in thousandths of a core. The instance's
    /// stored spec takes it only once Docker has applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_millis: Option<u32>,
    /// Resize: the memory asked for, in MiB (stored like `cpus_millis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Backup: the backup this task takes (its record is made by the task's step).
    /// Delete: the final backup, taken first.
    /// Create: the backup the new instance is restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupId>,
    /// Scale: how many members the instance has at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u16>,
    /// Scale: how many replicas confirm a commit at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<u8>,
    /// Scale: whether commits wait for a missing synchronous replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_mode: Option<crate::member::SyncMode>,
    /// Scale: whether failover is automatic at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::member::FailoverMode>,
    /// Scale: the most (bytes) an asynchronous replica may be behind and still be
    /// promoted automatically, at the end (validated when the scale was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failover_lag: Option<u64>,
    /// Switchover, failover and a rolling restart: the member that becomes the
    /// primary (its number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_member: Option<u16>,
    /// Failover: the member that failed (the primary when the task began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_member: Option<u16>,
    /// Failover: bytes of the old primary's stream the target may lack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_lose: Option<u64>,
    /// Create: Berth picked the read-write port (the user did not ask for one), so
    /// it may pick another if the host takes it before the endpoint first starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub picked_port: bool,
}

/// One step, named for what it ensures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// The engine image exists locally (built from Debian packages if need be).
    EnsureImage,
    /// The volume holding this Berth's agent binary exists.
    EnsureAgent,
    /// The instance's private network exists.
    EnsureNetwork,
    /// The member's data volume exists.
    EnsureVolume,
    /// The member's container exists with the right spec.
    EnsureContainer,
    /// The member's data volume holds the parameters of its group, read at start.
    EnsureParams,
    /// The member has a valid server certificate signed by this Berth's CA (renewed
    /// when it nears its end; a running engine reloads it without a restart).
    EnsureTls,
    /// The member's container is running.
    EnsureRunning,
    /// The engine answers queries.
    WaitReady,
    /// The member's container is stopped, the engine shut down cleanly.
    EnsureStopped,
    /// The member's container is gone.
    RemoveContainer,
    /// The instance's network is gone.
    RemoveNetwork,
    /// The data volume is gone.
    RemoveVolume,
    /// The store no longer lists the instance.
    Forget,
    /// Docker's CPU and memory limits match the spec (changed live, no restart).
    UpdateLimits,
    /// The engine's settings match the spec and parameters: live ones applied, the
    /// others recorded as pending restart.
    ApplySettings,
    /// The backup's object is in the backup store, complete, with its size and
    /// checksum recorded (a repeat takes the backup again from the start).
    EnsureBackupStored,
    /// The backup to restore is complete and its stored bytes match its checksum.
    VerifyBackup,
    /// The backup's dump is loaded into the new instance (whose superuser keeps its
    /// own password).
    LoadBackup,
    /// The engine's own consistency check of a restored backup passed and every
    /// table was read to its end (recorded on the backup either way).
    CheckRestored,
    /// The stored members and sync settings are the scale's target.
    EnsureTopology,
    /// The primary serves exactly the replicas the instance has: the replication
    /// account, a slot per replica (PostgreSQL), the synchronous replicas.
    EnsureReplication,
    /// Every replica has its volume and container, runs, and follows the primary
    /// (cloned from it when its volume is new).
    EnsureReplicas,
    /// Members the instance no longer has are stopped and their containers gone
    /// (their volumes too, with purge).
    RemoveExtraMembers,
    /// The old primary takes no more writes, the target has everything it wrote,
    /// and the old primary is stopped cleanly.
    HandOverWrites,
    /// The target is the primary, takes writes, and the store says so.
    PromoteTarget,
    /// The failed primary can write no more: its container is stopped, or its
    /// lease has run out.
    FenceOldPrimary,
    /// Every replica was stopped and started again (one at a time), and follows.
    /// Tasks planned before steps named their member have it; new plans have one
    /// [`StepName::RestartReplica`] per replica.
    RestartReplicas,
    /// The step's member (a replica) was stopped cleanly, got its settings again,
    /// started, and follows the primary.
    RestartReplica,
    /// The instance's endpoint container runs on its fixed ports and routes writes
    /// to the current primary.
    EnsureEndpoint,
}

impl StepName {
    /// The step's name as the task log shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EnsureImage => "ensure_image",
            Self::EnsureAgent => "ensure_agent",
            Self::EnsureNetwork => "ensure_network",
            Self::EnsureVolume => "ensure_volume",
            Self::EnsureContainer => "ensure_container",
            Self::EnsureParams => "ensure_params",
            Self::EnsureTls => "ensure_tls",
            Self::EnsureRunning => "ensure_running",
            Self::WaitReady => "wait_ready",
            Self::EnsureStopped => "ensure_stopped",
            Self::RemoveContainer => "remove_container",
            Self::RemoveNetwork => "remove_network",
            Self::RemoveVolume => "remove_volume",
            Self::Forget => "forget",
            Self::UpdateLimits => "update_limits",
            Self::ApplySettings => "apply_settings",
            Self::EnsureBackupStored => "ensure_backup_stored",
            Self::VerifyBackup => "verify_backup",
            Self::LoadBackup => "load_backup",
            Self::CheckRestored => "check_restored",
            Self::EnsureTopology => "ensure_topology",
            Self::EnsureReplication => "ensure_replication",
            Self::EnsureReplicas => "ensure_replicas",
            Self::RemoveExtraMembers => "remove_extra_members",
            Self::HandOverWrites => "hand_over_writes",
            Self::PromoteTarget => "promote_target",
            Self::FenceOldPrimary => "fence_old_primary",
            Self::RestartReplicas => "restart_replicas",
            Self::RestartReplica => "restart_replica",
            Self::EnsureEndpoint => "ensure_endpoint",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not begun.
    Pending,
    /// Begun; after a crash it is run again (steps are idempotent).
    Running,
    /// Finished.
    Done,
    /// Gave up; the task's error says why.
    Failed,
}

/// A step and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepStatus {
    /// The step.
    pub name: StepName,
    /// The member the step acts on (its number), when it acts on one: named by the
    /// plan where the plan knows it (the target of a switchover, each replica of a
    /// rolling restart), or by the step once it has chosen (the replica a backup
    /// is taken on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u16>,
    /// Where it is.
    pub state: StepState,
    /// What it found or did, in a sentence ("volume existed", "created container …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds it took, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// How many times it could not run because something it needs was down.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// What the step decided, for the record: the replica chosen and why, the
    /// position it was caught up to, how a failed primary was fenced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub decided: BTreeMap<String, serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many times a step whose dependency is down (Docker, the store) is tried
/// before its task fails with the reason: a task never waits forever.
pub const MAX_STEP_ATTEMPTS: u32 = 5;

/// What to do after a step could not run for the `attempts`-th time: wait this long
/// and try again, or (`None`) give up and fail the task. Doubling from half a second,
/// so the whole wait is about fifteen seconds.
pub fn retry_after(attempts: u32) -> Option<std::time::Duration> {
    if attempts >= MAX_STEP_ATTEMPTS {
        return None;
    }
    let ms = 500u64.saturating_mul(1 << attempts.min(10));
    Some(std::time::Duration::from_millis(ms.min(8_000)))
}

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Accepted, not yet picked up.
    Pending,
    /// A worker runs it (or ran it when the control plane stopped: it resumes).
    Running,
    /// Every step is done.
    Succeeded,
    /// A step gave up.
    Failed,
}

impl TaskState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The task will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown task state {s:?}"))
    }
}

/// Fresh step list for a task on an instance of `topology`: the kind's plan, with
/// each step that acts on one member naming it, and a step per replica where the
/// replicas are taken one at a time (a rolling restart), so a crash resumes at the
/// replica it had reached.
pub fn initial_steps(kind: TaskKind, options: TaskOptions, topology: &Topology) -> Vec<StepStatus> {
    let step = |name, member: Option<MemberId>| StepStatus {
        name,
        member: member.map(|m| m.0),
        state: StepState::Pending,
        detail: None,
        millis: None,
        attempts: 0,
        decided: BTreeMap::new(),
    };
    let primary = Some(topology.primary);
    let target = options.target_member.map(MemberId);
    let mut out = Vec::new();
    for name in kind.plan(options) {
        use StepName as S;
        match name {
            S::RestartReplicas => out.extend(
                topology
                    .replicas()
                    .map(|m| step(S::RestartReplica, Some(m))),
            ),
            // The primary's own steps: make it, start it, load it, check it.
            S::EnsureVolume
            | S::EnsureContainer
            | S::EnsureParams
            | S::EnsureRunning
            | S::WaitReady
            | S::LoadBackup
            | S::CheckRestored => out.push(step(name, primary)),
            // Writes stop on the primary of the task's start.
            S::HandOverWrites => out.push(step(name, primary)),
            S::PromoteTarget => out.push(step(name, target)),
            S::FenceOldPrimary => out.push(step(name, options.failed_member.map(MemberId))),
            _ => out.push(step(name, None)),
        }
    }
    out
}

/// The first step that is not done: where a task (re)starts.
pub fn next_step(steps: &[StepStatus]) -> Option<usize> {
    steps.iter().position(|s| s.state != StepState::Done)
}

/// Progress in percent: finished steps over all steps.
pub fn progress(steps: &[StepStatus]) -> u8 {
    if steps.is_empty() {
        return 100;
    }
    let done = steps.iter().filter(|s| s.state == StepState::Done).count();
    u8::try_from(done * 100 / steps.len()).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_end_where_they_should() {
        for kind in TaskKind::ALL {
            let plan = kind.plan(TaskOptions::default());
            assert!(!plan.is_empty(), "{kind}");
            let mut seen = std::collections::HashSet::new();
            assert!(
                plan.iter().all(|s| seen.insert(*s)),
                "{kind} repeats a step"
            );
        }
        // Every plan that brings an instance up ends with its replicas following.
        let create = TaskKind::Create.plan(TaskOptions::default());
        assert_eq!(create.last(), Some(&StepName::EnsureEndpoint));
        let delete = TaskKind::Delete.plan(TaskOptions::default());
        assert!(!delete.contains(&StepName::RemoveVolume));
        let purge = TaskKind::Delete.plan(TaskOptions {
            purge: true,
            ..Default::default()
        });
        assert_eq!(purge.len(), delete.len() + 1);
        assert_eq!(purge.last(), Some(&StepName::Forget));
        let with_final_backup = TaskKind::Delete.plan(TaskOptions {
            backup: Some(crate::backup::BackupId::new_random()),
            ..Default::default()
        });
        assert_eq!(
            with_final_backup.first(),
            Some(&StepName::EnsureBackupStored)
        );
        assert_eq!(with_final_backup[1..], delete[..]);
        let restart = TaskKind::Restart.plan(TaskOptions::default());
        assert_eq!(restart.first(), Some(&StepName::EnsureStopped));
        assert_eq!(restart.last(), Some(&StepName::EnsureEndpoint));
        // A scale removes replicas before the primary drops their slots, and never
        // touches the primary's own volume.
        let scale = TaskKind::Scale.plan(TaskOptions::default());
        let at = |s| scale.iter().position(|p| *p == s);
        assert!(at(StepName::RemoveExtraMembers) < at(StepName::EnsureReplication));
        assert!(at(StepName::EnsureReplication) < at(StepName::EnsureReplicas));
        for kind in TaskKind::ALL {
            let makes_volume = kind
                .plan(TaskOptions::default())
                .contains(&StepName::EnsureVolume);
            // A verification makes its throwaway instance's volume, never another's.
            assert_eq!(
                makes_volume,
                matches!(kind, TaskKind::Create | TaskKind::Verify),
                "{kind} must not make a data volume"
            );
        }
    }

    #[test]
    fn a_restore_verifies_first_and_loads_last() {
        let plan = TaskKind::Create.plan(TaskOptions {
            backup: Some(crate::backup::BackupId::new_random()),
            ..Default::default()
        });
        assert_eq!(plan.first(), Some(&StepName::VerifyBackup));
        // Loaded into the primary before replicas exist: they clone it.
        let at = |s| plan.iter().position(|p| *p == s);
        assert!(at(StepName::LoadBackup) < at(StepName::EnsureReplicas));
        assert!(at(StepName::WaitReady) < at(StepName::LoadBackup));
        assert!(!TaskKind::Create
            .plan(TaskOptions::default())
            .contains(&StepName::LoadBackup));
    }

    #[test]
    fn a_verification_checks_the_bytes_first_and_the_restored_data_last() {
        let plan = TaskKind::Verify.plan(TaskOptions::default());
        assert_eq!(plan.first(), Some(&StepName::VerifyBackup));
        assert_eq!(plan.last(), Some(&StepName::CheckRestored));
        // Nobody connects to it: no endpoint, no replicas.
        assert!(!plan.contains(&StepName::EnsureEndpoint));
        assert!(!plan.contains(&StepName::EnsureReplicas));
    }

    #[test]
    fn a_member_has_its_certificate_before_it_runs() {
        use TaskKind as K;
        for kind in [K::Create, K::Start, K::Restart, K::Repair] {
            let plan = kind.plan(TaskOptions::default());
            let at = |s| plan.iter().position(|p| *p == s);
            assert!(
                at(StepName::EnsureContainer) < at(StepName::EnsureTls)
                    && at(StepName::EnsureTls) < at(StepName::EnsureRunning),
                "{kind}"
            );
        }
        // Renewal of a running member is a reconfigure.
        assert!(K::Reconfigure
            .plan(TaskOptions::default())
            .contains(&StepName::EnsureTls));
    }

    #[test]
    fn steps_name_the_member_they_act_on() {
        let mut three = Topology::new(3, 1, Default::default());
        three.primary = MemberId(1);
        let rolling = initial_steps(
            TaskKind::Restart,
            TaskOptions {
                target_member: Some(2),
                ..Default::default()
            },
            &three,
        );
        let named: Vec<_> = rolling.iter().map(|s| (s.name, s.member)).collect();
        // One step per replica, the replicas in order, then the switch: writes stop
        // on the primary of the start and the target is promoted.
        assert_eq!(
            named[..3],
            [
                (StepName::RestartReplica, Some(0)),
                (StepName::RestartReplica, Some(2)),
                (StepName::HandOverWrites, Some(1)),
            ]
        );
        assert_eq!(named[3], (StepName::PromoteTarget, Some(2)));
        assert!(!rolling.iter().any(|s| s.name == StepName::RestartReplicas));
        let failover = initial_steps(
            TaskKind::Failover,
            TaskOptions {
                target_member: Some(2),
                failed_member: Some(1),
                ..Default::default()
            },
            &three,
        );
        assert_eq!(failover[0].name, StepName::FenceOldPrimary);
        assert_eq!(failover[0].member, Some(1));
        // A create's steps make the primary; the replicas' step names none.
        let create = initial_steps(TaskKind::Create, TaskOptions::default(), &three);
        for s in &create {
            let on_primary = matches!(
                s.name,
                StepName::EnsureVolume
                    | StepName::EnsureContainer
                    | StepName::EnsureParams
                    | StepName::EnsureRunning
                    | StepName::WaitReady
            );
            assert_eq!(s.member, on_primary.then_some(1), "{}", s.name);
        }
        // A single member's rolling-restart step list has no replica to restart.
        let one = Topology::new(1, 0, Default::default());
        let plain = initial_steps(TaskKind::Restart, TaskOptions::default(), &one);
        assert_eq!(
            plain.len(),
            TaskKind::Restart.plan(TaskOptions::default()).len()
        );
    }

    #[test]
    fn a_step_record_without_member_or_decisions_reads_as_before() {
        // Tasks stored before steps named members still load, and new records
        // leave out what is empty.
        let old = r#"{"name":"restart_replicas","state":"pending","attempts":0}"#;
        let s: StepStatus = serde_json::from_str(old).expect("old step");
        assert_eq!((s.name, s.member), (StepName::RestartReplicas, None));
        assert!(s.decided.is_empty());
        let back = serde_json::to_value(&s).expect("json");
        assert!(back.get("member").is_none() && back.get("decided").is_none());
    }

    #[test]
    fn resume_point_and_progress() {
        let one = Topology::new(1, 0, Default::default());
        let mut steps = initial_steps(TaskKind::Stop, TaskOptions::default(), &one);
        steps.extend(
            initial_steps(TaskKind::Start, TaskOptions::default(), &one)
                .into_iter()
                .take(2),
        );
        assert_eq!(next_step(&steps), Some(0));
        assert_eq!(progress(&steps), 0);
        steps[0].state = StepState::Done;
        steps[1].state = StepState::Running;
        assert_eq!(
            next_step(&steps),
            Some(1),
            "a step seen running is run again"
        );
        assert_eq!(progress(&steps), 33);
        for s in &mut steps {
            s.state = StepState::Done;
        }
        assert_eq!(next_step(&steps), None);
        assert_eq!(progress(&steps), 100);
    }

    #[test]
    fn retries_are_bounded_and_back_off() {
        let waits: Vec<_> = (0..10).map(retry_after).collect();
        assert!(waits[..MAX_STEP_ATTEMPTS as usize]
            .iter()
            .all(Option::is_some));
        assert!(waits[MAX_STEP_ATTEMPTS as usize..]
            .iter()
            .all(Option::is_none));
        let total: u128 = waits.iter().flatten().map(|d| d.as_millis()).sum();
        assert!(
            total < 30_000,
            "a task gives up within half a minute ({total} ms)"
        );
        assert!(waits[1] > waits[0]);
    }

    #[test]
    fn names_round_trip() {
        for k in TaskKind::ALL {
            assert_eq!(k.as_str().parse::<TaskKind>(), Ok(k));
        }
        for s in [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
    }
}

//! What the store keeps about instances and tasks.

use crate::task::TaskOptions;
use crate::{
    InstanceId, InstanceName, InstanceSpec, InstanceStatus, ProjectId, Secret, StepStatus, TaskId,
    TaskKind, TaskState,
};

/// An instance as stored: desired spec, lifecycle status and its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Stable id.
    pub id: InstanceId,
    /// Unique among live instances of its project.
    pub name: InstanceName,
    /// Owning project.
    pub project: ProjectId,
    /// What the user asked for.
    pub spec: InstanceSpec,
    /// Where it is in its life.
    pub status: InstanceStatus,
    /// Why it is in that status, when that needs saying ("container exited with code 137").
    pub status_detail: Option<String>,
    /// The task that holds the instance until it ends (one at a time): taken when
    /// the task begins and given back when it ends, in the store's transactions.
    pub held_by: Option<TaskId>,
    /// Host port of the read-write endpoint; fixed for the instance's life.
    pub port: u16,
    /// Host port of the read-only endpoint; fixed for the instance's life.
    pub ro_port: u16,
    /// Engine settings changed live that take effect only after a restart.
    pub pending_restart: Vec<String>,
    /// The parameter group attached, if any.
    pub param_group: Option<String>,
    /// The group revision the member last received.
    pub params_revision: i64,
    /// The engine superuser's password.
    pub superuser_password: Secret,
    /// The token the control plane presents to this instance's agents.
    pub agent_token: Secret,
    /// The replication account's password (replicas connect to the primary with it).
    pub replication_password: Secret,
    /// The members, which one is primary, and how many confirm a commit.
    pub topology: crate::member::Topology,
    /// Why commits are not confirmed by `topology.sync` replicas, while that lasts.
    pub sync_degraded: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

/// A parameter group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamGroup {
    /// Name (the rules of instance names).
    pub name: InstanceName,
    /// Engine.
    pub engine: crate::EngineKind,
    /// Engine version.
    pub version: crate::EngineVersion,
    /// What it is for.
    pub description: String,
    /// Bumped on every change.
    pub revision: i64,
    /// Settings, by name, as validated against the catalog.
    pub params: std::collections::BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

/// A task as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// Stable id.
    pub id: TaskId,
    /// The instance it works on.
    pub instance_id: InstanceId,
    /// The instance's name when the task began (it outlives a deleted instance).
    pub instance_name: InstanceName,
    /// What it does.
    pub kind: TaskKind,
    /// Options that shaped its plan.
    pub options: TaskOptions,
    /// Where it is.
    pub state: TaskState,
    /// Its steps, in order.
    pub steps: Vec<StepStatus>,
    /// Why it failed.
    pub error: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

impl TaskRecord {
    /// A new pending task on `inst` with its full plan, built from the instance's
    /// members as they are now.
    pub fn new(inst: &InstanceRecord, kind: TaskKind, options: TaskOptions, now: &str) -> Self {
        Self {
            id: TaskId::new_random(),
            instance_id: inst.id,
            instance_name: inst.name.clone(),
            kind,
            options,
            state: TaskState::Pending,
            steps: crate::task::initial_steps(kind, options, &inst.topology),
            error: None,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl InstanceRecord {
    /// A PostgreSQL instance with default resources, for tests of code that stores or
    /// plans around instances.
    pub fn example(name: &str, status: InstanceStatus, port: u16) -> Self {
        let host = crate::HostCapacity {
            cpus: crate::CpuMillis::from_millis(2000).unwrap_or_else(|_| unreachable!()),
            memory_mib: 8192,
            disk_free_mib: 100_000,
        };
        let (name, spec) = crate::CreateRequest {
            name: name.into(),
            engine: "postgres".into(),
            ..Default::default()
        }
        .validate(&host)
        .unwrap_or_else(|e| panic!("example instance {name:?}: {e}"));
        Self {
            id: InstanceId::new_random(),
            name,
            project: ProjectId::default_project(),
            spec,
            status,
            status_detail: None,
            held_by: None,
            port,
            ro_port: port.wrapping_add(10_000),
            pending_restart: vec![],
            param_group: None,
            params_revision: 0,
            superuser_password: Secret::new("pw"),
            agent_token: Secret::new("tok"),
            replication_password: Secret::new("repl"),
            topology: crate::member::Topology::default(),
            sync_degraded: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }
}

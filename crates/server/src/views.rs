//! What the API shows: records turned into views, secrets left out unless asked.

use berth_model::{
    task, InstanceEvent, InstanceId, InstanceName, InstanceRecord, InstanceStatus,
    InvalidTransition, StepStatus, TaskId, TaskKind, TaskRecord, TaskState,
};
use serde::{Deserialize, Serialize};

/// Where clients connect.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// Host name or address.
    pub host: String,
    /// The read-write endpoint's port: always the current primary.
    pub port: u16,
    /// The read-only endpoint's port: healthy replicas, or the primary when none
    /// qualifies.
    pub ro_port: u16,
    /// Whether read-only connections go to the primary now (no replica qualifies);
    /// absent in listings, which do not look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ro_fallback: Option<bool>,
    /// Why they do, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ro_reason: Option<String>,
}

/// An instance, as `show` and `list` present it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceView {
    /// Stable id.
    #[schema(value_type = String)]
    pub id: InstanceId,
    /// Name.
    #[schema(value_type = String)]
    pub name: InstanceName,
    /// Project.
    pub project: String,
    /// Engine.
    pub engine: String,
    /// Engine major version.
    pub version: String,
    /// Lifecycle status.
    pub status: InstanceStatus,
    /// Why, when the status needs explaining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// The task that holds the instance until it ends (one task at a time).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub task: Option<TaskId>,
    /// CPU limit in cores, as text (`1.5`).
    pub cpus: String,
    /// Memory limit, as text (`1GiB`).
    pub memory: String,
    /// Storage size, as text (`10GiB`).
    pub storage: String,
    /// CPU limit in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory limit in MiB.
    pub memory_mib: u64,
    /// Storage size in MiB.
    pub storage_mib: u64,
    /// Where clients connect.
    pub endpoint: EndpointView,
    /// The attached parameter group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_group: Option<String>,
    /// Engine settings changed live that take effect at the next `berth restart`.
    pub pending_restart: Vec<String>,
    /// The engine settings Berth derives from memory, with their current values.
    pub memory_settings: std::collections::BTreeMap<String, String>,
    /// The members: one primary and its replicas.
    pub members: Vec<MemberView>,
    /// How many replicas confirm a commit (0: asynchronous).
    pub sync: u8,
    /// Whether commits wait while a synchronous replica is missing.
    pub sync_mode: berth_model::member::SyncMode,
    /// Why commits are not confirmed by `sync` replicas right now (absent when they
    /// are, or the instance is asynchronous).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_degraded: Option<String>,
    /// Whether a replica is promoted by itself when the primary fails (`auto`) or
    /// only by `berth failover` (`manual`).
    pub failover: berth_model::member::FailoverMode,
    /// Automatic failover is paused for maintenance (`berth failover pause`): a
    /// failed primary is restarted in place until it is resumed.
    pub failover_paused: bool,
    /// How far behind (bytes of the primary's change stream) a replica of an
    /// asynchronous instance may be and still be promoted automatically.
    pub max_failover_lag_bytes: u64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl InstanceView {
    /// The view of a record.
    pub fn new(r: &InstanceRecord, endpoint_host: &str) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            project: r.project.to_string(),
            engine: r.spec.engine.to_string(),
            version: r.spec.version.to_string(),
            status: r.status,
            status_detail: r.status_detail.clone(),
            task: r.held_by,
            cpus: r.spec.cpus.to_string(),
            memory: r.spec.memory.to_string(),
            storage: r.spec.storage.to_string(),
            cpu_millis: r.spec.cpus.millis(),
            memory_mib: r.spec.memory.mib(),
            storage_mib: r.spec.storage.mib(),
            endpoint: EndpointView {
                host: endpoint_host.to_owned(),
                port: r.port,
                ro_port: r.ro_port,
                ro_fallback: None,
                ro_reason: None,
            },
            pending_restart: r.pending_restart.clone(),
            param_group: r.param_group.clone(),
            memory_settings: berth_engine::engine(r.spec.engine)
                .memory_settings(r.spec.memory.mib())
                .into_iter()
                .collect(),
            members: r
                .topology
                .members
                .iter()
                .map(|m| MemberView::assigned(r, *m))
                .collect(),
            sync: r.topology.sync,
            sync_mode: r.topology.sync_mode,
            sync_degraded: r.sync_degraded.clone(),
            failover: r.topology.failover,
            failover_paused: r.topology.failover_paused,
            max_failover_lag_bytes: r.topology.max_failover_lag,
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
        }
    }
}

/// One member of an instance.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    /// `<instance>-<n>`.
    pub name: String,
    /// Its container's name.
    pub container: String,
    /// `primary` or `replica`.
    pub role: berth_model::member::Role,
    /// What was seen just now (`ready`, `starting`, `stopped`, `missing`, …);
    /// absent in listings, which do not look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Whether the primary counts this replica as synchronous.
    pub sync: bool,
    /// How far behind the primary it is, in bytes of log, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// How far behind the primary it is, in seconds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

impl MemberView {
    /// The member as the store has it, before anyone looked.
    pub fn assigned(r: &InstanceRecord, m: berth_model::MemberId) -> Self {
        let role = r
            .topology
            .role(m)
            .unwrap_or(berth_model::member::Role::Replica);
        Self {
            name: berth_model::member::display_name(&r.name, m),
            container: berth_model::labels::container_name(&r.name, r.id, m),
            role,
            state: None,
            sync: role == berth_model::member::Role::Replica && r.topology.sync > 0,
            lag_bytes: None,
            lag_seconds: None,
        }
    }
}

/// A task, as `tasks` and `task` present it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// Stable id.
    #[schema(value_type = String)]
    pub id: TaskId,
    /// The instance's name.
    #[schema(value_type = String)]
    pub instance: InstanceName,
    /// The instance's id.
    #[schema(value_type = String)]
    pub instance_id: InstanceId,
    /// What it does.
    pub kind: TaskKind,
    /// Where it is.
    pub state: TaskState,
    /// Finished steps over all steps, in percent.
    pub progress: u8,
    /// Steps in order.
    pub steps: Vec<StepStatus>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl From<&TaskRecord> for TaskView {
    fn from(t: &TaskRecord) -> Self {
        Self {
            id: t.id,
            instance: t.instance_name.clone(),
            instance_id: t.instance_id,
            kind: t.kind,
            state: t.state,
            progress: task::progress(&t.steps),
            steps: t.steps.clone(),
            error: t.error.clone(),
            created_at: t.created_at.clone(),
            updated_at: t.updated_at.clone(),
        }
    }
}

/// The answer to a call that started work: the task to watch and the instance.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The task doing the work.
    pub task: TaskView,
    /// The instance as it is now.
    pub instance: InstanceView,
}

/// How to log in.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialsView {
    /// Superuser name.
    pub user: String,
    /// Superuser password.
    pub password: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection URI with the credentials; it verifies the server's certificate and
    /// host name against the CA in `ca_file` (PostgreSQL: `sslmode=verify-full`;
    /// MariaDB: the MySQL connectors' `ssl-mode=VERIFY_IDENTITY`). The read-write
    /// endpoint: always the primary.
    pub uri: String,
    /// The same through the read-only endpoint: replicas.
    pub ro_uri: String,
    /// The read-only endpoint's port.
    pub ro_port: u16,
    /// The engine's command-line client with the same verification, as one shell line
    /// (the password in its environment, never in its arguments).
    pub command: String,
    /// The CA certificate (PEM) the server's certificate chains to.
    pub ca_certificate: String,
    /// Where the control plane keeps that CA certificate on its machine.
    pub ca_file: String,
}

/// Berth's certificate authority.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaView {
    /// This installation's id (the CLI names its copy of the CA after it).
    pub site: String,
    /// The CA certificate, PEM.
    pub certificate: String,
}

/// What to run instead, for a refused transition.
pub(crate) fn hint(name: &InstanceName, t: InvalidTransition) -> String {
    use InstanceStatus as S;
    match (t.from, t.event) {
        (S::Stopped, InstanceEvent::Began(TaskKind::Restart)) => {
            format!("; run `berth start {name}`")
        }
        (S::Stopped, InstanceEvent::Began(TaskKind::Stop))
        | (S::Available, InstanceEvent::Began(TaskKind::Start)) => "; nothing to do".to_owned(),
        (s, _) if s.is_busy() => {
            format!("; wait for its task to finish (`berth tasks --instance {name}`)")
        }
        _ => String::new(),
    }
}

//! The steps tasks are made of. Each checks before it acts, so running it again
//! after a crash is safe, and each returns a sentence for the task log.

use crate::endpoint::Repick;
use crate::members::{self, container_name, key, network_name, volume_name};
use crate::Ctx;
use berth_engine::engine;
use berth_model::{InstanceEvent, InstanceRecord, MemberId, StepName, TaskKind, TaskRecord};
use berth_runtime::{image, ContainerKey, RuntimeError};
use std::time::{Duration, Instant};

/// How a step failed.
#[derive(Debug)]
pub(crate) enum StepError {
    /// A dependency is down: stop, resume later.
    Retry(String),
    /// The step cannot succeed: fail the task with this reason.
    Fatal(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(why) | Self::Fatal(why) => f.write_str(why),
        }
    }
}

impl From<RuntimeError> for StepError {
    fn from(e: RuntimeError) -> Self {
        if e.is_unreachable() {
            StepError::Retry(e.to_string())
        } else {
            StepError::Fatal(e.to_string())
        }
    }
}

impl From<berth_store::StoreError> for StepError {
    fn from(e: berth_store::StoreError) -> Self {
        StepError::Retry(e.to_string())
    }
}

type StepResult = Result<String, StepError>;

/// What a step did: its sentence for the task log, the member it acted on when it
/// chose one, and what it decided, for the record.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub detail: String,
    pub member: Option<MemberId>,
    pub decided: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Done {
    /// A step's sentence, with what it decided.
    pub(crate) fn decided(
        detail: String,
        decided: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
    ) -> Self {
        Self {
            detail,
            member: None,
            decided: decided
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    /// The member the step chose to act on.
    pub(crate) fn on(mut self, member: MemberId) -> Self {
        self.member = Some(member);
        self
    }
}

impl From<String> for Done {
    fn from(detail: String) -> Self {
        Self {
            detail,
            ..Self::default()
        }
    }
}

/// How long `wait_ready` waits for the engine before failing the task.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs one step of `task`; `member` is the one its plan names, if any.
pub(crate) async fn run(
    ctx: &Ctx,
    task: &TaskRecord,
    step: StepName,
    member: Option<MemberId>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Done, StepError> {
    let inst = ctx
        .store
        .instance(task.instance_id)
        .await?
        .ok_or_else(|| StepError::Fatal("the instance is gone from the store".into()))?;
    let primary = inst.topology.primary;
    // A verification makes its throwaway instance the way a create makes one.
    let create = matches!(task.kind, TaskKind::Create | TaskKind::Verify);
    let said = match step {
        StepName::EnsureImage => ensure_image(ctx, &inst, progress)
            .await
            .map(|(tag, built)| {
                if built {
                    format!("built image {tag}")
                } else {
                    format!("image {tag} is present")
                }
            }),
        StepName::EnsureAgent => {
            let tag = image_tag(ctx, &inst);
            let (name, outcome) = ctx
                .runtime
                .ensure_agent_volume(&ctx.agent.path, &ctx.agent.sha256, &tag)
                .await?;
            Ok(outcome.say(
                format!("filled agent volume {name}"),
                format!("agent volume {name} is ready"),
            ))
        }
        StepName::EnsureNetwork => {
            let name = network_name(&inst);
            let o = ctx
                .runtime
                .ensure_network(&name, members::instance_labels(ctx, &inst))
                .await?;
            Ok(o.say(
                format!("created network {name}"),
                format!("network {name} exists"),
            ))
        }
        StepName::EnsureVolume => ensure_volume(ctx, &inst, primary).await,
        StepName::EnsureContainer => ensure_container(ctx, &inst, primary, create).await,
        StepName::EnsureTls => crate::tls::ensure_tls(ctx, &inst).await,
        StepName::EnsureRunning => {
            let mut said = ensure_running(ctx, &inst, primary).await?;
            // The endpoint starts beside the engine; `ensure_endpoint` waits for it.
            // Nobody connects to a verification's instance: it has none.
            if !crate::backup::verify::is_throwaway(&inst) {
                let (_, ep, _) =
                    crate::endpoint::start_endpoint(ctx, &inst, Repick::for_task(task)).await?;
                if (ep.port, ep.ro_port) != (inst.port, inst.ro_port) {
                    said = format!(
                        "{said}; the host took a port picked for the endpoint before it \
                         started, so it is on ports {} (read-write) and {} (read-only)",
                        ep.port, ep.ro_port
                    );
                }
            }
            Ok(said)
        }
        StepName::WaitReady => wait_ready(ctx, &inst, primary).await,
        StepName::EnsureStopped => {
            // The primary first: PostgreSQL's clean shutdown sends the replicas
            // everything it wrote before they stop.
            let mut said = vec![];
            for m in every_member(ctx, &inst).await? {
                said.push(ensure_stopped(ctx, &inst, m).await?);
            }
            ctx.runtime
                .ensure_stopped(ContainerKey::Endpoint(inst.id), 5)
                .await?;
            Ok(said.join("; "))
        }
        StepName::RemoveContainer => {
            let mut said = vec![];
            for m in every_member(ctx, &inst).await? {
                said.push(remove_container(ctx, &inst, m).await?);
            }
            ctx.runtime
                .remove_member(ContainerKey::Endpoint(inst.id))
                .await?;
            Ok(said.join("; "))
        }
        StepName::RemoveNetwork => {
            let name = network_name(&inst);
            let owner = members::instance_labels(ctx, &inst);
            Ok(ctx.runtime.remove_network(&name, &owner).await?.say(
                format!("removed network {name}"),
                format!("network {name} is gone"),
            ))
        }
        StepName::RemoveVolume => {
            let mut said = vec![];
            for m in every_member(ctx, &inst).await? {
                said.push(remove_volume(ctx, &inst, m).await?);
            }
            ctx.store.mark_purged(inst.id).await?;
            Ok(said.join("; "))
        }
        StepName::UpdateLimits => update_limits(ctx, task, &inst).await,
        StepName::VerifyBackup => crate::backup::verify_backup(ctx, task).await,
        StepName::LoadBackup => crate::backup::load_backup(ctx, task, &inst, progress).await,
        StepName::CheckRestored => crate::backup::verify::check_restored(ctx, &inst).await,
        StepName::EnsureBackupStored => {
            crate::backup::ensure_backup_stored(ctx, task, &inst, progress).await
        }
        StepName::ApplySettings => apply_settings(ctx, &inst).await,
        StepName::EnsureParams => ensure_params(ctx, &inst, primary, create).await,
        StepName::EnsureTopology => crate::replicas::ensure_topology(ctx, task, &inst).await,
        StepName::EnsureReplication => crate::replicas::ensure_replication(ctx, task, &inst).await,
        StepName::EnsureReplicas => {
            crate::replicas::ensure_replicas(ctx, task, &inst, progress).await
        }
        // The steps that decide something return their record.
        StepName::HandOverWrites => {
            return crate::switchover::hand_over_writes(ctx, task, &inst).await
        }
        StepName::PromoteTarget => {
            return crate::switchover::promote_target(ctx, task, &inst).await
        }
        StepName::FenceOldPrimary => {
            return crate::switchover::fence_old_primary(ctx, task, &inst).await
        }
        StepName::EnsureEndpoint => {
            crate::endpoint::ensure_endpoint(ctx, &inst, Repick::for_task(task)).await
        }
        StepName::RestartReplicas => crate::replicas::restart_replicas(ctx, &inst).await,
        StepName::RestartReplica => {
            let m = member
                .ok_or_else(|| StepError::Fatal("the step names no replica to restart".into()))?;
            crate::replicas::restart_replica(ctx, &inst, m).await
        }
        StepName::RemoveExtraMembers => {
            crate::replicas::remove_extra_members(ctx, task, &inst).await
        }
        StepName::Forget => {
            crate::tls::forget(ctx, &inst);
            if inst.status != berth_model::InstanceStatus::Deleted {
                ctx.store
                    .apply_event(inst.id, InstanceEvent::Succeeded(TaskKind::Delete), None)
                    .await?;
            }
            Ok("the instance is deleted".into())
        }
    }?;
    Ok(Done::from(said))
}

/// The topology's members, primary first, then any member Docker still has a
/// container or volume of (a scale-down interrupted, say): what stop, remove and
/// purge must reach.
pub(crate) async fn every_member(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<Vec<MemberId>, StepError> {
    let mut out = vec![inst.topology.primary];
    out.extend(inst.topology.replicas());
    for m in crate::replicas::members_in_docker(ctx, inst).await? {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

pub(crate) async fn ensure_volume(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = volume_name(inst, m);
    let o = ctx
        .runtime
        .ensure_volume(&name, members::member_labels(ctx, inst, m))
        .await?;
    Ok(o.say(
        format!("created volume {name}"),
        format!("volume {name} exists"),
    ))
}

/// The member's container exists. Only a create (or a new replica, which is a copy
/// of the primary) may start on a new volume: anywhere else a missing volume fails.
pub(crate) async fn ensure_container(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
    new_volume_allowed: bool,
) -> StepResult {
    let tag = image_tag(ctx, inst);
    let agent_volume = berth_model::labels::agent_volume_name(&ctx.agent.sha256);
    let spec = members::member_container(ctx, inst, m, &tag, &agent_volume);
    let volume = volume_name(inst, m);
    if !new_volume_allowed
        && !ctx
            .runtime
            .volume_exists(&volume, &members::member_labels(ctx, inst, m))
            .await?
    {
        // Never bootstrap an empty database in place of lost data silently.
        return Err(StepError::Fatal(format!(
            "the data volume {volume} is missing, so instance {} cannot be brought back with its data; \
             restore it from a backup or delete the instance",
            inst.name
        )));
    }
    let o = ctx.runtime.ensure_container(&spec).await?;
    Ok(o.say(
        format!("created container {}", spec.name),
        format!("container {} exists", spec.name),
    ))
}

pub(crate) async fn ensure_running(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = container_name(inst, m);
    let o = ctx.runtime.ensure_running(key(inst, m)).await?;
    Ok(o.say(
        format!("started container {name}"),
        format!("container {name} is running"),
    ))
}

async fn ensure_stopped(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = container_name(inst, m);
    let o = ctx.runtime.ensure_stopped(key(inst, m), 60).await?;
    Ok(o.say(
        format!("stopped container {name}"),
        format!("container {name} is not running"),
    ))
}

pub(crate) async fn remove_container(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = container_name(inst, m);
    Ok(ctx.runtime.remove_member(key(inst, m)).await?.say(
        format!("removed container {name}"),
        format!("container {name} is gone"),
    ))
}

pub(crate) async fn remove_volume(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = volume_name(inst, m);
    let owner = members::member_labels(ctx, inst, m);
    let o = ctx.runtime.remove_owned_volume(&name, &owner).await?;
    Ok(o.say(
        format!("removed volume {name}"),
        format!("volume {name} is gone"),
    ))
}

/// The member's volume holds its group's parameters and its replication settings,
/// read by the agent at start.
pub(crate) async fn ensure_params(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
    create: bool,
) -> StepResult {
    // A lone primary being created has nothing to replicate yet (its first scale
    // writes the file); any other member keeps its role on its volume.
    if inst.topology.members.len() > 1 || !create {
        let repl = members::replication_for(inst, m);
        let body = serde_json::to_vec_pretty(&repl).unwrap_or_default();
        ctx.runtime
            .put_file(
                key(inst, m),
                berth_model::agent::DATA_DIR,
                berth_model::agent::REPLICATION_FILE,
                &body,
            )
            .await?;
    }
    if create && inst.param_group.is_none() {
        // A fresh volume has no parameters file, which the agent reads as "none":
        // nothing to write on the create path.
        return Ok("no parameter group; engine defaults and Berth's derived settings".to_owned());
    }
    let (params, revision) = group_params(ctx, inst).await?;
    let body = serde_json::to_vec_pretty(&params).unwrap_or_default();
    ctx.runtime
        .put_file(
            key(inst, m),
            berth_model::agent::DATA_DIR,
            "berth-params.json",
            &body,
        )
        .await?;
    if m == inst.topology.primary {
        ctx.store.mark_params_applied(inst.id, revision).await?;
    }
    Ok(match &inst.param_group {
        Some(g) => format!(
            "member has the {} settings of group {g} (revision {revision})",
            params.len()
        ),
        None => "no parameter group; engine defaults and Berth's derived settings".to_owned(),
    })
}

/// Settings go to the replicas first, then the primary: PostgreSQL wants some of a
/// standby's settings at least the primary's.
async fn apply_settings(ctx: &Ctx, inst: &InstanceRecord) -> StepResult {
    let (params, revision) = group_params(ctx, inst).await?;
    let mut order: Vec<MemberId> = inst.topology.replicas().collect();
    order.push(inst.topology.primary);
    let mut pending = std::collections::BTreeSet::new();
    for m in order {
        let ip = member_ip(ctx, inst, m).await?;
        let applied = members::apply_settings(ctx, inst, ip, Some(&params))
            .await
            .map_err(|e| StepError::Fatal(format!("{}: {e}", container_name(inst, m))))?;
        pending.extend(applied.pending_restart);
    }
    let pending: Vec<String> = pending.into_iter().collect();
    ctx.store
        .params_applied(inst.id, revision, Some(&pending))
        .await?;
    Ok(if pending.is_empty() {
        "every setting applied live".to_owned()
    } else {
        format!(
            "applied live; waiting for a restart: {}",
            pending.join(", ")
        )
    })
}

/// The address of the primary's running container on its network, where its agent
/// and engine answer; a step that needs them fails, saying so, when it does not run.
pub(crate) async fn running_member_ip(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<std::net::IpAddr, StepError> {
    member_ip(ctx, inst, inst.topology.primary).await
}

/// The address of a member's running container on the instance's network.
pub(crate) async fn member_ip(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
) -> Result<std::net::IpAddr, StepError> {
    ctx.runtime
        .inspect_member(key(inst, m))
        .await?
        .filter(|o| o.running)
        .and_then(|o| o.ip)
        .ok_or_else(|| {
            StepError::Fatal(format!(
                "container {} is not running",
                container_name(inst, m)
            ))
        })
}

/// The image members of this instance run: an operator's upstream image for the
/// engine version when configured, else the one Berth builds from Debian packages.
/// The settings of the instance's group and its revision (none: empty, revision 0).
pub(crate) async fn group_params(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<(std::collections::BTreeMap<String, String>, i64), StepError> {
    match &inst.param_group {
        None => Ok((Default::default(), 0)),
        Some(g) => {
            let group = ctx.store.group(g).await.map_err(|e| match e {
                berth_store::StoreError::NoSuchGroup(_) => StepError::Fatal(e.to_string()),
                other => StepError::from(other),
            })?;
            Ok((group.params, group.revision))
        }
    }
}

pub(crate) fn image_tag(ctx: &Ctx, inst: &InstanceRecord) -> String {
    ctx.config
        .upstream_image(inst.spec.engine, &inst.spec.version)
        .map(str::to_owned)
        .unwrap_or_else(|| image::image_tag(engine(inst.spec.engine), &inst.spec.version))
}

async fn ensure_image(
    ctx: &Ctx,
    inst: &InstanceRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(String, bool), StepError> {
    Ok(ctx
        .ensure_image(inst.spec.engine, &inst.spec.version, progress)
        .await?)
}

/// Waits until the member's agent reports the engine ready. Fails early, with the
/// reason, when the container stops or the agent refuses its data directory.
pub(crate) async fn wait_ready(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    let name = container_name(inst, m);
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < READY_TIMEOUT {
        match ctx.runtime.inspect_member(key(inst, m)).await? {
            None => return Err(StepError::Fatal(format!("container {name} disappeared"))),
            Some(obs) if !obs.running && obs.status != "restarting" && obs.status != "created" => {
                return Err(StepError::Fatal(format!(
                    "container {name} stopped ({}, exit code {}); `docker logs {name}` tells why",
                    obs.status,
                    obs.exit_code.unwrap_or(-1)
                )));
            }
            Some(obs) => {
                if let Some(ip) = obs.ip {
                    match members::agent_health(ctx, inst, ip).await {
                        Ok(h) if h.ready => {
                            return Ok(format!("{} answers queries on {name}", inst.spec.engine));
                        }
                        Ok(h) => match h.refusal() {
                            Some(why) => return Err(StepError::Fatal(why)),
                            None => last = format!("engine {}", h.state),
                        },
                        Err(e) => last = e,
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(StepError::Fatal(format!(
        "{} did not become ready within {}s ({last}); `docker logs {name}` tells why",
        inst.spec.engine,
        READY_TIMEOUT.as_secs()
    )))
}

/// Docker's limits take the resize's target; only then does the stored spec follow,
/// so a resize Docker refuses leaves the instance's spec as it was.
async fn update_limits(ctx: &Ctx, task: &TaskRecord, inst: &InstanceRecord) -> StepResult {
    let mut spec = inst.spec.clone();
    if let Some(m) = task.options.cpus_millis {
        spec.cpus = berth_model::CpuMillis::from_millis(m)
            .map_err(|e| StepError::Fatal(format!("the resize's cpu target: {e}")))?;
    }
    if let Some(m) = task.options.memory_mib {
        spec.memory = berth_model::MemoryMib::from_mib(m)
            .map_err(|e| StepError::Fatal(format!("the resize's memory target: {e}")))?;
    }
    let memory = i64::try_from(spec.memory.bytes()).unwrap_or(i64::MAX);
    for m in &inst.topology.members {
        ctx.runtime
            .update_limits(key(inst, *m), spec.cpus.nano_cpus(), memory)
            .await
            .map_err(|e| match e {
                e if e.is_unreachable() => StepError::Retry(e.to_string()),
                e => StepError::Fatal(format!(
                    "Docker refused the new limits for {} ({e}); instance {} keeps {} cpus and {} memory",
                    container_name(inst, *m),
                    inst.name,
                    inst.spec.cpus,
                    inst.spec.memory
                )),
            })?;
    }
    ctx.store.set_spec(inst.id, &spec).await?;
    Ok(format!(
        "{} member(s) of {} now have {} cpus and {} memory each, without a restart",
        inst.topology.members.len(),
        inst.name,
        spec.cpus,
        spec.memory
    ))
}

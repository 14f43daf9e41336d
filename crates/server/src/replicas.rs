//! The steps that make and remove replicas, and keep the primary serving exactly the
//! replicas the instance has. Each checks before it acts, like every step.

use crate::members::{self, container_name};
use crate::steps::{self, StepError};
use crate::Ctx;
use berth_model::{labels, EventKind, InstanceRecord, MemberId, NewEvent, TaskKind, TaskRecord};
use std::collections::BTreeSet;

type StepResult = Result<String, StepError>;

/// Members Docker has a container or a volume of, for this instance (found by
/// labels), whether or not the topology still lists them.
pub(crate) async fn members_in_docker(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Result<BTreeSet<MemberId>, StepError> {
    let id = inst.id.to_string();
    let mut out = BTreeSet::new();
    let mut objects = ctx.runtime.list_containers().await?;
    objects.extend(ctx.runtime.list_volumes().await?);
    for o in objects {
        if o.labels.get(labels::INSTANCE) != Some(&id) {
            continue;
        }
        if let Some(m) = o
            .labels
            .get(labels::MEMBER)
            .and_then(|m| m.parse::<u16>().ok())
        {
            out.insert(MemberId(m));
        }
    }
    Ok(out)
}

/// Step `ensure_topology`: the stored members and sync settings are the scale's
/// target. Computed from what is stored, so running it again changes nothing.
pub(crate) async fn ensure_topology(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> StepResult {
    let o = &task.options;
    let count = o.members.unwrap_or(inst.topology.members.len() as u16);
    let mut target = inst.topology.scaled(count);
    target.sync = o.sync.unwrap_or(target.sync);
    target.sync_mode = o.sync_mode.unwrap_or(target.sync_mode);
    target.failover = o.failover.unwrap_or(target.failover);
    target.max_failover_lag = o.max_failover_lag.unwrap_or(target.max_failover_lag);
    berth_model::member::check(inst.spec.engine, target.members.len() as u16, target.sync)
        .map_err(|e| StepError::Fatal(e.to_string()))?;
    // Instances made before members have no replication password yet.
    let password = inst
        .replication_password
        .expose()
        .is_empty()
        .then(crate::api::instances::random_secret);
    let failover = format!(
        "failover {} within {}",
        target.failover,
        berth_model::bytes::ShowBytes(target.max_failover_lag)
    );
    if target == inst.topology && password.is_none() {
        return Ok(format!(
            "{} member(s), sync {} ({}), {failover}",
            target.members.len(),
            target.sync,
            target.sync_mode
        ));
    }
    ctx.store
        .set_topology(inst.id, &target, password.as_ref())
        .await?;
    Ok(format!(
        "the instance now has {} member(s) (was {}), sync {} ({}), {failover}",
        target.members.len(),
        inst.topology.members.len(),
        target.sync,
        target.sync_mode
    ))
}

/// Step `ensure_replication`: the primary's agent has the replication account, a
/// slot for each replica (none for removed ones), and the synchronous replicas.
pub(crate) async fn ensure_replication(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> StepResult {
    let t = &inst.topology;
    if t.members.len() == 1
        && (task.kind == TaskKind::Create || inst.replication_password.expose().is_empty())
    {
        return Ok("one member: nothing replicates".into());
    }
    let ip = steps::running_member_ip(ctx, inst).await?;
    let repl = members::replication_for(inst, t.primary);
    members::send_replication(ctx, inst, ip, &repl)
        .await
        .map_err(StepError::Retry)?;
    let replicas = repl.replicas.len();
    Ok(match (replicas, t.sync) {
        (0, _) => format!("{} serves no replica", container_name(inst, t.primary)),
        (n, 0) => format!(
            "{} serves {n} replica(s), asynchronously",
            container_name(inst, t.primary)
        ),
        (n, k) => format!(
            "{} serves {n} replica(s); a commit waits for {k} of them ({})",
            container_name(inst, t.primary),
            t.sync_mode
        ),
    })
}

/// Step `ensure_replicas`: every replica has its volume and container, is cloned
/// from the primary when new, runs, and follows the current primary.
pub(crate) async fn ensure_replicas(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> StepResult {
    // The new primary's synchronous commits wait for a replica to follow it, so
    // those that run already go first (pointing one at it is a reload), then those
    // to start (a switchover's old primary, stopped), and a failed primary last: it
    // may not be back for a while.
    let failed = task.options.failed_member.map(MemberId);
    let mut replicas = vec![];
    for m in inst.topology.replicas() {
        let running = ctx
            .runtime
            .inspect_member(members::key(inst, m))
            .await?
            .is_some_and(|o| o.running);
        replicas.push((Some(m) == failed, !running, m));
    }
    replicas.sort();
    let replicas: Vec<MemberId> = replicas.into_iter().map(|(_, _, m)| m).collect();
    if replicas.is_empty() {
        return Ok("no replicas".into());
    }
    let mut said = vec![];
    for m in replicas {
        let name = container_name(inst, m);
        progress(&format!("replica {name}"));
        if Some(m) == failed && task.kind == TaskKind::Failover {
            match old_primary_back(ctx, inst, m).await {
                Ok(()) => {
                    crate::rejoins::former_primary(ctx, inst, m).await;
                    said.push(format!("{name}, the old primary, rejoined as a replica"));
                }
                Err(e) => said.push(format!(
                    "{name}, the old primary, is not back yet ({e}); it rejoins as a replica \
                     when it is (reconcile repairs it)"
                )),
            }
            continue;
        }
        // A container that never ran is one this step made before a crash: the
        // member is still being added.
        let existed = ctx
            .runtime
            .inspect_member(members::key(inst, m))
            .await?
            .is_some_and(|o| o.status != "created");
        // A volume a scale finds without a container that ran is left from an
        // earlier member (a scale-down without purge): its position may be older
        // than anything the primary keeps, so it is cloned afresh, not resumed.
        // (After a crash it may be the empty volume this step made: cloning into
        // it is what would happen anyway.)
        let stale = !existed
            && task.kind == TaskKind::Scale
            && ctx
                .runtime
                .volume_exists(
                    &members::volume_name(inst, m),
                    &members::member_labels(ctx, inst, m),
                )
                .await?;
        // A replica's volume is a copy of the primary: a new one is cloned into.
        steps::ensure_volume(ctx, inst, m).await?;
        steps::ensure_container(ctx, inst, m, true).await?;
        if stale {
            ctx.runtime
                .put_file(
                    members::key(inst, m),
                    berth_model::agent::DATA_DIR,
                    berth_model::agent::STALE_FILE,
                    b"its volume is left from an earlier member of the instance",
                )
                .await?;
        }
        steps::ensure_params(ctx, inst, m, false).await?;
        crate::tls::ensure_member_tls(ctx, inst, m).await?;
        steps::ensure_running(ctx, inst, m).await?;
        steps::wait_ready(ctx, inst, m).await?;
        let ip = steps::member_ip(ctx, inst, m).await?;
        members::send_replication(ctx, inst, ip, &members::replication_for(inst, m))
            .await
            .map_err(StepError::Retry)?;
        if !existed {
            wait_streaming(ctx, inst, m).await?;
            let display = berth_model::member::display_name(&inst.name, m);
            let why = match task.kind {
                TaskKind::Create => "created with the instance",
                TaskKind::Scale => "added by a scale",
                _ => "brought back",
            };
            ctx.store
                .record_event(&NewEvent::instance(
                    inst.id,
                    inst.name.as_str(),
                    EventKind::MemberAdded,
                    format!("replica {display} ({name}) {why}, following the primary"),
                    serde_json::json!({ "member": display, "container": name, "role": "replica" }),
                ))
                .await?;
            said.push(format!("{name} cloned and following"));
        } else {
            said.push(format!("{name} following"));
        }
    }
    Ok(said.join("; "))
}

/// How long a new replica may take to stream from the primary once it runs.
const STREAMING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until a new replica says it receives and applies the primary's changes: a
/// member that runs but does not stream (its position gone from the primary, say)
/// fails the step with its own reason instead of being called a replica.
pub(crate) async fn wait_streaming(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: MemberId,
) -> Result<(), StepError> {
    let started = std::time::Instant::now();
    let mut last = "no answer yet".to_owned();
    while started.elapsed() < STREAMING_TIMEOUT {
        match members::role_report(ctx, inst, m).await {
            Some(r) if r.replication_running == Some(true) => return Ok(()),
            Some(r) => last = r.reason.unwrap_or_else(|| "not streaming yet".into()),
            None => last = "its agent does not answer".into(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(StepError::Fatal(format!(
        "replica {} does not stream from the primary after {} s: {last}",
        container_name(inst, m),
        STREAMING_TIMEOUT.as_secs()
    )))
}

/// A replica that exists already: running, following the current primary.
async fn ensure_replica(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> Result<(), StepError> {
    steps::ensure_container(ctx, inst, m, true).await?;
    steps::ensure_params(ctx, inst, m, false).await?;
    crate::tls::ensure_member_tls(ctx, inst, m).await?;
    steps::ensure_running(ctx, inst, m).await?;
    steps::wait_ready(ctx, inst, m).await?;
    let ip = steps::member_ip(ctx, inst, m).await?;
    members::send_replication(ctx, inst, ip, &members::replication_for(inst, m))
        .await
        .map_err(StepError::Retry)
}

/// A failover's failed primary brought back as a replica, tried again for up to
/// 90 s while what stops it may pass (its agent still starting, an engine busy
/// with the previous configuration).
async fn old_primary_back(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        match tokio::time::timeout_at(deadline, ensure_replica(ctx, inst, m)).await {
            Err(_) => return Err(StepError::Retry("it did not answer within 90 s".into())),
            Ok(Err(StepError::Retry(e))) => {
                let pause = std::time::Duration::from_secs(2);
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(StepError::Retry(e));
                }
                tokio::time::sleep(pause).await;
            }
            Ok(done) => return done,
        }
    }
}

/// Step `remove_extra_members`: members the topology no longer lists are stopped and
/// their containers removed; their volumes too with purge. Never the primary.
pub(crate) async fn remove_extra_members(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> StepResult {
    let extra: Vec<MemberId> = members_in_docker(ctx, inst)
        .await?
        .into_iter()
        .filter(|m| !inst.topology.members.contains(m) && *m != inst.topology.primary)
        .collect();
    if extra.is_empty() {
        return Ok("no member to remove".into());
    }
    let mut said = vec![];
    for m in extra {
        let name = container_name(inst, m);
        let had_container = ctx
            .runtime
            .find_member(members::key(inst, m))
            .await?
            .is_some();
        ctx.runtime
            .ensure_stopped(members::key(inst, m), 60)
            .await?;
        said.push(steps::remove_container(ctx, inst, m).await?);
        if task.options.purge {
            said.push(steps::remove_volume(ctx, inst, m).await?);
        }
        if had_container {
            let display = berth_model::member::display_name(&inst.name, m);
            ctx.store
                .record_event(&NewEvent::instance(
                    inst.id,
                    inst.name.as_str(),
                    EventKind::MemberRemoved,
                    format!(
                        "replica {display} ({name}) removed{}",
                        if task.options.purge {
                            " with its volume"
                        } else {
                            "; its volume is kept"
                        }
                    ),
                    serde_json::json!({ "member": display, "container": name, "purged": task.options.purge }),
                ))
                .await?;
        }
    }
    Ok(said.join("; "))
}

/// Step `restart_replicas` of tasks planned before each replica had its own step:
/// each replica in turn, as [`restart_replica`] does.
pub(crate) async fn restart_replicas(ctx: &Ctx, inst: &InstanceRecord) -> StepResult {
    let mut said = vec![];
    for m in inst.topology.replicas() {
        said.push(restart_replica(ctx, inst, m).await?);
    }
    Ok(said.join("; "))
}

/// Step `restart_replica`: the replica is stopped cleanly, gets its settings again,
/// and starts and streams from the primary — one member of the first half of a
/// rolling restart. A member that is no longer a replica (the instance changed
/// since the plan) is left alone, saying so.
pub(crate) async fn restart_replica(ctx: &Ctx, inst: &InstanceRecord, m: MemberId) -> StepResult {
    if !inst.topology.replicas().any(|r| r == m) {
        return Ok(format!(
            "{} is not a replica any more; left as it is",
            container_name(inst, m)
        ));
    }
    ctx.runtime
        .ensure_stopped(members::key(inst, m), 60)
        .await?;
    steps::ensure_params(ctx, inst, m, false).await?;
    steps::ensure_running(ctx, inst, m).await?;
    steps::wait_ready(ctx, inst, m).await?;
    // Streaming again before the next step: a switchover right after needs it to
    // receive what the old primary writes last.
    wait_streaming(ctx, inst, m).await?;
    Ok(format!("{} restarted and streams", container_name(inst, m)))
}

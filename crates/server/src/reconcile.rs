//! Reconcile: compare the store with Docker and close the gap.
//!
//! [`plan`] is pure: given the instances and what was observed, it returns the
//! actions to take. [`run_once`] gathers the observations and applies the plan.
//! Rules, most important first:
//! - never touch an instance a task is working on (its status is busy);
//! - a member meant to run whose container is missing or stopped gets a repair task,
//!   which recreates it on the same data volume (never on an empty one);
//! - status follows what was seen: running and answering is available, anything
//!   else is unavailable, with the reason;
//! - containers and networks of this site that no live instance owns are removed;
//!   volumes only when the store says their instance was deleted with purge —
//!   a volume is a user's data, and an unknown one is reported, not removed.

use crate::members;
use crate::Ctx;
use berth_model::{
    labels, InstanceEvent, InstanceId, InstanceRecord, InstanceStatus, TaskKind, TaskOptions,
};
use berth_runtime::{ContainerObservation, Labelled};
use berth_store::Tombstone;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tracing::{info, warn};

/// What reconcile saw of one instance's member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberSeen {
    /// No container.
    Missing,
    /// A container that does not run.
    Down(ContainerObservation),
    /// Running, and the agent says the engine answers.
    Healthy,
    /// Running, but the engine does not answer (yet); the reason.
    NotAnswering(String),
}

/// Everything reconcile looked at.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Per live instance, its member.
    pub members: HashMap<InstanceId, MemberSeen>,
    /// This site's labelled containers.
    pub containers: Vec<Labelled>,
    /// This site's labelled networks.
    pub networks: Vec<Labelled>,
    /// This site's labelled volumes.
    pub volumes: Vec<Labelled>,
    /// What the store knows of instance ids found on objects that no live instance owns.
    pub tombstones: HashMap<InstanceId, Tombstone>,
    /// Current revision of every parameter group.
    pub group_revisions: HashMap<String, i64>,
    /// Instances whose primary is down while automatic failover watches them:
    /// failover decides (promote a replica, or bring the primary back), not repair.
    pub left_to_failover: HashSet<InstanceId>,
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a repair task for the instance.
    Repair(InstanceId, String),
    /// Apply a newer revision of the instance's parameter group.
    Reconfigure(InstanceId, i64),
    /// Record an observation.
    Observe(InstanceId, InstanceEvent, Option<String>),
    /// Remove a container no live instance owns (by the id this site's listing gave).
    RemoveContainer(String),
    /// Remove a network no live instance owns (by the id this site's listing gave).
    RemoveNetwork(String),
    /// Remove a volume whose instance was deleted with purge.
    RemoveVolume(String),
    /// Report a volume that is nobody's but may hold data.
    ReportVolume(String, &'static str),
}

fn instance_of(obj: &Labelled) -> Option<InstanceId> {
    obj.labels
        .get(labels::INSTANCE)
        .and_then(|v| v.parse().ok())
}

/// Ids of instances that Docker objects name but the store has no live record of.
pub fn unowned_ids(instances: &[InstanceRecord], observed: &Observed) -> HashSet<InstanceId> {
    let live: HashSet<InstanceId> = instances.iter().map(|i| i.id).collect();
    observed
        .containers
        .iter()
        .chain(&observed.networks)
        .chain(&observed.volumes)
        .filter_map(instance_of)
        .filter(|id| !live.contains(id))
        .collect()
}

/// Decides what to do. Pure.
pub fn plan(instances: &[InstanceRecord], observed: &Observed) -> Vec<Action> {
    let mut actions = vec![];
    let live: HashSet<InstanceId> = instances.iter().map(|i| i.id).collect();
    for inst in instances {
        // A verification's throwaway instance is its task's alone: never repaired
        // (a repair would publish its endpoint), deleted when the task ends.
        if inst.status.is_busy() || crate::backup::verify::is_throwaway(inst) {
            continue;
        }
        let Some(seen) = observed.members.get(&inst.id) else {
            continue;
        };
        if observed.left_to_failover.contains(&inst.id) {
            continue;
        }
        let wants_running = inst.status.wants_running();
        match seen {
            MemberSeen::Missing if wants_running => {
                actions.push(Action::Repair(inst.id, "its container is missing".into()));
            }
            MemberSeen::Down(obs) if wants_running && obs.status != "restarting" => {
                actions.push(Action::Repair(
                    inst.id,
                    format!(
                        "its container is {} (exit code {})",
                        obs.status,
                        obs.exit_code.unwrap_or(-1)
                    ),
                ));
            }
            MemberSeen::Down(obs) => {
                actions.push(Action::Observe(
                    inst.id,
                    InstanceEvent::ObservedDown,
                    Some(format!("container is {}", obs.status)),
                ));
            }
            MemberSeen::Missing => {
                actions.push(Action::Observe(
                    inst.id,
                    InstanceEvent::ObservedDown,
                    Some("container is missing".into()),
                ));
            }
            MemberSeen::Healthy => {
                if inst.status != InstanceStatus::Available || inst.status_detail.is_some() {
                    actions.push(Action::Observe(
                        inst.id,
                        InstanceEvent::ObservedHealthy,
                        None,
                    ));
                } else if let Some(rev) = inst
                    .param_group
                    .as_ref()
                    .and_then(|g| observed.group_revisions.get(g))
                    .filter(|rev| **rev != inst.params_revision)
                {
                    actions.push(Action::Reconfigure(inst.id, *rev));
                }
            }
            MemberSeen::NotAnswering(why) => {
                actions.push(Action::Observe(
                    inst.id,
                    InstanceEvent::ObservedDown,
                    Some(why.clone()),
                ));
            }
        }
    }
    for c in &observed.containers {
        if let Some(id) = instance_of(c) {
            if !live.contains(&id) {
                actions.push(Action::RemoveContainer(c.id.clone()));
            }
        }
    }
    for n in &observed.networks {
        if let Some(id) = instance_of(n) {
            if !live.contains(&id) {
                actions.push(Action::RemoveNetwork(n.id.clone()));
            }
        }
    }
    for v in &observed.volumes {
        let Some(id) = instance_of(v) else { continue };
        if live.contains(&id) {
            continue;
        }
        match observed.tombstones.get(&id).copied().unwrap_or(Tombstone::Unknown) {
            Tombstone::DeletedPurged => actions.push(Action::RemoveVolume(v.name.clone())),
            Tombstone::DeletedKeptData | Tombstone::Live => {}
            Tombstone::Unknown => actions.push(Action::ReportVolume(
                v.name.clone(),
                "labelled for this site but its instance is unknown to the store; kept, since it may hold data",
            )),
        }
    }
    actions
}

fn severity(seen: &MemberSeen) -> u8 {
    match seen {
        MemberSeen::Healthy => 0,
        MemberSeen::NotAnswering(_) => 1,
        MemberSeen::Down(_) => 2,
        MemberSeen::Missing => 3,
    }
}

/// What the primary's agent says of synchronous replication becomes the instance's
/// (and an event when it changed).
async fn record_sync(ctx: &Ctx, inst: &InstanceRecord, h: &members::AgentHealth) {
    let why = h
        .sync_degraded
        .as_deref()
        .filter(|_| inst.topology.sync > 0);
    if why != inst.sync_degraded.as_deref() {
        if let Err(e) = ctx.store.set_sync_degraded(inst.id, why).await {
            info!(instance = %inst.name, "sync state not recorded: {e}");
        }
    }
}

async fn observe_member(
    ctx: &Ctx,
    inst: &InstanceRecord,
    m: berth_model::MemberId,
) -> Result<MemberSeen, String> {
    let name = members::container_name(inst, m);
    Ok(
        match ctx
            .runtime
            .inspect_member(members::key(inst, m))
            .await
            .map_err(|e| e.to_string())?
        {
            None => MemberSeen::Missing,
            Some(obs) if !obs.running => MemberSeen::Down(obs),
            Some(obs) => match obs.ip {
                None => MemberSeen::NotAnswering(format!(
                    "container {name} has no address on its network"
                )),
                Some(ip) => match members::agent_health(ctx, inst, ip).await {
                    Ok(h) if h.ready => {
                        if m == inst.topology.primary {
                            record_sync(ctx, inst, &h).await;
                        }
                        crate::rejoins::observed(ctx, inst, m, h.rejoined.as_ref()).await;
                        MemberSeen::Healthy
                    }
                    Ok(h) => MemberSeen::NotAnswering(match (h.refusal(), &h.last_exit) {
                        (Some(why), _) => format!("{name}: {why}"),
                        (None, Some(exit)) => format!(
                            "{name}: engine is {} after {} restarts (last: {exit})",
                            h.state, h.restarts
                        ),
                        (None, None) => format!("{name}: engine is {}", h.state),
                    }),
                    Err(e) => MemberSeen::NotAnswering(format!("{name}: {e}")),
                },
            },
        },
    )
}

/// Gathers observations of the instances; `observed` already holds Docker's listings.
async fn observe(
    ctx: &Ctx,
    instances: &[InstanceRecord],
    mut observed: Observed,
) -> Result<Observed, String> {
    let checks = instances
        .iter()
        .filter(|i| !i.status.is_busy())
        .map(|inst| async move {
            // The instance is as well as its worst member: a missing replica is
            // repaired like a missing primary (the repair brings every member back).
            let mut worst = match ctx
                .runtime
                .inspect_member(berth_runtime::ContainerKey::Endpoint(inst.id))
                .await
                .map_err(|e| e.to_string())?
            {
                // The endpoint is part of the instance: without it, no client gets in.
                None => MemberSeen::Missing,
                Some(obs) if !obs.running => MemberSeen::Down(obs),
                Some(_) => MemberSeen::Healthy,
            };
            let mut primary_down = false;
            for m in &inst.topology.members {
                let seen = observe_member(ctx, inst, *m).await?;
                if *m == inst.topology.primary {
                    primary_down = matches!(seen, MemberSeen::Down(_) | MemberSeen::Missing);
                }
                if severity(&seen) > severity(&worst) {
                    worst = seen;
                }
            }
            // Manual or paused: nobody promotes, so the primary is repaired in place.
            let failover_decides = primary_down && inst.topology.fails_over_automatically();
            Ok::<_, String>((inst.id, worst, failover_decides))
        });
    for r in futures_util::future::join_all(checks).await {
        let (id, seen, failover_decides) = r?;
        observed.members.insert(id, seen);
        if failover_decides {
            observed.left_to_failover.insert(id);
        }
    }
    for id in unowned_ids(instances, &observed) {
        let t = ctx.store.tombstone(id).await.map_err(|e| e.to_string())?;
        observed.tombstones.insert(id, t);
    }
    Ok(observed)
}

/// One reconcile pass. Returns the actions it took.
pub async fn run_once(ctx: &Ctx) -> Result<Vec<Action>, String> {
    let _ = ctx.tasks.resume_all(ctx).await;
    // Docker first, the store second: an instance is stored before any of its
    // objects exist, so every object listed here has its instance in the list below
    // and a create in flight is never mistaken for an orphan.
    let listed = Observed {
        containers: ctx
            .runtime
            .list_containers()
            .await
            .map_err(|e| e.to_string())?,
        networks: ctx
            .runtime
            .list_networks()
            .await
            .map_err(|e| e.to_string())?,
        volumes: ctx
            .runtime
            .list_volumes()
            .await
            .map_err(|e| e.to_string())?,
        ..Default::default()
    };
    let instances = ctx
        .store
        .list_instances(None)
        .await
        .map_err(|e| e.to_string())?;
    let mut listed = listed;
    listed.group_revisions = ctx
        .store
        .list_groups()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|g| (g.name.to_string(), g.revision))
        .collect();
    let observed = observe(ctx, &instances, listed).await?;
    let actions = plan(&instances, &observed);
    for action in &actions {
        apply(ctx, &instances, action).await;
    }
    Ok(actions)
}

async fn apply(ctx: &Ctx, instances: &[InstanceRecord], action: &Action) {
    match action {
        Action::Repair(id, why) => {
            let Some(inst) = instances.iter().find(|i| i.id == *id) else {
                return;
            };
            match crate::tasks::begin(ctx, inst, TaskKind::Repair, TaskOptions::default()).await {
                Ok((_, task)) => warn!(instance = %inst.name, task = %task.id, "repairing: {why}"),
                // A user's task got there first: it decides.
                Err(e) => info!(instance = %inst.name, "not repairing now: {e}"),
            }
        }
        Action::Reconfigure(id, revision) => {
            let Some(inst) = instances.iter().find(|i| i.id == *id) else {
                return;
            };
            match crate::tasks::begin(ctx, inst, TaskKind::Reconfigure, TaskOptions::default())
                .await
            {
                Ok((_, task)) => {
                    info!(instance = %inst.name, task = %task.id, revision, "applying a newer parameter group revision")
                }
                Err(e) => info!(instance = %inst.name, "not reconfiguring now: {e}"),
            }
        }
        Action::Observe(id, event, detail) => {
            if let Err(e) = ctx.store.apply_event(*id, *event, detail.as_deref()).await {
                info!(instance = %id, "observation not recorded: {e}");
            }
        }
        Action::RemoveContainer(name) => {
            warn!(container = %name, "removing a container no instance owns");
            if let Err(e) = ctx.runtime.remove_container(name).await {
                warn!(container = %name, error = %e, "could not remove orphan container");
            }
        }
        Action::RemoveNetwork(name) => {
            warn!(network = %name, "removing a network no instance owns");
            if let Err(e) = ctx.runtime.remove_listed_network(name).await {
                warn!(network = %name, error = %e, "could not remove orphan network (still in use?)");
            }
        }
        Action::RemoveVolume(name) => {
            warn!(volume = %name, "removing the volume of an instance deleted with purge");
            if let Err(e) = ctx.runtime.remove_volume(name).await {
                warn!(volume = %name, error = %e, "could not remove orphan volume");
            }
        }
        Action::ReportVolume(name, why) => {
            // Once per process: the same finding every pass would drown the log.
            let first = ctx
                .reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone());
            if first {
                warn!(volume = %name, "{why}");
            }
        }
    }
}

/// Reconciles at start and then every `reconcile_interval`.
pub async fn run_forever(ctx: Ctx) {
    let mut certificates_checked: Option<std::time::Instant> = None;
    loop {
        let started = std::time::Instant::now();
        let pass = run_once(&ctx).await;
        ctx.metrics.reconcile_pass(started.elapsed(), pass.is_ok());
        if let Err(e) = pass {
            warn!(error = %e, "reconcile pass failed; retrying");
        }
        if certificates_checked.is_none_or(|t| t.elapsed() >= crate::tls::RENEW_CHECK) {
            crate::tls::renew_due(&ctx).await;
            certificates_checked = Some(std::time::Instant::now());
        }
        tokio::time::sleep(
            ctx.config
                .reconcile_interval
                .max(Duration::from_millis(200)),
        )
        .await;
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;

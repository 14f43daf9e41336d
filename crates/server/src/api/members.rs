//! `/v1/instances/{name}/scale` and `/switchover`, and what `show` says of each
//! member right now.

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::views::{Accepted, InstanceView, MemberView};
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::spec::ScaleRequest;
use berth_model::{InstanceRecord, InstanceStatus, ProjectId, TaskKind, TaskOptions};

/// Add or remove replicas, or change how many confirm a commit, online. Replicas
/// are cloned from the primary; a scale-down removes the highest replicas (their
/// volumes too with `purge`), never the primary.
#[utoipa::path(post, operation_id = "scale_instance", path = "/v1/instances/{name}/scale", params(("name" = String, Path)), request_body = ScaleRequest, responses(
    (status = 202, body = Accepted),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn scale(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<ScaleRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body?;
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    let t = &inst.topology;
    let members = req.members.unwrap_or(t.members.len() as u16);
    let sync = req.sync.unwrap_or(t.sync);
    let sync_mode = req.sync_mode.unwrap_or(t.sync_mode);
    let failover = req.failover.unwrap_or(t.failover);
    let max_failover_lag = match &req.max_failover_lag {
        Some(lag) => berth_model::bytes::parse_max_failover_lag(lag)
            .map_err(berth_model::member::MemberError::from)?,
        None => t.max_failover_lag,
    };
    berth_model::member::check(inst.spec.engine, members, sync)?;
    if members as usize == t.members.len()
        && sync == t.sync
        && sync_mode == t.sync_mode
        && failover == t.failover
        && max_failover_lag == t.max_failover_lag
    {
        return Err(ApiError::Unprocessable(format!(
            "instance {name} already has {members} member(s) with sync {sync} ({sync_mode}), \
             failover {failover} within {}; nothing to change",
            berth_model::bytes::ShowBytes(max_failover_lag)
        )));
    }
    crate::tasks::refuse_if_held(&ctx, &inst).await?;
    if inst.status != InstanceStatus::Available {
        return Err(ApiError::InvalidState(format!(
            "instance {name} is {}; scaling needs it available",
            inst.status
        )));
    }
    let options = TaskOptions {
        members: Some(members),
        sync: Some(sync),
        sync_mode: Some(sync_mode),
        failover: Some(failover),
        max_failover_lag: Some(max_failover_lag),
        purge: req.purge,
        ..Default::default()
    };
    super::instances::begin_on(&ctx, &inst, TaskKind::Scale, options).await
}

/// Every member as seen just now: its container, its agent, and (from the
/// primary's engine) each replica's lag. Bounded: a member that does not answer
/// in time is shown by what Docker says. A replica is `ready` only while it
/// follows: its engine answering with replication stopped (a primary gone, a
/// diverged history) is `replication-stopped`.
pub(crate) async fn live_members(ctx: &Ctx, inst: &InstanceRecord) -> Vec<MemberView> {
    let looks = inst.topology.members.iter().map(|m| async move {
        let mut view = MemberView::assigned(inst, *m);
        let key = crate::members::key(inst, *m);
        view.state = Some(match ctx.runtime.inspect_member(key).await {
            Ok(None) => "missing".into(),
            Ok(Some(obs)) if !obs.running => obs.status,
            Ok(Some(obs)) => match obs.ip {
                None => "no-address".into(),
                Some(ip) => match crate::members::agent_health(ctx, inst, ip).await {
                    Ok(h) if h.ready && view.role == berth_model::member::Role::Replica => {
                        match crate::members::role_report_at(ctx, ip).await {
                            Some(r) if r.replication_running == Some(false) => {
                                "replication-stopped".into()
                            }
                            _ => "ready".into(),
                        }
                    }
                    Ok(h) if h.ready => "ready".into(),
                    Ok(h) => h.state,
                    Err(_) => "agent-silent".into(),
                },
            },
            Err(_) => "unknown".into(),
        });
        view
    });
    futures_util::future::join_all(looks).await
}

/// The body of `POST /v1/instances/{name}/switchover`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The replica that becomes the primary (`<instance>-<n>`, or `n`); the
    /// healthiest replica when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// Make a replica the primary with no transaction lost: writes stop on the old
/// primary, the target applies all of it and is promoted, and the old primary
/// follows it without a new clone. Refused, with the reason, when the target is
/// not a healthy replica.
#[utoipa::path(post, operation_id = "switchover_instance", path = "/v1/instances/{name}/switchover", params(("name" = String, Path)), request_body = SwitchoverRequest, responses(
    (status = 202, body = Accepted),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn switchover(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<SwitchoverRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body?;
    let inst = with_a_replica(&ctx, &name, "switch over to").await?;
    crate::tasks::refuse_if_held(&ctx, &inst).await?;
    if inst.status != InstanceStatus::Available {
        return Err(ApiError::InvalidState(format!(
            "instance {name} is {}; a switchover needs it available",
            inst.status
        )));
    }
    let live = live_members(&ctx, &inst).await;
    let target = match &req.to {
        Some(to) => {
            let wanted = member_named(&inst, to).ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "instance {name} has no member {to:?}; its members are {}",
                    live.iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if wanted == inst.topology.primary {
                return Err(ApiError::Unprocessable(format!(
                    "{to} is the primary already; name one of its replicas"
                )));
            }
            wanted
        }
        None => ready_in(&inst, &live).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "no replica of instance {name} is ready to take over; `berth show {name}` says why"
            ))
        })?,
    };
    let view = live
        .iter()
        .find(|v| v.name == berth_model::member::display_name(&inst.name, target));
    if let Some(v) = view.filter(|v| v.state.as_deref() != Some("ready")) {
        return Err(ApiError::Unprocessable(format!(
            "{} cannot take over: it is {}, not ready; wait until `berth show {name}` says ready",
            v.name,
            v.state.as_deref().unwrap_or("unknown")
        )));
    }
    // Too far behind, the switch would hold writes while it catches up: refused.
    if let Some(status) = crate::members::endpoint_status(&ctx, &inst).await {
        let container = crate::members::container_name(&inst, target);
        let lag = status
            .members
            .iter()
            .find(|p| p.member == container)
            .and_then(|p| p.lag_seconds);
        let max = inst.topology.max_lag_ms as f64 / 1000.0;
        if let Some(lag) = lag.filter(|l| *l > max) {
            return Err(ApiError::Unprocessable(format!(
                "{} is {lag:.1} s behind the primary, more than the instance's max lag of {max:.1} s; \
                 wait until `berth show {name}` shows it caught up, or pick another replica",
                berth_model::member::display_name(&inst.name, target)
            )));
        }
    }
    let options = TaskOptions {
        target_member: Some(target.0),
        ..Default::default()
    };
    super::instances::begin_on(&ctx, &inst, TaskKind::Switchover, options).await
}

/// The body of `POST /v1/instances/{name}/failover`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// The replica to promote (`<instance>-<n>`, or `n`); the most advanced one that
    /// has every acknowledged commit when absent.
    #[serde(default)]
    pub to: Option<String>,
    /// Promote even a replica that may lack acknowledged commits.
    #[serde(default)]
    pub accept_data_loss: bool,
}

/// Fail over now, without waiting for the primary: it is stopped (through Docker,
/// or by its lease running out) and a replica promoted, chosen like an automatic
/// failover. Refused with the reason when the replica asked for (or every replica)
/// may lack acknowledged commits, unless `accept_data_loss`.
#[utoipa::path(post, operation_id = "failover_instance", path = "/v1/instances/{name}/failover", params(("name" = String, Path)), request_body = FailoverRequest, responses(
    (status = 202, body = Accepted),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn failover(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<FailoverRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body?;
    let inst = with_a_replica(&ctx, &name, "fail over to").await?;
    crate::tasks::refuse_if_held(&ctx, &inst).await?;
    if !matches!(
        inst.status,
        InstanceStatus::Available | InstanceStatus::Unavailable
    ) {
        return Err(ApiError::InvalidState(format!(
            "instance {name} is {}; a failover needs it available or unavailable, with no task running",
            inst.status
        )));
    }
    let target = match &req.to {
        Some(to) => {
            let m = member_named(&inst, to)
                .filter(|m| *m != inst.topology.primary)
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "{to:?} is not a replica of instance {name}; `berth show {name}` lists them"
                    ))
                })?;
            Some(m)
        }
        None => None,
    };
    match crate::failover::decide(&ctx, &inst, target, req.accept_data_loss).await {
        berth_model::failover::Decision::Promote { member, may_lose } => {
            let options = TaskOptions {
                target_member: Some(member.0),
                failed_member: Some(inst.topology.primary.0),
                may_lose: Some(may_lose),
                ..Default::default()
            };
            super::instances::begin_on(&ctx, &inst, TaskKind::Failover, options).await
        }
        berth_model::failover::Decision::Stay(why) => {
            Err(ApiError::Unprocessable(format!("no failover: {why}")))
        }
    }
}

/// The instance, when it has a replica to `act_on`; a 422 saying how to add one.
async fn with_a_replica(ctx: &Ctx, name: &str, act_on: &str) -> Result<InstanceRecord, ApiError> {
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), name)
        .await?;
    if inst.topology.members.len() < 2 {
        return Err(ApiError::Unprocessable(format!(
            "instance {name} has no replica to {act_on}; add one with `berth scale {name} --members 2`"
        )));
    }
    Ok(inst)
}

/// The member a user named (`<instance>-<n>` as `show` lists it, or `n`), if the
/// instance has it.
fn member_named(inst: &InstanceRecord, to: &str) -> Option<berth_model::MemberId> {
    to.strip_prefix(&format!("{}-", inst.name))
        .unwrap_or(to)
        .parse::<u16>()
        .ok()
        .map(berth_model::MemberId)
        .filter(|m| inst.topology.members.contains(m))
}

/// The first replica seen ready in `live`.
fn ready_in(inst: &InstanceRecord, live: &[MemberView]) -> Option<berth_model::MemberId> {
    inst.topology
        .replicas()
        .zip(
            live.iter()
                .filter(|m| m.role == berth_model::member::Role::Replica),
        )
        .find(|(_, v)| v.state.as_deref() == Some("ready"))
        .map(|(m, _)| m)
}

/// A replica ready to take over right now, if any.
pub(crate) async fn ready_replica(
    ctx: &Ctx,
    inst: &InstanceRecord,
) -> Option<berth_model::MemberId> {
    ready_in(inst, &live_members(ctx, inst).await)
}

/// Fills in what `show` says right now: each member's state, and from the endpoint
/// each replica's lag and where read-only connections go.
pub(crate) async fn look(ctx: &Ctx, inst: &InstanceRecord, view: &mut InstanceView) {
    let (members, status) = tokio::join!(
        live_members(ctx, inst),
        crate::members::endpoint_status(ctx, inst)
    );
    view.members = members;
    let Some(status) = status else { return };
    view.endpoint.ro_fallback = Some(status.ro_fallback);
    view.endpoint.ro_reason = status.ro_reason.clone();
    for m in view.members.iter_mut() {
        if let Some(p) = status.members.iter().find(|p| p.member == m.container) {
            if m.role == berth_model::member::Role::Replica {
                m.lag_bytes = p.lag_bytes;
                m.lag_seconds = p.lag_seconds;
            }
        }
    }
}

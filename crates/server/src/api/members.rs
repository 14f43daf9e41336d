//! `/v1/instances/{name}/scale`, and what `show` says of each member right now.

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::views::{Accepted, InstanceView, MemberView, TaskView};
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
    berth_model::member::check(inst.spec.engine, members, sync)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    if members as usize == t.members.len() && sync == t.sync && sync_mode == t.sync_mode {
        return Err(ApiError::Unprocessable(format!(
            "instance {name} already has {members} member(s) with sync {sync} ({sync_mode}); nothing to change"
        )));
    }
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
        purge: req.purge,
        ..Default::default()
    };
    let (inst, task) = crate::tasks::begin(&ctx, &inst, TaskKind::Scale, options).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            task: TaskView::from(&task),
            instance: InstanceView::new(&inst, &ctx.config.endpoint_host),
        }),
    ))
}

/// Every member as seen just now: its container, its agent, and (from the
/// primary's engine) each replica's lag. Bounded: a member that does not answer
/// in time is shown by what Docker says.
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

//! `/v1/instances/{name}/failover/pause` and `/resume`: hold automatic failover
//! during maintenance. While paused a failed primary is restarted in place (as with
//! `failover: manual`); `berth failover NAME` still promotes on demand.

use super::problems::NotFound;
use crate::error::ApiError;
use crate::views::InstanceView;
use crate::Ctx;
use axum::extract::{Path, State};
use axum::Json;
use berth_model::ProjectId;

/// Pause automatic failover: until resumed, no replica is promoted by itself and a
/// failed primary is restarted in place. Idempotent; answers the instance.
#[utoipa::path(post, operation_id = "pause_failover", path = "/v1/instances/{name}/failover/pause", params(("name" = String, Path)), responses(
    (status = 200, body = InstanceView),
    NotFound,
))]
pub(crate) async fn pause(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    set(&ctx, &name, true).await
}

/// Resume automatic failover (when the instance's mode is `auto`). Idempotent;
/// answers the instance.
#[utoipa::path(post, operation_id = "resume_failover", path = "/v1/instances/{name}/failover/resume", params(("name" = String, Path)), responses(
    (status = 200, body = InstanceView),
    NotFound,
))]
pub(crate) async fn resume(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    set(&ctx, &name, false).await
}

async fn set(ctx: &Ctx, name: &str, paused: bool) -> Result<Json<InstanceView>, ApiError> {
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), name)
        .await?;
    let inst = ctx.store.set_failover_paused(inst.id, paused).await?;
    // Agents that elect through an external store decide by their role file: each
    // running member gets it again (best effort; the next task sends it anyway).
    if ctx.lease_store.is_some() {
        for m in &inst.topology.members {
            if let Ok(ip) = crate::steps::member_ip(ctx, &inst, *m).await {
                let repl = crate::members::replication_for(&inst, *m);
                let _ = crate::members::send_replication(ctx, &inst, ip, &repl).await;
            }
        }
    }
    let mut view = super::instances::view_of(ctx, &inst).await?;
    super::members::look(ctx, &inst, &mut view).await;
    Ok(Json(view))
}

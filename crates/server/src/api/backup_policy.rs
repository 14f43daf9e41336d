//! `/v1/instances/{name}/backup-policy`: an instance's backup schedule and retention.
//! A malformed cron expression is refused (422) and changes nothing.

use super::problems::{NotFound, Unprocessable};
use crate::backup::schedule::default_policy;
use crate::backup::BackupPolicyView;
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use berth_model::backup::{BackupPolicyRecord, BackupPolicyRequest, Schedule};
use berth_model::event::{EventKind, NewEvent};
use berth_model::verify::VerifyPolicy;
use berth_model::ProjectId;

async fn instance(ctx: &Ctx, name: &str) -> Result<berth_model::InstanceRecord, ApiError> {
    Ok(ctx
        .store
        .instance_by_name(&ProjectId::default_project(), name)
        .await?)
}

/// An instance's backup schedule and retention (the default until one is set).
#[utoipa::path(get, operation_id = "show_backup_policy", path = "/v1/instances/{name}/backup-policy",
    params(("name" = String, Path)), responses(
    (status = 200, body = BackupPolicyView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<BackupPolicyView>, ApiError> {
    let inst = instance(&ctx, &name).await?;
    let p = match ctx.store.backup_policy(inst.id).await? {
        Some(p) => p,
        None => default_policy(&ctx, &inst, &berth_store::now()),
    };
    Ok(Json(BackupPolicyView::from(&p)))
}

/// Set an instance's backup schedule and retention. The next scheduled run is the
/// first slot from now; retention applies at the scheduler's next look.
#[utoipa::path(put, operation_id = "set_backup_policy", path = "/v1/instances/{name}/backup-policy",
    params(("name" = String, Path)), request_body = BackupPolicyRequest, responses(
    (status = 200, body = BackupPolicyView),
    NotFound, Unprocessable,
))]
pub(crate) async fn set(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<BackupPolicyRequest>, JsonRejection>,
) -> Result<Json<BackupPolicyView>, ApiError> {
    let Json(body) = body?;
    body.check_ranges().map_err(ApiError::InvalidRequest)?;
    let inst = instance(&ctx, &name).await?;
    let p = body
        .policy(
            inst.id,
            inst.name.as_str(),
            &berth_store::now(),
            Schedule::DEFAULT,
            VerifyPolicy::default(),
        )
        .map_err(ApiError::Unprocessable)?;
    Ok(Json(store(&ctx, &p).await?))
}

/// Stores a policy with its `backup.policy-changed` event; the view of it.
pub(crate) async fn store(ctx: &Ctx, p: &BackupPolicyRecord) -> Result<BackupPolicyView, ApiError> {
    let view = BackupPolicyView::from(p);
    let event = NewEvent::instance(
        p.instance_id,
        &p.instance_name,
        EventKind::BackupPolicyChanged,
        format!(
            "backup policy of {}: schedule {:?}, keep {} days, keep {} backups, verify {}",
            p.instance_name,
            p.schedule,
            p.retention
                .keep_days
                .map_or("any number of".to_owned(), |d| d.to_string()),
            p.retention
                .keep_count
                .map_or("any number of".to_owned(), |d| d.to_string()),
            p.verify,
        ),
        serde_json::to_value(&view).unwrap_or_default(),
    );
    ctx.store.set_backup_policy(p, Some(&event)).await?;
    Ok(view)
}

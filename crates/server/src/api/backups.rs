//! `/v1/backups` and `POST /v1/instances/{name}/backups`.

use super::problems::{Conflict, NotFound};
use crate::backup::{BackupAccepted, BackupStore, BackupView};
use crate::error::ApiError;
use crate::views::TaskView;
use crate::Ctx;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::backup::{BackupId, BackupKind, BackupState};
use berth_model::{ProjectId, TaskOptions};
use serde::Deserialize;

/// What to back up.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBackup {
    /// How to take it (only `logical` for now).
    #[serde(default = "logical")]
    kind: BackupKind,
}

fn logical() -> BackupKind {
    BackupKind::Logical
}

/// Take a backup of a running instance (it keeps serving, shown `modifying`).
#[utoipa::path(post, operation_id = "create_backup", path = "/v1/instances/{name}/backups",
    params(("name" = String, Path)), request_body = CreateBackup, responses(
    (status = 202, body = BackupAccepted),
    NotFound, Conflict,
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<CreateBackup>, JsonRejection>,
) -> Result<(StatusCode, Json<BackupAccepted>), ApiError> {
    let Json(body) = body?;
    let BackupKind::Logical = body.kind;
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    let (id, task) = crate::backup::start_backup(&ctx, &inst).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BackupAccepted {
            backup: id,
            task: TaskView::from(&task),
        }),
    ))
}

/// Filters for the backup list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupQuery {
    /// Only backups of instances that had this name (including deleted ones).
    instance: Option<String>,
}

/// Backups, newest first.
#[utoipa::path(get, operation_id = "list_backups", path = "/v1/backups", params(BackupQuery), responses(
    (status = 200, body = [BackupView]),
))]
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    q: Result<Query<BackupQuery>, QueryRejection>,
) -> Result<Json<Vec<BackupView>>, ApiError> {
    let Query(q) = q?;
    let backups = ctx.store.list_backups(q.instance.as_deref()).await?;
    Ok(Json(backups.iter().map(BackupView::from).collect()))
}

fn parse_id(id: &str) -> Result<BackupId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "no backup {id}; backup ids look like 0b7c…-…; `berth backup list` lists them"
        ))
    })
}

pub(crate) async fn find(
    ctx: &Ctx,
    id: &str,
) -> Result<berth_model::backup::BackupRecord, ApiError> {
    let parsed = parse_id(id)?;
    ctx.store.backup(parsed).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no backup {id}; `berth backup list` lists them"))
    })
}

/// One backup: state, size and checksum.
#[utoipa::path(get, operation_id = "show_backup", path = "/v1/backups/{id}", params(("id" = String, Path, description = "Backup id")), responses(
    (status = 200, body = BackupView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<BackupView>, ApiError> {
    Ok(Json(BackupView::from(&find(&ctx, &id).await?)))
}

/// Verify a backup by restoring it: a throwaway instance with the source's limits is
/// made from it, the engine's own consistency check runs (amcheck, `CHECK TABLE`)
/// and every table is read; the outcome is recorded on the backup with an event, and
/// the throwaway instance is deleted.
#[utoipa::path(post, operation_id = "verify_backup", path = "/v1/backups/{id}/verify", params(("id" = String, Path, description = "Backup id")), responses(
    (status = 202, body = BackupAccepted),
    NotFound, Conflict, super::problems::Unprocessable,
))]
pub(crate) async fn verify(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<BackupAccepted>), ApiError> {
    let b = find(&ctx, &id).await?;
    let (_, task) = crate::backup::verify::start(&ctx, &b).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BackupAccepted {
            backup: b.id,
            task: TaskView::from(&task),
        }),
    ))
}

/// Delete a backup: its object first, then its record.
#[utoipa::path(delete, operation_id = "delete_backup", path = "/v1/backups/{id}", params(("id" = String, Path, description = "Backup id")), responses(
    (status = 204, description = "Deleted."),
    NotFound, Conflict,
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let b = find(&ctx, &id).await?;
    if b.state == BackupState::Running {
        return Err(ApiError::InvalidState(format!(
            "backup {id} is being taken; wait for its task to end (`berth tasks --instance {}`), then delete it",
            b.instance_name
        )));
    }
    if ctx.store.backups_in_use().await?.contains(&b.id) {
        return Err(ApiError::InvalidState(format!(
            "backup {id} is being restored or verified; wait for that task to end \
             (`berth tasks`), then delete it"
        )));
    }
    let store = BackupStore::of(&ctx).map_err(|e| ApiError::Internal(e.to_string()))?;
    store
        .delete(&b.object)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    ctx.store.delete_backup(b.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new instance from a backup.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreRequest {
    /// The new instance's name.
    #[schema(schema_with = berth_model::schema::instance_name)]
    to: String,
    /// The backup to restore (of the source instance).
    backup: String,
    /// CPU limit (default: the source's).
    #[schema(schema_with = berth_model::schema::optional_cpus)]
    cpus: Option<berth_model::spec::Quantity>,
    /// Memory (default: the source's).
    #[schema(schema_with = berth_model::schema::optional_size)]
    memory: Option<String>,
    /// Storage (default: the source's).
    #[schema(schema_with = berth_model::schema::optional_size)]
    storage: Option<String>,
    /// Host port of the new endpoint (default: picked).
    #[serde(default, deserialize_with = "berth_model::whole::option")]
    #[schema(minimum = 1024, maximum = 65535)]
    port: Option<u16>,
}

/// Restore a backup of `name` into a new instance (same engine and version; the
/// source's resources unless given). The backup's checksum is verified before
/// anything is made. Restoring into the source itself is not offered.
#[utoipa::path(post, operation_id = "restore_backup", path = "/v1/instances/{name}/restore",
    params(("name" = String, Path, description = "The source instance (it may be deleted)")),
    request_body = RestoreRequest, responses(
    (status = 202, body = crate::views::Accepted),
    NotFound, Conflict, super::problems::Unprocessable,
))]
pub(crate) async fn restore(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<RestoreRequest>, JsonRejection>,
) -> Result<super::instances::Created, ApiError> {
    let Json(req) = body?;
    let b = find(&ctx, &req.backup).await?;
    if b.instance_name != name {
        return Err(ApiError::Unprocessable(format!(
            "backup {} is of instance {}, not {name}; `berth backup list {name}` lists {name}'s",
            b.id, b.instance_name
        )));
    }
    if !b.is_complete() {
        return Err(ApiError::InvalidState(format!(
            "backup {} is {}, not complete; pick a complete one from `berth backup list {name}`",
            b.id,
            b.state.as_str()
        )));
    }
    // The source's resources, when it still exists.
    let source = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await
        .ok();
    let create = berth_model::CreateRequest {
        name: req.to,
        engine: b.engine.as_str().to_owned(),
        version: Some(b.version.to_string()),
        cpus: req.cpus.or_else(|| {
            source
                .as_ref()
                .map(|s| berth_model::spec::Quantity::Text(s.spec.cpus.to_string()))
        }),
        memory: req
            .memory
            .or_else(|| source.as_ref().map(|s| s.spec.memory.to_string())),
        storage: req
            .storage
            .or_else(|| source.as_ref().map(|s| s.spec.storage.to_string())),
        params: None,
        port: req.port,
        ..Default::default()
    };
    super::instances::create_with(
        &ctx,
        create,
        TaskOptions {
            backup: Some(b.id),
            ..Default::default()
        },
    )
    .await
}

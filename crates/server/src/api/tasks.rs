//! `/v1/tasks`.

use super::problems::{Conflict, NotFound};
use crate::error::ApiError;
use crate::views::TaskView;
use crate::Ctx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::{ProjectId, TaskId};
use serde::Deserialize;

/// Filters for the task list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    /// Only tasks of this instance (by name).
    instance: Option<String>,
    /// At most this many, newest first (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Recent tasks, newest first.
#[utoipa::path(get, operation_id = "list_tasks", path = "/v1/tasks", params(TaskQuery), responses(
    (status = 200, body = [TaskView]),
    NotFound,
))]
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    q: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::InvalidRequest(format!(
            "limit {limit} is out of range; use 1 to 1000"
        )));
    }
    let instance = match q.instance {
        Some(name) => Some(
            ctx.store
                .instance_by_name(&ProjectId::default_project(), &name)
                .await?
                .id,
        ),
        None => None,
    };
    let tasks = ctx.store.list_tasks(instance, limit).await?;
    Ok(Json(tasks.iter().map(TaskView::from).collect()))
}

/// One task, with its steps and progress.
#[utoipa::path(get, operation_id = "show_task", path = "/v1/tasks/{id}", params(("id" = String, Path, description = "Task id")), responses(
    (status = 200, body = TaskView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = task_id(&id)?;
    Ok(Json(TaskView::from(&ctx.store.task(id).await?)))
}

fn task_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "no task {id}; task ids look like 0b7c…-…; `berth tasks` lists them"
        ))
    })
}

/// Cancels a task that can stop safely (a resize, a parameter change, a backup).
///
/// The step under way is dropped (steps are idempotent), the task ends `failed`
/// saying it was cancelled, and the instance is available again as the steps done
/// so far left it (a backup stopped mid-way is marked failed, never listed as
/// good). The answer is the task as it was asked; follow it to see it end. Other
/// tasks (create, scale, switchover, failover, …) are refused: they must end by
/// themselves.
#[utoipa::path(post, operation_id = "cancel_task", path = "/v1/tasks/{id}/cancel", params(("id" = String, Path, description = "Task id")), responses(
    (status = 202, body = TaskView),
    NotFound, Conflict,
))]
pub(crate) async fn cancel(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let id = task_id(&id)?;
    let task = ctx.store.task(id).await?;
    if task.state.is_finished() {
        return Err(ApiError::InvalidState(format!(
            "task {id} has already ended ({}); there is nothing to cancel",
            task.state.as_str()
        )));
    }
    if !task.kind.stops_safely() {
        return Err(ApiError::InvalidState(format!(
            "a {} task cannot be stopped safely mid-way; only resize, reconfigure and backup \
             tasks can be cancelled. Wait for it to end: `berth task {id} --wait`",
            task.kind
        )));
    }
    ctx.tasks.preempt(
        id,
        "cancelled on request (`berth task cancel`); the steps done before it stay done".into(),
    );
    Ok((StatusCode::ACCEPTED, Json(TaskView::from(&task))))
}

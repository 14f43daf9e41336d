//! `/v1/tasks`.

use super::problems::NotFound;
use crate::error::ApiError;
use crate::views::TaskView;
use crate::Ctx;
use axum::extract::{Path, Query, State};
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
    let id: TaskId = id.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "no task {id}; task ids look like 0b7c…-…; `berth tasks` lists them"
        ))
    })?;
    Ok(Json(TaskView::from(&ctx.store.task(id).await?)))
}

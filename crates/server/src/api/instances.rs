//! `/v1/instances`.

use crate::error::{ApiError, Problem};
use crate::views::{Accepted, CredentialsView, InstanceView, TaskView};
use crate::Ctx;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_engine::engine;
use berth_model::{
    CreateRequest, InstanceEvent, InstanceRecord, InstanceStatus, ProjectId, Secret, TaskKind,
    TaskOptions, TaskRecord,
};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;

fn project() -> ProjectId {
    ProjectId::default_project()
}

fn random_secret() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// A free TCP port on the host, picked by the kernel and not held by any instance.
async fn allocate_port(ctx: &Ctx) -> Result<u16, ApiError> {
    let taken = ctx.store.ports_in_use().await?;
    for _ in 0..20 {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0))
            .map_err(|e| ApiError::Internal(format!("finding a free port: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| ApiError::Internal(format!("finding a free port: {e}")))?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(ApiError::Internal("could not find a free port".into()))
}

/// Instances, by name.
#[utoipa::path(get, path = "/v1/instances", responses((status = 200, body = [InstanceView])))]
pub(crate) async fn list(State(ctx): State<Ctx>) -> Result<Json<Vec<InstanceView>>, ApiError> {
    let all = ctx.store.list_instances(Some(&project())).await?;
    Ok(Json(
        all.iter()
            .map(|i| InstanceView::new(i, &ctx.config.endpoint_host))
            .collect(),
    ))
}

/// Create an instance. Answers at once with the create task to follow.
#[utoipa::path(post, path = "/v1/instances", request_body = CreateRequest, responses(
    (status = 202, body = Accepted),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body?;
    let host = ctx.runtime.host_capacity().await?;
    let (name, spec) = req.validate(&host)?;
    let now = berth_store::now();
    let inst = InstanceRecord {
        id: berth_model::InstanceId::new_random(),
        name,
        project: project(),
        spec,
        status: InstanceStatus::Creating,
        status_detail: None,
        port: allocate_port(&ctx).await?,
        superuser_password: random_secret(),
        agent_token: random_secret(),
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let task = TaskRecord::new(
        inst.id,
        inst.name.clone(),
        TaskKind::Create,
        TaskOptions::default(),
        &now,
    );
    ctx.store.create_instance(&inst, &task).await?;
    ctx.tasks.submit(&ctx, task.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            task: TaskView::from(&task),
            instance: InstanceView::new(&inst, &ctx.config.endpoint_host),
        }),
    ))
}

/// One instance.
#[utoipa::path(get, path = "/v1/instances/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = InstanceView),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    Ok(Json(InstanceView::new(&inst, &ctx.config.endpoint_host)))
}

async fn begin(
    ctx: &Ctx,
    name: &str,
    kind: TaskKind,
    options: TaskOptions,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let inst = ctx.store.instance_by_name(&project(), name).await?;
    let task = TaskRecord::new(
        inst.id,
        inst.name.clone(),
        kind,
        options,
        &berth_store::now(),
    );
    let inst = ctx
        .store
        .begin_task(inst.id, InstanceEvent::Began(kind), &task)
        .await?;
    ctx.tasks.submit(ctx, task.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            task: TaskView::from(&task),
            instance: InstanceView::new(&inst, &ctx.config.endpoint_host),
        }),
    ))
}

/// Delete options.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Also remove the data volume. Without it the volume is kept.
    #[serde(default)]
    purge: bool,
}

/// Delete an instance: its container and network go; its data volume stays unless `purge=true`.
#[utoipa::path(delete, path = "/v1/instances/{name}", params(("name" = String, Path), DeleteQuery), responses(
    (status = 202, body = Accepted),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Query(q) = q?;
    begin(
        &ctx,
        &name,
        TaskKind::Delete,
        TaskOptions { purge: q.purge },
    )
    .await
}

/// Start, stop or restart an instance.
#[utoipa::path(post, path = "/v1/instances/{name}/{action}", params(
    ("name" = String, Path),
    ("action" = String, Path, description = "start, stop or restart"),
), responses(
    (status = 202, body = Accepted),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn action(
    State(ctx): State<Ctx>,
    Path((name, action)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let kind = match action.as_str() {
        "start" => TaskKind::Start,
        "stop" => TaskKind::Stop,
        "restart" => TaskKind::Restart,
        other => {
            return Err(ApiError::NotFound(format!(
                "no action {other:?}; use start, stop or restart"
            )))
        }
    };
    begin(&ctx, &name, kind, TaskOptions::default()).await
}

/// The superuser's credentials and a connection URI.
#[utoipa::path(get, path = "/v1/instances/{name}/credentials", params(("name" = String, Path)), responses(
    (status = 200, body = CredentialsView),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn credentials(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<CredentialsView>, ApiError> {
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    let eng = engine(inst.spec.engine);
    let host = ctx.config.endpoint_host.clone();
    let user = eng.superuser().to_owned();
    Ok(Json(CredentialsView {
        uri: eng
            .uri(&host, inst.port, &user, &inst.superuser_password)
            .expose()
            .to_owned(),
        password: inst.superuser_password.expose().to_owned(),
        user,
        host,
        port: inst.port,
    }))
}

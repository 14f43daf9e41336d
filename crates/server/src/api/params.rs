//! `/v1/parameter-groups`, `/v1/catalog` and attaching groups to instances.
//!
//! A group is validated as a whole against the engine's own catalog before anything
//! is saved, and against the memory of every instance it is attached to, so Berth
//! never stores a value an instance could not start with. Saving bumps the group's
//! revision; every attached, available instance gets a `reconfigure` task, and
//! reconcile catches up any instance that was busy or stopped (a stopped instance
//! receives the settings when it starts).

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::views::{InstanceView, TaskView};
use crate::Ctx;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_engine::engine;
use berth_model::params::{Catalog, ParamError, ParamSpec};
use berth_model::{
    EngineKind, InstanceEvent, InstanceName, InstanceRecord, InstanceStatus, ParamGroup, ProjectId,
    TaskKind, TaskOptions, TaskRecord,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A parameter group as shown.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct GroupView {
    name: String,
    engine: String,
    version: String,
    description: String,
    /// Bumped on every change.
    revision: i64,
    /// Settings, by name.
    params: BTreeMap<String, String>,
    /// Settings among them that need a restart to change.
    restart_required: Vec<String>,
    /// Instances it is attached to.
    instances: Vec<String>,
    created_at: String,
    updated_at: String,
}

async fn view(ctx: &Ctx, g: &ParamGroup) -> Result<GroupView, ApiError> {
    let instances = ctx.store.instances_with_group(g.name.as_str()).await?;
    let catalog = ctx.catalog(g.engine, &g.version).await?;
    Ok(GroupView {
        name: g.name.to_string(),
        engine: g.engine.to_string(),
        version: g.version.to_string(),
        description: g.description.clone(),
        revision: g.revision,
        restart_required: g
            .params
            .keys()
            .filter(|k| catalog.needs_restart(k))
            .cloned()
            .collect(),
        params: g.params.clone(),
        instances: instances.iter().map(|i| i.name.to_string()).collect(),
        created_at: g.created_at.clone(),
        updated_at: g.updated_at.clone(),
    })
}

/// Checks settings against the catalog; returns them normalised.
fn check_all(
    catalog: &Catalog,
    kind: EngineKind,
    set: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let reserved = engine(kind).reserved();
    set.iter()
        .map(|(k, v)| {
            catalog
                .check(k, v, &reserved)
                .map(|nv| (k.trim().to_ascii_lowercase(), nv))
                .map_err(|e| {
                    let detail = format!("{e}; nothing was changed");
                    match e {
                        ParamError::RunsCode(_) | ParamError::ControlCharacter(_) => {
                            ApiError::SettingRefused(detail)
                        }
                        _ => ApiError::Unprocessable(detail),
                    }
                })
        })
        .collect()
}

/// The engine's rule that a group's settings let an instance with this much memory
/// start; the store runs it inside the transaction that writes what it guards.
pub(crate) fn fits(
    params: &BTreeMap<String, String>,
    inst: &InstanceRecord,
    memory_mib: u64,
) -> Result<(), String> {
    engine(inst.spec.engine)
        .check_fits(params, memory_mib)
        .map_err(|why| format!("instance {}: {why}", inst.name))
}

/// `POST /v1/parameter-groups`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGroup {
    /// Name (lowercase letters, digits, hyphens).
    #[schema(schema_with = berth_model::schema::instance_name)]
    name: String,
    /// `postgres` or `mariadb`.
    #[schema(schema_with = berth_model::schema::engine)]
    engine: String,
    /// Major version; the engine's newest when absent.
    #[serde(default)]
    #[schema(schema_with = berth_model::schema::optional_version)]
    version: Option<String>,
    /// What it is for.
    #[serde(default)]
    description: Option<String>,
    /// Initial settings.
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// Parameter groups, by name.
#[utoipa::path(get, operation_id = "list_parameter_groups", path = "/v1/parameter-groups", responses((status = 200, body = [GroupView])))]
pub(crate) async fn list(State(ctx): State<Ctx>) -> Result<Json<Vec<GroupView>>, ApiError> {
    let mut out = vec![];
    for g in ctx.store.list_groups().await? {
        out.push(view(&ctx, &g).await?);
    }
    Ok(Json(out))
}

/// Create a parameter group.
#[utoipa::path(post, operation_id = "create_parameter_group", path = "/v1/parameter-groups", request_body = CreateGroup, responses(
    (status = 201, body = GroupView),
    Conflict, Unprocessable,
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    body: Result<Json<CreateGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let Json(req) = body?;
    let name = InstanceName::try_from(req.name.as_str())
        .map_err(|e| ApiError::InvalidRequest(format!("group {e}")))?;
    let kind: EngineKind = req
        .engine
        .parse()
        .map_err(|e| ApiError::InvalidRequest(format!("{e}")))?;
    let version = match &req.version {
        Some(v) => kind
            .version(v)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
        None => kind.default_version(),
    };
    let catalog = ctx.catalog(kind, &version).await?;
    let params = check_all(&catalog, kind, &req.params)?;

    let now = berth_store::now();
    let group = ParamGroup {
        name,
        engine: kind,
        version,
        description: req.description.unwrap_or_default(),
        revision: 1,
        params: BTreeMap::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    ctx.store.create_group(&group).await?;
    let group = if params.is_empty() {
        group
    } else {
        ctx.store
            .update_group(group.name.as_str(), &params, &[], &fits)
            .await?
    };
    Ok((StatusCode::CREATED, Json(view(&ctx, &group).await?)))
}

/// One parameter group.
#[utoipa::path(get, operation_id = "show_parameter_group", path = "/v1/parameter-groups/{group}", params(("group" = String, Path)), responses(
    (status = 200, body = GroupView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(group): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let g = ctx.store.group(&group).await?;
    Ok(Json(view(&ctx, &g).await?))
}

/// `PATCH /v1/parameter-groups/{group}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateGroup {
    /// Settings to set.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Settings to remove (back to Berth's or the engine's default).
    #[serde(default)]
    unset: Vec<String>,
}

/// The group after a change, and the tasks applying it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct GroupChanged {
    group: GroupView,
    /// One `reconfigure` task per attached, available instance.
    tasks: Vec<TaskView>,
}

/// Begins a reconfigure task on an available instance; others catch up later.
async fn reconfigure(ctx: &Ctx, inst: &InstanceRecord) -> Result<Option<TaskRecord>, ApiError> {
    if inst.status != InstanceStatus::Available {
        return Ok(None);
    }
    match crate::tasks::begin(ctx, inst, TaskKind::Reconfigure, TaskOptions::default()).await {
        Ok((_, task)) => Ok(Some(task)),
        // Busy now: reconcile applies the new revision when it is available again.
        Err(
            berth_store::StoreError::InvalidTransition { .. }
            | berth_store::StoreError::Held { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Change settings; they are applied to every attached instance (live where the
/// engine can, else marked pending restart).
#[utoipa::path(patch, operation_id = "update_parameter_group", path = "/v1/parameter-groups/{group}", params(("group" = String, Path)), request_body = UpdateGroup, responses(
    (status = 200, body = GroupChanged),
    NotFound, Unprocessable,
))]
pub(crate) async fn update(
    State(ctx): State<Ctx>,
    Path(group): Path<String>,
    body: Result<Json<UpdateGroup>, JsonRejection>,
) -> Result<Json<GroupChanged>, ApiError> {
    let Json(req) = body?;
    if req.set.is_empty() && req.unset.is_empty() {
        return Err(ApiError::Unprocessable(
            "nothing to change: give settings to set or unset".into(),
        ));
    }
    let g = ctx.store.group(&group).await?;
    let catalog = ctx.catalog(g.engine, &g.version).await?;
    let set = check_all(&catalog, g.engine, &req.set)?;
    let unset: Vec<String> = req
        .unset
        .iter()
        .map(|k| k.trim().to_ascii_lowercase())
        .collect();
    if let Some(k) = unset.iter().find(|k| !g.params.contains_key(*k)) {
        return Err(ApiError::Unprocessable(format!(
            "group {group} does not set {k}; nothing was changed"
        )));
    }
    let g = ctx.store.update_group(&group, &set, &unset, &fits).await?;
    let attached = ctx.store.instances_with_group(&group).await?;
    let mut tasks = vec![];
    for inst in &attached {
        if let Some(t) = reconfigure(&ctx, inst).await? {
            tasks.push(TaskView::from(&t));
        }
    }
    Ok(Json(GroupChanged {
        group: view(&ctx, &g).await?,
        tasks,
    }))
}

/// Delete a group no instance uses.
#[utoipa::path(delete, operation_id = "delete_parameter_group", path = "/v1/parameter-groups/{group}", params(("group" = String, Path)), responses(
    (status = 204),
    NotFound, Conflict,
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.store.delete_group(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/instances/{name}/parameter-group`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttachGroup {
    /// The group, or null to detach.
    #[schema(schema_with = berth_model::schema::optional_group)]
    group: Option<String>,
}

/// The instance after attaching, and the task applying the settings (when it runs).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Attached {
    instance: InstanceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<TaskView>,
}

/// Checks that a group can be attached to an instance of this engine and memory.
pub(crate) async fn check_attachable(
    ctx: &Ctx,
    group: &str,
    engine_kind: EngineKind,
    version: &berth_model::EngineVersion,
    memory_mib: u64,
) -> Result<ParamGroup, ApiError> {
    let g = ctx.store.group(group).await?;
    if g.engine != engine_kind || &g.version != version {
        return Err(ApiError::Unprocessable(format!(
            "parameter group {group} is for {} {}, not {engine_kind} {version}",
            g.engine, g.version
        )));
    }
    engine(engine_kind)
        .check_fits(&g.params, memory_mib)
        .map_err(|why| ApiError::Unprocessable(format!("{why}; nothing was changed")))?;
    Ok(g)
}

/// Attach a parameter group to an instance (or detach with null).
#[utoipa::path(put, operation_id = "attach_parameter_group", path = "/v1/instances/{name}/parameter-group", params(("name" = String, Path)), request_body = AttachGroup, responses(
    (status = 200, body = Attached),
    (status = 202, body = Attached),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn attach(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<AttachGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<Attached>), ApiError> {
    let Json(req) = body?;
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    if let Some(g) = &req.group {
        check_attachable(
            &ctx,
            g,
            inst.spec.engine,
            &inst.spec.version,
            inst.spec.memory.mib(),
        )
        .await?;
    }
    let running = inst.status == InstanceStatus::Available;
    if !running && inst.status != InstanceStatus::Stopped {
        return Err(ApiError::InvalidState(format!(
            "instance {name} is {}; attach a group when it is available or stopped",
            inst.status
        )));
    }
    let task = running.then(|| {
        TaskRecord::new(
            &inst,
            TaskKind::Reconfigure,
            TaskOptions::default(),
            &berth_store::now(),
        )
    });
    let updated = ctx
        .store
        .attach_group(
            inst.id,
            req.group.as_deref(),
            task.as_ref()
                .map(|t| (InstanceEvent::Began(TaskKind::Reconfigure), t)),
            &fits,
        )
        .await?;
    if let Some(t) = &task {
        ctx.tasks.submit(&ctx, t.id);
    }
    Ok((
        if task.is_some() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        Json(Attached {
            instance: InstanceView::new(&updated, &ctx.config.endpoint_host),
            task: task.as_ref().map(TaskView::from),
        }),
    ))
}

/// Catalog filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogQuery {
    /// Only settings whose name contains this.
    search: Option<String>,
}

/// Every setting of an engine version, as the engine itself describes them.
#[utoipa::path(get, path = "/v1/catalog/{engine}/{version}", params(("engine" = String, Path), ("version" = String, Path), CatalogQuery), responses(
    (status = 200, body = [ParamSpec]),
    Unprocessable,
))]
pub(crate) async fn catalog(
    State(ctx): State<Ctx>,
    Path((engine_name, version)): Path<(String, String)>,
    q: Result<Query<CatalogQuery>, QueryRejection>,
) -> Result<Json<Vec<ParamSpec>>, ApiError> {
    let Query(q) = q?;
    let kind: EngineKind = engine_name
        .parse()
        .map_err(|e| ApiError::InvalidRequest(format!("{e}")))?;
    let version = kind
        .version(&version)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let catalog = ctx.catalog(kind, &version).await?;
    let search = q.search.unwrap_or_default().to_ascii_lowercase();
    Ok(Json(
        catalog
            .params
            .values()
            .filter(|p| p.name.contains(&search))
            .cloned()
            .collect(),
    ))
}

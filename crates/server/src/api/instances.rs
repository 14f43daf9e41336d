//! `/v1/instances`.

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::views::{Accepted, CredentialsView, InstanceView, TaskView};
use crate::Ctx;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_engine::engine;
use berth_model::{
    CreateRequest, InstanceRecord, InstanceStatus, ProjectId, Secret, TaskKind, TaskOptions,
    TaskRecord,
};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;

fn project() -> ProjectId {
    ProjectId::default_project()
}

pub(crate) fn random_secret() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// The lowest port a user may ask for: below it ports are privileged.
const MIN_PORT: u16 = 1024;

/// Checks a port the user asked for: in range, and not bound by a program on this
/// host (a port another instance holds is refused by the store, naming it).
async fn check_requested_port(ctx: &Ctx, port: u16) -> Result<u16, ApiError> {
    if port < MIN_PORT {
        return Err(ApiError::InvalidRequest(format!(
            "port {port} is privileged; ask for a port from {MIN_PORT} to 65535, or leave it out to get a free one"
        )));
    }
    // An instance's own port is bound by Docker: the store names the holder instead.
    let held_by_instance = ctx.store.ports_in_use().await?.contains(&port);
    if !held_by_instance
        && std::net::TcpListener::bind((ctx.config.publish_address.as_str(), port)).is_err()
    {
        return Err(ApiError::InvalidState(format!(
            "port {port} is in use on this host by a program Berth does not manage; pick another port, or leave it out to get a free one"
        )));
    }
    Ok(port)
}

/// A free TCP port on the host, picked by the kernel and not held by any instance.
pub(crate) async fn allocate_port(ctx: &Ctx) -> Result<u16, ApiError> {
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
#[utoipa::path(get, operation_id = "list_instances", path = "/v1/instances", responses((status = 200, body = [InstanceView])))]
pub(crate) async fn list(State(ctx): State<Ctx>) -> Result<Json<Vec<InstanceView>>, ApiError> {
    let all = ctx.store.list_instances(Some(&project())).await?;
    let mut out = vec![];
    for i in &all {
        out.push(view_of(&ctx, i).await?);
    }
    Ok(Json(out))
}

/// The view of an instance, its memory-derived settings less those its group pins.
pub(crate) async fn view_of(ctx: &Ctx, inst: &InstanceRecord) -> Result<InstanceView, ApiError> {
    let mut view = InstanceView::new(inst, &ctx.config.endpoint_host);
    if let Some(g) = &inst.param_group {
        if let Ok(group) = ctx.store.group(g).await {
            view.memory_settings
                .retain(|k, _| !group.params.contains_key(k));
        }
    }
    Ok(view)
}

/// Create an instance. Answers at once with the create task to follow.
#[utoipa::path(post, operation_id = "create_instance", path = "/v1/instances", request_body = CreateRequest, responses(
    (status = 202, body = Accepted),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(req) = body?;
    create_with(&ctx, req, TaskOptions::default()).await
}

/// What a create answers: 202, the accepted task, and the instance the `api` event
/// is about.
pub(crate) type Created = (
    StatusCode,
    axum::Extension<super::events::EventSubject>,
    Json<Accepted>,
);

/// Creates an instance with a create task of these options (a restore names its
/// backup there).
pub(crate) async fn create_with(
    ctx: &Ctx,
    req: CreateRequest,
    options: TaskOptions,
) -> Result<Created, ApiError> {
    // The backup policy asked for is checked before anything is made.
    let policy = req.backup_policy.clone();
    let with_defaults = |p: &berth_model::backup::BackupPolicyRequest, id, name: &str| {
        p.policy(
            id,
            name,
            &berth_store::now(),
            &ctx.config.default_backup_schedule,
            ctx.config.default_verify,
        )
        .map_err(ApiError::Unprocessable)
    };
    if let Some(p) = &policy {
        p.check_ranges().map_err(ApiError::InvalidRequest)?;
        with_defaults(p, berth_model::InstanceId::new_random(), &req.name)?;
    }
    let (inst, task) = create_in(ctx, req, options, project(), TaskKind::Create).await?;
    if let Some(p) = &policy {
        let record = with_defaults(p, inst.id, inst.name.as_str())?;
        super::backup_policy::store(ctx, &record).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(super::events::EventSubject(inst.name.to_string())),
        Json(Accepted {
            task: TaskView::from(&task),
            instance: InstanceView::new(&inst, &ctx.config.endpoint_host),
        }),
    ))
}

/// Stores a new instance of `project` with the task that makes it (`kind`: a create,
/// or a verification's throwaway instance), and starts the task.
pub(crate) async fn create_in(
    ctx: &Ctx,
    req: CreateRequest,
    mut options: TaskOptions,
    project: berth_model::ProjectId,
    kind: TaskKind,
) -> Result<(InstanceRecord, TaskRecord), ApiError> {
    let ctx = ctx.clone();
    let host = ctx.runtime.host_capacity().await?;
    let (name, spec) = req.validate(&host)?;
    let topology = req
        .topology(spec.engine)
        .map_err(berth_model::SpecError::from)?;
    if let Some(g) = &req.params {
        super::params::check_attachable(&ctx, g, spec.engine, &spec.version, spec.memory.mib())
            .await?;
    }
    let port = match req.port {
        Some(p) => check_requested_port(&ctx, p).await?,
        None => allocate_port(&ctx).await?,
    };
    options.picked_port = req.port.is_none();
    let ro_port = allocate_port_besides(&ctx, port).await?;
    let now = berth_store::now();
    let mut inst = InstanceRecord {
        id: berth_model::InstanceId::new_random(),
        name,
        project,
        spec,
        status: InstanceStatus::Creating,
        status_detail: None,
        held_by: None,
        port,
        ro_port,
        pending_restart: vec![],
        param_group: req.params.clone(),
        params_revision: 0,
        superuser_password: random_secret(),
        agent_token: random_secret(),
        replication_password: random_secret(),
        topology,
        sync_degraded: None,
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let task = TaskRecord::new(&inst, kind, options, &now);
    // A port picked for the user may be taken by a create running beside this one:
    // pick again. A port the user asked for is theirs to change.
    let mut tries = 0;
    loop {
        match ctx
            .store
            .create_instance(&inst, &task, &super::params::fits)
            .await
        {
            Err(berth_store::StoreError::PortTaken { port, .. })
                if (req.port.is_none() || port == inst.ro_port) && tries < 5 =>
            {
                tries += 1;
                if req.port.is_none() {
                    inst.port = allocate_port(&ctx).await?;
                }
                inst.ro_port = allocate_port_besides(&ctx, inst.port).await?;
            }
            r => break r?,
        }
    }
    ctx.tasks.submit(&ctx, task.id);
    // As stored: the create holds it.
    inst.held_by = Some(task.id);
    Ok((inst, task))
}

/// A free port for the read-only endpoint, other than the read-write one.
pub(crate) async fn allocate_port_besides(ctx: &Ctx, rw: u16) -> Result<u16, ApiError> {
    for _ in 0..5 {
        let p = allocate_port(ctx).await?;
        if p != rw {
            return Ok(p);
        }
    }
    Err(ApiError::Internal("could not find a free port".into()))
}

/// One instance.
#[utoipa::path(get, operation_id = "show_instance", path = "/v1/instances/{name}", params(("name" = String, Path)), responses(
    (status = 200, body = InstanceView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    let mut view = view_of(&ctx, &inst).await?;
    super::members::look(&ctx, &inst, &mut view).await;
    Ok(Json(view))
}

async fn begin(
    ctx: &Ctx,
    name: &str,
    kind: TaskKind,
    options: TaskOptions,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let inst = ctx.store.instance_by_name(&project(), name).await?;
    begin_on(ctx, &inst, kind, options).await
}

/// Begins a task on an instance already read, and answers 202 with it.
pub(crate) async fn begin_on(
    ctx: &Ctx,
    inst: &InstanceRecord,
    kind: TaskKind,
    options: TaskOptions,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let (inst, task) = crate::tasks::begin(ctx, inst, kind, options).await?;
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Also remove the data volume. Without it the volume is kept.
    #[serde(default)]
    purge: bool,
    /// Delete without the final backup that is otherwise taken first (and kept
    /// after the instance, until retention or `backup delete` removes it).
    #[serde(default)]
    skip_final_backup: bool,
}

/// Delete an instance: a final backup is taken first (unless `skip_final_backup=true`;
/// it needs the instance available), then its container and network go; its data
/// volume stays unless `purge=true`.
#[utoipa::path(delete, operation_id = "delete_instance", path = "/v1/instances/{name}", params(("name" = String, Path), DeleteQuery), responses(
    (status = 202, body = Accepted),
    NotFound, Conflict,
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Query(q) = q?;
    let backup = if q.skip_final_backup {
        None
    } else {
        crate::backup::final_backup(&ctx, &name).await?
    };
    begin(
        &ctx,
        &name,
        TaskKind::Delete,
        TaskOptions {
            purge: q.purge,
            backup,
            ..Default::default()
        },
    )
    .await
}

/// Start, stop or restart an instance.
#[utoipa::path(post, operation_id = "instance_action", path = "/v1/instances/{name}/{action}", params(
    ("name" = String, Path),
    ("action" = String, Path, description = "start, stop or restart"),
), responses(
    (status = 202, body = Accepted),
    NotFound, Conflict,
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
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    let mut options = TaskOptions::default();
    // Several members: a rolling restart, with one short switch instead of an
    // outage, when a replica is ready to take over.
    if kind == TaskKind::Restart
        && inst.status == InstanceStatus::Available
        && inst.topology.members.len() > 1
    {
        options.target_member = super::members::ready_replica(&ctx, &inst)
            .await
            .map(|m| m.0);
    }
    begin_on(&ctx, &inst, kind, options).await
}

/// The superuser's credentials and a connection URI.
#[utoipa::path(get, path = "/v1/instances/{name}/credentials", params(("name" = String, Path)), responses(
    (status = 200, body = CredentialsView),
    NotFound,
))]
pub(crate) async fn credentials(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<CredentialsView>, ApiError> {
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    let eng = engine(inst.spec.engine);
    let host = ctx.config.endpoint_host.clone();
    let user = eng.superuser().to_owned();
    let ca_file = ctx.ca.cert_path().display().to_string();
    let command = berth_engine::shell_line(&eng.client_command(
        &host,
        inst.port,
        &user,
        &inst.superuser_password,
        &ca_file,
    ));
    Ok(Json(CredentialsView {
        ro_uri: eng
            .uri(
                &host,
                inst.ro_port,
                &user,
                &inst.superuser_password,
                &ca_file,
            )
            .expose()
            .to_owned(),
        ro_port: inst.ro_port,
        uri: eng
            .uri(&host, inst.port, &user, &inst.superuser_password, &ca_file)
            .expose()
            .to_owned(),
        command,
        ca_certificate: ctx.ca.certificate().to_owned(),
        ca_file,
        password: inst.superuser_password.expose().to_owned(),
        user,
        host,
        port: inst.port,
    }))
}

/// `PATCH /v1/instances/{name}`: new resources, applied live.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResizeRequest {
    /// CPU cores, like `0.5`, `2` or `1500m`.
    #[serde(default)]
    #[schema(schema_with = berth_model::schema::optional_cpus)]
    cpus: Option<berth_model::spec::Quantity>,
    /// Memory, like `512MiB` or `2GiB`.
    #[serde(default)]
    #[schema(schema_with = berth_model::schema::optional_size)]
    memory: Option<String>,
    /// Storage, like `20GiB`.
    #[serde(default)]
    #[schema(schema_with = berth_model::schema::optional_size)]
    storage: Option<String>,
}

/// Headroom kept above what the engine uses when memory shrinks.
const SHRINK_HEADROOM_PERCENT: u64 = 10;

/// Change CPU and memory of a running instance without restarting it; settings that
/// follow memory are applied live where the engine can, else marked pending restart.
#[utoipa::path(patch, operation_id = "resize_instance", path = "/v1/instances/{name}", params(("name" = String, Path)), request_body = ResizeRequest, responses(
    (status = 202, body = Accepted),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn resize(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<ResizeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(req) = body?;
    let inst = ctx.store.instance_by_name(&project(), &name).await?;
    let host = ctx.runtime.host_capacity().await?;
    let current = inst.spec.clone();
    let wanted = berth_model::spec::ResizeRequest {
        cpus: req.cpus.as_ref().map(|q| q.text()),
        memory: req.memory.clone(),
        storage: req.storage.clone(),
    }
    .apply(&current, &host)?;
    if wanted.storage != current.storage {
        return Err(ApiError::NotSupported(format!(
            "storage cannot be changed: the local volume driver has no size quota to grow, so instance {name} can \
             already use all free disk ({} MiB free); resize cpus and memory only",
            host.disk_free_mib
        )));
    }
    if wanted == current {
        return Err(ApiError::Unprocessable(format!(
            "instance {name} already has cpus {} and memory {}; nothing to change",
            current.cpus, current.memory
        )));
    }
    crate::tasks::refuse_if_held(&ctx, &inst).await?;
    if inst.status != InstanceStatus::Available {
        // The state machine refuses too; this says why in the user's terms.
        return Err(ApiError::InvalidState(format!(
            "instance {name} is {}; resize needs it available{}",
            inst.status,
            if inst.status == InstanceStatus::Stopped {
                format!(" (run `berth start {name}` first)")
            } else {
                String::new()
            }
        )));
    }
    if wanted.memory < current.memory {
        if let Some(used) = ctx
            .runtime
            .memory_in_use(crate::members::primary_key(&inst))
            .await?
        {
            let used_mib = used / (1024 * 1024);
            let floor = used_mib + used_mib * SHRINK_HEADROOM_PERCENT / 100;
            if wanted.memory.mib() < floor {
                return Err(ApiError::InvalidState(format!(
                    "instance {name} uses {used_mib}MiB of memory right now, so {} is too small; \
                     ask for at least {floor}MiB (use plus {SHRINK_HEADROOM_PERCENT}% headroom)",
                    wanted.memory
                )));
            }
        }
    }
    // The target travels with the task; the stored spec changes only once Docker
    // has applied it, so a refused resize leaves `show` as it was.
    let task = TaskRecord::new(
        &inst,
        TaskKind::Resize,
        TaskOptions {
            cpus_millis: Some(wanted.cpus.millis()),
            memory_mib: Some(wanted.memory.mib()),
            ..Default::default()
        },
        &berth_store::now(),
    );
    let inst = ctx
        .store
        .begin_resize(inst.id, &wanted, &task, &|params, inst, memory| {
            super::params::fits(params, inst, memory)
                .map_err(|why| format!("parameter group: {why}; change the group first"))
        })
        .await?;
    ctx.tasks.submit(&ctx, task.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            task: TaskView::from(&task),
            instance: InstanceView::new(&inst, &ctx.config.endpoint_host),
        }),
    ))
}

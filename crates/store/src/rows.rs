//! Row mapping between SQL and model records.

use crate::{events, now, Result, StoreError};
use berth_model::{
    CpuMillis, EngineKind, InstanceEvent, InstanceId, InstanceRecord, InstanceSpec, InstanceStatus,
    MemoryMib, NewEvent, ProjectId, Secret, StorageMib, TaskKind, TaskRecord,
};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
    }
}

pub(crate) fn parse<T: std::str::FromStr>(row: &SqliteRow, column: &'static str) -> Result<T> {
    let s: String = row.try_get(column)?;
    s.parse().map_err(|_| corrupt(column, s))
}

pub(crate) fn instance_from_row(row: &SqliteRow) -> Result<InstanceRecord> {
    let engine: EngineKind = parse(row, "engine")?;
    let version: String = row.try_get("version")?;
    let cpus: i64 = row.try_get("cpus_millis")?;
    let memory: i64 = row.try_get("memory_mib")?;
    let storage: i64 = row.try_get("storage_mib")?;
    let port: i64 = row.try_get("port")?;
    Ok(InstanceRecord {
        id: parse(row, "id")?,
        name: parse(row, "name")?,
        project: parse(row, "project")?,
        spec: InstanceSpec {
            engine,
            version: engine
                .version(&version)
                .map_err(|_| corrupt("version", &version))?,
            cpus: u32::try_from(cpus)
                .ok()
                .and_then(|c| CpuMillis::from_millis(c).ok())
                .ok_or_else(|| corrupt("cpus_millis", cpus))?,
            memory: u64::try_from(memory)
                .ok()
                .and_then(|m| MemoryMib::from_mib(m).ok())
                .ok_or_else(|| corrupt("memory_mib", memory))?,
            storage: u64::try_from(storage)
                .ok()
                .and_then(|m| StorageMib::from_mib(m).ok())
                .ok_or_else(|| corrupt("storage_mib", storage))?,
        },
        status: parse(row, "status")?,
        status_detail: row.try_get("status_detail")?,
        held_by: {
            let t: Option<String> = row.try_get("held_by")?;
            t.map(|t| t.parse().map_err(|_| corrupt("held_by", &t)))
                .transpose()?
        },
        port: u16::try_from(port).map_err(|_| corrupt("port", port))?,
        ro_port: {
            let p: Option<i64> = row.try_get("ro_port")?;
            p.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
        },
        param_group: row.try_get("param_group")?,
        params_revision: row.try_get("params_revision")?,
        pending_restart: {
            let p: String = row.try_get("pending_restart")?;
            serde_json::from_str(&p).map_err(|_| corrupt("pending_restart", &p))?
        },
        superuser_password: Secret::new(row.try_get::<String, _>("superuser_password")?),
        agent_token: Secret::new(row.try_get::<String, _>("agent_token")?),
        // Empty for instances made before members; the first scale sets one.
        replication_password: Secret::new(
            row.try_get::<Option<String>, _>("replication_password")?
                .unwrap_or_default(),
        ),
        sync_degraded: row.try_get("sync_degraded")?,
        topology: {
            let t: String = row.try_get("topology")?;
            serde_json::from_str(&t).map_err(|_| corrupt("topology", &t))?
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
    let options: String = row.try_get("options")?;
    let steps: String = row.try_get("steps")?;
    Ok(TaskRecord {
        id: parse(row, "id")?,
        instance_id: parse(row, "instance_id")?,
        instance_name: parse(row, "instance_name")?,
        kind: parse(row, "kind")?,
        options: serde_json::from_str(&options).map_err(|_| corrupt("options", &options))?,
        state: parse(row, "state")?,
        steps: serde_json::from_str(&steps).map_err(|_| corrupt("steps", &steps))?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn insert_instance(conn: &mut SqliteConnection, i: &InstanceRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO instances (id, name, project, engine, version, cpus_millis, memory_mib, storage_mib,
            status, status_detail, port, superuser_password, agent_token, created_at, updated_at, param_group,
            replication_password, topology, ro_port)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(i.id.to_string())
    .bind(i.name.as_str())
    .bind(i.project.as_str())
    .bind(i.spec.engine.as_str())
    .bind(i.spec.version.as_str())
    .bind(i64::from(i.spec.cpus.millis()))
    .bind(i.spec.memory.mib() as i64)
    .bind(i.spec.storage.mib() as i64)
    .bind(i.status.as_str())
    .bind(i.status_detail.as_deref())
    .bind(i64::from(i.port))
    .bind(i.superuser_password.expose())
    .bind(i.agent_token.expose())
    .bind(&i.created_at)
    .bind(&i.updated_at)
    .bind(i.param_group.as_deref())
    .bind(i.replication_password.expose())
    .bind(serde_json::to_string(&i.topology).unwrap_or_default())
    .bind(i64::from(i.ro_port))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_task(conn: &mut SqliteConnection, t: &TaskRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO tasks (id, instance_id, instance_name, kind, options, state, steps, error, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id.to_string())
    .bind(t.instance_id.to_string())
    .bind(t.instance_name.as_str())
    .bind(t.kind.as_str())
    .bind(serde_json::to_string(&t.options).unwrap_or_else(|_| "{}".into()))
    .bind(t.state.as_str())
    .bind(serde_json::to_string(&t.steps).unwrap_or_else(|_| "[]".into()))
    .bind(t.error.as_deref())
    .bind(&t.created_at)
    .bind(&t.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn instance_by_id(
    conn: &mut SqliteConnection,
    id: InstanceId,
) -> Result<Option<InstanceRecord>> {
    sqlx::query("SELECT * FROM instances WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(instance_from_row)
        .transpose()
}

pub(crate) async fn instance_by_name(
    conn: &mut SqliteConnection,
    project: &ProjectId,
    name: &str,
) -> Result<Option<InstanceRecord>> {
    sqlx::query("SELECT * FROM instances WHERE project = ? AND name = ? AND deleted_at IS NULL")
        .bind(project.as_str())
        .bind(name)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(instance_from_row)
        .transpose()
}

pub(crate) async fn set_status(
    conn: &mut SqliteConnection,
    id: InstanceId,
    status: InstanceStatus,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE instances SET status = ?, status_detail = ?, updated_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(detail)
        .bind(now())
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the instance for `task` inside the caller's transaction (which then
/// records the task): refused, naming the holder, while another unfinished task
/// holds it. A holder whose task has ended without giving the instance back (a
/// store from before the lock, or a record finished by hand) no longer counts.
pub(crate) async fn hold(
    conn: &mut SqliteConnection,
    id: InstanceId,
    task: &TaskRecord,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT i.name, t.id AS task, t.kind FROM instances i
         JOIN tasks t ON t.id = i.held_by AND t.state IN ('pending', 'running')
         WHERE i.id = ? AND t.id <> ?",
    )
    .bind(id.to_string())
    .bind(task.id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Err(StoreError::Held {
            name: parse(&row, "name")?,
            task: parse(&row, "task")?,
            kind: parse(&row, "kind")?,
        });
    }
    sqlx::query("UPDATE instances SET held_by = ? WHERE id = ?")
        .bind(task.id.to_string())
        .bind(id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives the instance back when `task` holds it (a task that ended after another
/// took over leaves that one's hold alone).
pub(crate) async fn release(conn: &mut SqliteConnection, task: &TaskRecord) -> Result<()> {
    sqlx::query("UPDATE instances SET held_by = NULL WHERE id = ? AND held_by = ?")
        .bind(task.instance_id.to_string())
        .bind(task.id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads the instance and checks that `event` applies to its status, inside the
/// caller's transaction. Returns the instance and the status it moves to.
pub(crate) async fn transition(
    conn: &mut SqliteConnection,
    id: InstanceId,
    event: berth_model::InstanceEvent,
) -> Result<(InstanceRecord, InstanceStatus)> {
    let inst = instance_by_id(conn, id)
        .await?
        .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
    let to = inst
        .status
        .transition(event)
        .map_err(|source| StoreError::InvalidTransition {
            name: inst.name.clone(),
            source,
        })?;
    Ok((inst, to))
}

/// Applies an event to an instance's status inside the caller's transaction, with
/// the lifecycle event it is (if any, see `model::event::for_transition`).
pub(crate) async fn apply_in_tx(
    conn: &mut SqliteConnection,
    id: InstanceId,
    event: InstanceEvent,
    detail: Option<&str>,
) -> Result<InstanceStatus> {
    let (inst, to) = transition(conn, id, event).await?;
    if to != inst.status || detail != inst.status_detail.as_deref() {
        set_status(conn, id, to, detail).await?;
    }
    // A restart (or a fresh start) applies every pending setting.
    if matches!(
        event,
        InstanceEvent::Succeeded(TaskKind::Restart | TaskKind::Start | TaskKind::Repair)
    ) && !inst.pending_restart.is_empty()
    {
        sqlx::query("UPDATE instances SET pending_restart = '[]' WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    if to == InstanceStatus::Deleted {
        sqlx::query("UPDATE instances SET deleted_at = ? WHERE id = ?")
            .bind(now())
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    if let Some((kind, message)) =
        berth_model::event::for_transition(inst.status, to, event, detail)
    {
        let details = json!({ "from": inst.status, "to": to, "reason": detail });
        events::insert(
            conn,
            &NewEvent::instance(id, inst.name.as_str(), kind, message, details),
        )
        .await?;
    }
    Ok(to)
}

pub(crate) async fn update_task_in(conn: &mut SqliteConnection, task: &TaskRecord) -> Result<()> {
    let steps = serde_json::to_string(&task.steps).unwrap_or_else(|_| "[]".into());
    sqlx::query("UPDATE tasks SET state = ?, steps = ?, error = ?, updated_at = ? WHERE id = ?")
        .bind(task.state.as_str())
        .bind(steps)
        .bind(task.error.as_deref())
        .bind(now())
        .bind(task.id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

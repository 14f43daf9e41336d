//! Memory-fit checks that run inside the transaction writing what they guard.
//!
//! A parameter group's memory settings must fit every instance it is attached to.
//! Checking first and writing later lets two requests pass each other (a resize to
//! less memory while the group's `shared_buffers` grows); checking inside the
//! `BEGIN IMMEDIATE` transaction that writes closes that gap. The rule itself is the
//! engine's (the caller passes it in): the store only supplies what it is checked on.

use crate::{Result, StoreError};
use berth_model::{InstanceRecord, TaskKind, TaskOptions, TaskState};
use sqlx::SqliteConnection;
use std::collections::BTreeMap;

/// The caller's rule: may these settings run on this instance with this much memory
/// (MiB)? `Err` says why not, in words for the user.
pub type FitCheck<'a> = &'a (dyn Fn(&BTreeMap<String, String>, &InstanceRecord, u64) -> std::result::Result<(), String>
         + Send
         + Sync);

/// The memory an instance must be able to run its settings in: the smaller of its
/// spec and the target of a resize still in flight (the spec changes only once
/// Docker has applied the new limits).
pub(crate) async fn effective_memory_mib(
    conn: &mut SqliteConnection,
    inst: &InstanceRecord,
) -> Result<u64> {
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT options FROM tasks WHERE instance_id = ? AND kind = ? AND state IN (?, ?)",
    )
    .bind(inst.id.to_string())
    .bind(TaskKind::Resize.as_str())
    .bind(TaskState::Pending.as_str())
    .bind(TaskState::Running.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(options
        .iter()
        .filter_map(|o| serde_json::from_str::<TaskOptions>(o).ok())
        .filter_map(|o| o.memory_mib)
        .fold(inst.spec.memory.mib(), u64::min))
}

/// The settings of a group, read inside the transaction.
pub(crate) async fn group_params(
    conn: &mut SqliteConnection,
    group: &str,
) -> Result<BTreeMap<String, String>> {
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM param_groups WHERE name = ?")
        .bind(group)
        .fetch_one(&mut *conn)
        .await?;
    if exists == 0 {
        return Err(StoreError::NoSuchGroup(group.to_owned()));
    }
    let values: Vec<(String, String)> =
        sqlx::query_as("SELECT name, value FROM param_values WHERE group_name = ?")
            .bind(group)
            .fetch_all(&mut *conn)
            .await?;
    Ok(values.into_iter().collect())
}

/// Runs `check` for one instance with `params` at `memory_mib`.
pub(crate) fn run(
    check: FitCheck<'_>,
    params: &BTreeMap<String, String>,
    inst: &InstanceRecord,
    memory_mib: u64,
) -> Result<()> {
    check(params, inst, memory_mib).map_err(StoreError::Refused)
}

/// Checks a group's settings against every live instance attached to it.
pub(crate) async fn check_attached(
    conn: &mut SqliteConnection,
    group: &str,
    params: &BTreeMap<String, String>,
    check: FitCheck<'_>,
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT * FROM instances WHERE param_group = ? AND deleted_at IS NULL ORDER BY name",
    )
    .bind(group)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let inst = crate::rows::instance_from_row(row)?;
        let memory = effective_memory_mib(conn, &inst).await?;
        run(check, params, &inst, memory)?;
    }
    Ok(())
}

/// Checks the group attached to instance `id`, if any, at `memory_mib`.
pub(crate) async fn check_instance(
    conn: &mut SqliteConnection,
    inst: &InstanceRecord,
    group: Option<&str>,
    memory_mib: u64,
    check: FitCheck<'_>,
) -> Result<()> {
    let Some(group) = group else {
        return Ok(());
    };
    let params = group_params(conn, group).await?;
    run(check, &params, inst, memory_mib)
}

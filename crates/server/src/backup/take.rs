//! The `ensure_backup_stored` step: record the backup `running`, stream the member's
//! dump into the backup store, then record size and checksum — only then is it good.

use super::BackupStore;
use crate::steps::StepError;
use crate::Ctx;
use berth_model::backup::{BackupKind, BackupRecord};
use berth_model::{InstanceRecord, MemberId, TaskRecord};
use std::net::IpAddr;

/// The whole dump must arrive within this long.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

pub(crate) async fn ensure_backup_stored(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<String, StepError> {
    let id = task
        .options
        .backup
        .ok_or_else(|| StepError::Fatal("the task names no backup".into()))?;
    // The record keeps the first start time across a repeat of this step.
    let record = match ctx.store.backup(id).await? {
        Some(b) => b,
        None => BackupRecord::begin(
            id,
            inst.id,
            inst.name.to_string(),
            inst.spec.engine,
            inst.spec.version.clone(),
            BackupKind::Logical,
            &berth_store::now(),
        ),
    };
    ctx.store.begin_backup(&record).await?;
    // A delete's final backup is the last copy of everything: the primary's.
    let replica_allowed = task.kind != berth_model::TaskKind::Delete;
    match from_replica_or_primary(ctx, inst, &record, replica_allowed, progress).await {
        Ok((stored, from, said)) => {
            let member = berth_model::member::display_name(&inst.name, from);
            ctx.store
                .finish_backup(id, stored.size, &stored.sha256, &member)
                .await?;
            Ok(format!(
                "backup {id} stored from {member}{said}: {} bytes, sha256 {}",
                stored.size, stored.sha256
            ))
        }
        Err(e) => {
            let reason = match &e {
                StepError::Retry(r) | StepError::Fatal(r) => r.clone(),
            };
            // A retry sets it running again; a final failure leaves it failed.
            ctx.store.fail_backup(id, &reason).await?;
            Err(e)
        }
    }
}

/// Takes the backup on a replica that has replayed everything the primary had
/// written when the backup began (so it holds every commit acknowledged before it),
/// so the primary's clients do not pay for the dump; on the primary when no replica
/// catches up within [`CATCH_UP`], when `replica_allowed` is false, or when the
/// replica's dump fails (a standby may cancel a long dump that conflicts with what
/// it replays). The member it came from, and what happened on the way.
async fn from_replica_or_primary(
    ctx: &Ctx,
    inst: &InstanceRecord,
    record: &BackupRecord,
    replica_allowed: bool,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(super::Stored, MemberId, String), StepError> {
    let primary = inst.topology.primary;
    let replica = if replica_allowed {
        caught_up_replica(ctx, inst, progress).await
    } else {
        None
    };
    let mut said = String::new();
    if let Some((replica, ip)) = replica {
        match stream(ctx, inst, ip, record, progress).await {
            Ok(stored) => return Ok((stored, replica, said)),
            Err(e) => {
                let name = berth_model::member::display_name(&inst.name, replica);
                tracing::warn!(instance = %inst.name, member = %name, error = %e, "the backup failed on a replica; taking it on the primary");
                said = format!(" (the dump on replica {name} failed: {e})");
            }
        }
    }
    let ip = crate::steps::member_ip(ctx, inst, primary).await?;
    let stored = stream(ctx, inst, ip, record, progress).await?;
    Ok((stored, primary, said))
}

/// How long a replica may take to replay what the primary had written when the
/// backup began, before the backup is taken on the primary instead.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// A streaming replica that has replayed the primary's position as it was when this
/// was called, with its address; `None` when the instance has no replica, the
/// primary's position cannot be read, or none catches up within [`CATCH_UP`].
async fn caught_up_replica(
    ctx: &Ctx,
    inst: &InstanceRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Option<(MemberId, IpAddr)> {
    inst.topology.replicas().next()?;
    let target = crate::members::role_report(ctx, inst, inst.topology.primary)
        .await?
        .position?;
    progress("waiting for a replica to replay what the primary has written");
    let started = std::time::Instant::now();
    loop {
        for m in inst.topology.replicas() {
            let Ok(ip) = crate::steps::member_ip(ctx, inst, m).await else {
                continue;
            };
            let Some(r) = crate::members::role_report_at(ctx, ip).await else {
                continue;
            };
            if r.role != Some(berth_model::member::Role::Replica)
                || r.replication_running != Some(true)
            {
                continue;
            }
            if replayed(&r).is_some_and(|p| p >= target) {
                return Some((m, ip));
            }
        }
        if started.elapsed() >= CATCH_UP {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How far a replica has applied the primary's change stream: what it received less
/// what it has not applied yet (unknown when the engine cannot say how much that is,
/// as MariaDB when the two are in different binary log files).
fn replayed(r: &berth_model::agent::RoleReport) -> Option<u64> {
    Some(r.position?.saturating_sub(r.lag_bytes?))
}

async fn stream(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
    record: &BackupRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<super::Stored, StepError> {
    let store = BackupStore::of(ctx).map_err(|e| StepError::Fatal(e.to_string()))?;
    let resp = super::agent_post(
        ctx,
        inst,
        ip,
        "/backup/logical",
        &[("x-berth-backup", record.id.to_string())],
        BACKUP_TIMEOUT,
        "take the backup",
    )
    .await?;
    let body = resp.bytes_stream();
    let stored = store
        .put_stream(&record.object, body, &|n| {
            progress(&format!(
                "streamed {} to the backup store",
                super::human_bytes(n)
            ))
        })
        .await;
    match stored {
        Ok(s) => Ok(s),
        // A dump that failed cuts the body short: its own words come from the agent.
        Err(e) => Err(StepError::Fatal(
            match dump_failure(ctx, inst, ip, record).await {
                Some(why) => format!("the backup could not be taken: {why}"),
                None => format!("the backup could not be stored: {e}"),
            },
        )),
    }
}

/// Why the agent's dump of `record` failed, when it says.
async fn dump_failure(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: IpAddr,
    record: &BackupRecord,
) -> Option<String> {
    let url = format!(
        "http://{}/backup/logical/failure?backup={}",
        std::net::SocketAddr::new(ip, berth_model::agent::AGENT_PORT),
        record.id
    );
    let resp = ctx
        .http
        .get(url)
        .bearer_auth(inst.agent_token.expose())
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok().filter(|t| !t.is_empty())
}

//! The `ensure_backup_stored` step: record the backup `running`, stream the member's
//! dump into the backup store, then record size and checksum — only then is it good.

use super::BackupStore;
use crate::steps::StepError;
use crate::Ctx;
use berth_model::backup::{BackupKind, BackupRecord};
use berth_model::{InstanceRecord, TaskRecord};

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
    match stream(ctx, inst, &record, progress).await {
        Ok(stored) => {
            ctx.store
                .finish_backup(id, stored.size, &stored.sha256)
                .await?;
            Ok(format!(
                "backup {id} stored: {} bytes, sha256 {}",
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

async fn stream(
    ctx: &Ctx,
    inst: &InstanceRecord,
    record: &BackupRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<super::Stored, StepError> {
    let store = BackupStore::of(ctx).map_err(|e| StepError::Fatal(e.to_string()))?;
    let resp = super::agent_post(
        ctx,
        inst,
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
            match dump_failure(ctx, inst, record).await {
                Some(why) => format!("the backup could not be taken: {why}"),
                None => format!("the backup could not be stored: {e}"),
            },
        )),
    }
}

/// Why the agent's dump of `record` failed, when it says.
async fn dump_failure(ctx: &Ctx, inst: &InstanceRecord, record: &BackupRecord) -> Option<String> {
    let ip = crate::steps::running_member_ip(ctx, inst).await.ok()?;
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

//! The restore steps of a create from a backup: `verify_backup` (before anything is
//! made) and `load_backup` (once the new instance answers).

use super::BackupStore;
use crate::members::without_url;
use crate::steps::StepError;
use crate::Ctx;
use berth_model::agent::AGENT_PORT;
use berth_model::backup::BackupRecord;
use berth_model::{InstanceRecord, TaskRecord};

/// The whole load must finish within this long.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

async fn complete_backup(ctx: &Ctx, task: &TaskRecord) -> Result<BackupRecord, StepError> {
    let id = task
        .options
        .backup
        .ok_or_else(|| StepError::Fatal("the task names no backup".into()))?;
    let b = ctx
        .store
        .backup(id)
        .await?
        .ok_or_else(|| StepError::Fatal(format!("backup {id} is gone from the store")))?;
    if !b.is_complete() {
        return Err(StepError::Fatal(format!(
            "backup {id} is {}, not complete; pick a complete one from `berth backup list {}`",
            b.state.as_str(),
            b.instance_name
        )));
    }
    Ok(b)
}

/// The stored bytes hash to the recorded checksum.
pub(crate) async fn verify_backup(ctx: &Ctx, task: &TaskRecord) -> Result<String, StepError> {
    let b = complete_backup(ctx, task).await?;
    let store = BackupStore::of(ctx).map_err(|e| StepError::Fatal(e.to_string()))?;
    let stored = store
        .digest(&b.object)
        .await
        .map_err(|e| StepError::Fatal(format!("backup {} cannot be read: {e}", b.id)))?;
    let expected = b.sha256.as_deref().unwrap_or_default();
    if stored.sha256 != expected || Some(stored.size) != b.size_bytes {
        return Err(StepError::Fatal(format!(
            "backup {} is corrupt: checksum mismatch (its stored bytes hash to SHA-256 {} over \
             {} bytes; the backup recorded {expected} over {} bytes); nothing was restored — \
             restore from another backup (`berth backup list {}`)",
            b.id,
            stored.sha256,
            stored.size,
            b.size_bytes.unwrap_or(0),
            b.instance_name
        )));
    }
    Ok(format!(
        "backup {} verified: {} bytes, sha256 {expected}",
        b.id, stored.size
    ))
}

/// The backup's dump is loaded into the new instance by its agent.
pub(crate) async fn load_backup(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<String, StepError> {
    let b = complete_backup(ctx, task).await?;
    let ip = crate::steps::running_member_ip(ctx, inst).await?;
    let store = BackupStore::of(ctx).map_err(|e| StepError::Fatal(e.to_string()))?;
    let total = b.size_bytes.unwrap_or(0);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let stream = store
        .get_stream(&b.object)
        .await
        .map_err(|e| StepError::Fatal(format!("backup {} cannot be read: {e}", b.id)))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let stream = futures_util::StreamExt::inspect(stream, move |c| {
        if let Ok(c) = c {
            let n = counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(n + c.len() as u64);
        }
    });
    let url = format!(
        "http://{}/restore/logical",
        std::net::SocketAddr::new(ip, AGENT_PORT)
    );
    let request = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .header("x-berth-sha256", b.sha256.clone().unwrap_or_default())
        .timeout(LOAD_TIMEOUT)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tokio::pin!(request);
    let resp = loop {
        tokio::select! {
            r = &mut request => break r,
            Some(n) = rx.recv() => progress(&super::load_progress(n, total)),
        }
    }
    .map_err(|e| StepError::Fatal(format!("agent does not answer: {}", without_url(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(StepError::Fatal(format!(
            "loading backup {} failed ({status}): {text}",
            b.id
        )));
    }
    Ok(format!("loaded backup {} ({total} bytes)", b.id))
}

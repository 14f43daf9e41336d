//! Backups: the backup store (an `object_store` behind one small type) and the step
//! that streams a member's dump into it.
//!
//! The store is a local directory (`<data-dir>/backups`) through
//! `object_store::local::LocalFileSystem`, or an S3-compatible bucket through
//! `AmazonS3Builder` (`config.rs`): the same calls behind [`BackupStore`]. Bytes go from the agent's response straight into a
//! multipart upload, hashed (SHA-256 of the stored, compressed bytes) on the way:
//! nothing is copied to a local file first.

mod config;
mod restore;
pub(crate) mod schedule;
mod take;
pub(crate) mod verify;
mod view;

pub use config::{BackupStoreConfig, S3Config, S3Credentials};
pub use view::{BackupAccepted, BackupPolicyView, BackupView};

pub(crate) use restore::{load_backup, verify_backup};
pub(crate) use take::ensure_backup_stored;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// What can go wrong moving a backup's bytes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    /// The backup store refused or failed.
    #[error("backup store: {0}")]
    Store(#[from] object_store::Error),
    /// The backup store's directory could not be made.
    #[error("making the backup store directory {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configured store cannot be used (says what to check).
    #[error("{0}")]
    Unusable(String),
    /// The source of the bytes (the agent) failed mid-way.
    #[error("{0}")]
    Source(String),
}

/// An error with its causes: the outermost alone often says too little ("error
/// decoding response body").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors (object_store's) already print their causes: say each once.
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cur = c.source();
    }
    s
}

/// Begins a backup task of a running instance (it keeps serving, shown `modifying`):
/// the API's `backup create`, the scheduler, and delete's final backup.
pub(crate) async fn start_backup(
    ctx: &crate::Ctx,
    inst: &berth_model::InstanceRecord,
) -> Result<(berth_model::backup::BackupId, berth_model::TaskRecord), berth_store::StoreError> {
    let id = berth_model::backup::BackupId::new_random();
    let (_, task) = crate::tasks::begin(
        ctx,
        inst,
        berth_model::TaskKind::Backup,
        berth_model::TaskOptions {
            backup: Some(id),
            ..Default::default()
        },
    )
    .await?;
    Ok((id, task))
}

/// The id of the final backup a delete takes first. Only an available instance can
/// be backed up: any other is refused, saying how to go on, and nothing changes.
pub(crate) async fn final_backup(
    ctx: &crate::Ctx,
    name: &str,
) -> Result<Option<berth_model::backup::BackupId>, crate::ApiError> {
    let inst = ctx
        .store
        .instance_by_name(&berth_model::ProjectId::default_project(), name)
        .await?;
    if inst.status != berth_model::InstanceStatus::Available {
        return Err(crate::ApiError::InvalidState(format!(
            "instance {name} is {}: a delete takes a final backup first, which needs it \
             available; start it (`berth start {name}`) or wait for its task, or delete \
             it with --skip-final-backup",
            inst.status.as_str()
        )));
    }
    Ok(Some(berth_model::backup::BackupId::new_random()))
}

/// `POST path` to the agent at `ip`, waiting up to `timeout` for the answer
/// to begin; a refusal fails the step, saying it could not `what`.
async fn agent_post(
    ctx: &crate::Ctx,
    inst: &berth_model::InstanceRecord,
    ip: std::net::IpAddr,
    path: &str,
    headers: &[(&'static str, String)],
    timeout: std::time::Duration,
    what: &str,
) -> Result<reqwest::Response, crate::steps::StepError> {
    use crate::steps::StepError;
    let url = format!(
        "http://{}{path}",
        std::net::SocketAddr::new(ip, berth_model::agent::AGENT_PORT)
    );
    let mut req = ctx
        .http
        .post(url)
        .bearer_auth(inst.agent_token.expose())
        .timeout(timeout);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.map_err(|e| {
        StepError::Retry(format!(
            "agent does not answer: {}",
            crate::members::without_url(&e)
        ))
    })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(StepError::Fatal(format!(
            "the agent could not {what} ({status}): {text}"
        )));
    }
    Ok(resp)
}

/// Bytes for people: KiB below a MiB, else MiB, one decimal.
fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// A restore's progress line: bytes loaded of the backup's, and the share.
fn load_progress(done: u64, total: u64) -> String {
    let percent = (done.min(total) * 100).checked_div(total).unwrap_or(100);
    format!(
        "loaded {} of {} ({percent}%)",
        human_bytes(done),
        human_bytes(total)
    )
}

/// How many parts may be in flight to the store at once.
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// Where backups are kept.
#[derive(Clone, Debug)]
pub(crate) struct BackupStore {
    inner: Arc<dyn ObjectStore>,
}

/// A stored object's size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub size: u64,
    pub sha256: String,
}

impl BackupStore {
    /// Opens the configured store (the embedded default: a directory under the data
    /// directory) and checks that it answers.
    pub(crate) async fn open(
        config: &BackupStoreConfig,
        data_dir: &Path,
    ) -> Result<Self, BackupError> {
        Ok(Self {
            inner: config::open(config, data_dir).await?,
        })
    }

    /// The store of this control plane (opened once, at start).
    pub(crate) fn of(ctx: &crate::Ctx) -> Result<Self, BackupError> {
        Ok(ctx.backups.clone())
    }

    /// Streams `body` into the object `key`, hashing as it goes; the object appears
    /// only once complete (a failed upload is aborted, leaving nothing).
    pub(crate) async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Stored, BackupError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error,
    {
        let upload = self.inner.put_multipart(&ObjectPath::from(key)).await?;
        let mut writer = WriteMultipart::new(upload);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(BackupError::Source(chain(&e)));
                }
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if let Err(e) = writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            writer.put(chunk);
            progress(size);
        }
        writer.finish().await?;
        Ok(Stored {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Reads the whole object and gives its size and SHA-256.
    pub(crate) async fn digest(&self, key: &str) -> Result<Stored, BackupError> {
        let mut stream = self.inner.get(&ObjectPath::from(key)).await?.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Stored {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The object's bytes, as they are read.
    pub(crate) async fn get_stream(
        &self,
        key: &str,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
        BackupError,
    > {
        Ok(self.inner.get(&ObjectPath::from(key)).await?.into_stream())
    }

    /// Removes the object; one already gone is fine.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BackupError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_give_bytes_for_people() {
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(
            load_progress(1 << 20, 4 << 20),
            "loaded 1.0 MiB of 4.0 MiB (25%)"
        );
        assert_eq!(load_progress(0, 0), "loaded 0.0 KiB of 0.0 KiB (100%)");
    }

    #[tokio::test]
    async fn stored_bytes_are_counted_and_hashed_and_a_failed_stream_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BackupStore::open(&BackupStoreConfig::Local, dir.path())
            .await
            .expect("store");
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let stored = store
            .put_stream("i/b.sql.zst", futures_util::stream::iter(chunks), &|_| {})
            .await
            .expect("put");
        assert_eq!(stored.size, 11);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(store.digest("i/b.sql.zst").await.expect("digest"), stored);
        assert!(dir.path().join("backups/i/b.sql.zst").is_file());

        let broken: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"half")),
            Err(std::io::Error::other("the dump failed")),
        ];
        let err = store
            .put_stream("i/c.sql.zst", futures_util::stream::iter(broken), &|_| {})
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("the dump failed"));
        assert!(store.digest("i/c.sql.zst").await.is_err(), "no object");

        store.delete("i/b.sql.zst").await.expect("delete");
        store.delete("i/b.sql.zst").await.expect("delete twice");
    }
}

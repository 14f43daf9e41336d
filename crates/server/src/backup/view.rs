//! Backups as the API presents them.

use berth_model::backup::{BackupKind, BackupRecord, BackupState};
use berth_model::{EngineKind, InstanceId};
use serde::{Deserialize, Serialize};

/// A backup, as `backup list` and `backup show` present it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupView {
    /// Stable id.
    #[schema(value_type = String)]
    pub id: berth_model::backup::BackupId,
    /// The instance it was taken from (by its name then; it may be gone since).
    pub instance: String,
    /// That instance's id.
    #[schema(value_type = String)]
    pub instance_id: InstanceId,
    /// The engine.
    pub engine: EngineKind,
    /// Its version.
    #[schema(value_type = String)]
    pub version: String,
    /// How it was taken.
    pub kind: BackupKind,
    /// Where it is.
    pub state: BackupState,
    /// Complete and checksummed: the only backups a restore accepts.
    pub complete: bool,
    /// Bytes stored (zstd-compressed), once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored bytes (hex), once complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The object's key in the backup store.
    pub object: String,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The member it was taken from (a replica when the instance had one), once
    /// complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_from: Option<String>,
    /// Its last verification by restoring it (`berth backup verify`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<berth_model::verify::Verification>,
}

impl From<&BackupRecord> for BackupView {
    fn from(b: &BackupRecord) -> Self {
        Self {
            id: b.id,
            instance: b.instance_name.clone(),
            instance_id: b.instance_id,
            engine: b.engine,
            version: b.version.to_string(),
            kind: b.kind,
            state: b.state,
            complete: b.is_complete(),
            size_bytes: b.size_bytes,
            sha256: b.sha256.clone(),
            object: b.object.clone(),
            started_at: b.started_at.clone(),
            finished_at: b.finished_at.clone(),
            error: b.error.clone(),
            verification: b.verification.clone(),
            taken_from: b.taken_from.clone(),
        }
    }
}

/// The answer to `backup create`: the backup's id and the task taking it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupAccepted {
    /// The backup being taken; `GET /v1/backups/{id}` shows it.
    #[schema(value_type = String)]
    pub backup: berth_model::backup::BackupId,
    /// The task taking it.
    pub task: crate::TaskView,
}

/// An instance's backup schedule and retention.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupPolicyView {
    /// The instance.
    pub instance: String,
    /// Cron expression (five fields, UTC) of its scheduled backups.
    pub schedule: String,
    /// Keep backups taken within this many days (none: no limit by age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
    /// Keep this many newest complete backups (none: no limit by count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_count: Option<u32>,
    /// The slot of the last scheduled run, or when the schedule was set (RFC 3339).
    pub last_slot: String,
    /// When the next scheduled backup starts (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// When backups are verified by restoring them: after-each, weekly or off.
    pub verify: berth_model::verify::VerifyPolicy,
}

impl From<&berth_model::backup::BackupPolicyRecord> for BackupPolicyView {
    fn from(p: &berth_model::backup::BackupPolicyRecord) -> Self {
        use berth_model::backup::{format_time, parse_time, Schedule};
        let next_run = Schedule::parse(&p.schedule)
            .ok()
            .zip(parse_time(&p.last_slot))
            .and_then(|(s, last)| s.next_after(last))
            .map(format_time);
        Self {
            instance: p.instance_name.clone(),
            schedule: p.schedule.clone(),
            keep_days: p.retention.keep_days,
            keep_count: p.retention.keep_count,
            last_slot: p.last_slot.clone(),
            next_run,
            verify: p.verify,
        }
    }
}

//! Backups: what a backup is, where its object lives in the backup store, and when it
//! may be called good.
//!
//! A backup's record is written `running` before the first byte is streamed and
//! becomes `succeeded` only together with the size and checksum of the complete
//! object, so a backup cut short (a crash, a failed dump) is never listed as good.

use crate::{EngineKind, EngineVersion, InstanceId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a backup; it outlives the instance it was taken from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct BackupId(uuid::Uuid);

impl BackupId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for BackupId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// How a backup is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// The engine's own dump (`pg_dumpall`, `mariadb-dump`): SQL, portable, slower to
    /// restore than a physical copy.
    Logical,
}

impl BackupKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logical => "logical",
        }
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logical" => Ok(Self::Logical),
            other => Err(format!(
                "unknown backup kind {other:?}; use logical (physical backups come later)"
            )),
        }
    }
}

/// Where a backup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupState {
    /// Being taken (or was, when the control plane stopped: its task takes it again).
    Running,
    /// Complete: the object is stored and its size and checksum recorded.
    Succeeded,
    /// Not usable; the record's error says why.
    Failed,
}

impl BackupState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for BackupState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown backup state {s:?}"))
    }
}

/// A backup as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// The backup.
    pub id: BackupId,
    /// The instance it was taken from (which may since be gone).
    pub instance_id: InstanceId,
    /// That instance's name when the backup was taken.
    pub instance_name: String,
    /// The engine.
    pub engine: EngineKind,
    /// Its version: a backup restores into the same one.
    pub version: EngineVersion,
    /// How it was taken.
    pub kind: BackupKind,
    /// Where it is.
    pub state: BackupState,
    /// The object's key in the backup store.
    pub object: String,
    /// Bytes stored (compressed), once complete.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored bytes, hex, once complete.
    pub sha256: Option<String>,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended, either way.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl BackupRecord {
    /// A backup about to be taken.
    pub fn begin(
        id: BackupId,
        instance_id: InstanceId,
        instance_name: String,
        engine: EngineKind,
        version: EngineVersion,
        kind: BackupKind,
        now: &str,
    ) -> Self {
        Self {
            object: object_key(instance_id, id, kind),
            id,
            instance_id,
            instance_name,
            engine,
            version,
            kind,
            state: BackupState::Running,
            size_bytes: None,
            sha256: None,
            started_at: now.to_owned(),
            finished_at: None,
            error: None,
        }
    }

    /// Usable for a restore: finished, with the checksum that proves its bytes.
    pub fn is_complete(&self) -> bool {
        self.state == BackupState::Succeeded && self.sha256.is_some() && self.size_bytes.is_some()
    }
}

/// The object's key: under the instance's id, so that a name reused later never mixes
/// two instances' backups.
pub fn object_key(instance: InstanceId, backup: BackupId, kind: BackupKind) -> String {
    let ext = match kind {
        BackupKind::Logical => "sql.zst",
    };
    format!("{instance}/{backup}.{kind}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_finished_checksummed_backup_is_complete() {
        let mut b = BackupRecord::begin(
            BackupId::new_random(),
            InstanceId::new_random(),
            "db1".into(),
            EngineKind::Postgres,
            EngineKind::Postgres.version("15").expect("version"),
            BackupKind::Logical,
            "2026-01-01T00:00:00Z",
        );
        assert!(!b.is_complete());
        b.state = BackupState::Succeeded;
        assert!(!b.is_complete(), "no checksum yet");
        b.sha256 = Some("ab".into());
        b.size_bytes = Some(2);
        assert!(b.is_complete());
        b.state = BackupState::Failed;
        assert!(!b.is_complete());
    }

    #[test]
    fn names_round_trip_and_keys_are_per_instance() {
        for s in [
            BackupState::Running,
            BackupState::Succeeded,
            BackupState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<BackupState>(), Ok(s));
        }
        assert_eq!("logical".parse::<BackupKind>(), Ok(BackupKind::Logical));
        assert!("physical".parse::<BackupKind>().is_err());
        let i = InstanceId::new_random();
        let b = BackupId::new_random();
        assert_eq!(
            object_key(i, b, BackupKind::Logical),
            format!("{i}/{b}.logical.sql.zst")
        );
    }
}

//! Backup records. They outlive their instance (no foreign key): a backup is kept
//! until it is deleted, whatever happens to the instance it came from.

use crate::{Result, Store, StoreError};
use berth_model::backup::{BackupId, BackupRecord};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
    }
}

fn from_row(row: &SqliteRow) -> Result<BackupRecord> {
    let engine: berth_model::EngineKind = crate::rows::parse(row, "engine")?;
    let version: String = row.try_get("version")?;
    let size: Option<i64> = row.try_get("size_bytes")?;
    Ok(BackupRecord {
        id: crate::rows::parse(row, "id")?,
        instance_id: crate::rows::parse(row, "instance_id")?,
        instance_name: row.try_get("instance_name")?,
        engine,
        version: engine
            .version(&version)
            .map_err(|_| corrupt("backups.version", &version))?,
        kind: crate::rows::parse(row, "kind")?,
        state: crate::rows::parse(row, "state")?,
        object: row.try_get("object")?,
        size_bytes: size
            .map(|s| u64::try_from(s).map_err(|_| corrupt("backups.size_bytes", s)))
            .transpose()?,
        sha256: row.try_get("sha256")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
    })
}

impl Store {
    /// Records a backup as `running` (again, when its task runs its step again: the
    /// size, checksum and end are cleared, so a repeat is never taken for complete).
    pub async fn begin_backup(&self, b: &BackupRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO backups (id, instance_id, instance_name, engine, version, kind, state,
                                  object, size_bytes, sha256, started_at, finished_at, error)
             VALUES (?, ?, ?, ?, ?, ?, 'running', ?, NULL, NULL, ?, NULL, NULL)
             ON CONFLICT (id) DO UPDATE SET state = 'running', size_bytes = NULL,
                 sha256 = NULL, finished_at = NULL, error = NULL",
        )
        .bind(b.id.to_string())
        .bind(b.instance_id.to_string())
        .bind(&b.instance_name)
        .bind(b.engine.as_str())
        .bind(b.version.as_str())
        .bind(b.kind.as_str())
        .bind(&b.object)
        .bind(&b.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a backup complete with what proves its bytes, in one statement.
    pub async fn finish_backup(&self, id: BackupId, size: u64, sha256: &str) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET state = 'succeeded', size_bytes = ?, sha256 = ?, finished_at = ?,
                 error = NULL WHERE id = ?",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(crate::now())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a backup failed with the reason.
    pub async fn fail_backup(&self, id: BackupId, reason: &str) -> Result<()> {
        sqlx::query("UPDATE backups SET state = 'failed', finished_at = ?, error = ? WHERE id = ?")
            .bind(crate::now())
            .bind(reason)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One backup, if it exists.
    pub async fn backup(&self, id: BackupId) -> Result<Option<BackupRecord>> {
        sqlx::query("SELECT * FROM backups WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    /// Backups, newest first; only those of instances named `instance` when given.
    pub async fn list_backups(&self, instance: Option<&str>) -> Result<Vec<BackupRecord>> {
        let rows =
            match instance {
                Some(name) => sqlx::query(
                    "SELECT * FROM backups WHERE instance_name = ? ORDER BY started_at DESC, id",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query("SELECT * FROM backups ORDER BY started_at DESC, id")
                        .fetch_all(&self.pool)
                        .await?
                }
            };
        rows.iter().map(from_row).collect()
    }

    /// Forgets a backup (its object is removed first by the caller).
    pub async fn delete_backup(&self, id: BackupId) -> Result<()> {
        sqlx::query("DELETE FROM backups WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Backups left `running` by a control plane that stopped, whose task is finished
    /// or gone: they can never complete, so they are marked failed.
    pub async fn fail_abandoned_backups(&self) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE backups SET state = 'failed', finished_at = ?,
                 error = 'the control plane stopped while the backup was taken'
             WHERE state = 'running' AND NOT EXISTS (
                 SELECT 1 FROM tasks WHERE tasks.state IN ('pending', 'running')
                     AND tasks.options LIKE '%' || backups.id || '%')",
        )
        .bind(crate::now())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::backup::{BackupKind, BackupState};
    use berth_model::{EngineKind, InstanceId};

    #[tokio::test]
    async fn a_backup_is_complete_only_once_finished() {
        let store = Store::in_memory().await.expect("store");
        let b = BackupRecord::begin(
            BackupId::new_random(),
            InstanceId::new_random(),
            "db1".into(),
            EngineKind::Mariadb,
            EngineKind::Mariadb.version("10.11").expect("version"),
            BackupKind::Logical,
            &crate::now(),
        );
        store.begin_backup(&b).await.expect("begin");
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert_eq!(got.state, BackupState::Running);
        assert!(!got.is_complete());
        store.finish_backup(b.id, 42, "ab").await.expect("finish");
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert!(got.is_complete());
        assert_eq!(got.size_bytes, Some(42));
        // Taken again (a resumed task): no longer complete until it finishes again.
        store.begin_backup(&b).await.expect("again");
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert!(!got.is_complete());
        assert_eq!(got.sha256, None);
        // No task holds it: abandoned, failed.
        assert_eq!(store.fail_abandoned_backups().await.expect("sweep"), 1);
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert_eq!(got.state, BackupState::Failed);
        assert_eq!(
            store.list_backups(Some("db1")).await.expect("list").len(),
            1
        );
        assert!(store
            .list_backups(Some("db2"))
            .await
            .expect("list")
            .is_empty());
        store.delete_backup(b.id).await.expect("delete");
        assert!(store.backup(b.id).await.expect("read").is_none());
    }
}

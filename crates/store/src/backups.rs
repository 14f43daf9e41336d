//! Backup records. They outlive their instance (no foreign key): a backup is kept
//! until it is deleted, whatever happens to the instance it came from.

use crate::{Result, Store, StoreError};
use berth_model::backup::{BackupId, BackupPolicyRecord, BackupRecord, Retention};
use berth_model::event::NewEvent;
use berth_model::verify::Verification;
use berth_model::InstanceId;
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
        verification: verification_from_row(row)?,
        taken_from: row.try_get("taken_from")?,
    })
}

fn verification_from_row(row: &SqliteRow) -> Result<Option<Verification>> {
    let outcome: Option<String> = row.try_get("verify_outcome")?;
    let Some(outcome) = outcome else {
        return Ok(None);
    };
    Ok(Some(Verification {
        outcome: outcome
            .parse()
            .map_err(|_| corrupt("backups.verify_outcome", &outcome))?,
        at: row
            .try_get::<Option<String>, _>("verify_at")?
            .unwrap_or_default(),
        detail: row
            .try_get::<Option<String>, _>("verify_detail")?
            .unwrap_or_default(),
    }))
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

    /// Marks a backup complete with what proves its bytes and the member it was taken
    /// from, in one statement.
    pub async fn finish_backup(
        &self,
        id: BackupId,
        size: u64,
        sha256: &str,
        taken_from: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET state = 'succeeded', size_bytes = ?, sha256 = ?, finished_at = ?,
                 error = NULL, taken_from = ? WHERE id = ?",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(crate::now())
        .bind(taken_from)
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

    /// Records how a backup's verification ended, with its event, in one transaction
    /// — unless one was recorded at or after `since` (the verification's start: one
    /// runs per backup at a time, so that one is this one). Whether it recorded.
    pub async fn record_verification(
        &self,
        id: BackupId,
        v: &Verification,
        event: &NewEvent,
        since: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE backups SET verify_outcome = ?, verify_at = ?, verify_detail = ?
             WHERE id = ? AND (verify_at IS NULL OR verify_at < ?)",
        )
        .bind(v.outcome.as_str())
        .bind(&v.at)
        .bind(&v.detail)
        .bind(id.to_string())
        .bind(since)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        crate::events::insert(&mut tx, event).await?;
        tx.commit().await?;
        self.events_written();
        Ok(true)
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
        store
            .finish_backup(b.id, 42, "ab", "db1-1")
            .await
            .expect("finish");
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert!(got.is_complete());
        assert_eq!(got.size_bytes, Some(42));
        assert_eq!(got.taken_from.as_deref(), Some("db1-1"));
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
        // A verification is kept on the record, with its event.
        let v = Verification {
            outcome: berth_model::verify::VerifyOutcome::Failed,
            at: crate::now(),
            detail: "loading failed".into(),
        };
        let event = NewEvent::instance(
            b.instance_id,
            "db1",
            berth_model::event::EventKind::BackupVerifyFailed,
            "backup verify failed",
            serde_json::json!({}),
        );
        let since = "2000-01-01T00:00:00Z";
        assert!(store
            .record_verification(b.id, &v, &event, since)
            .await
            .expect("record"));
        let got = store.backup(b.id).await.expect("read").expect("there");
        assert_eq!(got.verification, Some(v.clone()));
        // The same verification, seen again (a restart's sweep): not twice.
        assert!(!store
            .record_verification(b.id, &v, &event, since)
            .await
            .expect("again"));
        store.delete_backup(b.id).await.expect("delete");
        assert!(store.backup(b.id).await.expect("read").is_none());
    }
}

fn policy_from_row(row: &SqliteRow) -> Result<BackupPolicyRecord> {
    let count = |c: &'static str| -> Result<Option<u32>> {
        let v: Option<i64> = row.try_get(c)?;
        v.map(|n| u32::try_from(n).map_err(|_| corrupt(c, n)))
            .transpose()
    };
    Ok(BackupPolicyRecord {
        instance_id: crate::rows::parse(row, "instance_id")?,
        instance_name: row.try_get("instance_name")?,
        schedule: row.try_get("schedule")?,
        retention: Retention {
            keep_days: count("keep_days")?,
            keep_count: count("keep_count")?,
        },
        last_slot: row.try_get("last_slot")?,
        verify: {
            let v: String = row.try_get("verify")?;
            v.parse()
                .map_err(|_| corrupt("backup_policies.verify", &v))?
        },
    })
}

impl Store {
    /// An instance's backup policy, if one was stored.
    pub async fn backup_policy(&self, instance: InstanceId) -> Result<Option<BackupPolicyRecord>> {
        sqlx::query("SELECT * FROM backup_policies WHERE instance_id = ?")
            .bind(instance.to_string())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(policy_from_row)
            .transpose()
    }

    /// Every stored backup policy (of instances that exist or existed).
    pub async fn backup_policies(&self) -> Result<Vec<BackupPolicyRecord>> {
        let rows = sqlx::query("SELECT * FROM backup_policies ORDER BY instance_name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_from_row).collect()
    }

    /// Stores a policy, whole; with `event`, in the same transaction.
    pub async fn set_backup_policy(
        &self,
        p: &BackupPolicyRecord,
        event: Option<&NewEvent>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO backup_policies (instance_id, instance_name, schedule, keep_days,
                                          keep_count, last_slot, verify)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (instance_id) DO UPDATE SET instance_name = excluded.instance_name,
                 schedule = excluded.schedule, keep_days = excluded.keep_days,
                 keep_count = excluded.keep_count, last_slot = excluded.last_slot,
                 verify = excluded.verify",
        )
        .bind(p.instance_id.to_string())
        .bind(&p.instance_name)
        .bind(&p.schedule)
        .bind(p.retention.keep_days.map(i64::from))
        .bind(p.retention.keep_count.map(i64::from))
        .bind(&p.last_slot)
        .bind(p.verify.as_str())
        .execute(&mut *tx)
        .await?;
        if let Some(e) = event {
            crate::events::insert(&mut tx, e).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.events_written();
        }
        Ok(())
    }

    /// Records that the scheduled run of `slot` was started (or skipped), with its event.
    pub async fn advance_backup_slot(
        &self,
        instance: InstanceId,
        slot: &str,
        event: &NewEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE backup_policies SET last_slot = ? WHERE instance_id = ?")
            .bind(slot)
            .bind(instance.to_string())
            .execute(&mut *tx)
            .await?;
        crate::events::insert(&mut tx, event).await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Forgets a backup retention removed (its object is gone), with its event.
    pub async fn expire_backup(&self, id: BackupId, event: &NewEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM backups WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        crate::events::insert(&mut tx, event).await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Backups an unfinished task names (taking one, restoring from one, a delete's
    /// final backup): retention leaves them alone.
    pub async fn backups_in_use(&self) -> Result<std::collections::BTreeSet<BackupId>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT options FROM tasks WHERE state IN ('pending', 'running')")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .filter_map(|(o,)| serde_json::from_str::<berth_model::TaskOptions>(o).ok())
            .filter_map(|o| o.backup)
            .collect())
    }

    /// The backups of one instance (by id), for retention.
    pub async fn backups_of(&self, instance: InstanceId) -> Result<Vec<BackupRecord>> {
        let rows = sqlx::query("SELECT * FROM backups WHERE instance_id = ? ORDER BY started_at")
            .bind(instance.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use berth_model::event::EventKind;

    #[tokio::test]
    async fn a_policy_is_stored_whole_and_its_slot_advances_with_an_event() {
        let store = Store::in_memory().await.expect("store");
        let id = InstanceId::new_random();
        let mut p = BackupPolicyRecord {
            instance_id: id,
            instance_name: "db1".into(),
            schedule: "* * * * *".into(),
            retention: Retention {
                keep_days: None,
                keep_count: Some(2),
            },
            last_slot: "2026-01-01T00:00:00Z".into(),
            verify: berth_model::verify::VerifyPolicy::AfterEach,
        };
        assert!(store.backup_policy(id).await.expect("read").is_none());
        store.set_backup_policy(&p, None).await.expect("set");
        assert_eq!(
            store.backup_policy(id).await.expect("read"),
            Some(p.clone())
        );
        p.retention.keep_days = Some(7);
        p.retention.keep_count = None;
        store.set_backup_policy(&p, None).await.expect("change");
        assert_eq!(store.backup_policies().await.expect("all"), vec![p.clone()]);
        let e = NewEvent::instance(
            id,
            "db1",
            EventKind::BackupScheduled,
            "ran",
            serde_json::json!({}),
        );
        store
            .advance_backup_slot(id, "2026-01-01T00:01:00Z", &e)
            .await
            .expect("advance");
        let got = store.backup_policy(id).await.expect("read").expect("there");
        assert_eq!(got.last_slot, "2026-01-01T00:01:00Z");
        let events = store
            .events(&crate::EventFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("events");
        assert_eq!(
            events.last().map(|e| e.kind),
            Some(EventKind::BackupScheduled)
        );
    }

    #[tokio::test]
    async fn a_backup_an_unfinished_task_names_is_in_use() {
        let store = Store::in_memory().await.expect("store");
        assert!(store.backups_in_use().await.expect("none").is_empty());
        let id = BackupId::new_random();
        // A create restoring backup `id`.
        let inst = berth_model::InstanceRecord::example(
            "db1",
            berth_model::InstanceStatus::Creating,
            40001,
        );
        let mut task = berth_model::TaskRecord::new(
            &inst,
            berth_model::TaskKind::Create,
            berth_model::TaskOptions {
                backup: Some(id),
                ..Default::default()
            },
            &crate::now(),
        );
        store
            .create_instance(&inst, &task, &|_, _, _| Ok(()))
            .await
            .expect("created");
        assert!(store.backups_in_use().await.expect("one").contains(&id));
        task.state = berth_model::TaskState::Succeeded;
        store.update_task(&task).await.expect("done");
        assert!(store.backups_in_use().await.expect("none").is_empty());
    }
}

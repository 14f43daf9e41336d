//! Parameter groups.

use crate::{now, rows, Result, Store, StoreError};
use berth_model::{
    EventKind, InstanceEvent, InstanceId, InstanceRecord, NewEvent, ParamGroup, TaskRecord,
};
use serde_json::json;
use sqlx::Row;
use std::collections::BTreeMap;

impl Store {
    /// Stores a new, empty group.
    pub async fn create_group(&self, g: &ParamGroup) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO param_groups (name, engine, version, description, revision, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(g.name.as_str())
        .bind(g.engine.as_str())
        .bind(g.version.as_str())
        .bind(&g.description)
        .bind(g.revision)
        .bind(&g.created_at)
        .bind(&g.updated_at)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::GroupTaken(g.name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A group with its settings.
    pub async fn group(&self, name: &str) -> Result<ParamGroup> {
        let row = sqlx::query("SELECT * FROM param_groups WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NoSuchGroup(name.to_owned()))?;
        let values: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, value FROM param_values WHERE group_name = ? ORDER BY name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let engine: berth_model::EngineKind = rows::parse(&row, "engine")?;
        let version: String = row.try_get("version")?;
        Ok(ParamGroup {
            name: rows::parse(&row, "name")?,
            engine,
            version: engine.version(&version).map_err(|_| StoreError::Corrupt {
                column: "param_groups.version",
                value: version.clone(),
            })?,
            description: row.try_get("description")?,
            revision: row.try_get("revision")?,
            params: values.into_iter().collect(),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Every group, by name.
    pub async fn list_groups(&self) -> Result<Vec<ParamGroup>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM param_groups ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut out = vec![];
        for n in names {
            out.push(self.group(&n).await?);
        }
        Ok(out)
    }

    /// Sets and unsets settings in one transaction and bumps the revision; the new
    /// settings must pass `check` for every attached instance in that transaction.
    pub async fn update_group(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        unset: &[String],
        check: crate::FitCheck<'_>,
    ) -> Result<ParamGroup> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let found = sqlx::query(
            "UPDATE param_groups SET revision = revision + 1, updated_at = ? WHERE name = ?",
        )
        .bind(now())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if found.rows_affected() == 0 {
            return Err(StoreError::NoSuchGroup(name.to_owned()));
        }
        for (k, v) in set {
            sqlx::query(
                "INSERT INTO param_values (group_name, name, value) VALUES (?, ?, ?)
                 ON CONFLICT (group_name, name) DO UPDATE SET value = excluded.value",
            )
            .bind(name)
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        for k in unset {
            sqlx::query("DELETE FROM param_values WHERE group_name = ? AND name = ?")
                .bind(name)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        let params = crate::fits::group_params(&mut tx, name).await?;
        crate::fits::check_attached(&mut tx, name, &params, check).await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM param_groups WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        // Names only: a value is data the user chose, and the log is not where it lives.
        let set_names: Vec<&String> = set.keys().collect();
        let event = NewEvent {
            instance_id: None,
            instance_name: None,
            kind: EventKind::ParamGroupChanged,
            message: format!("parameter group {name} changed (revision {revision})"),
            details: json!({ "group": name, "revision": revision, "set": set_names, "unset": unset }),
        };
        crate::events::insert(&mut tx, &event).await?;
        tx.commit().await?;
        self.events_written();
        self.group(name).await
    }

    /// Deletes a group no live instance uses.
    pub async fn delete_group(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM instances WHERE param_group = ? AND deleted_at IS NULL ORDER BY name",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(StoreError::GroupInUse {
                group: name.to_owned(),
                instances: users.join(", "),
            });
        }
        let r = sqlx::query("DELETE FROM param_groups WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NoSuchGroup(name.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Live instances a group is attached to.
    pub async fn instances_with_group(&self, name: &str) -> Result<Vec<InstanceRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM instances WHERE param_group = ? AND deleted_at IS NULL ORDER BY name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::instance_from_row).collect()
    }

    /// Attaches (or, with `None`, detaches) a group; with `task`, also moves the
    /// instance along `event` and records the task, all in one transaction, in
    /// which the group's settings must pass `check` at the instance's memory.
    pub async fn attach_group(
        &self,
        id: InstanceId,
        group: Option<&str>,
        task: Option<(InstanceEvent, &TaskRecord)>,
        check: crate::FitCheck<'_>,
    ) -> Result<InstanceRecord> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inst = rows::instance_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
        let memory = crate::fits::effective_memory_mib(&mut tx, &inst).await?;
        crate::fits::check_instance(&mut tx, &inst, group, memory, check).await?;
        let mut status = inst.status;
        if let Some((event, task)) = task {
            rows::hold(&mut tx, id, task).await?;
            status = rows::transition(&mut tx, id, event).await?.1;
            rows::set_status(&mut tx, id, status, None).await?;
            rows::insert_task(&mut tx, task).await?;
            crate::events::insert(&mut tx, &crate::events::task_began(task, json!({}))).await?;
        }
        sqlx::query("UPDATE instances SET param_group = ? WHERE id = ?")
            .bind(group)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let message = match group {
            Some(g) => format!("parameter group {g} attached"),
            None => "parameter group detached".to_owned(),
        };
        let event = NewEvent::instance(
            id,
            inst.name.as_str(),
            EventKind::ParamGroupAttached,
            message,
            json!({ "group": group, "previous": inst.param_group }),
        );
        crate::events::insert(&mut tx, &event).await?;
        tx.commit().await?;
        self.events_written();
        Ok(InstanceRecord {
            status,
            param_group: group.map(str::to_owned),
            held_by: task.map(|(_, t)| t.id).or(inst.held_by),
            ..inst
        })
    }

    /// Records the group revision a member now runs with (see
    /// [`Store::params_applied`], which writes its event).
    pub async fn mark_params_applied(&self, id: InstanceId, revision: i64) -> Result<()> {
        self.params_applied(id, revision, None).await
    }
}

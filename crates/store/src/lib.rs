//! The metadata store: desired state, tasks and tokens.
//!
//! Every change that starts work is one transaction that writes the desired state
//! and the task together (principle 2 of DESIGN.md), so a crash can never leave a
//! task without its instance or an instance change without its task.
//!
//! SQLite is the embedded default. The PostgreSQL backend is not written yet; the
//! schema and queries keep to the SQL both understand.

mod alarms;
mod backups;
mod email;
mod events;
mod failover_pause;
mod fits;
mod groups;
mod rows;
mod samples;

pub use alarms::{DueNotification, Target, Webhook};
pub use events::{event_now, event_time, EventFilter, Retained};
pub use fits::FitCheck;
pub use samples::{LatestSample, StoredBucket};

use berth_model::{
    InstanceEvent, InstanceId, InstanceName, InstanceRecord, InstanceSpec, InstanceStatus,
    InvalidTransition, NewEvent, ProjectId, SiteId, TaskId, TaskKind, TaskRecord, TaskState,
};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("metadata store: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("metadata store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A live instance already has the name.
    #[error("an instance named {0} already exists; pick another name or delete it first")]
    NameTaken(InstanceName),
    /// No live instance has the name.
    #[error("no instance named {0}; `berth list` shows the instances there are")]
    NoSuchInstance(String),
    /// No parameter group has the name.
    #[error("no parameter group named {0}; `berth params list` shows them")]
    NoSuchGroup(String),
    /// A group already has the name.
    #[error("a parameter group named {0} already exists; pick another name")]
    GroupTaken(String),
    /// The group is attached to instances.
    #[error(
        "parameter group {group} is attached to {instances}; attach them to another group first"
    )]
    GroupInUse {
        /// The group.
        group: String,
        /// The instances, comma-separated.
        instances: String,
    },
    /// No task has the id.
    #[error("no task {0}; `berth tasks` lists recent tasks")]
    NoSuchTask(String),
    /// The instance's status does not allow the change.
    #[error("instance {name}: {source}")]
    InvalidTransition {
        /// The instance.
        name: InstanceName,
        /// What was refused.
        source: InvalidTransition,
    },
    /// Another task holds the instance until it ends.
    #[error("instance {name} is held by task {task} ({kind}) until it ends")]
    Held {
        /// The instance.
        name: InstanceName,
        /// The task holding it.
        task: TaskId,
        /// What that task does.
        kind: TaskKind,
    },
    /// The host port is held by another live instance.
    #[error("port {port} is held by instance {instance}; pick another port or leave it out to get a free one")]
    PortTaken {
        /// The port.
        port: u16,
        /// The instance holding it.
        instance: String,
    },
    /// An instance has an alarm of that name already.
    #[error("{0}")]
    AlarmExists(String),
    /// That email recipient is there already.
    #[error("{0}")]
    RecipientExists(String),
    /// A rule checked inside the transaction refused the change (the reason, for the user).
    #[error("{0}; nothing was changed")]
    Refused(String),
    /// A stored value no longer parses (a bug or a hand-edited database).
    #[error("metadata store holds an unreadable value in {column}: {value:?}")]
    Corrupt {
        /// Where.
        column: &'static str,
        /// What.
        value: String,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The current time as RFC 3339 text, the store's timestamp format.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Handle to the metadata store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Bumped after every commit that wrote events (see [`Store::subscribe_events`]).
    events: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a task acknowledged to the user survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self::with_pool(pool))
    }

    /// An in-memory store, for unit tests of code that needs one.
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self::with_pool(pool))
    }

    fn with_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            events: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// This installation's site id, made on first use.
    pub async fn site_id(&self) -> Result<SiteId> {
        let fresh = SiteId::new_random().to_string();
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('site_id', ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&fresh)
        .execute(&self.pool)
        .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'site_id'")
            .fetch_one(&self.pool)
            .await?;
        value.parse().map_err(|_| StoreError::Corrupt {
            column: "meta.site_id",
            value,
        })
    }

    /// Whether any API token exists (false on first start).
    pub async fn has_tokens(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Stores a token by its SHA-256 (hex); the token itself is never stored.
    pub async fn insert_token(&self, name: &str, sha256_hex: &str) -> Result<()> {
        sqlx::query("INSERT INTO tokens (sha256, name, created_at) VALUES (?, ?, ?)")
            .bind(sha256_hex)
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The name of the token with this SHA-256, if there is one (events say who
    /// changed something by it; never by the token or its hash).
    pub async fn token_name(&self, sha256_hex: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM tokens WHERE sha256 = ?")
                .bind(sha256_hex)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Inserts a new instance and its create task in one transaction; its parameter
    /// group, if any, must pass `check` at the instance's memory in that transaction.
    pub async fn create_instance(
        &self,
        inst: &InstanceRecord,
        task: &TaskRecord,
        check: FitCheck<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for port in [inst.port, inst.ro_port] {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT name FROM instances WHERE (port = ?1 OR ro_port = ?1) AND deleted_at IS NULL",
            )
            .bind(i64::from(port))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(instance) = holder {
                return Err(StoreError::PortTaken { port, instance });
            }
        }
        fits::check_instance(
            &mut tx,
            inst,
            inst.param_group.as_deref(),
            inst.spec.memory.mib(),
            check,
        )
        .await?;
        let taken: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE project = ? AND name = ? AND deleted_at IS NULL",
        )
        .bind(inst.project.as_str())
        .bind(inst.name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if taken > 0 {
            return Err(StoreError::NameTaken(inst.name.clone()));
        }
        rows::insert_instance(&mut tx, inst).await?;
        rows::hold(&mut tx, inst.id, task).await?;
        rows::insert_task(&mut tx, task).await?;
        events::insert(&mut tx, &events::task_began(task, json!({}))).await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Takes the instance for `task`, moves it along `event` and records the task, in
    /// one transaction; refuses when another task holds the instance, or when its
    /// status does not allow the change (stopping a stopped instance).
    pub async fn begin_task(
        &self,
        id: InstanceId,
        event: InstanceEvent,
        task: &TaskRecord,
    ) -> Result<InstanceRecord> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        rows::hold(&mut tx, id, task).await?;
        let (inst, to) = rows::transition(&mut tx, id, event).await?;
        rows::set_status(&mut tx, id, to, None).await?;
        rows::insert_task(&mut tx, task).await?;
        events::insert(&mut tx, &events::task_began(task, json!({}))).await?;
        tx.commit().await?;
        self.events_written();
        Ok(InstanceRecord { status: to, ..inst })
    }

    /// Applies an event to the instance's status (an observation or a task's end),
    /// with `detail` saying why. Returns the new status.
    pub async fn apply_event(
        &self,
        id: InstanceId,
        event: InstanceEvent,
        detail: Option<&str>,
    ) -> Result<InstanceStatus> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let to = rows::apply_in_tx(&mut tx, id, event, detail).await?;
        tx.commit().await?;
        self.events_written();
        Ok(to)
    }

    /// Records a task's end: applies `event` to the instance (when given, and when
    /// the status still allows it), saves the task, gives the instance back (when
    /// this task held it), and writes the events of both,
    /// in one transaction, so a crash keeps all or none of them.
    pub async fn finish_task(
        &self,
        task: &TaskRecord,
        event: Option<InstanceEvent>,
        detail: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(event) = event {
            match rows::apply_in_tx(&mut tx, task.instance_id, event, detail).await {
                // The instance moved on (a delete's `forget`): the task still ends.
                Ok(_) | Err(StoreError::InvalidTransition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        rows::update_task_in(&mut tx, task).await?;
        rows::release(&mut tx, task).await?;
        events::insert(&mut tx, &events::task_ended(task)).await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Begins a resize to `wanted` (its target travels in the task's options; the
    /// stored spec changes only when Docker has applied it, see [`Store::set_spec`]).
    /// The instance's parameter group must pass `check` at the new memory, in the
    /// same transaction; refused like [`Store::begin_task`] when the status does not
    /// allow it.
    pub async fn begin_resize(
        &self,
        id: InstanceId,
        wanted: &InstanceSpec,
        task: &TaskRecord,
        check: FitCheck<'_>,
    ) -> Result<InstanceRecord> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        rows::hold(&mut tx, id, task).await?;
        let (inst, to) =
            rows::transition(&mut tx, id, InstanceEvent::Began(TaskKind::Resize)).await?;
        fits::check_instance(
            &mut tx,
            &inst,
            inst.param_group.as_deref(),
            wanted.memory.mib(),
            check,
        )
        .await?;
        rows::set_status(&mut tx, id, to, None).await?;
        rows::insert_task(&mut tx, task).await?;
        let details =
            json!({ "from": events::spec_json(&inst.spec), "to": events::spec_json(wanted) });
        events::insert(&mut tx, &events::task_began(task, details)).await?;
        tx.commit().await?;
        self.events_written();
        Ok(InstanceRecord { status: to, ..inst })
    }

    /// Records resources Docker has applied.
    pub async fn set_spec(&self, id: InstanceId, spec: &InstanceSpec) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inst = rows::instance_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
        sqlx::query(
            "UPDATE instances SET cpus_millis = ?, memory_mib = ?, storage_mib = ?, updated_at = ? WHERE id = ?",
        )
        .bind(i64::from(spec.cpus.millis()))
        .bind(spec.memory.mib() as i64)
        .bind(spec.storage.mib() as i64)
        .bind(now())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if inst.spec != *spec {
            let message = format!(
                "resized from {} cpus, {} memory to {} cpus, {} memory",
                inst.spec.cpus, inst.spec.memory, spec.cpus, spec.memory
            );
            let details =
                json!({ "from": events::spec_json(&inst.spec), "to": events::spec_json(spec) });
            events::insert(
                &mut tx,
                &NewEvent::instance(
                    id,
                    inst.name.as_str(),
                    berth_model::EventKind::InstanceResized,
                    message,
                    details,
                ),
            )
            .await?;
        }
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Records the instance's members and sync settings (and, for an instance made
    /// before members, its first replication password); the term never goes down.
    pub async fn set_topology(
        &self,
        id: InstanceId,
        topology: &berth_model::member::Topology,
        replication_password: Option<&berth_model::Secret>,
    ) -> Result<()> {
        let body = serde_json::to_string(topology).unwrap_or_default();
        // The term only grows: a topology read before a new tenure raised it
        // (`raise_term`) keeps the raised one.
        let mut q =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE instances SET topology = json_set(");
        q.push_bind(body.clone())
            .push(", '$.term', MAX(COALESCE(json_extract(")
            .push_bind(body)
            .push(", '$.term'), 0), COALESCE(json_extract(topology, '$.term'), 0)))")
            .push(", updated_at = ")
            .push_bind(now());
        if let Some(p) = replication_password {
            q.push(", replication_password = ")
                .push_bind(p.expose().to_owned());
        }
        q.push(" WHERE id = ").push_bind(id.to_string());
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Raises the term of the instance's leader lease to `term` (a new tenure of its
    /// primary in the embedded lease store), leaving the rest of its topology as it
    /// is; never lowers it.
    pub async fn raise_term(&self, id: InstanceId, term: u64) -> Result<()> {
        let term = i64::try_from(term).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE instances SET topology = json_set(topology, '$.term', ?1)
             WHERE id = ?2 AND COALESCE(json_extract(topology, '$.term'), 0) < ?1",
        )
        .bind(term)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records whether synchronous replication is degraded (and why), with a
    /// `sync.degraded` or `sync.restored` event when that changed.
    pub async fn set_sync_degraded(&self, id: InstanceId, why: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inst = rows::instance_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
        if inst.sync_degraded.as_deref() == why {
            return Ok(());
        }
        sqlx::query("UPDATE instances SET sync_degraded = ? WHERE id = ?")
            .bind(why)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let (kind, message) = match why {
            Some(w) => (
                berth_model::EventKind::SyncDegraded,
                format!("synchronous replication degraded: {w}"),
            ),
            None => (
                berth_model::EventKind::SyncRestored,
                "synchronous replication restored: enough replicas confirm commits again"
                    .to_owned(),
            ),
        };
        let details = json!({ "sync": inst.topology.sync, "sync_mode": inst.topology.sync_mode.as_str(), "reason": why });
        events::insert(
            &mut tx,
            &NewEvent::instance(id, inst.name.as_str(), kind, message, details),
        )
        .await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Gives an instance made before endpoints its read-only port.
    pub async fn set_ro_port(&self, id: InstanceId, port: u16) -> Result<()> {
        sqlx::query(
            "UPDATE instances SET ro_port = ? WHERE id = ? AND (ro_port IS NULL OR ro_port = 0)",
        )
        .bind(i64::from(port))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves an instance that is still being created to other host ports, when the
    /// host took the ones picked for it before its endpoint first started. Refused
    /// (`PortTaken`) when another live instance holds one; changes nothing once the
    /// instance has been available (its endpoint never moves).
    pub async fn move_ports(&self, id: InstanceId, port: u16, ro_port: u16) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for p in [port, ro_port] {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT name FROM instances
                 WHERE (port = ?1 OR ro_port = ?1) AND deleted_at IS NULL AND id != ?2",
            )
            .bind(i64::from(p))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(instance) = holder {
                return Err(StoreError::PortTaken { port: p, instance });
            }
        }
        let moved = sqlx::query(
            "UPDATE instances SET port = ?, ro_port = ? WHERE id = ? AND status = 'creating'",
        )
        .bind(i64::from(port))
        .bind(i64::from(ro_port))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(StoreError::Refused(
                "the instance has been available, so its ports stay as they are".into(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that the instance's data volume was removed.
    pub async fn mark_purged(&self, id: InstanceId) -> Result<()> {
        sqlx::query("UPDATE instances SET purged = 1 WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A live instance by name.
    pub async fn instance_by_name(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<InstanceRecord> {
        let mut conn = self.pool.acquire().await?;
        rows::instance_by_name(&mut conn, project, name)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(name.to_owned()))
    }

    /// An instance by id, live or deleted.
    pub async fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>> {
        let mut conn = self.pool.acquire().await?;
        rows::instance_by_id(&mut conn, id).await
    }

    /// Live instances of a project (all projects when `None`), by name.
    pub async fn list_instances(&self, project: Option<&ProjectId>) -> Result<Vec<InstanceRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM instances WHERE deleted_at IS NULL AND (? IS NULL OR project = ?) ORDER BY name",
        )
        .bind(project.map(|p| p.as_str()))
        .bind(project.map(|p| p.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::instance_from_row).collect()
    }

    /// What the store knows of an instance id seen on a Docker object.
    pub async fn tombstone(&self, id: InstanceId) -> Result<Tombstone> {
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT deleted_at, purged FROM instances WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => Tombstone::Unknown,
            Some((None, _)) => Tombstone::Live,
            Some((Some(_), 0)) => Tombstone::DeletedKeptData,
            Some((Some(_), _)) => Tombstone::DeletedPurged,
        })
    }

    /// Saves a task's state, steps and error.
    pub async fn update_task(&self, task: &TaskRecord) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        rows::update_task_in(&mut conn, task).await
    }

    /// A task by id.
    pub async fn task(&self, id: TaskId) -> Result<TaskRecord> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NoSuchTask(id.to_string()))?;
        rows::task_from_row(&row)
    }

    /// Recent tasks, newest first, optionally of one instance.
    pub async fn list_tasks(
        &self,
        instance: Option<InstanceId>,
        limit: u32,
    ) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE (? IS NULL OR instance_id = ?) ORDER BY created_at DESC, rowid DESC LIMIT ?",
        )
        .bind(instance.map(|i| i.to_string()))
        .bind(instance.map(|i| i.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::task_from_row).collect()
    }

    /// Tasks not yet finished: what a (re)started control plane must run.
    pub async fn unfinished_tasks(&self) -> Result<Vec<TaskRecord>> {
        let rows =
            sqlx::query("SELECT * FROM tasks WHERE state IN (?, ?) ORDER BY created_at, rowid")
                .bind(TaskState::Pending.as_str())
                .bind(TaskState::Running.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::task_from_row).collect()
    }

    /// Ports held by live instances.
    pub async fn ports_in_use(&self) -> Result<Vec<u16>> {
        let ports: Vec<i64> = sqlx::query_scalar(
            "SELECT port FROM instances WHERE deleted_at IS NULL
             UNION SELECT ro_port FROM instances WHERE deleted_at IS NULL AND ro_port IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ports
            .into_iter()
            .filter_map(|p| u16::try_from(p).ok())
            .collect())
    }
}

/// What the store knows about an instance id found on a Docker object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tombstone {
    /// Never heard of it: not ours to remove data of.
    Unknown,
    /// A live instance.
    Live,
    /// Deleted, data kept on purpose.
    DeletedKeptData,
    /// Deleted with purge: leftovers are safe to remove.
    DeletedPurged,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_tx;

#[cfg(test)]
mod tests_events;

//! The event log: ordered, durable, pruned only by the configured retention.
//!
//! Events that record a change the store makes are written by [`insert`] inside
//! that change's transaction, so a crash never keeps one without the other. After
//! every commit that wrote events the store bumps a watch channel
//! ([`Store::subscribe_events`]); followers then read the store after their cursor,
//! so a lagging follower catches up from the table and misses nothing.

use crate::{rows, Result, Store, StoreError};
use berth_model::{Event, EventKind, InstanceId, InstanceSpec, NewEvent, TaskRecord, TaskState};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use std::time::Duration;

/// Event times: RFC 3339, UTC, always three fractional digits, so text order is
/// time order (`since` and pruning compare text).
pub fn event_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Now, as an event time.
pub fn event_now() -> String {
    event_time(time::OffsetDateTime::now_utc())
}

/// Writes one event in the caller's transaction.
pub(crate) async fn insert(conn: &mut SqliteConnection, e: &NewEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (time, instance_id, instance_name, kind, message, details)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(event_now())
    .bind(e.instance_id.map(|i| i.to_string()))
    .bind(e.instance_name.as_deref())
    .bind(e.kind.as_str())
    .bind(&e.message)
    .bind(serde_json::to_string(&e.details).unwrap_or_else(|_| "{}".into()))
    .execute(conn)
    .await?;
    Ok(())
}

fn from_row(row: &SqliteRow) -> Result<Event> {
    let details: String = row.try_get("details")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        instance_id: row.try_get("instance_id")?,
        instance: row.try_get("instance_name")?,
        kind: rows::parse(row, "kind")?,
        message: row.try_get("message")?,
        details: serde_json::from_str(&details).map_err(|_| StoreError::Corrupt {
            column: "events.details",
            value: details,
        })?,
    })
}

/// Which events to read: all filters together.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only events about the instance of this name (live or deleted).
    pub instance: Option<String>,
    /// Only events at or after this [`event_time`].
    pub since: Option<String>,
    /// Only events after this seq (the cursor; 0 for the start).
    pub after: i64,
    /// At most this many, oldest first.
    pub limit: u32,
}

/// What the log still holds, so a client can tell history cut by retention from
/// history missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// The oldest event kept, if any: its seq and time.
    pub oldest: Option<(i64, String)>,
    /// The newest seq written so far (0 when none).
    pub latest_seq: i64,
    /// Every event up to this seq was removed by retention (0 when none was).
    pub pruned_through: i64,
}

impl Store {
    /// Writes one event on its own (for changes outside the store, like an API
    /// call's answer or a certificate put on a volume).
    pub async fn record_event(&self, e: &NewEvent) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, e).await?;
        self.events_written();
        Ok(())
    }

    /// Events matching `f`, oldest first.
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE seq > ? AND (? IS NULL OR instance_name = ?)
             AND (? IS NULL OR time >= ?) ORDER BY seq LIMIT ?",
        )
        .bind(f.after)
        .bind(f.instance.as_deref())
        .bind(f.instance.as_deref())
        .bind(f.since.as_deref())
        .bind(f.since.as_deref())
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// What the log holds.
    pub async fn events_retained(&self) -> Result<Retained> {
        let oldest: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, time FROM events ORDER BY seq LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let latest_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        // AUTOINCREMENT keeps the highest seq ever given even when the table is empty.
        let given: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
                .fetch_optional(&self.pool)
                .await?;
        let pruned: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'events_pruned_through'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(Retained {
            oldest,
            latest_seq: latest_seq.max(given.unwrap_or(0)),
            pruned_through: pruned.and_then(|p| p.parse().ok()).unwrap_or(0),
        })
    }

    /// Removes events older than `retention`; returns how many. Records how far
    /// it pruned, so readers can say history was cut on purpose.
    pub async fn prune_events(&self, retention: Duration) -> Result<u64> {
        let cutoff = time::OffsetDateTime::now_utc()
            - time::Duration::try_from(retention).unwrap_or(time::Duration::MAX);
        let cutoff = event_time(cutoff);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let through: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE time < ?")
            .bind(&cutoff)
            .fetch_one(&mut *tx)
            .await?;
        let Some(through) = through else {
            return Ok(0);
        };
        let removed = sqlx::query("DELETE FROM events WHERE seq <= ?")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('events_pruned_through', ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(through.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Changes whenever events were committed: wake up and read after your cursor.
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Tells followers that events were committed.
    pub(crate) fn events_written(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The event of a task beginning; `details` adds what the kind needs (a resize's
/// target).
pub(crate) fn task_began(task: &TaskRecord, mut details: serde_json::Value) -> NewEvent {
    if let Some(d) = details.as_object_mut() {
        d.insert("task".into(), json!(task.id.to_string()));
        d.insert("task_kind".into(), json!(task.kind));
    }
    NewEvent::instance(
        task.instance_id,
        task.instance_name.as_str(),
        EventKind::TaskBegan,
        format!("{} task began", task.kind),
        details,
    )
}

/// The event of a task's end (its state says which).
pub(crate) fn task_ended(task: &TaskRecord) -> NewEvent {
    let (kind, message) = match (&task.state, &task.error) {
        (TaskState::Failed, Some(e)) => (
            EventKind::TaskFailed,
            format!("{} task failed: {e}", task.kind),
        ),
        (TaskState::Failed, None) => (EventKind::TaskFailed, format!("{} task failed", task.kind)),
        _ => (
            EventKind::TaskSucceeded,
            format!("{} task succeeded", task.kind),
        ),
    };
    NewEvent::instance(
        task.instance_id,
        task.instance_name.as_str(),
        kind,
        message,
        json!({ "task": task.id.to_string(), "task_kind": task.kind, "error": task.error }),
    )
}

/// Resources as event details.
pub(crate) fn spec_json(spec: &InstanceSpec) -> serde_json::Value {
    json!({
        "cpus": spec.cpus.to_string(),
        "memory": spec.memory.to_string(),
        "storage": spec.storage.to_string(),
    })
}

impl Store {
    /// Records that a member now runs with group revision `revision`; with
    /// `pending_restart` (a live apply), also the settings that wait for a restart.
    /// The `parameters.applied` event is written in the same transaction, for a
    /// live apply always and otherwise when the revision changed.
    pub async fn params_applied(
        &self,
        id: InstanceId,
        revision: i64,
        pending_restart: Option<&[String]>,
    ) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inst = rows::instance_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
        sqlx::query("UPDATE instances SET params_revision = ? WHERE id = ?")
            .bind(revision)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if let Some(p) = pending_restart {
            sqlx::query("UPDATE instances SET pending_restart = ? WHERE id = ?")
                .bind(serde_json::to_string(p).unwrap_or_else(|_| "[]".into()))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        if pending_restart.is_some() || revision != inst.params_revision {
            let group = inst.param_group.as_deref();
            let pending = pending_restart.unwrap_or(&[]);
            let mut message = match group {
                Some(g) => format!("parameters of group {g} (revision {revision}) applied"),
                None => "settings applied (no parameter group)".to_owned(),
            };
            if !pending.is_empty() {
                message.push_str(&format!("; waiting for a restart: {}", pending.join(", ")));
            }
            let details =
                json!({ "group": group, "revision": revision, "pending_restart": pending });
            insert(
                &mut tx,
                &NewEvent::instance(
                    id,
                    inst.name.as_str(),
                    EventKind::ParametersApplied,
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
}

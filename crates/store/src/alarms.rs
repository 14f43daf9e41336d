//! Alarms, webhooks and notifications. A state change, its event and its
//! notifications (one per webhook and one per email recipient, unless the alarm is
//! silenced) are one transaction; each delivery attempt is recorded with its event.

use crate::{Result, Store, StoreError};
use berth_model::metrics::alarm::{
    AlarmRecord, AlarmRule, AlarmState, Attempt, Channel, EmailRecipient,
};
use berth_model::{InstanceId, NewEvent};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// A webhook as stored (the secret signs bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Stable id.
    pub id: String,
    /// Where to POST.
    pub url: String,
    /// HMAC key.
    pub secret: berth_model::Secret,
    /// When it was added.
    pub created_at: String,
}

/// A notification due for an attempt.
#[derive(Clone, Debug)]
pub struct DueNotification {
    /// Its id.
    pub id: i64,
    /// The alarm's id.
    pub alarm_id: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// The JSON body.
    pub body: String,
    /// Where it goes.
    pub target: Target,
}

/// Where a notification goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A webhook.
    Webhook(Webhook),
    /// An email recipient.
    Email(EmailRecipient),
}

impl Target {
    /// Its channel.
    pub fn channel(&self) -> Channel {
        match self {
            Target::Webhook(_) => Channel::Webhook,
            Target::Email(_) => Channel::Email,
        }
    }

    /// The webhook's or recipient's id.
    pub fn id(&self) -> &str {
        match self {
            Target::Webhook(w) => &w.id,
            Target::Email(e) => &e.id,
        }
    }
}

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
    }
}

fn alarm_row(r: &SqliteRow) -> Result<AlarmRecord> {
    let rule: String = r.try_get("rule")?;
    let state: String = r.try_get("state")?;
    Ok(AlarmRecord {
        id: r.try_get("id")?,
        instance_id: crate::rows::parse(r, "instance_id")?,
        instance: r.try_get("instance_name")?,
        name: r.try_get("name")?,
        rule: serde_json::from_str::<AlarmRule>(&rule)
            .map_err(|_| corrupt("alarms.rule", &rule))?,
        state: state.parse().map_err(|_| corrupt("alarms.state", &state))?,
        reason: r.try_get("reason")?,
        state_since: r.try_get("state_since")?,
        silenced_until: r.try_get("silenced_until")?,
    })
}

fn webhook_row(r: &SqliteRow, id_column: &str) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get(id_column)?,
        url: r.try_get("url")?,
        secret: berth_model::Secret::new(r.try_get::<String, _>("secret")?),
        created_at: r.try_get("created_at")?,
    })
}

const ALARM_COLUMNS: &str =
    "id, instance_id, instance_name, name, rule, state, reason, state_since, silenced_until";

impl Store {
    /// Adds an alarm; a name the instance has already is refused.
    pub async fn create_alarm(&self, a: &AlarmRecord) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO alarms (id, instance_id, instance_name, name, rule, state, reason, state_since, silenced_until)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(a.instance_id.to_string())
        .bind(&a.instance)
        .bind(&a.name)
        .bind(serde_json::to_string(&a.rule).unwrap_or_default())
        .bind(a.state.as_str())
        .bind(&a.reason)
        .bind(&a.state_since)
        .bind(a.silenced_until)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlarmExists(format!(
                    "instance {} has an alarm {} already; pick another name or delete it first",
                    a.instance, a.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds the alarms an instance lacks among `defaults` (made by name: an
    /// alarm the user deleted comes back, one they changed stays as it is).
    pub async fn ensure_alarms(&self, defaults: &[AlarmRecord]) -> Result<()> {
        for a in defaults {
            match self.create_alarm(a).await {
                Ok(()) | Err(StoreError::AlarmExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Alarms, of one instance or all, by instance and name.
    pub async fn alarms(&self, instance: Option<InstanceId>) -> Result<Vec<AlarmRecord>> {
        let rows = match instance {
            Some(i) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ALARM_COLUMNS} FROM alarms WHERE instance_id = ? ORDER BY instance_name, name"
                )))
                .bind(i.to_string())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {ALARM_COLUMNS} FROM alarms ORDER BY instance_name, name"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(alarm_row).collect()
    }

    /// One alarm by id.
    pub async fn alarm(&self, id: &str) -> Result<Option<AlarmRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(alarm_row)
        .transpose()
    }

    /// Deletes an alarm; whether there was one.
    pub async fn delete_alarm(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM alarms WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    /// Holds back an alarm's notifications until `until` (Unix seconds).
    pub async fn silence_alarm(&self, id: &str, until: i64) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE alarms SET silenced_until = ? WHERE id = ?")
                .bind(until)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Moves an alarm from `from` to `to` with its event and, when `notify` holds
    /// a body, one notification per webhook (first attempt at `now`, given up at
    /// `expires`) — all or nothing. Nothing happens when the alarm is no longer in
    /// `from` (deleted, or changed by someone else).
    #[allow(clippy::too_many_arguments)]
    pub async fn change_alarm_state(
        &self,
        id: &str,
        from: AlarmState,
        to: AlarmState,
        reason: &str,
        event: &NewEvent,
        notify: Option<&str>,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(
            "UPDATE alarms SET state = ?, reason = ?, state_since = ? WHERE id = ? AND state = ?",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(crate::now())
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !changed {
            return Ok(false);
        }
        crate::events::insert(&mut tx, event).await?;
        if let Some(body) = notify {
            sqlx::query(
                "INSERT INTO notifications (alarm_id, channel, target_id, body, state, attempts, next_attempt, expires, created_at)
                 SELECT ?1, 'webhook', id, ?2, 'pending', 0, ?3, ?4, ?5 FROM webhooks
                 UNION ALL
                 SELECT ?1, 'email', id, ?2, 'pending', 0, ?3, ?4, ?5 FROM email_recipients",
            )
            .bind(id)
            .bind(body)
            .bind(now)
            .bind(expires)
            .bind(crate::now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.events_written();
        Ok(true)
    }

    /// Adds a webhook.
    pub async fn create_webhook(&self, w: &Webhook) -> Result<()> {
        sqlx::query("INSERT INTO webhooks (id, url, secret, created_at) VALUES (?, ?, ?, ?)")
            .bind(&w.id)
            .bind(&w.url)
            .bind(w.secret.expose())
            .bind(&w.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every webhook.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let rows =
            sqlx::query("SELECT id, url, secret, created_at FROM webhooks ORDER BY created_at")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| webhook_row(r, "id")).collect()
    }

    /// Deletes a webhook and what it still had to deliver; whether there was one.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.remove_target(Channel::Webhook, id).await
    }

    /// Removes a webhook or an email recipient and cancels what it still had to
    /// receive, in one transaction; whether there was one.
    pub(crate) async fn remove_target(&self, channel: Channel, id: &str) -> Result<bool> {
        let delete = match channel {
            Channel::Webhook => "DELETE FROM webhooks WHERE id = ?",
            Channel::Email => "DELETE FROM email_recipients WHERE id = ?",
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE notifications SET state = 'cancelled'
             WHERE channel = ? AND target_id = ? AND state = 'pending'",
        )
        .bind(channel.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query(delete)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(gone)
    }

    /// Notifications due at `now`; those past their expiry are marked expired first.
    pub async fn due_notifications(&self, now: i64) -> Result<Vec<DueNotification>> {
        sqlx::query(
            "UPDATE notifications SET state = 'expired' WHERE state = 'pending' AND expires <= ?",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT n.id, n.alarm_id, n.attempts, n.body, n.channel,
                    w.id AS wid, w.url, w.secret, w.created_at,
                    e.id AS eid, e.address, e.created_at AS e_created_at
             FROM notifications n
             LEFT JOIN webhooks w ON n.channel = 'webhook' AND w.id = n.target_id
             LEFT JOIN email_recipients e ON n.channel = 'email' AND e.id = n.target_id
             WHERE n.state = 'pending' AND n.next_attempt <= ? AND COALESCE(w.id, e.id) IS NOT NULL
             ORDER BY n.id LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get("channel")?;
                let target = match channel.parse::<Channel>() {
                    Ok(Channel::Webhook) => Target::Webhook(webhook_row(r, "wid")?),
                    Ok(Channel::Email) => Target::Email(EmailRecipient {
                        id: r.try_get("eid")?,
                        address: r.try_get("address")?,
                        created_at: r.try_get("e_created_at")?,
                    }),
                    Err(_) => return Err(corrupt("notifications.channel", channel)),
                };
                Ok(DueNotification {
                    id: r.try_get("id")?,
                    alarm_id: r.try_get("alarm_id")?,
                    attempts: r.try_get("attempts")?,
                    body: r.try_get("body")?,
                    target,
                })
            })
            .collect()
    }

    /// Records an attempt and its event: delivered, or the next attempt's time.
    pub async fn record_attempt(
        &self,
        n: &DueNotification,
        status: Option<i64>,
        error: Option<&str>,
        next_attempt: Option<i64>,
        event: &NewEvent,
    ) -> Result<()> {
        let attempt = n.attempts + 1;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, attempt, at, status, error) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(n.id)
        .bind(attempt)
        .bind(crate::now())
        .bind(status)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notifications SET attempts = ?, state = ?, next_attempt = COALESCE(?, next_attempt) WHERE id = ?",
        )
        .bind(attempt)
        .bind(if next_attempt.is_some() { "pending" } else { "delivered" })
        .bind(next_attempt)
        .bind(n.id)
        .execute(&mut *tx)
        .await?;
        crate::events::insert(&mut tx, event).await?;
        tx.commit().await?;
        self.events_written();
        Ok(())
    }

    /// Every delivery attempt of an alarm's notifications, oldest first.
    pub async fn attempts(&self, alarm_id: &str) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT a.notification_id, n.channel, n.target_id, a.attempt, a.at, a.status, a.error
             FROM notification_attempts a JOIN notifications n ON n.id = a.notification_id
             WHERE n.alarm_id = ? ORDER BY a.notification_id, a.attempt",
        )
        .bind(alarm_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get("channel")?;
                Ok(Attempt {
                    notification: r.try_get("notification_id")?,
                    channel: channel
                        .parse()
                        .map_err(|_| corrupt("notifications.channel", &channel))?,
                    target: r.try_get("target_id")?,
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("at")?,
                    status: r.try_get("status")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::metrics::alarm::{defaults, AlarmState};
    use berth_model::EventKind;

    fn alarm(instance: InstanceId, name: &str) -> AlarmRecord {
        AlarmRecord {
            id: format!("a-{name}"),
            instance_id: instance,
            instance: "db".into(),
            name: name.into(),
            rule: defaults()[0].1.clone(),
            state: AlarmState::InsufficientData,
            reason: "new".into(),
            state_since: crate::now(),
            silenced_until: None,
        }
    }

    fn event(instance: InstanceId) -> NewEvent {
        NewEvent::instance(
            instance,
            "db",
            EventKind::AlarmStateChanged,
            "changed",
            serde_json::json!({}),
        )
    }

    async fn add_webhook(store: &Store) {
        store
            .create_webhook(&Webhook {
                id: "w1".into(),
                url: "http://127.0.0.1:9/hook".into(),
                secret: berth_model::Secret::new("s"),
                created_at: crate::now(),
            })
            .await
            .expect("webhook");
    }

    #[tokio::test]
    async fn a_state_change_notifies_every_webhook_until_delivered() {
        let store = Store::in_memory().await.expect("store");
        let inst = InstanceId::new_random();
        store.create_alarm(&alarm(inst, "a")).await.expect("create");
        let dup = store.create_alarm(&alarm(inst, "a")).await;
        assert!(matches!(dup, Err(StoreError::AlarmExists(_))), "{dup:?}");
        store
            .ensure_alarms(&[alarm(inst, "a"), alarm(inst, "b")])
            .await
            .expect("ensure");
        assert_eq!(store.alarms(Some(inst)).await.expect("list").len(), 2);
        add_webhook(&store).await;

        let (from, to) = (AlarmState::InsufficientData, AlarmState::Alarm);
        let ev = event(inst);
        assert!(store
            .change_alarm_state("a-a", from, to, "why", &ev, Some("{}"), 100, 200)
            .await
            .expect("change"));
        // Changed already: a second writer with the old state changes nothing.
        assert!(!store
            .change_alarm_state("a-a", from, to, "why", &ev, Some("{}"), 100, 200)
            .await
            .expect("change"));
        // Silenced: the state changes, no notification.
        assert!(store
            .change_alarm_state("a-b", from, to, "why", &ev, None, 100, 200)
            .await
            .expect("change"));
        let due = store.due_notifications(100).await.expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alarm_id, "a-a");

        store
            .record_attempt(&due[0], Some(500), Some("boom"), Some(102), &ev)
            .await
            .expect("attempt");
        assert!(store.due_notifications(101).await.expect("due").is_empty());
        let again = store.due_notifications(102).await.expect("due");
        assert_eq!(again[0].attempts, 1);
        store
            .record_attempt(&again[0], Some(204), None, None, &ev)
            .await
            .expect("attempt");
        assert!(store.due_notifications(150).await.expect("due").is_empty());
        let tried = store.attempts("a-a").await.expect("attempts");
        assert_eq!(
            tried
                .iter()
                .map(|a| (a.attempt, a.status))
                .collect::<Vec<_>>(),
            vec![(1, Some(500)), (2, Some(204))]
        );
        let state = store.alarm("a-a").await.expect("read").expect("there");
        assert_eq!(state.state, AlarmState::Alarm);
    }

    #[tokio::test]
    async fn an_undelivered_notification_expires() {
        let store = Store::in_memory().await.expect("store");
        let inst = InstanceId::new_random();
        store.create_alarm(&alarm(inst, "a")).await.expect("create");
        add_webhook(&store).await;
        store
            .change_alarm_state(
                "a-a",
                AlarmState::InsufficientData,
                AlarmState::Ok,
                "why",
                &event(inst),
                Some("{}"),
                100,
                110,
            )
            .await
            .expect("change");
        assert!(store.due_notifications(110).await.expect("due").is_empty());
        assert!(store.due_notifications(105).await.expect("due").is_empty());
    }
}

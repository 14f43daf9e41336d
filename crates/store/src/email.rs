//! Who alarm notifications are mailed to (`berth alarms email …`).

use crate::{Result, Store, StoreError};
use berth_model::metrics::alarm::{Channel, EmailRecipient};
use sqlx::Row;

impl Store {
    /// Adds a recipient; an address that is there already is refused.
    pub async fn create_email_recipient(&self, r: &EmailRecipient) -> Result<()> {
        let added =
            sqlx::query("INSERT INTO email_recipients (id, address, created_at) VALUES (?, ?, ?)")
                .bind(&r.id)
                .bind(&r.address)
                .bind(&r.created_at)
                .execute(&self.pool)
                .await;
        match added {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::RecipientExists(format!(
                    "{} gets alarm emails already; `berth alarms email list` shows its id",
                    r.address
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every recipient, oldest first.
    pub async fn email_recipients(&self) -> Result<Vec<EmailRecipient>> {
        let rows = sqlx::query(
            "SELECT id, address, created_at FROM email_recipients ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EmailRecipient {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Removes a recipient and cancels what it still had to receive; whether there
    /// was one.
    pub async fn delete_email_recipient(&self, id: &str) -> Result<bool> {
        self.remove_target(Channel::Email, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;
    use berth_model::metrics::alarm::{defaults, AlarmRecord, AlarmState};
    use berth_model::{EventKind, InstanceId, NewEvent};

    fn recipient(id: &str, address: &str) -> EmailRecipient {
        EmailRecipient {
            id: id.into(),
            address: address.into(),
            created_at: crate::now(),
        }
    }

    #[tokio::test]
    async fn a_state_change_is_mailed_to_every_recipient_until_removed() {
        let store = Store::in_memory().await.expect("store");
        store
            .create_email_recipient(&recipient("e1", "ops@example.com"))
            .await
            .expect("added");
        let dup = store
            .create_email_recipient(&recipient("e2", "ops@example.com"))
            .await;
        assert!(
            matches!(dup, Err(StoreError::RecipientExists(_))),
            "{dup:?}"
        );
        store
            .create_email_recipient(&recipient("e3", "dba@example.com"))
            .await
            .expect("added");
        let listed = store.email_recipients().await.expect("list");
        assert_eq!(listed.len(), 2);

        let inst = InstanceId::new_random();
        store
            .create_alarm(&AlarmRecord {
                id: "a1".into(),
                instance_id: inst,
                instance: "db".into(),
                name: "engine-down".into(),
                rule: defaults()[0].1.clone(),
                state: AlarmState::InsufficientData,
                reason: "new".into(),
                state_since: crate::now(),
                silenced_until: None,
            })
            .await
            .expect("alarm");
        let ev = NewEvent::instance(
            inst,
            "db",
            EventKind::AlarmStateChanged,
            "x",
            serde_json::json!({}),
        );
        store
            .change_alarm_state(
                "a1",
                AlarmState::InsufficientData,
                AlarmState::Alarm,
                "why",
                &ev,
                Some("{}"),
                100,
                200,
            )
            .await
            .expect("changed");
        let due = store.due_notifications(100).await.expect("due");
        let mut to: Vec<(Channel, String)> = due
            .iter()
            .map(|n| match &n.target {
                Target::Email(e) => (n.target.channel(), e.address.clone()),
                Target::Webhook(w) => (n.target.channel(), w.url.clone()),
            })
            .collect();
        to.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            to,
            vec![
                (Channel::Email, "dba@example.com".to_owned()),
                (Channel::Email, "ops@example.com".to_owned()),
            ]
        );
        store
            .record_attempt(&due[0], None, Some("refused"), Some(105), &ev)
            .await
            .expect("attempt");
        let tried = store.attempts("a1").await.expect("attempts");
        assert_eq!(tried[0].channel, Channel::Email);
        assert_eq!(tried[0].target, due[0].target.id());

        // Removed: what it had still to receive is cancelled.
        assert!(store
            .delete_email_recipient(due[0].target.id())
            .await
            .expect("deleted"));
        assert!(!store
            .delete_email_recipient(due[0].target.id())
            .await
            .expect("gone"));
        let left = store.due_notifications(110).await.expect("due");
        assert_eq!(left.len(), 1);
        assert_ne!(left[0].target.id(), due[0].target.id());
    }
}

//! Pausing and resuming automatic failover: one flag of the stored topology,
//! changed with its event in one transaction.

use crate::{events, rows, Result, Store, StoreError};
use berth_model::{EventKind, InstanceId, InstanceRecord, NewEvent};
use serde_json::json;

impl Store {
    /// Sets whether automatic failover is paused, with a `failover.paused` or
    /// `failover.resumed` event when that changed. Only this flag of the topology is
    /// written, read in the same transaction, so a change of primary or members
    /// made beside it is kept. Returns the instance as it is afterwards.
    pub async fn set_failover_paused(
        &self,
        id: InstanceId,
        paused: bool,
    ) -> Result<InstanceRecord> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut inst = rows::instance_by_id(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchInstance(id.to_string()))?;
        if inst.topology.failover_paused == paused {
            return Ok(inst);
        }
        inst.topology.failover_paused = paused;
        let now = crate::now();
        sqlx::query("UPDATE instances SET topology = ?, updated_at = ? WHERE id = ?")
            .bind(serde_json::to_string(&inst.topology).unwrap_or_default())
            .bind(&now)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        inst.updated_at = now;
        let name = inst.name.as_str();
        let (kind, message) = if paused {
            (
                EventKind::FailoverPaused,
                format!(
                    "automatic failover paused: a failed primary is restarted in place until \
                     `berth failover resume {name}`"
                ),
            )
        } else {
            (
                EventKind::FailoverResumed,
                format!(
                    "automatic failover resumed ({}): a replica is promoted when the primary fails",
                    inst.topology.failover
                ),
            )
        };
        let details = json!({ "failover": inst.topology.failover.as_str(), "paused": paused });
        events::insert(
            &mut tx,
            &NewEvent::instance(id, name, kind, message, details),
        )
        .await?;
        tx.commit().await?;
        self.events_written();
        Ok(inst)
    }
}

#[cfg(test)]
mod tests {
    use crate::*;
    use berth_model::{EventKind, TaskOptions};

    #[tokio::test]
    async fn pause_and_resume_are_idempotent_and_each_change_is_an_event() {
        let store = Store::in_memory().await.expect("store");
        let inst = InstanceRecord::example("db1", InstanceStatus::Available, 40001);
        let task = TaskRecord::new(&inst, TaskKind::Create, TaskOptions::default(), &now());
        store
            .create_instance(&inst, &task, &|_, _, _| Ok(()))
            .await
            .expect("create");
        for paused in [true, true, false, false, true] {
            let after = store
                .set_failover_paused(inst.id, paused)
                .await
                .expect("set");
            assert_eq!(after.topology.failover_paused, paused);
            let stored = store.instance(inst.id).await.expect("read").expect("there");
            assert_eq!(stored.topology, after.topology);
        }
        let kinds: Vec<EventKind> = store
            .events(&EventFilter {
                limit: 100,
                ..EventFilter::default()
            })
            .await
            .expect("events")
            .iter()
            .map(|e| e.kind)
            .filter(|k| matches!(k, EventKind::FailoverPaused | EventKind::FailoverResumed))
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::FailoverPaused,
                EventKind::FailoverResumed,
                EventKind::FailoverPaused
            ]
        );
    }
}

//! The backup scheduler: every few seconds, starts the backup of each instance whose
//! schedule has a slot due, then lets retention delete what expired.
//!
//! A policy stores the slot of its last run (`last_slot`); a run is due when the
//! schedule has a slot after it and no later than now (`Schedule::due`, pure). Slots
//! missed while `serve` was down therefore collapse into one run when it is back.
//! An instance without a stored policy gets the default (daily, keep everything)
//! the first time the scheduler sees it, counting from then. The same look starts
//! the verifications the policies ask for (`verify.rs`).

use super::BackupStore;
use crate::Ctx;
use berth_model::backup::{
    expired, format_time, parse_time, BackupPolicyRecord, Retention, RetentionCandidate, Schedule,
};
use berth_model::event::{EventKind, NewEvent};
use berth_model::{InstanceRecord, InstanceStatus};
use serde_json::json;
use std::time::Duration;
use tracing::{info, warn};

/// How often the scheduler looks.
const TICK: Duration = Duration::from_secs(5);

/// Runs the scheduler until the process ends.
pub(crate) async fn run_forever(ctx: Ctx) {
    loop {
        if let Err(e) = tick(&ctx).await {
            warn!(error = %e, "backup scheduler: will try again");
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Now, as the store's clock says.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    parse_time(&berth_store::now()).unwrap_or_default()
}

/// The default policy of an instance (`--default-backup-schedule`, keep all),
/// counting from `now`.
pub(crate) fn default_policy(ctx: &Ctx, inst: &InstanceRecord, now: &str) -> BackupPolicyRecord {
    BackupPolicyRecord {
        instance_id: inst.id,
        instance_name: inst.name.to_string(),
        schedule: ctx.config.default_backup_schedule.clone(),
        retention: Retention::default(),
        last_slot: now.to_owned(),
        verify: ctx.config.default_verify,
    }
}

async fn tick(ctx: &Ctx) -> Result<(), berth_store::StoreError> {
    let now = now();
    let instances = ctx.store.list_instances(None).await?;
    let policies = ctx.store.backup_policies().await?;
    for inst in instances.iter().filter(|i| !super::verify::is_throwaway(i)) {
        match policies.iter().find(|p| p.instance_id == inst.id) {
            Some(p) => run_if_due(ctx, inst, p, now).await?,
            None => {
                ctx.store
                    .set_backup_policy(&default_policy(ctx, inst, &format_time(now)), None)
                    .await?
            }
        }
    }
    for p in &policies {
        retain(ctx, p, now).await?;
    }
    super::verify::tick(ctx, &instances, &policies, now).await
}

async fn run_if_due(
    ctx: &Ctx,
    inst: &InstanceRecord,
    p: &BackupPolicyRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), berth_store::StoreError> {
    // `off` (or anything else not a schedule: each was checked before it was stored).
    let Ok(schedule) = Schedule::parse(&p.schedule) else {
        return Ok(());
    };
    let last = parse_time(&p.last_slot).unwrap_or(now);
    let Some(slot) = schedule.due(last, now) else {
        return Ok(());
    };
    let slot_text = format_time(slot);
    let name = inst.name.to_string();
    let event = |message: String, details| {
        NewEvent::instance(inst.id, &name, EventKind::BackupScheduled, message, details)
    };
    match inst.status {
        InstanceStatus::Available => match super::start_backup(ctx, inst).await {
            Ok((backup, task)) => {
                info!(instance = %name, %backup, slot = %slot_text, "scheduled backup started");
                let e = event(
                    format!("scheduled backup {backup} of {name} started (slot {slot_text})"),
                    json!({"slot": slot_text, "backup": backup, "task": task.id.to_string()}),
                );
                ctx.store.advance_backup_slot(inst.id, &slot_text, &e).await
            }
            // Busy since the status was read: the run waits for the next tick.
            Err(e) => {
                warn!(instance = %name, error = %e, "scheduled backup waits");
                Ok(())
            }
        },
        // Nothing to back up until it runs again: skipped, and said so.
        InstanceStatus::Stopped | InstanceStatus::Failed => {
            let reason = format!("the instance is {}", inst.status.as_str());
            let e = event(
                format!("scheduled backup of {name} skipped (slot {slot_text}): {reason}"),
                json!({"slot": slot_text, "skipped": reason}),
            );
            ctx.store.advance_backup_slot(inst.id, &slot_text, &e).await
        }
        // Busy with another task: the run starts once it is done.
        _ => Ok(()),
    }
}

/// Deletes what the instance's retention no longer keeps: the object first, then the
/// record with its event.
async fn retain(
    ctx: &Ctx,
    p: &BackupPolicyRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), berth_store::StoreError> {
    if p.retention == Retention::default() {
        return Ok(());
    }
    let backups = ctx.store.backups_of(p.instance_id).await?;
    let candidates: Vec<RetentionCandidate> = backups
        .iter()
        .map(|b| RetentionCandidate {
            id: b.id,
            started_at: parse_time(&b.started_at).unwrap_or(now),
            state: b.state,
            complete: b.is_complete(),
            needs: Vec::new(),
        })
        .collect();
    let store: &BackupStore = &ctx.backups;
    let in_use = ctx.store.backups_in_use().await?;
    for id in expired(&candidates, p.retention, now) {
        // A restore reading it, say: it goes at a later look, once that is done.
        if in_use.contains(&id) {
            continue;
        }
        let Some(b) = backups.iter().find(|b| b.id == id) else {
            continue;
        };
        if let Err(e) = store.delete(&b.object).await {
            warn!(backup = %id, error = %e, "retention could not delete a backup's object; will try again");
            continue;
        }
        info!(instance = %p.instance_name, backup = %id, "retention deleted an expired backup");
        let e = NewEvent::instance(
            p.instance_id,
            &p.instance_name,
            EventKind::BackupExpired,
            format!(
                "backup {id} of {} (started {}) expired and was deleted",
                p.instance_name, b.started_at
            ),
            json!({"backup": id, "started_at": b.started_at, "state": b.state.as_str(),
                   "keep_days": p.retention.keep_days, "keep_count": p.retention.keep_count}),
        );
        ctx.store.expire_backup(id, &e).await?;
    }
    Ok(())
}

//! Verifying a backup by restoring it: a throwaway instance, the engine's own check of
//! what was restored, the result on the backup, the throwaway instance deleted.
//!
//! The throwaway instance is an instance like any other (so its restore is the same
//! restore a user gets, with the source's limits), in the reserved project
//! [`project`], which no list or name lookup of the API sees. Its `verify` task
//! checks the backup's bytes, makes the instance, loads the backup and runs
//! `check_restored`. When that task ends, either way, [`ended`] records the outcome on
//! the backup with its event and begins the throwaway instance's delete. The
//! scheduler's [`tick`] does the same for a task whose end a crash cut short, and
//! starts the verifications the instances' policies ask for.

use crate::error::ApiError;
use crate::steps::StepError;
use crate::Ctx;
use berth_model::backup::BackupRecord;
use berth_model::event::{EventKind, NewEvent};
use berth_model::verify::{ConsistencyReport, Verification, VerifyOutcome};
use berth_model::{
    InstanceRecord, ProjectId, StepName, TaskKind, TaskOptions, TaskRecord, TaskState,
};
use tracing::{info, warn};

/// The whole check must finish within this long.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// The project of verification instances; reserved (the API only ever looks in its
/// own project).
pub(crate) fn project() -> ProjectId {
    "berth-verify"
        .parse()
        .unwrap_or_else(|_| ProjectId::default_project())
}

/// Whether `inst` is a verification's throwaway instance.
pub(crate) fn is_throwaway(inst: &InstanceRecord) -> bool {
    inst.project == project()
}

/// The throwaway instance's name: one per backup at a time.
fn throwaway_name(b: &BackupRecord) -> String {
    let id = b.id.to_string().replace('-', "");
    format!("verify-{}", &id[..12])
}

/// Begins verifying `b`: refused (and nothing made) when it is not complete or is
/// being verified already.
pub(crate) async fn start(
    ctx: &Ctx,
    b: &BackupRecord,
) -> Result<(InstanceRecord, TaskRecord), ApiError> {
    if !b.is_complete() {
        return Err(ApiError::InvalidState(format!(
            "backup {} is {}, not complete: only a complete backup can be verified; pick one \
             from `berth backup list {}`",
            b.id,
            b.state.as_str(),
            b.instance_name
        )));
    }
    let name = throwaway_name(b);
    if ctx.store.instance_by_name(&project(), &name).await.is_ok() {
        return Err(ApiError::InvalidState(format!(
            "backup {} is being verified already (instance {name}); wait for that task \
             (`berth tasks`) and its clean-up",
            b.id
        )));
    }
    // The source's resources, when it still exists; else the engine's defaults.
    let source = ctx.store.instance(b.instance_id).await.ok().flatten();
    let req = berth_model::CreateRequest {
        name,
        engine: b.engine.as_str().to_owned(),
        version: Some(b.version.to_string()),
        cpus: source
            .as_ref()
            .map(|s| berth_model::spec::Quantity::Text(s.spec.cpus.to_string())),
        memory: source.as_ref().map(|s| s.spec.memory.to_string()),
        storage: source.as_ref().map(|s| s.spec.storage.to_string()),
        ..Default::default()
    };
    let options = TaskOptions {
        backup: Some(b.id),
        ..Default::default()
    };
    let (inst, task) =
        crate::api::instances::create_in(ctx, req, options, project(), TaskKind::Verify).await?;
    info!(backup = %b.id, instance = %inst.name, task = %task.id, "verifying a backup by restoring it");
    Ok((inst, task))
}

/// The `check_restored` step: the engine's own consistency check and a count of
/// every table, by the throwaway instance's agent. Damage found fails the step.
pub(crate) async fn check_restored(ctx: &Ctx, inst: &InstanceRecord) -> Result<String, StepError> {
    let ip = crate::steps::running_member_ip(ctx, inst).await?;
    let resp = super::agent_post(
        ctx,
        inst,
        ip,
        "/verify",
        &[],
        CHECK_TIMEOUT,
        "run the consistency check",
    )
    .await?;
    let report: ConsistencyReport = resp
        .json()
        .await
        .map_err(|e| StepError::Fatal(format!("the agent's report cannot be read: {e}")))?;
    if report.problems.is_empty() {
        Ok(report.summary())
    } else {
        Err(StepError::Fatal(report.summary()))
    }
}

/// What a finished verification task says about its backup: a failure in checking
/// the bytes, loading them or checking what was loaded is the backup's; any other
/// (Docker, the image, the host) leaves it inconclusive.
fn outcome(task: &TaskRecord) -> Option<Verification> {
    let backups_fault = |s: &berth_model::StepStatus| {
        s.state == berth_model::StepState::Failed
            && matches!(
                s.name,
                StepName::VerifyBackup | StepName::LoadBackup | StepName::CheckRestored
            )
    };
    let (outcome, detail) = match task.state {
        TaskState::Succeeded => (
            VerifyOutcome::Passed,
            task.steps
                .last()
                .and_then(|s| s.detail.clone())
                .unwrap_or_default(),
        ),
        TaskState::Failed if task.steps.iter().any(backups_fault) => (
            VerifyOutcome::Failed,
            task.error.clone().unwrap_or_default(),
        ),
        TaskState::Failed => (
            VerifyOutcome::Inconclusive,
            task.error.clone().unwrap_or_default(),
        ),
        _ => return None,
    };
    Some(Verification {
        outcome,
        at: berth_store::now(),
        detail,
    })
}

/// A verification task ended: its outcome goes on the backup (once: one verification
/// of a backup runs at a time, so one recorded since the task began is this one's),
/// with its event, and the throwaway instance is deleted with its volume.
pub(crate) async fn ended(ctx: &Ctx, task: &TaskRecord) {
    let (Some(id), Some(v)) = (task.options.backup, outcome(task)) else {
        return;
    };
    if let Ok(Some(b)) = ctx.store.backup(id).await {
        record(ctx, &b, &v, &task.created_at, serde_json::json!(task.id)).await;
    }
    clean_up(ctx, task.instance_id).await;
}

/// Records a verification's outcome on `b` with its event, unless one was recorded
/// since `since`.
async fn record(
    ctx: &Ctx,
    b: &BackupRecord,
    v: &Verification,
    since: &str,
    task: serde_json::Value,
) {
    let id = b.id;
    let (kind, message) = match v.outcome {
        VerifyOutcome::Passed => (
            EventKind::BackupVerified,
            format!("backup {id} verified by restoring it: {}", v.detail),
        ),
        VerifyOutcome::Failed => (
            EventKind::BackupVerifyFailed,
            format!("backup {id} failed its verification: {}", v.detail),
        ),
        VerifyOutcome::Inconclusive => (
            EventKind::BackupVerifyInconclusive,
            format!(
                "backup {id} could not be verified, for a reason not its own: {}",
                v.detail
            ),
        ),
    };
    let event = NewEvent::instance(
        b.instance_id,
        &b.instance_name,
        kind,
        message,
        serde_json::json!({
            "backup": id,
            "outcome": v.outcome.as_str(),
            "detail": v.detail,
            "task": task,
        }),
    );
    match ctx.store.record_verification(id, v, &event, since).await {
        Ok(false) => {}
        Ok(true) if v.outcome == VerifyOutcome::Passed => {
            info!(backup = %id, detail = %v.detail, "a backup is verified")
        }
        Ok(true) => {
            warn!(backup = %id, outcome = v.outcome.as_str(), detail = %v.detail, "a backup's verification did not pass")
        }
        Err(e) => warn!(backup = %id, error = %e, "cannot record the verification"),
    }
}

/// Deletes a throwaway instance, volume and all, unless that is under way.
async fn clean_up(ctx: &Ctx, id: berth_model::InstanceId) {
    let Ok(Some(inst)) = ctx.store.instance(id).await else {
        return;
    };
    if !is_throwaway(&inst) || inst.status.is_busy() {
        return;
    }
    let options = TaskOptions {
        purge: true,
        ..Default::default()
    };
    if let Err(e) = crate::tasks::begin(ctx, &inst, TaskKind::Delete, options).await {
        warn!(instance = %inst.name, error = %e, "cannot delete a verification's instance");
    }
}

/// One look of the scheduler: throwaway instances whose task ended without its
/// clean-up (a crash in between) are recorded and cleaned up; each instance's
/// policy starts the verification it asks for.
pub(crate) async fn tick(
    ctx: &Ctx,
    instances: &[InstanceRecord],
    policies: &[berth_model::backup::BackupPolicyRecord],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), berth_store::StoreError> {
    let unfinished = ctx.store.unfinished_tasks().await?;
    for inst in instances.iter().filter(|i| is_throwaway(i)) {
        if unfinished.iter().any(|t| t.instance_id == inst.id) {
            continue;
        }
        let tasks = ctx.store.list_tasks(Some(inst.id), 10).await?;
        match tasks.iter().find(|t| t.kind == TaskKind::Verify) {
            Some(t) => ended(ctx, t).await,
            None => clean_up(ctx, inst.id).await,
        }
    }
    // Only instances that exist: a deleted one's backups are verified on request.
    let live = |p: &&berth_model::backup::BackupPolicyRecord| {
        instances
            .iter()
            .any(|i| i.id == p.instance_id && !is_throwaway(i))
    };
    // One verification the policies start at a time, across the site: each costs
    // an instance's resources. One a user asked for is not held back.
    if instances.iter().any(is_throwaway) {
        return Ok(());
    }
    for p in policies.iter().filter(live) {
        let backups = ctx.store.backups_of(p.instance_id).await?;
        // None is running: no throwaway instance exists (above).
        let Some(id) = berth_model::verify::due(p.verify, &backups, false, now) else {
            continue;
        };
        let Some(b) = backups.iter().find(|b| b.id == id) else {
            continue;
        };
        match start(ctx, b).await {
            Ok(_) => return Ok(()),
            // Refused (the host cannot fit it, say): said once, on the backup, and
            // not tried again every few seconds.
            Err(e) => {
                let v = Verification {
                    outcome: VerifyOutcome::Inconclusive,
                    at: berth_store::now(),
                    detail: format!("the verification could not start: {e}"),
                };
                record(ctx, b, &v, &v.at, serde_json::Value::Null).await;
            }
        }
    }
    Ok(())
}

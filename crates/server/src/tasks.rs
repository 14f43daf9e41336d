//! The task runner: runs each task's steps in order, persisting after every step,
//! and resumes unfinished tasks when the control plane starts again.
//!
//! A step seen `running` after a crash is simply run again: steps are idempotent
//! (they check before they act), so a repeat finds the work done and moves on.

use crate::steps;
use crate::Ctx;
use berth_model::{task, InstanceEvent, StepState, TaskId, TaskKind, TaskRecord, TaskState};
use berth_store::StoreError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, info_span, warn, Instrument};

/// Runs tasks in the background; one tokio task per Berth task.
#[derive(Clone, Default)]
pub struct TaskRunner {
    running: Arc<Mutex<HashSet<TaskId>>>,
    /// Tasks asked to stop, and why (a failover taking over their instance).
    preempted: Arc<Mutex<HashMap<TaskId, String>>>,
}

impl TaskRunner {
    /// Starts running a stored task (no-op if it already runs in this process).
    pub fn submit(&self, ctx: &Ctx, id: TaskId) {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(id) {
                return;
            }
        }
        let ctx = ctx.clone();
        let runner = self.clone();
        tokio::spawn(async move {
            let span = info_span!("task", task = %id);
            let _running = ctx.metrics.task_running();
            run(&ctx, id).instrument(span).await;
            runner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    /// Asks a running task to stop at once, failing with `why`: its step in flight
    /// is dropped (steps are idempotent, so that is no worse than a crash).
    pub(crate) fn preempt(&self, id: TaskId, why: String) {
        self.preempted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, why);
    }

    fn preempted(&self, id: TaskId) -> Option<String> {
        self.preempted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Whether the task still runs in this process.
    pub(crate) fn is_running(&self, id: TaskId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Resubmits every unfinished task; returns how many.
    pub async fn resume_all(&self, ctx: &Ctx) -> Result<usize, StoreError> {
        let tasks = ctx.store.unfinished_tasks().await?;
        for t in &tasks {
            self.submit(ctx, t.id);
        }
        Ok(tasks.len())
    }
}

/// Refuses, naming the holder and what to do, when a task holds the instance: what
/// the store would say when the task began, said before a request checks anything
/// else (its status only follows from that task).
pub(crate) async fn refuse_if_held(
    ctx: &Ctx,
    inst: &berth_model::InstanceRecord,
) -> Result<(), crate::error::ApiError> {
    match holder(ctx, inst).await {
        Some(t) => Err(StoreError::Held {
            name: inst.name.clone(),
            task: t.id,
            kind: t.kind,
        }
        .into()),
        None => Ok(()),
    }
}

/// The unfinished task that holds the instance, if any (as the store last said).
pub(crate) async fn holder(ctx: &Ctx, inst: &berth_model::InstanceRecord) -> Option<TaskRecord> {
    let task = ctx.store.task(inst.held_by?).await.ok()?;
    (!task.state.is_finished()).then_some(task)
}

/// Begins a task of `kind` on an instance — the status check, the status change and
/// the task are one store transaction — and starts running it.
pub async fn begin(
    ctx: &Ctx,
    inst: &berth_model::InstanceRecord,
    kind: TaskKind,
    options: berth_model::TaskOptions,
) -> Result<(berth_model::InstanceRecord, TaskRecord), StoreError> {
    let task = TaskRecord::new(inst, kind, options, &berth_store::now());
    let inst = ctx
        .store
        .begin_task(inst.id, InstanceEvent::Began(kind), &task)
        .await?;
    ctx.tasks.submit(ctx, task.id);
    Ok((inst, task))
}

async fn run(ctx: &Ctx, id: TaskId) {
    let mut task = match ctx.store.task(id).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot load task; will retry at next start");
            return;
        }
    };
    if task.state.is_finished() {
        return;
    }
    info!(kind = %task.kind, instance = %task.instance_name, "task running");
    ctx.metrics.task_begun(task.kind);
    task.state = TaskState::Running;
    if let Err(e) = ctx.store.update_task(&task).await {
        warn!(error = %e, "cannot record task start");
        return;
    }
    while let Some(i) = task::next_step(&task.steps) {
        if let Some(why) = ctx.tasks.preempted(task.id) {
            return fail(ctx, &mut task, i, 0, why).await;
        }
        let step = task.steps[i].name;
        task.steps[i].state = StepState::Running;
        task.steps[i].detail = None;
        if ctx.store.update_task(&task).await.is_err() {
            return;
        }
        let started = Instant::now();
        let result = run_step_with_progress(ctx, &mut task, i).await;
        let millis = started.elapsed().as_millis() as u64;
        match result {
            Ok(done) => {
                info!(step = %step, millis, detail = %done.detail, "step done");
                let s = &mut task.steps[i];
                s.state = StepState::Done;
                s.detail = Some(done.detail);
                s.millis = Some(millis);
                s.member = done.member.map(|m| m.0).or(s.member);
                s.decided = done.decided;
                if ctx.store.update_task(&task).await.is_err() {
                    return;
                }
            }
            Err(steps::StepError::Retry(_)) if ctx.tasks.preempted(task.id).is_some() => {
                let why = ctx.tasks.preempted(task.id).unwrap_or_default();
                return fail(ctx, &mut task, i, millis, why).await;
            }
            Err(steps::StepError::Retry(reason)) => {
                // Something we depend on is down (Docker, the store): wait and try
                // again, a bounded number of times, then fail with the reason.
                task.steps[i].attempts += 1;
                let attempts = task.steps[i].attempts;
                if let Some(wait) = task::retry_after(attempts) {
                    warn!(step = %step, %reason, attempts, "step could not run; trying again in {wait:?}");
                    task.steps[i].detail = Some(format!(
                        "attempt {attempts} of {} failed: {reason}",
                        task::MAX_STEP_ATTEMPTS
                    ));
                    // Best effort: the store may be what is down.
                    let _ = ctx.store.update_task(&task).await;
                    let until = Instant::now() + wait;
                    while Instant::now() < until && ctx.tasks.preempted(task.id).is_none() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
                let reason = format!("gave up after {attempts} attempts: {reason}");
                return fail(ctx, &mut task, i, millis, reason).await;
            }
            Err(steps::StepError::Fatal(reason)) => {
                return fail(ctx, &mut task, i, millis, reason).await;
            }
        }
    }
    task.state = TaskState::Succeeded;
    finish(ctx, &task, InstanceEvent::Succeeded(task.kind), None).await;
    info!(kind = %task.kind, instance = %task.instance_name, "task succeeded");
    ended(ctx, &task, None).await;
}

/// Fails the task at step `i` with `reason`, which the instance's status repeats.
async fn fail(ctx: &Ctx, task: &mut TaskRecord, i: usize, millis: u64, reason: String) {
    let step = task.steps[i].name;
    warn!(step = %step, %reason, "task failed");
    task.steps[i].state = StepState::Failed;
    task.steps[i].detail = Some(reason.clone());
    task.steps[i].millis = Some(millis);
    task.state = TaskState::Failed;
    task.error = Some(format!("{step}: {reason}"));
    finish(ctx, task, InstanceEvent::Failed(task.kind), Some(&reason)).await;
    ended(ctx, task, Some(&reason)).await;
}

/// What a task's kind does once the task ended, either way (`failed` gives the
/// reason when it failed), beyond the instance's status.
async fn ended(ctx: &Ctx, task: &TaskRecord, failed: Option<&str>) {
    match (task.kind, failed) {
        // A backup whose step was stopped mid-way (cancelled, pre-empted) never
        // stored it: its record says so now, not only at the next start.
        (TaskKind::Backup, Some(reason)) => {
            let Some(backup) = task.options.backup else {
                return;
            };
            if let Ok(Some(b)) = ctx.store.backup(backup).await {
                if b.state == berth_model::backup::BackupState::Running {
                    let _ = ctx.store.fail_backup(backup, reason).await;
                }
            }
        }
        // The outcome goes on the backup; the throwaway instance goes.
        (TaskKind::Verify, _) => crate::backup::verify::ended(ctx, task).await,
        _ => {}
    }
}

/// Applies the task's end to the instance and records the task's end, with their
/// events, in one store transaction: a crash keeps all of it or none (then the
/// finish runs again at the next start).
async fn finish(ctx: &Ctx, task: &TaskRecord, event: InstanceEvent, detail: Option<&str>) {
    // A delete's `forget` step already moved the instance to deleted.
    let event = (task.kind != TaskKind::Delete || task.state == TaskState::Failed).then_some(event);
    ctx.metrics.task_ended(task.kind, task.state);
    if let Err(e) = ctx.store.finish_task(task, event, detail).await {
        warn!(error = %e, "cannot record the task's end; it resumes at next start");
    }
}

/// Runs step `i`, copying progress lines into the step's detail at most twice a
/// second so `berth task --wait` can show them.
async fn run_step_with_progress(
    ctx: &Ctx,
    task: &mut TaskRecord,
    i: usize,
) -> Result<steps::Done, steps::StepError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let step = task.steps[i].name;
    let member = task.steps[i].member.map(berth_model::MemberId);
    let record = task.clone();
    let ctx2 = ctx.clone();
    let work = tokio::spawn(async move {
        steps::run(&ctx2, &record, step, member, &move |line: &str| {
            let _ = tx.send(line.to_owned());
        })
        .await
    });
    tokio::pin!(work);
    let mut last_save = Instant::now();
    // One ticker for the whole step: a sleep made afresh each round would never end
    // while progress lines come faster than it, and a stop would never be seen.
    let mut check = tokio::time::interval(Duration::from_millis(200));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            res = &mut work => {
                return res.unwrap_or_else(|e| Err(steps::StepError::Fatal(format!("step panicked: {e}"))));
            }
            _ = check.tick() => {
                if let Some(why) = ctx.tasks.preempted(task.id) {
                    work.abort();
                    return Err(steps::StepError::Fatal(why));
                }
            }
            Some(line) = rx.recv() => {
                task.steps[i].detail = Some(line);
                if last_save.elapsed() > Duration::from_millis(500) {
                    let _ = ctx.store.update_task(task).await;
                    last_save = Instant::now();
                }
            }
        }
    }
}

//! The steps of a switchover that only a switchover has: handing writes over from
//! the old primary, and promoting the target. The rest (the new primary's slots and
//! synchronous replicas, every other member following it) are the ordinary
//! `ensure_replication` and `ensure_replicas` steps, run against the new topology.

use crate::members::{self, container_name};
use crate::steps::{self, Done, StepError};
use crate::Ctx;
use berth_model::{EventKind, InstanceRecord, MemberId, NewEvent, TaskRecord};
use std::time::{Duration, Instant};

/// How long the target may take to apply what the old primary wrote.
const CATCH_UP: Duration = Duration::from_secs(60);

fn target(task: &TaskRecord) -> Result<MemberId, StepError> {
    task.options
        .target_member
        .map(MemberId)
        .ok_or_else(|| StepError::Fatal("the switchover names no target".into()))
}

/// Polls the target until it has everything up to `position`.
async fn wait_caught_up(
    ctx: &Ctx,
    inst: &InstanceRecord,
    to: MemberId,
    position: &serde_json::Value,
) -> Result<Duration, StepError> {
    let ip = steps::member_ip(ctx, inst, to).await?;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < CATCH_UP {
        match members::agent_post(
            ctx,
            inst,
            ip,
            "/caught-up",
            &serde_json::json!({ "position": position }),
            Duration::from_secs(5),
        )
        .await
        {
            Ok(v) if v["caught_up"] == true => return Ok(started.elapsed()),
            Ok(_) => last = "still applying".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(StepError::Fatal(format!(
        "{} did not catch up with the old primary within {}s ({last}); the old primary is \
         stopped and writes wait: run the switchover again, or `berth start {}`",
        container_name(inst, to),
        CATCH_UP.as_secs(),
        inst.name
    )))
}

/// Step `hand_over_writes`: the old primary takes no more writes (fenced, then
/// stopped cleanly: PostgreSQL ships what it wrote to its replicas as it shuts
/// down), and the target has applied all of it. Nothing acknowledged is left behind.
pub(crate) async fn hand_over_writes(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> Result<Done, StepError> {
    let to = target(task)?;
    let old = inst.topology.primary;
    if old == to {
        return Ok(Done::from(format!(
            "{} is the primary already",
            container_name(inst, to)
        ))
        .on(old));
    }
    let started = Instant::now();
    let mut position = serde_json::Value::Null;
    if let Ok(ip) = steps::member_ip(ctx, inst, old).await {
        // The target must be receiving before the old primary stops: PostgreSQL
        // sends its last writes only to the replicas connected as it shuts down.
        // (Resumed after the old primary stopped, there is nothing to wait for.)
        crate::replicas::wait_streaming(ctx, inst, to).await?;
        let v = members::agent_post(
            ctx,
            inst,
            ip,
            "/fence",
            &serde_json::json!({}),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| StepError::Fatal(format!("fencing {}: {e}", container_name(inst, old))))?;
        position = v["position"].clone();
        if !position.is_null() {
            wait_caught_up(ctx, inst, to, &position).await?;
        }
    }
    ctx.runtime
        .ensure_stopped(members::key(inst, old), 60)
        .await?;
    crate::failover::release_stopped(ctx, inst, old).await;
    // New sessions wait at the endpoint (no writable primary) rather than fail.
    members::nudge_endpoint(ctx, inst).await;
    let caught = wait_caught_up(ctx, inst, to, &position).await?;
    let said = format!(
        "{} takes no more writes and is stopped; {} has all it wrote ({} ms in all, {} ms waiting)",
        container_name(inst, old),
        container_name(inst, to),
        started.elapsed().as_millis(),
        caught.as_millis()
    );
    Ok(Done::decided(
        said,
        [
            (
                "target",
                berth_model::member::display_name(&inst.name, to).into(),
            ),
            // Where the old primary's writes ended, which the target reached.
            ("position", position),
            ("caught_up_ms", (caught.as_millis() as u64).into()),
        ],
    )
    .on(old))
}

/// Step `fence_old_primary` (failover): the failed primary can write no more — its
/// container is stopped (and stopped through Docker if it still runs, unless that is
/// turned off), or else the lease it held has run out. Safety rests on the lease;
/// Docker only makes it quicker.
pub(crate) async fn fence_old_primary(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> Result<Done, StepError> {
    let old = task
        .options
        .failed_member
        .map(MemberId)
        .ok_or_else(|| StepError::Fatal("the failover names no failed member".into()))?;
    let name = container_name(inst, old);
    if old != inst.topology.primary {
        return Ok(Done::from(format!("{name} is no longer the primary")).on(old));
    }
    let started = Instant::now();
    let (how, said) = fence(ctx, inst, old).await;
    if how != "lease" {
        crate::failover::release_stopped(ctx, inst, old).await;
    }
    let member = berth_model::member::display_name(&inst.name, old);
    ctx.store
        .record_event(&NewEvent::instance(
            inst.id,
            inst.name.as_str(),
            EventKind::MemberFenced,
            format!("{member} is fenced: {said}"),
            serde_json::json!({ "member": member, "how": how, "waited_ms": started.elapsed().as_millis() as u64 }),
        ))
        .await?;
    Ok(Done::decided(
        said,
        [
            ("how", how.into()),
            ("waited_ms", (started.elapsed().as_millis() as u64).into()),
        ],
    )
    .on(old))
}

/// Makes sure the failed primary writes no more; how, and a sentence.
async fn fence(ctx: &Ctx, inst: &InstanceRecord, old: MemberId) -> (&'static str, String) {
    let name = container_name(inst, old);
    let key = members::key(inst, old);
    // A Docker error says nothing: only a container Docker reports not running (or
    // gone) counts as stopped.
    let stopped = matches!(ctx.runtime.inspect_member(key).await, Ok(seen) if !seen.as_ref().is_some_and(|o| o.running));
    if stopped {
        return ("stopped", format!("{name} is stopped: it takes no writes"));
    }
    if ctx.config.fence_through_docker && ctx.runtime.ensure_stopped(key, 0).await.is_ok() {
        return ("docker", format!("{name} was stopped through Docker"));
    }
    let until = ctx.failover.held_until(inst, old).await;
    let wait = until.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait).await;
    (
        "lease",
        format!(
            "{name} does not answer; its lease ran out ({} ms waited), so it takes no writes",
            wait.as_millis()
        ),
    )
}

/// How long the embedded store may keep refusing the lease to a promotion's target.
/// The old primary is stopped, or its lease ran out, before the promotion; a grant
/// that raced with its stop is released at the control plane's next round.
const LEASE_FREE: Duration = Duration::from_secs(5);

/// The lease, taken in the embedded store for `to`, waiting (bounded) for the old
/// primary's tenure to end; and the wall-clock time stamped just before it was
/// taken, which the promotion's grant carries (the agent counts from it, so it must
/// not be later than the tenure's start).
async fn lease_for(
    ctx: &Ctx,
    inst: &InstanceRecord,
    to: MemberId,
) -> Result<(berth_lease::Lease, u64), StepError> {
    let started = Instant::now();
    loop {
        let sent_unix_ms = berth_model::agent::lease::unix_ms_now();
        match ctx.failover.hand_to(inst, to).await {
            Ok(lease) => return Ok((lease, sent_unix_ms)),
            Err(why) if started.elapsed() >= LEASE_FREE => {
                return Err(StepError::Retry(format!(
                    "the lease cannot move yet: {why}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Step `promote_target`: the target leaves recovery and takes writes, holding the
/// lease of a new term, is told it is the primary (its synchronous replicas), and the
/// store records it.
pub(crate) async fn promote_target(
    ctx: &Ctx,
    task: &TaskRecord,
    inst: &InstanceRecord,
) -> Result<Done, StepError> {
    let to = target(task)?;
    let old = inst.topology.primary;
    let ip = steps::member_ip(ctx, inst, to).await?;
    let old_stopped = members::not_running(ctx, inst, old).await;
    // Read before the lease moves, which forgets them.
    let (since_grant, since_detected) = ctx.failover.failure_timings(inst.id);
    let replicated = inst.topology.members.len() > 1;
    let sent = Instant::now();
    // The target holds the lease before it is told: with an external store it takes
    // it itself; the embedded store gives it only once the old primary's tenure has
    // ended (it is stopped) or run out.
    let (term, sent_unix_ms) = if ctx.lease_store.is_some() || !replicated {
        let term = if old == to {
            inst.topology.term
        } else {
            inst.topology.term + 1
        };
        (term, berth_model::agent::lease::unix_ms_now())
    } else {
        let (lease, sent) = lease_for(ctx, inst, to).await?;
        (lease.term.max(inst.topology.term), sent)
    };
    if old == to && term > inst.topology.term {
        // A new tenure of the same primary (its lease ran out): stored before it
        // hears of it.
        ctx.store.raise_term(inst.id, term).await?;
    }
    let promote = berth_model::agent::lease::Promote {
        term,
        ttl_ms: if replicated {
            berth_model::agent::lease::TTL.as_millis() as u64
        } else {
            0
        },
        old_primary_stopped: old_stopped,
        sent_unix_ms,
    };
    members::agent_post(
        ctx,
        inst,
        ip,
        "/promote",
        &serde_json::to_value(&promote).unwrap_or_default(),
        Duration::from_secs(90),
    )
    .await
    .map_err(|e| StepError::Fatal(format!("promoting {}: {e}", container_name(inst, to))))?;
    if old == to {
        return Ok(Done::from(format!("{} is the primary", container_name(inst, to))).on(to));
    }
    let promoted_ms = sent.elapsed().as_millis() as u64;
    let mut topology = inst.topology.clone();
    topology.primary = to;
    topology.term = term;
    ctx.store.set_topology(inst.id, &topology, None).await?;
    ctx.failover.moved(inst.id);
    let promoted = InstanceRecord {
        topology,
        ..inst.clone()
    };
    members::nudge_endpoint(ctx, inst).await;
    members::send_replication(ctx, &promoted, ip, &members::replication_for(&promoted, to))
        .await
        .map_err(StepError::Retry)?;
    let (old_name, new_name) = (
        berth_model::member::display_name(&inst.name, old),
        berth_model::member::display_name(&inst.name, to),
    );
    let failover = task.kind == berth_model::TaskKind::Failover;
    let may_lose = task.options.may_lose.unwrap_or(0);
    ctx.store
        .record_event(&NewEvent::instance(
            inst.id,
            inst.name.as_str(),
            if failover {
                EventKind::FailoverDone
            } else {
                EventKind::RoleChanged
            },
            if failover {
                format!(
                    "{old_name} failed; {new_name} is the primary (term {term}){}",
                    if may_lose > 0 {
                        format!("; up to {may_lose} bytes the old primary wrote may be missing")
                    } else {
                        "; no acknowledged commit is missing".to_owned()
                    }
                )
            } else {
                format!("{new_name} is the primary; {old_name} becomes its replica")
            },
            serde_json::json!({
                "primary": new_name, "was": old_name, "term": term,
                "reason": if failover { "failover" } else { "switchover" },
                "may_lose_bytes": may_lose,
                "promote_ms": promoted_ms,
                // A failover's: from the old primary's last lease grant (about when
                // it failed), and from the failure's detection, to this promotion.
                "since_last_grant_ms": failover.then(|| since_grant.map(|d| d.as_millis() as u64)).flatten(),
                "since_detected_ms": failover.then(|| since_detected.map(|d| d.as_millis() as u64)).flatten(),
            }),
        ))
        .await?;
    Ok(Done::decided(
        format!(
            "{} is the primary and takes writes",
            container_name(inst, to)
        ),
        [
            ("term", term.into()),
            ("was", old_name.into()),
            ("may_lose_bytes", may_lose.into()),
            ("promote_ms", promoted_ms.into()),
        ],
    )
    .on(to))
}

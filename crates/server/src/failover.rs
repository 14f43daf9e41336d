//! The embedded lease store and automatic failover.
//!
//! The control plane holds every instance's leader lease itself (the embedded
//! default): in a [`MemoryLeases`], through the `LeaseStore` trait, for the member it
//! grants it to. Once a second it grants the lease to the stored primary of each
//! instance with replicas (`POST /lease`): the grant is taken in the store *before*
//! it is sent, so the store's end of the tenure is the furthest any grant sent may
//! reach; the agent stops writing earlier (see `berth_model::agent::lease`). A
//! grant's answer also carries the primary's position, kept to bound what an
//! asynchronous failover may lose. A promotion takes the lease in the store for its
//! target, which the store gives only once the old primary's tenure has ended.
//!
//! When a grant fails, the primary is judged failed once it is *fenced*: its
//! container is stopped (Docker says so; a container still running is killed
//! through Docker when Docker answers), or its lease ran out. A primary whose engine
//! stays unready for [`ENGINE_DOWN`] while its agent answers is failed too. Then
//! [`berth_model::failover::choose`] picks the replica from what the replicas' agents
//! say now, and a `failover` task promotes it; when none qualifies the instance
//! stays without a new primary, an event says why, and a stopped old primary is
//! brought back in place (a repair). Nothing of this runs while a task holds the
//! instance (a switchover moves the primary itself), nor for `--failover manual`.
//!
//! With an external lease store (`serve --lease-store etcd://…`) the members' agents
//! hold the lease and elect among themselves (see `agent/src/elect.rs`); the control
//! plane only follows: the store's holder becomes the stored primary.

use crate::members::{self, container_name};
use crate::Ctx;
use berth_lease::clock::{Clock, MonotonicClock};
use berth_lease::{Lease, LeaseStore as _, MemoryLeases};
use berth_model::agent::lease::{self as contract, Grant, Held};
use berth_model::failover::{self as rules, Decision, Seen};
use berth_model::member::{FailoverMode, Role};
use berth_model::{
    EventKind, InstanceEvent, InstanceId, InstanceRecord, InstanceStatus, MemberId, NewEvent,
    TaskKind, TaskOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a primary's engine may stay unready, its agent answering, before the
/// primary counts as failed.
const ENGINE_DOWN: Duration = Duration::from_secs(10);

/// How long a running primary's agent may not take grants before it counts as
/// failed (its lease still has `TTL − SILENCE` to run).
const SILENCE: Duration = Duration::from_millis(2500);

/// How long a failover may stay declined before a stopped old primary is started
/// again in place: replicas that just restarted or reconnected get a few rounds to
/// answer, so one slow answer does not turn a failover into a restart.
const DECLINED_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
struct Watching {
    /// The stored primary's tenure was taken up in the lease store.
    resumed: bool,
    /// When the last grant that the agent took was sent.
    last_grant_sent: Option<Instant>,
    /// The last grant sent was not answered (yet): the next one may reach no
    /// further than the tenure does already.
    last_unanswered: bool,
    /// The primary's position in that answer.
    last_position: Option<u64>,
    /// Since when the agent answers with its engine not ready.
    not_ready_since: Option<Instant>,
    /// The last reason a failover was declined (said once).
    declined: Option<String>,
    /// Since when failovers are declined, and whether the old primary's repair in
    /// place has begun since.
    declined_since: Option<Instant>,
    repair_begun: bool,
    /// The failure was recorded (once per failure), and when.
    failure_said: bool,
    detected_at: Option<Instant>,
}

/// The embedded lease store and what the control plane knows of each instance's
/// primary, in memory. Every grant sent is a tenure in the store, taken or renewed
/// for the primary's container *before* it is sent: the store's end of it is the
/// furthest any grant sent may reach, answered or not, and the store gives a lease
/// to one holder at a time.
#[derive(Clone)]
pub struct Leases {
    store: Arc<MemoryLeases>,
    clock: Arc<dyn Clock>,
    /// When this control plane started.
    started: Instant,
    watching: Arc<Mutex<HashMap<InstanceId, Watching>>>,
}

impl Default for Leases {
    fn default() -> Self {
        Self::with_clock(Arc::new(MonotonicClock))
    }
}

impl Leases {
    /// Leases on `clock` (tests move a manual one).
    fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            store: Arc::new(MemoryLeases::with_clock(clock.clone())),
            started: clock.now(),
            clock,
            watching: Arc::default(),
        }
    }

    fn with<T>(&self, id: InstanceId, f: impl FnOnce(&mut Watching) -> T) -> T {
        let mut map = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(id).or_default())
    }

    /// The instance's live tenure. The first time this control plane looks, the
    /// stored primary's tenure is taken up in the stored term: a predecessor may have
    /// granted it a lease until a whole TTL after this one started.
    async fn tenure(&self, inst: &InstanceRecord) -> Option<Lease> {
        let name = inst.id.to_string();
        if !self.with(inst.id, |w| std::mem::replace(&mut w.resumed, true)) {
            self.store.resume(
                &name,
                &container_name(inst, inst.topology.primary),
                inst.topology.term,
                self.started + contract::TTL,
            );
        }
        self.store.read(&name).await.ok().flatten()
    }

    /// Until when `member` may hold the instance's lease (an instant past when it
    /// holds none).
    pub(crate) async fn held_until(&self, inst: &InstanceRecord, member: MemberId) -> Instant {
        let holder = container_name(inst, member);
        self.tenure(inst)
            .await
            .filter(|l| l.holder == holder)
            .map_or(self.started, |l| l.expires)
    }

    /// The grant to send the stored primary now, taken in the store first: its TTL
    /// and term (`None`: none is worth sending, or another member holds the lease).
    /// The TTL is whole when the last grant was answered; otherwise only what is left
    /// of the tenure, so an unanswered primary's lease stops moving. Once that ran
    /// out, whole again when no failover will replace the primary (`no_failover`:
    /// manual, paused, held by a task, or declined): it may come back, as it would
    /// after a restart.
    async fn send_grant(
        &self,
        inst: &InstanceRecord,
        no_failover: bool,
    ) -> Option<(Duration, u64)> {
        let holder = container_name(inst, inst.topology.primary);
        let tenure = self.tenure(inst).await;
        if tenure.as_ref().is_some_and(|l| l.holder != holder) {
            return None;
        }
        let now = self.clock.now();
        let (unanswered, declined) =
            self.with(inst.id, |w| (w.last_unanswered, w.declined.is_some()));
        let ran_out = tenure.is_none();
        let fresh = !unanswered || (ran_out && (no_failover || declined));
        let reach = tenure.map_or(now, |l| l.expires);
        let ttl = contract::next_grant_ttl(now, Some(reach), fresh)?;
        let lease = self
            .store
            .acquire(&inst.id.to_string(), &holder, ttl)
            .await
            .ok()
            .flatten()?;
        self.with(inst.id, |w| w.last_unanswered = true);
        Some((ttl, lease.term))
    }

    /// The lease moves to `to`, for a whole TTL from now: taken in the store, which
    /// refuses while another member's tenure runs (end it first with
    /// [`Leases::ended`], or wait for it). The new tenure's term, above the old one's.
    pub(crate) async fn hand_to(
        &self,
        inst: &InstanceRecord,
        to: MemberId,
    ) -> Result<Lease, String> {
        let holder = container_name(inst, to);
        let current = self.tenure(inst).await;
        let lease = self
            .store
            .acquire(&inst.id.to_string(), &holder, contract::TTL)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{} still holds the leader lease (for {} ms more)",
                    current
                        .as_ref()
                        .map_or("another member", |l| l.holder.as_str()),
                    current.as_ref().map_or(0, |l| l.ttl.as_millis())
                )
            })?;
        Ok(lease)
    }

    /// The target was promoted and is the stored primary: what was known of the old
    /// one (its position, its failure, a decline) no longer holds.
    pub(crate) fn moved(&self, id: InstanceId) {
        self.with(id, |w| {
            *w = Watching {
                resumed: true,
                last_grant_sent: Some(self.clock.now()),
                ..Watching::default()
            }
        });
    }

    /// `member`'s container is stopped: it holds nothing, so its tenure ends now and
    /// the next grant to it is whole.
    pub(crate) async fn ended(&self, inst: &InstanceRecord, member: MemberId) {
        let holder = container_name(inst, member);
        if let Some(l) = self.tenure(inst).await.filter(|l| l.holder == holder) {
            let _ = self.store.release(&l.name, &l.holder, l.term).await;
            self.with(inst.id, |w| w.last_unanswered = false);
        }
    }

    /// How long ago the failed primary last took a grant, and the failure was
    /// detected (a failover's timings, read before the lease moves).
    pub(crate) fn failure_timings(&self, id: InstanceId) -> (Option<Duration>, Option<Duration>) {
        self.with(id, |w| {
            (
                w.last_grant_sent.map(|t| t.elapsed()),
                w.detected_at.map(|t| t.elapsed()),
            )
        })
    }

    fn last_position(&self, id: InstanceId) -> Option<u64> {
        self.with(id, |w| w.last_position)
    }
}

/// Instances whose primary holds a lease: more than one member, meant to run.
fn leased(inst: &InstanceRecord) -> bool {
    inst.topology.members.len() > 1
        && !matches!(
            inst.status,
            InstanceStatus::Stopping
                | InstanceStatus::Stopped
                | InstanceStatus::Deleting
                | InstanceStatus::Deleted
                | InstanceStatus::Failed
        )
}

/// The key prefix of this installation's leases in an external store.
pub(crate) fn lease_prefix(site: &berth_model::SiteId) -> String {
    format!("berth/{site}")
}

/// Opens the external lease store and checks it answers: a store given but not
/// reachable stops `berth serve` with the reason, before anything relies on it.
pub(crate) async fn open_lease_store(
    url: &str,
    site: &berth_model::SiteId,
) -> crate::Result<Arc<dyn berth_lease::LeaseStore>> {
    let store = berth_lease::EtcdLeases::from_url(url, &lease_prefix(site))
        .map_err(|e| crate::ServeError::Invalid(format!("--lease-store: {e}")))?;
    store.read("probe").await.map_err(|e| {
        crate::ServeError::Invalid(format!(
            "--lease-store: the lease store does not answer ({e}); start it, or leave \
             --lease-store out to let berth serve grant leases itself"
        ))
    })?;
    Ok(Arc::new(store))
}

/// The control plane lets go of the lease of a primary it stopped (a switchover, a
/// failover), so the target can take it at once: in the embedded store, or in the
/// external one the agents elect through.
pub(crate) async fn release_stopped(ctx: &Ctx, inst: &InstanceRecord, old: MemberId) {
    let Some(store) = &ctx.lease_store else {
        ctx.failover.ended(inst, old).await;
        return;
    };
    let name = inst.id.to_string();
    if let Ok(Some(l)) = store.read(&name).await {
        if l.holder == container_name(inst, old) {
            let _ = store.release(&name, &l.holder, l.term).await;
        }
    }
}

/// With an external store: a primary whose container Docker reports stopped takes
/// no writes, so its lease is released now and the members elect at their next
/// round instead of after the lease's TTL. Only where the instance fails over by
/// itself (a `manual` or paused instance keeps its primary's lease).
async fn release_if_stopped(
    ctx: &Ctx,
    store: &dyn berth_lease::LeaseStore,
    inst: &InstanceRecord,
    lease: &berth_lease::Lease,
) {
    if !inst.topology.fails_over_automatically() {
        return;
    }
    let primary = inst.topology.primary;
    let stopped = ctx
        .runtime
        .inspect_member(members::key(inst, primary))
        .await
        .ok()
        .flatten()
        .is_some_and(|o| !o.running);
    if stopped
        && matches!(
            store
                .release(&inst.id.to_string(), &lease.holder, lease.term)
                .await,
            Ok(true)
        )
    {
        warn!(instance = %inst.name, member = %lease.holder, "the primary's container is stopped: its lease is released for the members to elect");
    }
}

/// With an external store: the members elected; the store's holder becomes the
/// stored primary (and an event), so `show` and every later task agree.
async fn follow_store(ctx: &Ctx, store: &dyn berth_lease::LeaseStore, inst: &InstanceRecord) {
    if inst.status.is_busy() {
        return;
    }
    let lease = match store.read(&inst.id.to_string()).await {
        Ok(Some(lease)) => {
            // Held again: a later decline is news, and may repair in place again.
            ctx.failover.with(inst.id, |w| {
                w.declined = None;
                w.declined_since = None;
                w.repair_begun = false;
            });
            lease
        }
        Ok(None) => return members_declined(ctx, inst).await,
        Err(_) => return,
    };
    let Some(&holder) = inst
        .topology
        .members
        .iter()
        .find(|m| container_name(inst, **m) == lease.holder)
    else {
        return;
    };
    if holder == inst.topology.primary {
        release_if_stopped(ctx, store, inst, &lease).await;
        return;
    }
    let says_primary = members::role_report(ctx, inst, holder)
        .await
        .is_some_and(|r| r.role == Some(Role::Primary));
    if !says_primary {
        return;
    }
    let mut topology = inst.topology.clone();
    let old = topology.primary;
    topology.primary = holder;
    topology.term = lease.term;
    if ctx
        .store
        .set_topology(inst.id, &topology, None)
        .await
        .is_err()
    {
        return;
    }
    let (old_name, new_name) = (
        berth_model::member::display_name(&inst.name, old),
        berth_model::member::display_name(&inst.name, holder),
    );
    warn!(instance = %inst.name, primary = %new_name, "the members elected a new primary");
    // What the member that elected itself kept of it: the control plane may have
    // been down all along, so this is where the detection, the fencing (by the
    // lease's end) and the promotion are learnt, with their timings.
    let elected = crate::steps::member_ip(ctx, inst, holder)
        .await
        .ok()
        .map(|ip| members::agent_health(ctx, inst, ip));
    let elected = match elected {
        Some(asked) => asked.await.ok().and_then(|h| h.elected),
        None => None,
    }
    .filter(|e| e["term"].as_u64() == Some(lease.term))
    .unwrap_or_default();
    let free_ms = elected["lease_free_ms"].as_u64();
    let may_lose = elected["may_lose_bytes"].as_u64();
    let old_stopped = members::not_running(ctx, inst, old).await;
    let (how, fenced) = if old_stopped {
        ("stopped", "its container is stopped")
    } else {
        ("lease", "its lease ran out")
    };
    for (kind, message, details) in [
        (
            EventKind::PrimaryFailed,
            format!("the primary {old_name} failed: it stopped renewing the leader lease"),
            serde_json::json!({ "member": old_name, "reason": "lease not renewed", "detected_by": "members" }),
        ),
        (
            EventKind::MemberFenced,
            format!("{old_name} is fenced: {fenced}, so it takes no writes"),
            serde_json::json!({ "member": old_name, "how": how, "lease_free_ms": free_ms }),
        ),
        (
            EventKind::FailoverDone,
            format!(
                "{old_name} lost the leader lease; the members elected {new_name} (term {}) through the lease store{}",
                lease.term,
                match may_lose {
                    Some(0) => "; no acknowledged commit is missing".to_owned(),
                    Some(n) => format!("; up to {n} bytes the old primary wrote may be missing"),
                    None => String::new(),
                }
            ),
            serde_json::json!({
                "primary": new_name, "was": old_name, "term": lease.term,
                "reason": "elected by the members", "may_lose_bytes": may_lose,
                "since_lease_free_ms": free_ms, "at_unix_ms": elected["at_unix_ms"],
            }),
        ),
    ] {
        let _ = ctx
            .store
            .record_event(&NewEvent::instance(
                inst.id,
                inst.name.as_str(),
                kind,
                message,
                details,
            ))
            .await;
    }
    members::nudge_endpoint(ctx, inst).await;
}

/// With an external store, the lease is free: when a replica says why it does not
/// take it, that is the instance's failover declined (said once per reason, in the
/// event log and `show`), and a stopped old primary is brought back in place, as
/// with the embedded store.
async fn members_declined(ctx: &Ctx, inst: &InstanceRecord) {
    for m in inst.topology.replicas() {
        let Ok(ip) = crate::steps::member_ip(ctx, inst, m).await else {
            continue;
        };
        if let Ok(h) = members::agent_health(ctx, inst, ip).await {
            if let Some(why) = h.declined {
                let stopped = members::not_running(ctx, inst, inst.topology.primary).await;
                declined(ctx, inst, &why, stopped).await;
                return;
            }
        }
    }
}

/// Grants and watches, once a second, for ever (with an external store: follows
/// what the members elected).
pub async fn run_forever(ctx: Ctx) {
    loop {
        if let Some(store) = ctx.lease_store.clone() {
            if let Ok(instances) = ctx.store.list_instances(None).await {
                let rounds = instances
                    .iter()
                    .filter(|i| leased(i))
                    .map(|inst| follow_store(&ctx, store.as_ref(), inst));
                futures_util::future::join_all(rounds).await;
            }
            tokio::time::sleep(contract::RENEW_EVERY).await;
            continue;
        }
        let started = Instant::now();
        match ctx.store.list_instances(None).await {
            Ok(instances) => {
                let rounds = instances
                    .iter()
                    .filter(|i| leased(i))
                    .map(|inst| watch(&ctx, inst));
                futures_util::future::join_all(rounds).await;
            }
            Err(e) => warn!(error = %e, "cannot list instances to grant leases"),
        }
        tokio::time::sleep(contract::RENEW_EVERY.saturating_sub(started.elapsed())).await;
    }
}

/// One round for one instance: grant; when that fails, judge and maybe fail over.
async fn watch(ctx: &Ctx, inst: &InstanceRecord) {
    let primary = inst.topology.primary;
    // Docker not answering says nothing of the primary: no judgement this round.
    let ip = match ctx
        .runtime
        .inspect_member(members::key(inst, primary))
        .await
    {
        Ok(seen) => seen,
        Err(e) => {
            info!(instance = %inst.name, error = %e, "Docker does not answer: the primary is not judged this round");
            return;
        }
    };
    let running = ip.as_ref().is_some_and(|o| o.running);
    if !running {
        ctx.failover.ended(inst, primary).await;
    }
    let task = crate::tasks::holder(ctx, inst).await;
    // A failover moves the lease itself: the failed primary is granted nothing more
    // (once the target is promoted it is the stored primary, granted as any).
    if task
        .as_ref()
        .is_some_and(|t| t.kind == TaskKind::Failover && t.options.failed_member == Some(primary.0))
    {
        return;
    }
    // A task that only changes the running instance (resize, settings, backup) does
    // not hold a failover back: it is pre-empted below, once a replica is chosen.
    let preemptible = task.filter(|t| t.kind.stops_safely()).map(|t| t.id);
    let no_failover = (inst.held_by.is_some() && preemptible.is_none())
        || inst.topology.failover == FailoverMode::Manual
        || inst.topology.failover_paused;
    // Stamped before the grant is taken in the store: the agent counts from this
    // time, which must not be later than the tenure's start.
    let sent = Instant::now();
    let sent_unix_ms = contract::unix_ms_now();
    let addr = ip.as_ref().filter(|o| o.running).and_then(|o| o.ip);
    let granted = match addr {
        Some(_) => ctx.failover.send_grant(inst, no_failover).await,
        None => None,
    };
    if let (Some(addr), Some((ttl, term))) = (addr, granted) {
        if term > inst.topology.term {
            // A new tenure of the same primary (it was stopped, or its lease ran
            // out): stored before any agent hears of it.
            if ctx.store.raise_term(inst.id, term).await.is_err() {
                return;
            }
        }
        let grant = Grant {
            term,
            ttl_ms: ttl.as_millis() as u64,
            sent_unix_ms,
        };
        let answer = members::agent_post(
            ctx,
            inst,
            addr,
            contract::LEASE_PATH,
            &serde_json::to_value(&grant).unwrap_or_default(),
            Duration::from_millis(800),
        )
        .await
        .and_then(|v| serde_json::from_value::<Held>(v).map_err(|e| e.to_string()));
        if let Ok(held) = answer {
            let engine_down_for = ctx.failover.with(inst.id, |w| {
                w.last_grant_sent = Some(sent);
                w.last_unanswered = false;
                w.declined = None;
                w.declined_since = None;
                w.repair_begun = false;
                w.failure_said = false;
                if held.ready {
                    w.last_position = held.position.or(w.last_position);
                    w.not_ready_since = None;
                } else {
                    w.not_ready_since.get_or_insert(sent);
                }
                w.not_ready_since.map(|t| t.elapsed())
            });
            if engine_down_for.is_none_or(|d| d < ENGINE_DOWN) {
                return;
            }
        }
    }
    // The primary did not take the grant (or its engine stays down).
    if no_failover {
        return;
    }
    // A running primary that missed one grant is not failed: the agent may be slow
    // under load. It is after two renewals' worth of silence (or a stopped container).
    let silent = ctx
        .failover
        .with(inst.id, |w| w.last_grant_sent.map(|t| t.elapsed()));
    let engine_down = ctx.failover.with(inst.id, |w| w.not_ready_since.is_some());
    if running && !engine_down && silent.is_some_and(|d| d < SILENCE) {
        return;
    }
    let why = if !running {
        "its container is stopped".to_owned()
    } else if ctx.failover.with(inst.id, |w| w.not_ready_since.is_some()) {
        format!(
            "its engine has not been ready for {} s",
            ENGINE_DOWN.as_secs()
        )
    } else {
        "its agent does not take the lease's renewal".to_owned()
    };
    failure_detected(ctx, inst, &why).await;
    let fenced_by_docker = if running {
        if ctx.config.fence_through_docker
            && ctx
                .runtime
                .ensure_stopped(members::key(inst, primary), 0)
                .await
                .is_ok()
        {
            warn!(instance = %inst.name, member = %container_name(inst, primary), "the primary does not hold its lease: stopped through Docker");
            true
        } else {
            false
        }
    } else {
        true
    };
    if !fenced_by_docker && Instant::now() < ctx.failover.held_until(inst, primary).await {
        return;
    }
    let decision = decide(ctx, inst, None, false).await;
    match decision {
        Decision::Promote { member, may_lose } => {
            let inst = match preemptible {
                Some(task) => match preempt(ctx, inst, task).await {
                    Some(fresh) => fresh,
                    None => return,
                },
                None => inst.clone(),
            };
            let inst = &inst;
            let options = TaskOptions {
                target_member: Some(member.0),
                failed_member: Some(primary.0),
                may_lose: Some(may_lose),
                ..TaskOptions::default()
            };
            match crate::tasks::begin(ctx, inst, TaskKind::Failover, options).await {
                Ok((_, task)) => warn!(
                    instance = %inst.name, to = %container_name(inst, member), task = %task.id,
                    "the primary failed: failing over"
                ),
                Err(e) => info!(instance = %inst.name, "no failover now: {e}"),
            }
        }
        Decision::Stay(why) => declined(ctx, inst, &why, !running).await,
    }
}

/// The event of a primary judged failed, once per failure.
async fn failure_detected(ctx: &Ctx, inst: &InstanceRecord, why: &str) {
    let (first, silent) = ctx.failover.with(inst.id, |w| {
        let first = !w.failure_said;
        w.failure_said = true;
        if first {
            w.detected_at = Some(Instant::now());
        }
        (first, w.last_grant_sent.map(|t| t.elapsed()))
    });
    if !first {
        return;
    }
    let member = berth_model::member::display_name(&inst.name, inst.topology.primary);
    let silent_ms = silent.map(|d| d.as_millis() as u64);
    let _ = ctx
        .store
        .record_event(&NewEvent::instance(
            inst.id,
            inst.name.as_str(),
            EventKind::PrimaryFailed,
            format!(
                "the primary {member} failed: {why}{}",
                silent_ms
                    .map(|ms| format!(" (its last lease grant was taken {ms} ms ago)"))
                    .unwrap_or_default()
            ),
            serde_json::json!({ "member": member, "reason": why, "silent_ms": silent_ms }),
        ))
        .await;
}

/// Stops the task and waits (bounded) until it has ended; the instance as it is
/// then, or `None` when the task did not end in time.
async fn preempt(
    ctx: &Ctx,
    inst: &InstanceRecord,
    task: berth_model::TaskId,
) -> Option<InstanceRecord> {
    warn!(instance = %inst.name, %task, "the primary failed: the running task is pre-empted by a failover");
    ctx.tasks.preempt(
        task,
        "pre-empted: the primary failed and a failover takes over the instance; run it again afterwards".into(),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !ctx.tasks.is_running(task) {
            return ctx.store.instance(inst.id).await.ok().flatten();
        }
    }
    warn!(instance = %inst.name, %task, "the pre-empted task did not end within 20 s");
    None
}

/// What the replicas say now, and the choice.
pub(crate) async fn decide(
    ctx: &Ctx,
    inst: &InstanceRecord,
    target: Option<MemberId>,
    accept_data_loss: bool,
) -> Decision {
    let seen = futures_util::future::join_all(inst.topology.replicas().map(|m| async move {
        let report = members::role_report(ctx, inst, m).await;
        Seen {
            member: m,
            healthy: report
                .as_ref()
                .is_some_and(|r| r.role == Some(Role::Replica)),
            position: report.and_then(|r| r.position),
        }
    }))
    .await;
    let t = &inst.topology;
    rules::choose(
        &seen,
        &rules::Rules {
            sync: t.sync,
            sync_released: t.sync_mode == berth_model::member::SyncMode::Available
                && inst.sync_degraded.is_some(),
            replicas: seen.len(),
            max_failover_lag: t.max_failover_lag,
            last_primary_position: ctx.failover.last_position(inst.id),
        },
        target,
        accept_data_loss,
    )
}

/// No replica may be promoted: said once (event, status detail); a stopped old
/// primary is brought back in place once failovers were declined for
/// [`DECLINED_GRACE`] (every round decides afresh until then).
async fn declined(ctx: &Ctx, inst: &InstanceRecord, why: &str, stopped: bool) {
    let (new, repair) = ctx.failover.with(inst.id, |w| {
        let new = w.declined.as_deref() != Some(why);
        w.declined = Some(why.to_owned());
        let since = *w.declined_since.get_or_insert_with(Instant::now);
        let repair = stopped && !w.repair_begun && since.elapsed() >= DECLINED_GRACE;
        w.repair_begun |= repair;
        (new, repair)
    });
    if new {
        let old = berth_model::member::display_name(&inst.name, inst.topology.primary);
        warn!(instance = %inst.name, reason = %why, "the primary failed and no replica is promoted");
        let _ = ctx
            .store
            .record_event(&NewEvent::instance(
                inst.id,
                inst.name.as_str(),
                EventKind::FailoverDeclined,
                format!("the primary {old} failed and no replica is promoted: {why}"),
                serde_json::json!({ "was": old, "reason": why }),
            ))
            .await;
        let _ = ctx
            .store
            .apply_event(
                inst.id,
                InstanceEvent::ObservedDown,
                Some(&format!("the primary failed; no failover: {why}")),
            )
            .await;
    }
    if repair {
        if let Ok(Some(fresh)) = ctx.store.instance(inst.id).await {
            let _ =
                crate::tasks::begin(ctx, &fresh, TaskKind::Repair, TaskOptions::default()).await;
        }
    }
}

#[cfg(test)]
mod grant_tests {
    use super::*;
    use berth_lease::clock::ManualClock;
    use berth_model::member::{SyncMode, Topology};

    fn instance(term: u64) -> InstanceRecord {
        let mut inst = InstanceRecord::example("db", InstanceStatus::Available, 41000);
        inst.topology = Topology::new(3, 1, SyncMode::Strict);
        inst.topology.term = term;
        inst
    }

    #[tokio::test]
    async fn grants_stop_moving_while_unanswered_and_start_again_when_they_may() {
        let clock = ManualClock::new();
        let leases = Leases::with_clock(Arc::new(clock.clone()));
        let inst = instance(3);
        let primary = inst.topology.primary;
        let t0 = clock.now();
        let whole = Some((contract::TTL, 3));
        // Just started: what a predecessor granted is taken up, in the stored term.
        assert_eq!(leases.held_until(&inst, primary).await, t0 + contract::TTL);
        assert_eq!(
            leases.send_grant(&inst, false).await,
            whole,
            "the first is whole"
        );
        // Unanswered: the next reaches no further than the first.
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            leases.send_grant(&inst, false).await,
            Some((contract::TTL - Duration::from_secs(1), 3))
        );
        assert_eq!(leases.held_until(&inst, primary).await, t0 + contract::TTL);
        // Run out, a failover may follow: nothing more to a primary judged failed.
        clock.advance(contract::TTL);
        assert_eq!(leases.send_grant(&inst, false).await, None);
        // Run out, no failover will replace it (manual, paused, held, declined):
        // whole again, so it may come back, in a new tenure (a higher term).
        assert_eq!(
            leases.send_grant(&inst, true).await,
            Some((contract::TTL, 4))
        );
        // Its container stopped: nothing there holds a grant; the next is whole.
        clock.advance(Duration::from_secs(1));
        leases.ended(&inst, primary).await;
        assert!(leases.held_until(&inst, primary).await <= clock.now());
        assert_eq!(
            leases.send_grant(&inst, false).await,
            Some((contract::TTL, 5))
        );
    }

    #[tokio::test]
    async fn the_lease_moves_only_once_the_old_primary_s_tenure_ended() {
        let clock = ManualClock::new();
        let leases = Leases::with_clock(Arc::new(clock.clone()));
        let inst = instance(7);
        let (old, new) = (inst.topology.primary, MemberId(1));
        assert_eq!(
            leases.send_grant(&inst, false).await,
            Some((contract::TTL, 7))
        );
        // The old primary's grant runs: the store refuses the target.
        let refused = leases.hand_to(&inst, new).await.expect_err("held");
        assert!(refused.contains(&container_name(&inst, old)), "{refused}");
        // Run out (or stopped): the target gets the next term, and the old primary
        // is granted nothing while the target holds it.
        clock.advance(contract::TTL);
        let lease = leases.hand_to(&inst, new).await.expect("free");
        assert_eq!((lease.holder, lease.term), (container_name(&inst, new), 8));
        assert_eq!(leases.send_grant(&inst, true).await, None);
        assert!(leases.held_until(&inst, old).await <= clock.now());
        // As soon as its container stops, an old primary's tenure ends at once.
        let moved = InstanceRecord {
            topology: Topology {
                primary: new,
                term: 8,
                ..inst.topology.clone()
            },
            ..inst.clone()
        };
        leases.ended(&moved, new).await;
        let back = leases.hand_to(&moved, old).await.expect("ended");
        assert_eq!(back.term, 9);
    }
}

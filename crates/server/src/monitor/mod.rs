//! The monitor: a sampler that reads every running member every
//! [`MonitorConfig::sample_interval`] (its agent's `GET /metrics` and Docker's stats)
//! and folds the derived series into the history (`samples`, every resolution at
//! once), and the history's reading for the API ([`history`]).
//!
//! A member that does not answer in time gives no sample for that round: the
//! history shows a gap (missing data), never a zero. Rates need the previous
//! reading of the same member, kept in memory only: after a restart of `serve` the
//! first round gives levels, the second rates again, and the time `serve` was down
//! is a gap.

mod alarms;
pub(crate) mod email;
pub(crate) mod history;
mod notify;

pub(crate) use alarms::new_alarm;
pub(crate) use notify::run_forever as deliver_forever;

use crate::Ctx;
use berth_model::metrics::rollup::{Tier, DEFAULT_TIERS};
use berth_model::metrics::{derive_samples, AgentMetrics, ContainerUsage, Reading};
use berth_model::{InstanceId, InstanceRecord, MemberId};
use berth_runtime::{MemberContainerRef, MemberKey};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{debug, warn};

/// How the monitor runs (`berth serve` flags).
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// How often every member is read (default 10 s).
    pub sample_interval: Duration,
    /// The history's resolutions, finest first.
    pub tiers: Vec<Tier>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(10),
            tiers: DEFAULT_TIERS.to_vec(),
        }
    }
}

/// How long one member's agent may take (its engine part is bounded at 3 s).
const AGENT_BUDGET: Duration = Duration::from_secs(4);
/// How long one member's Docker stats may take.
const STATS_BUDGET: Duration = Duration::from_secs(2);
/// Members read at once.
const CONCURRENT: usize = 8;
/// How often old buckets are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

type Previous = HashMap<(InstanceId, u16), Reading>;

/// Samples until the control plane stops.
pub(crate) async fn run_forever(ctx: Ctx) {
    let cfg = ctx.config.monitor.clone();
    let mut tick = tokio::time::interval(cfg.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut previous = Previous::new();
    let mut last_prune: Option<tokio::time::Instant> = None;
    let mut stopping = ctx.stopping.subscribe();
    let mut ensured = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Some(instances) = sample_once(&ctx, &cfg, &mut previous).await {
            alarms::evaluate_all(&ctx, &instances, &mut ensured).await;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            match ctx.store.prune_samples(&cfg.tiers, unix_now() as i64).await {
                Ok(n) => debug!(removed = n, "pruned old metric samples"),
                Err(e) => warn!(error = %e, "could not prune metric samples; will retry"),
            }
        }
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One round over every running member of every instance the store knows; the
/// instances, by id, when the store answered.
async fn sample_once(
    ctx: &Ctx,
    cfg: &MonitorConfig,
    previous: &mut Previous,
) -> Option<HashMap<String, InstanceRecord>> {
    let instances = match ctx.store.list_instances(None).await {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "monitor: the store does not answer; no samples this round");
            return None;
        }
    };
    // A verification's throwaway instance is watched by its task, not by alarms.
    let by_id: HashMap<String, InstanceRecord> = instances
        .into_iter()
        .filter(|i| !crate::backup::verify::is_throwaway(i))
        .map(|i| (i.id.to_string(), i))
        .collect();
    let members = match tokio::time::timeout(STATS_BUDGET, ctx.runtime.list_containers()).await {
        Ok(Ok(c)) => MemberContainerRef::running_members(c),
        Ok(Err(e)) => {
            warn!(error = %e, "monitor: cannot list member containers; no samples this round");
            return Some(by_id);
        }
        Err(_) => {
            warn!("monitor: listing member containers timed out; no samples this round");
            return Some(by_id);
        }
    };
    let reads = members.into_iter().filter_map(|m| {
        let inst = by_id.get(&m.instance)?;
        let member: u16 = m.member.parse().ok()?;
        Some(async move {
            let reading = read_member(ctx, inst, member, &m.id).await;
            (inst.id, member, reading)
        })
    });
    let readings: Vec<_> = futures_util::stream::iter(reads)
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    let mut seen = std::collections::HashSet::new();
    for (instance, member, cur) in readings {
        seen.insert((instance, member));
        let mut values = derive_samples(previous.get(&(instance, member)), &cur);
        let replica = by_id
            .get(&instance.to_string())
            .is_some_and(|i| i.topology.primary.0 != member);
        values.extend(berth_model::metrics::unanswered_replica(replica, &cur));
        if let Err(e) = ctx
            .store
            .record_samples(
                instance,
                u32::from(member),
                cur.at as i64,
                &values,
                &cfg.tiers,
            )
            .await
        {
            warn!(error = %e, %instance, member, "monitor: could not store samples");
        }
        previous.insert((instance, member), cur);
    }
    // A member not running this round starts its rates afresh when it is back.
    previous.retain(|k, _| seen.contains(k));
    backup_series(ctx, cfg, &by_id).await;
    Some(by_id)
}

/// The backup series of every instance, from the store (not from a member): kept
/// under the instance's primary, like its other series.
async fn backup_series(
    ctx: &Ctx,
    cfg: &MonitorConfig,
    instances: &HashMap<String, InstanceRecord>,
) {
    let Ok(policies) = ctx.store.backup_policies().await else {
        return;
    };
    let now = unix_now();
    let at = chrono::DateTime::from_timestamp(now as i64, 0).unwrap_or_default();
    // A stopped instance is not backed up by its schedule: the user's choice, no alarm.
    let kept = instances
        .values()
        .filter(|i| i.status != berth_model::InstanceStatus::Stopped);
    for inst in kept {
        let Ok(backups) = ctx.store.backups_of(inst.id).await else {
            continue;
        };
        let policy = policies.iter().find(|p| p.instance_id == inst.id);
        let values = berth_model::metrics::backups::backup_samples(policy, &backups, at);
        let member = u32::from(inst.topology.primary.0);
        if let Err(e) = ctx
            .store
            .record_samples(inst.id, member, now as i64, &values, &cfg.tiers)
            .await
        {
            warn!(error = %e, instance = %inst.name, "monitor: could not store backup samples");
        }
    }
}

/// One member's reading: its agent's report and Docker's stats, each `None` when
/// it did not answer in time.
async fn read_member(ctx: &Ctx, inst: &InstanceRecord, member: u16, container: &str) -> Reading {
    let at = unix_now();
    let agent = async {
        let key = MemberKey {
            instance: inst.id,
            member: MemberId(member),
        };
        let ip = ctx.runtime.inspect_member(key).await.ok()??.ip?;
        match tokio::time::timeout(AGENT_BUDGET, agent_metrics(ctx, inst, ip)).await {
            Ok(Ok(m)) => Some(m),
            Ok(Err(e)) => {
                debug!(instance = %inst.name, member, error = %e, "monitor: no agent metrics");
                None
            }
            Err(_) => None,
        }
    };
    let stats = async {
        match tokio::time::timeout(STATS_BUDGET, ctx.runtime.container_stats(container)).await {
            Ok(Ok(Some(s))) => Some(ContainerUsage {
                cpu_seconds: s.cpu_seconds,
                memory_bytes: s.memory_working_set,
                memory_limit: s.memory_limit,
            }),
            _ => None,
        }
    };
    let (agent, container) = tokio::join!(agent, stats);
    Reading {
        at,
        agent,
        container,
    }
}

/// Asks the member's agent for one round of its metrics.
async fn agent_metrics(
    ctx: &Ctx,
    inst: &InstanceRecord,
    ip: std::net::IpAddr,
) -> Result<AgentMetrics, String> {
    let url = format!(
        "http://{}/metrics",
        std::net::SocketAddr::new(ip, berth_model::agent::AGENT_PORT)
    );
    let resp = ctx
        .http
        .get(url)
        .bearer_auth(inst.agent_token.expose())
        .timeout(AGENT_BUDGET)
        .send()
        .await
        .map_err(|e| format!("agent does not answer: {}", crate::members::without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("agent answered {}", resp.status()));
    }
    resp.json::<AgentMetrics>().await.map_err(|e| {
        format!(
            "unreadable agent metrics: {}",
            crate::members::without_url(&e)
        )
    })
}

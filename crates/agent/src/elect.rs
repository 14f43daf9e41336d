//! Electing the primary among the members through an external lease store
//! (`berth serve --lease-store etcd://…`), so that failover works while the control
//! plane is down.
//!
//! Once a second, each agent:
//! - on a primary with replicas: takes or renews the lease (holder: its container
//!   name). Renewed: it may write until the time it *sent* the request + TTL −
//!   margin. Held by another member: it is not the primary any more — its role
//!   becomes a replica of the holder (its engine, no longer renewed, is fenced by
//!   [`crate::lease::keep`] and rejoins at its next start). The store unreachable:
//!   the failsafe decides, as with the embedded store.
//! - on a replica: reads the lease. Held by another member than the one it follows:
//!   it follows the holder. Free (the primary's lease expired, so it fenced itself),
//!   automatic failover on, no failsafe promise to keep, its engine ready: it asks
//!   every other member's `/role` and applies [`berth_model::failover::choose`]; the
//!   member chosen takes the lease (the store lets one win) and promotes itself.
//!   The store unreachable: it never promotes.
//!
//! After each renewal the primary keeps a note beside its lease ([`LastSaid`]: its
//! write position, and whether its commits were released from waiting for a
//! missing synchronous replica). The note outlives the lease, so the replicas that
//! elect its successor bound what an asynchronous promotion may lose by the
//! instance's `max_failover_lag`, as the control plane does with the embedded
//! store. The note is at most a renewal (about a second) old; a note from another
//! holder than the primary they followed counts as none (and an asynchronous
//! instance then waits for its primary, saying why in the log).

use crate::lease::Lease;
use crate::AgentConfig;
use berth_lease::LeaseStore;
use berth_model::agent::lease::{self as contract, Grant};
use berth_model::agent::{Replication, RoleReport};
use berth_model::failover::{choose, Decision, Rules, Seen};
use berth_model::member::{Role, SyncMode};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

type Store = Arc<dyn LeaseStore>;

static STORE: OnceLock<Store> = OnceLock::new();

/// The external store, when the agent was given one.
pub(crate) fn open(config: &AgentConfig) -> Option<Store> {
    let (url, prefix, _) = config.lease_store.as_ref()?;
    match berth_lease::EtcdLeases::from_url(url, prefix) {
        Ok(s) => {
            let s: Store = Arc::new(s);
            let _ = STORE.set(s.clone());
            Some(s)
        }
        Err(e) => {
            tracing::error!(error = %e, "the lease store cannot be used; no lease will be held");
            None
        }
    }
}

fn elected_path(config: &AgentConfig) -> std::path::PathBuf {
    config.layout.volume.join("berth-elected.json")
}

/// How this member last elected itself the primary, as kept on its volume (the
/// control plane reads it in `/health` once it is up, for the event log).
pub(crate) fn last(config: &AgentConfig) -> Option<serde_json::Value> {
    std::fs::read_to_string(elected_path(config))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

fn lease_name(config: &AgentConfig) -> &str {
    config
        .lease_store
        .as_ref()
        .map_or("", |(_, _, n)| n.as_str())
}

/// This member's host name on the instance's network.
fn me(repl: &Replication) -> Option<&str> {
    repl.members
        .iter()
        .find(|(m, _)| *m == repl.member)
        .map(|(_, h)| h.as_str())
}

/// `/promote` with an external store: the lease is taken first; refused while
/// another member holds it.
pub(crate) async fn take_for_promotion(
    config: &AgentConfig,
    lease: &Lease,
) -> Option<Result<(), String>> {
    let store = STORE.get()?;
    let repl = crate::replication::read(config)?;
    let me = me(&repl)?.to_owned();
    let sent = Instant::now();
    Some(
        match store.acquire(lease_name(config), &me, contract::TTL).await {
            Ok(Some(l)) => lease.grant(&grant(l.term), sent),
            Ok(None) => Err("another member holds the leader lease".into()),
            Err(e) => Err(format!("the lease store does not answer: {e}")),
        },
    )
}

fn grant(term: u64) -> Grant {
    Grant {
        term,
        ttl_ms: contract::TTL.as_millis() as u64,
        sent_unix_ms: contract::unix_ms_now(),
    }
}

/// The loop; see the module's documentation.
pub(crate) async fn run(config: AgentConfig, lease: Lease, health: crate::Health, store: Store) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::new())
        .timeout(Duration::from_millis(1500))
        .build();
    let Ok(http) = http else {
        tracing::error!("cannot make the HTTP client to ask the other members: no election");
        return;
    };
    loop {
        tokio::time::sleep(contract::RENEW_EVERY).await;
        let Some(repl) = crate::replication::read(&config) else {
            continue;
        };
        let Some(me) = me(&repl).map(str::to_owned) else {
            continue;
        };
        match repl.role {
            Role::Primary if !repl.replicas.is_empty() => {
                hold(&config, &lease, &health, store.as_ref(), &me, &repl).await;
            }
            Role::Primary => {}
            Role::Replica => {
                follow_or_elect(&config, &lease, &health, store.as_ref(), &me, &repl, &http).await;
            }
        }
    }
}

/// What a primary says of itself beside its lease after each renewal.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LastSaid {
    /// Its write position (the engine's units, as [`RoleReport::position`]).
    position: Option<u64>,
    /// Its commits no longer wait for synchronous replicas (`available` mode with
    /// one missing): a replica may lack acknowledged commits.
    sync_released: bool,
}

/// What the last holder said, when it is the primary `old` that this member followed.
async fn last_said(store: &dyn LeaseStore, name: &str, old: Option<&str>) -> LastSaid {
    match store.last_note(name).await {
        Ok(Some(note)) if Some(note.holder.as_str()) == old => {
            serde_json::from_str(&note.text).unwrap_or_default()
        }
        _ => LastSaid::default(),
    }
}

/// Keeps this primary's position beside its lease (bounded: the next renewal must
/// not wait behind a slow engine; without an answer the last note stays).
async fn say_position(
    config: &AgentConfig,
    health: &crate::Health,
    store: &dyn LeaseStore,
    me: &str,
    term: u64,
    repl: &Replication,
) {
    let probe = config.engine().probe_role(&config.layout);
    let Ok(Ok(report)) = tokio::time::timeout(Duration::from_millis(500), probe).await else {
        return;
    };
    let said = LastSaid {
        position: report.position,
        sync_released: repl.sync_mode == SyncMode::Available
            && health.view().sync_degraded.is_some(),
    };
    if said.position.is_none() {
        return;
    }
    if let Ok(text) = serde_json::to_string(&said) {
        if let Err(e) = store.note(lease_name(config), me, term, &text).await {
            info!(error = %e, "cannot keep this primary's position beside its lease");
        }
    }
}

async fn hold(
    config: &AgentConfig,
    lease: &Lease,
    health: &crate::Health,
    store: &dyn LeaseStore,
    me: &str,
    repl: &Replication,
) {
    let name = lease_name(config);
    let sent = Instant::now();
    match store.acquire(name, me, contract::TTL).await {
        Ok(Some(l)) => {
            if lease.grant(&grant(l.term), sent).is_ok() {
                crate::lease::write_deadline(config, lease);
                say_position(config, health, store, me, l.term, repl).await;
            }
        }
        Ok(None) => {
            if let Ok(Some(l)) = store.read(name).await {
                warn!(holder = %l.holder, term = l.term, "another member holds the leader lease: this one follows it");
                follow(config, health, repl, &l.holder, false).await;
            }
        }
        Err(e) => info!(error = %e, "the lease store does not answer; the failsafe decides"),
    }
}

async fn follow_or_elect(
    config: &AgentConfig,
    lease: &Lease,
    health: &crate::Health,
    store: &dyn LeaseStore,
    me: &str,
    repl: &Replication,
    http: &reqwest::Client,
) {
    let name = lease_name(config);
    match store.read(name).await {
        Err(_) => {}
        Ok(Some(l)) => {
            *FREE_SINCE.lock().unwrap_or_else(|p| p.into_inner()) = None;
            health.update(|h| h.declined = None);
            let following = repl.source.as_ref().map(|(h, _)| h.as_str());
            let member = repl.members.iter().any(|(_, h)| *h == l.holder);
            if l.holder != me && following != Some(l.holder.as_str()) && member {
                info!(primary = %l.holder, term = l.term, "the leader lease moved: following its holder");
                let ready = health.view().state == crate::HealthState::Ready;
                follow(config, health, repl, &l.holder, ready).await;
            }
        }
        Ok(None) => {
            let ready = health.view().state == crate::HealthState::Ready;
            if !repl.auto_failover || !ready || lease.promised(Instant::now()).is_some() {
                return;
            }
            elect(config, lease, health, store, me, repl, http).await;
        }
    }
}

/// The lease is free: the members' positions decide who takes it.
async fn elect(
    config: &AgentConfig,
    lease: &Lease,
    health: &crate::Health,
    store: &dyn LeaseStore,
    me: &str,
    repl: &Replication,
    http: &reqwest::Client,
) {
    let old = repl.source.as_ref().map(|(h, _)| h.clone());
    let candidates: Vec<_> = repl
        .members
        .iter()
        .filter(|(_, h)| Some(h) != old.as_ref())
        .cloned()
        .collect();
    let asks = candidates.iter().map(|(m, host)| async move {
        let report = if host == me {
            config.engine().probe_role(&config.layout).await.ok()
        } else {
            let url = format!(
                "http://{host}:{}{}",
                crate::AGENT_PORT,
                berth_model::agent::ROLE_PATH
            );
            match http.get(url).send().await {
                Ok(r) => r.json::<RoleReport>().await.ok(),
                Err(_) => None,
            }
        };
        Seen {
            member: *m,
            healthy: report
                .as_ref()
                .is_some_and(|r| r.role == Some(Role::Replica)),
            position: report.and_then(|r| r.position),
        }
    });
    let seen = futures_util::future::join_all(asks).await;
    let said = last_said(store, lease_name(config), old.as_deref()).await;
    let rules = Rules {
        sync: repl.sync,
        sync_released: said.sync_released,
        replicas: repl.members.len().saturating_sub(1),
        max_failover_lag: repl.max_failover_lag,
        last_primary_position: said.position,
    };
    let free_since = *FREE_SINCE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Instant::now);
    match choose(&seen, &rules, None, false) {
        Decision::Promote { member, may_lose } if member == repl.member => {
            health.update(|h| h.declined = None);
            let sent = Instant::now();
            let l = match store.acquire(lease_name(config), me, contract::TTL).await {
                Ok(Some(l)) => l,
                _ => return,
            };
            if lease.grant(&grant(l.term), sent).is_err() {
                return;
            }
            warn!(
                term = l.term,
                "the primary's lease expired: this member took it and promotes itself"
            );
            if let Err(e) = crate::rejoin::promote(config).await {
                warn!(error = %e, "promotion failed; letting the lease go");
                let _ = store.release(lease_name(config), me, l.term).await;
                return;
            }
            let others: Vec<_> = repl
                .members
                .iter()
                .filter(|(m, _)| *m != repl.member)
                .cloned()
                .collect();
            let primary = Replication {
                role: Role::Primary,
                source: None,
                replicas: others.iter().map(|(m, _)| *m).collect(),
                replica_hosts: others.iter().map(|(_, h)| h.clone()).collect(),
                ..repl.clone()
            };
            apply(config, health, &primary, true).await;
            crate::lease::write_deadline(config, lease);
            let record = serde_json::json!({
                "term": l.term,
                "was": old,
                "may_lose_bytes": may_lose,
                "position": seen.iter().find(|s| s.member == repl.member).and_then(|s| s.position),
                "lease_free_ms": free_since.elapsed().as_millis() as u64,
                "at_unix_ms": contract::unix_ms_now(),
            });
            if let Err(e) = std::fs::write(elected_path(config), record.to_string()) {
                warn!(error = %e, "cannot keep the record of this election");
            }
        }
        Decision::Promote { .. } => health.update(|h| h.declined = None),
        Decision::Stay(why) => {
            info!(reason = %why, "the leader lease is free but this member does not promote itself");
            health.update(|h| h.declined = Some(why));
        }
    }
}

/// Since when this member has seen the leader lease free (cleared once it is held).
static FREE_SINCE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Becomes a replica of `holder`: the role file, the configuration, and (when the
/// engine runs) the engine's replication.
async fn follow(
    config: &AgentConfig,
    health: &crate::Health,
    repl: &Replication,
    holder: &str,
    live: bool,
) {
    let replica = Replication {
        role: Role::Replica,
        source: Some((holder.to_owned(), config.engine().client_port())),
        replicas: vec![],
        replica_hosts: vec![],
        ..repl.clone()
    };
    apply(config, health, &replica, live).await;
}

async fn apply(config: &AgentConfig, health: &crate::Health, repl: &Replication, live: bool) {
    if let Err(e) = crate::replication::store(config, repl) {
        warn!(error = %e, "cannot keep the new role");
        return;
    }
    let Ok(data_dir) = crate::rejoin::DATA_DIR.try_lock() else {
        info!("the new role is kept; the rejoin under way renders it when it ends");
        return;
    };
    let engine = config.engine();
    if let Err(e) = engine.render_config(&config.layout, &crate::current_settings(config)) {
        warn!(error = %e, "cannot render the configuration for the new role");
        return;
    }
    drop(data_dir);
    if live && !crate::rejoin::restart_to_follow(config, health, repl) {
        if let Err(e) = crate::replication::apply_live(config, repl).await {
            warn!(error = %e, "the new role is kept; the engine takes it at its next start");
        }
    }
}

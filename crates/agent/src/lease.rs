//! The leader lease as a member's agent holds it, the failsafe between a primary and
//! its replicas, and self-fencing (timing: [`berth_model::agent::lease`]).
//!
//! Only a primary with replicas needs the lease: with none, nobody could take over.
//! Such a primary's engine starts only while the lease (or the failsafe) holds, and
//! is killed when neither does:
//! - the control plane renews the lease every second (`POST /lease`);
//! - when renewals stop (the control plane is down, or cannot reach this member),
//!   the primary asks every replica to confirm it still follows it and will not be
//!   promoted for a TTL (`POST /failsafe`); when all confirm, writes go on — an outage
//!   of the control plane alone never demotes a primary;
//! - otherwise, at the end of what it holds, the agent kills the engine's processes;
//!   a watchdog process does the same a little later if the agent itself is frozen
//!   or dead (see [`watchdog`]), from a deadline the agent keeps in a file.
//!
//! A replica that confirmed a failsafe refuses to be promoted until its promise
//! ends, unless the control plane saw the old primary's container stopped.

use crate::AgentConfig;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_model::agent::lease::{self as contract, Failsafe, Grant, Held};
use berth_model::member::Role;
use berth_model::MemberId;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Debug, Default)]
struct State {
    term: u64,
    /// This primary takes writes until then.
    writable_until: Option<Instant>,
    /// This replica promised that primary not to be promoted until then.
    promise: Option<(MemberId, Instant)>,
    /// Why the engine was killed, while it stays down.
    fenced: Option<String>,
    /// A lease was granted since this agent started. Until then the failsafe does
    /// not apply: a member that starts again is the primary only once the lease
    /// says so, never because its replicas still follow it.
    granted: bool,
}

/// The lease as this agent holds it.
#[derive(Clone, Default)]
pub(crate) struct Lease(Arc<Mutex<State>>);

impl Lease {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The term last granted.
    pub(crate) fn term(&self) -> u64 {
        self.with(|s| s.term)
    }

    /// Takes a grant sent at `sent` (this side's monotonic clock); refuses one of
    /// an older term.
    pub(crate) fn grant(&self, g: &Grant, sent: Instant) -> Result<(), String> {
        self.with(|s| {
            if g.term < s.term {
                return Err(format!(
                    "term {} is older than the term {} this member holds",
                    g.term, s.term
                ));
            }
            s.term = g.term;
            let until = contract::holder_deadline(sent, Duration::from_millis(g.ttl_ms));
            s.writable_until = Some(s.writable_until.map_or(until, |u| u.max(until)));
            s.fenced = None;
            s.granted = true;
            Ok(())
        })
    }

    fn writable_for(&self, now: Instant) -> Duration {
        self.with(|s| {
            s.writable_until
                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
        })
    }

    fn extend(&self, until: Instant) {
        self.with(|s| {
            s.writable_until = Some(s.writable_until.map_or(until, |u| u.max(until)));
            s.fenced = None;
        });
    }

    fn fence(&self, why: String) {
        self.with(|s| {
            s.writable_until = None;
            s.fenced = Some(why);
        });
    }

    /// Why the engine is held down, if it is.
    pub(crate) fn fenced(&self) -> Option<String> {
        self.with(|s| s.fenced.clone())
    }

    /// The primary this replica promised not to replace, while the promise lasts.
    pub(crate) fn promised(&self, now: Instant) -> Option<(MemberId, Duration)> {
        self.with(|s| {
            s.promise
                .filter(|(_, until)| *until > now)
                .map(|(m, until)| (m, until - now))
        })
    }
}

/// A primary that serves replicas: the only kind of member that needs the lease.
pub(crate) fn needs_lease(config: &AgentConfig) -> bool {
    crate::replication::read(config)
        .is_some_and(|r| r.role == Role::Primary && !r.replicas.is_empty())
}

/// Whether the engine may run now: always, except a primary with replicas whose
/// lease (or failsafe) does not hold.
pub(crate) fn may_run(config: &AgentConfig, lease: &Lease) -> bool {
    !needs_lease(config) || lease.writable_for(Instant::now()) > Duration::ZERO
}

/// `POST /lease`: a grant from the control plane.
pub(crate) async fn grant(
    config: &AgentConfig,
    lease: &Lease,
    health: &crate::Health,
    g: Grant,
) -> Response {
    let sent = contract::sent_at(
        Instant::now(),
        contract::unix_ms_now(),
        g.sent_unix_ms,
        Duration::from_millis(g.ttl_ms),
    );
    if let Err(why) = sent.and_then(|sent| lease.grant(&g, sent)) {
        warn!(term = g.term, %why, "a lease grant was refused");
        return (StatusCode::CONFLICT, why).into_response();
    }
    write_deadline(config, lease);
    let ready = health.view().state == crate::HealthState::Ready;
    let position = if ready {
        config
            .engine()
            .probe_role(&config.layout)
            .await
            .ok()
            .and_then(|r| r.position)
    } else {
        None
    };
    Json(Held {
        term: lease.term(),
        ready,
        position,
    })
    .into_response()
}

/// `POST /failsafe` on a replica, authorised by the replication password: confirms
/// it follows `primary` and promises not to be promoted for the TTL.
pub(crate) async fn confirm(
    config: &AgentConfig,
    lease: &Lease,
    headers: &HeaderMap,
    f: Failsafe,
) -> Response {
    let Some(repl) = crate::replication::read(config) else {
        return (StatusCode::CONFLICT, "this member does not replicate").into_response();
    };
    if !crate::replication::password_matches(headers, &repl) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if repl.role != Role::Replica {
        return (StatusCode::CONFLICT, "this member is not a replica").into_response();
    }
    let follows = repl
        .source
        .as_ref()
        .is_some_and(|(host, _)| host_member(host) == Some(f.primary));
    if !follows {
        return (
            StatusCode::CONFLICT,
            format!("this replica does not follow member {}", f.primary.0),
        )
            .into_response();
    }
    if f.term < lease.term() {
        return (StatusCode::CONFLICT, "a newer term was seen").into_response();
    }
    let until = Instant::now() + Duration::from_millis(f.ttl_ms);
    lease.with(|s| {
        s.term = s.term.max(f.term);
        s.promise = Some((f.primary, s.promise.map_or(until, |(_, u)| u.max(until))));
    });
    StatusCode::NO_CONTENT.into_response()
}

/// Whether this replica may be promoted now (no failsafe promise holds it back).
pub(crate) fn may_promote(lease: &Lease, old_primary_stopped: bool) -> Result<(), String> {
    match lease.promised(Instant::now()) {
        Some((m, left)) if !old_primary_stopped => Err(format!(
            "member {} is still this replica's primary: it asked through the failsafe and \
             this replica promised not to replace it for another {} ms",
            m.0,
            left.as_millis()
        )),
        _ => Ok(()),
    }
}

/// The member number at the end of a container name (`berth-<name>-<id8>-<n>`).
fn host_member(host: &str) -> Option<MemberId> {
    host.rsplit_once('-')?.1.parse().ok().map(MemberId)
}

/// About five times a second on a primary that needs the lease: renew through the
/// failsafe when the control plane's grants stopped, fence when nothing holds.
pub(crate) async fn keep(config: AgentConfig, lease: Lease) {
    // No CA certificates: members talk plain HTTP, and an image may have none
    // (reqwest's default client would panic and take this loop with it).
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::new())
        .timeout(Duration::from_millis(700))
        .build()
    else {
        tracing::error!(
            "cannot make the failsafe's HTTP client: no failsafe, the lease alone decides"
        );
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(repl) = crate::replication::read(&config)
            .filter(|r| r.role == Role::Primary && !r.replicas.is_empty())
        else {
            clear_deadline(&config);
            continue;
        };
        let left = lease.writable_for(Instant::now());
        // Two renewals missed: ask the replicas before the lease runs out.
        if left > contract::TTL - contract::margin(contract::TTL) - 2 * contract::RENEW_EVERY {
            write_deadline(&config, &lease);
            continue;
        }
        if lease.fenced().is_some() || !lease.with(|s| s.granted) {
            continue;
        }
        let sent = Instant::now();
        match failsafe_round(&http, &repl, lease.term()).await {
            Ok(()) => {
                let until = contract::holder_deadline(sent, contract::TTL);
                lease.extend(until);
                write_deadline(&config, &lease);
            }
            Err(why) if left.is_zero() => {
                warn!(reason = %why, "the lease ran out and the failsafe does not hold: fencing the engine");
                lease.fence(format!("the lease ran out and {why}"));
                clear_deadline(&config);
                kill_engine(&config);
            }
            Err(why) => {
                info!(reason = %why, left_ms = left.as_millis() as u64, "the failsafe does not hold yet")
            }
        }
    }
}

/// Every replica confirms it follows this primary, or the reason one did not.
async fn failsafe_round(
    http: &reqwest::Client,
    repl: &berth_model::agent::Replication,
    term: u64,
) -> Result<(), String> {
    if repl.replica_hosts.is_empty() {
        return Err("no replica is known to ask".into());
    }
    let body = Failsafe {
        primary: repl.member,
        term,
        ttl_ms: contract::TTL.as_millis() as u64,
    };
    let asks = repl.replica_hosts.iter().map(|host| {
        let url = format!(
            "http://{host}:{}{}",
            crate::AGENT_PORT,
            contract::FAILSAFE_PATH
        );
        let req = http
            .post(url)
            .bearer_auth(repl.password.expose())
            .json(&body);
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{host} answered {}", r.status())),
                Err(_) => Err(format!("{host} does not answer")),
            }
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let refused: Vec<String> = answers.into_iter().filter_map(|a| a.err()).collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not every replica confirms the failsafe ({})",
            refused.join("; ")
        ))
    }
}

/// The file the watchdog reads: the monotonic-clock nanosecond after which the
/// engine must not run, or nothing.
fn deadline_path(config: &AgentConfig) -> PathBuf {
    config.layout.run_dir.join("lease-deadline")
}

fn monotonic_ns() -> u128 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos())
        .unwrap_or(0)
}

pub(crate) fn write_deadline(config: &AgentConfig, lease: &Lease) {
    if !needs_lease(config) {
        clear_deadline(config);
        return;
    }
    let left = lease.writable_for(Instant::now());
    let deadline = monotonic_ns() + (left + contract::WATCHDOG_GRACE).as_nanos();
    let path = deadline_path(config);
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, deadline.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        warn!("cannot write the watchdog's deadline");
    }
}

pub(crate) fn clear_deadline(config: &AgentConfig) {
    let _ = std::fs::remove_file(deadline_path(config));
}

/// Kills every process of the engine's user in this container (the engine and all
/// its children), at once: nothing it had not acknowledged yet is acknowledged.
pub(crate) fn kill_engine(config: &AgentConfig) {
    if let Ok(Some(user)) = nix::unistd::User::from_name(config.engine().os_user()) {
        kill_uid(user.uid.as_raw());
    }
}

fn kill_uid(uid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if process_uid(&entry.path()) == Some(uid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}

fn process_uid(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `berth agent watchdog`: a process of its own beside the agent, so that a frozen
/// or dead agent leaves no writable engine behind. Every 100 ms it reads the
/// deadline the agent keeps; past it, it kills the engine's processes.
pub fn watchdog(run_dir: &Path, engine_user: &str) -> ! {
    let path = run_dir.join("lease-deadline");
    let uid = nix::unistd::User::from_name(engine_user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(uid) = uid else { continue };
        let Some(deadline) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u128>().ok())
        else {
            continue;
        };
        if monotonic_ns() > deadline {
            let n = kill_uid(uid);
            if n > 0 {
                eprintln!("berth watchdog: the agent did not renew writes in time; killed {n} engine process(es)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_terms_are_refused_and_grants_extend() {
        let l = Lease::default();
        let t0 = Instant::now();
        l.grant(
            &Grant {
                term: 3,
                ttl_ms: 5000,
                sent_unix_ms: 0,
            },
            t0,
        )
        .expect("grant");
        assert!(l.writable_for(t0) > Duration::from_secs(3));
        assert!(l.writable_for(t0 + Duration::from_secs(4)).is_zero());
        assert!(l
            .grant(
                &Grant {
                    term: 2,
                    ttl_ms: 5000,
                    sent_unix_ms: 0,
                },
                t0
            )
            .is_err());
        l.fence("test".into());
        assert!(l.fenced().is_some());
        l.grant(
            &Grant {
                term: 3,
                ttl_ms: 5000,
                sent_unix_ms: 0,
            },
            t0,
        )
        .expect("grant");
        assert!(l.fenced().is_none());
    }

    #[test]
    fn container_names_end_in_the_member() {
        assert_eq!(host_member("berth-db-1234abcd-2"), Some(MemberId(2)));
        assert_eq!(host_member("berth-my-db-1234abcd-0"), Some(MemberId(0)));
        assert_eq!(host_member("nohyphen"), None);
    }

    #[test]
    fn a_promise_holds_promotion_back_unless_the_primary_stopped() {
        let l = Lease::default();
        l.with(|s| s.promise = Some((MemberId(0), Instant::now() + Duration::from_secs(5))));
        assert!(may_promote(&l, false).is_err());
        assert!(may_promote(&l, true).is_ok());
        l.with(|s| s.promise = Some((MemberId(0), Instant::now())));
        assert!(may_promote(&l, false).is_ok());
    }
}

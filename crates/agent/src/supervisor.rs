//! Bootstrap and supervision of the engine process.

use crate::bootstrap::{self, owned_dir, Outcome};
use crate::{AgentConfig, AgentError, Reaper, Result};
use berth_engine::CommandSpec;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// Where the engine is, as the agent API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// The engine process is starting and does not answer yet.
    Starting,
    /// The engine answers queries.
    Ready,
    /// The engine died; the agent restarts it after a pause.
    Restarting,
    /// The agent is shutting the engine down.
    Stopping,
    /// The agent will not start the engine on this data directory (see `reason`).
    Refused,
    /// A primary with replicas waits for the leader lease before its engine starts.
    WaitingForLease,
    /// A former primary is being made fit to follow the new one (rewind or clone).
    Rejoining,
}

#[derive(Debug, Serialize, Clone)]
pub(crate) struct HealthView {
    pub state: HealthState,
    pub engine_pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Why the engine is not started, when it is refused.
    pub reason: Option<String>,
    /// On a primary with synchronous replicas: why commits are not confirmed by
    /// as many replicas as asked, while that lasts.
    pub sync_degraded: Option<String>,
    /// How this member last rejoined as a replica after being a primary.
    pub rejoined: Option<serde_json::Value>,
    /// With an external lease store: how this member last elected itself the
    /// primary (the term, the member it replaced, what it may lack, when).
    pub elected: Option<serde_json::Value>,
    /// With an external lease store: why this member, finding the leader lease
    /// free, did not take it (while that lasts).
    pub declined: Option<String>,
}

/// Shared view of the engine's health.
#[derive(Clone)]
pub struct Health(Arc<Mutex<HealthView>>);

impl Health {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(HealthView {
            state: HealthState::Starting,
            engine_pid: None,
            restarts: 0,
            last_exit: None,
            reason: None,
            sync_degraded: None,
            rejoined: None,
            elected: None,
            declined: None,
        })))
    }

    pub(crate) fn view(&self) -> HealthView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The data directory was refused: the engine will not run, for this reason.
    pub(crate) fn refuse(&self, reason: String) {
        error!(%reason, "the engine will not be started; the data directory is left as it is");
        self.update(|h| {
            h.state = HealthState::Refused;
            h.reason = Some(reason);
        });
    }

    pub(crate) fn set_sync_degraded(&self, why: Option<String>) {
        self.update(|h| h.sync_degraded = why);
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut HealthView)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

pub(crate) fn engine_command(spec: &CommandSpec, user: &User) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .env("HOME", &user.dir)
        .env("USER", &user.name)
        // Everything the engine prints goes to the agent's stderr, which Docker keeps
        // (`docker logs`); stdout stays the agent's own (catalog mode prints JSON there).
        .stdout(std::io::stderr())
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw());
    cmd
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

fn engine_user(config: &AgentConfig) -> Result<User> {
    let name = config.engine().os_user();
    User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| AgentError::Config(format!("the image has no user {name:?}")))
}

/// Steps 3–5: directories, a database in the data directory, configuration. When the
/// data directory is refused nothing on the volume is written, not even configuration.
pub(crate) async fn prepare(config: &AgentConfig, reaper: &Reaper) -> Result<Outcome> {
    let engine = config.engine();
    let user = engine_user(config)?;
    let layout = &config.layout;
    owned_dir(&layout.run_dir, &user)?;
    let outcome = bootstrap::ensure_database(config, reaper, &user).await?;
    if outcome == Outcome::Ready {
        engine.render_config(layout, &crate::current_settings(config))?;
    }
    Ok(outcome)
}

/// Instead of step 7 when the data directory was refused: the engine is never
/// started, the agent stays up (no restart loop) so its API can say why, and exits
/// cleanly when told to stop.
pub(crate) async fn stay_refused() -> i32 {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return 1;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("stopping; the engine was never started");
    0
}

/// Before each start of the engine: a primary with replicas waits for its lease; a
/// former primary that is a replica now is made fit to follow first. `Some(code)`
/// when the agent was told to stop meanwhile.
async fn before_start(
    config: &AgentConfig,
    reaper: &Reaper,
    health: &Health,
    lease: &crate::lease::Lease,
    user: &User,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Option<i32> {
    let mut said = false;
    loop {
        if crate::lease::may_run(config, lease) {
            break;
        }
        if !said {
            info!("waiting for the leader lease before starting the engine as the primary");
            said = true;
        }
        health.update(|h| {
            h.state = HealthState::WaitingForLease;
            h.engine_pid = None;
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = term.recv() => return Some(0),
            _ = int.recv() => return Some(0),
        }
    }
    let repl = crate::replication::read(config)?;
    while crate::rejoin::needed(config, &repl) {
        health.update(|h| h.state = HealthState::Rejoining);
        match crate::rejoin::run(config, reaper, user, &repl).await {
            Ok(()) => break,
            Err(e) => {
                error!(error = %e, "could not rejoin as a replica; trying again in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = term.recv() => return Some(0),
                    _ = int.recv() => return Some(0),
                }
            }
        }
    }
    crate::rejoin::record_start(config, repl.role);
    None
}

/// Step 7: run the engine until told to stop. Returns the agent's exit code.
pub(crate) async fn supervise(
    config: &AgentConfig,
    reaper: &Reaper,
    health: &Health,
    lease: &crate::lease::Lease,
) -> i32 {
    let engine = config.engine();
    let user = match engine_user(config) {
        Ok(u) => u,
        Err(e) => {
            error!(error = %e, "cannot supervise the engine");
            return 1;
        }
    };
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return 1;
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        if let Some(code) =
            before_start(config, reaper, health, lease, &user, &mut term, &mut int).await
        {
            return code;
        }
        let spec = engine.server_command(&config.version, &config.layout);
        let (pid, mut exited) = match reaper.spawn(&mut engine_command(&spec, &user)) {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, program = %spec.program, "cannot start the engine");
                return 1;
            }
        };
        let started = Instant::now();
        health.update(|h| {
            h.state = super::HealthState::Starting;
            h.engine_pid = Some(pid);
        });
        info!(pid, "engine started");
        let probe = tokio::spawn(wait_ready(config.clone(), health.clone(), pid));
        tokio::select! {
            exit = &mut exited => {
                probe.abort();
                let exit = exit.map(|e| e.to_string()).unwrap_or_else(|_| "unknown".into());
                warn!(pid, %exit, "engine exited unexpectedly; restarting in {:?}", backoff);
                health.update(|h| {
                    h.state = HealthState::Restarting;
                    h.engine_pid = None;
                    h.restarts += 1;
                    h.last_exit = Some(exit);
                });
                // A run that lasted a while resets the backoff: it was not a crash loop.
                // So does a kill by the fence: the engine waits for the lease, not
                // for a backoff.
                if started.elapsed() > Duration::from_secs(60) || lease.fenced().is_some() {
                    backoff = Duration::from_millis(500);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return 0,
                    _ = int.recv() => return 0,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = term.recv() => return shutdown(engine.stop_signal(), pid, exited, health, probe).await,
            _ = int.recv() => return shutdown(engine.stop_signal(), pid, exited, health, probe).await,
        }
    }
}

/// Catalog mode: bootstraps a scratch database, starts the engine, reads every
/// setting it has, and stops it again. Used once per image, when it is built.
pub(crate) async fn dump_catalog(
    config: &AgentConfig,
    reaper: &Reaper,
) -> Result<Vec<berth_model::params::ParamSpec>> {
    let engine = config.engine();
    if let Outcome::Refused(why) = prepare(config, reaper).await? {
        return Err(AgentError::Bootstrap(why));
    }
    let user = engine_user(config)?;
    let spec = engine.server_command(&config.version, &config.layout);
    let (pid, exited) = reaper
        .spawn(&mut engine_command(&spec, &user))
        .map_err(io(format!("starting {}", spec.program)))?;
    let started = Instant::now();
    let mut result = Err(AgentError::Bootstrap(
        "the engine did not become ready within 120s".into(),
    ));
    while started.elapsed() < Duration::from_secs(120) {
        if engine.check_ready(&config.layout).await.is_ok() {
            result = engine
                .read_catalog(&config.layout)
                .await
                .map_err(AgentError::from);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let _ = kill(
        pid,
        Signal::try_from(engine.stop_signal()).unwrap_or(Signal::SIGTERM),
    );
    let _ = tokio::time::timeout(Duration::from_secs(60), exited).await;
    result
}

async fn wait_ready(config: AgentConfig, health: Health, pid: u32) {
    let engine = config.engine();
    let started = Instant::now();
    loop {
        if engine.check_ready(&config.layout).await.is_ok() {
            health.update(|h| {
                if h.engine_pid == Some(pid) {
                    h.state = HealthState::Ready;
                }
            });
            info!(
                pid,
                millis = started.elapsed().as_millis() as u64,
                "engine ready"
            );
            crate::replication::apply_after_start(&config).await;
            crate::rejoin::watch_diverged(&config, &health, pid).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(
    sig: i32,
    pid: u32,
    exited: tokio::sync::oneshot::Receiver<crate::Exit>,
    health: &Health,
    probe: tokio::task::JoinHandle<()>,
) -> i32 {
    probe.abort();
    health.update(|h| h.state = HealthState::Stopping);
    let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let sig = Signal::try_from(sig).unwrap_or(Signal::SIGINT);
    info!(%pid, ?sig, "stopping the engine");
    let _ = kill(pid, sig);
    match tokio::time::timeout(Duration::from_secs(50), exited).await {
        Ok(Ok(exit)) => {
            info!(%exit, "engine stopped");
            0
        }
        _ => {
            // It did not stop in time: SIGQUIT is PostgreSQL's immediate shutdown;
            // crash recovery on the next start replays the WAL, nothing is lost.
            warn!("engine did not stop in time; sending SIGQUIT");
            let _ = kill(pid, Signal::SIGQUIT);
            tokio::time::sleep(Duration::from_secs(2)).await;
            1
        }
    }
}

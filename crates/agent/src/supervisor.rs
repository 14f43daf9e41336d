//! Bootstrap and supervision of the engine process.

use crate::{AgentConfig, AgentError, Reaper, Result};
use berth_engine::CommandSpec;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
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
}

#[derive(Debug, Serialize, Clone)]
pub(crate) struct HealthView {
    pub state: HealthState,
    pub engine_pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
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
        })))
    }

    pub(crate) fn view(&self) -> HealthView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut HealthView)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn engine_command(spec: &CommandSpec, user: &User) -> Command {
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

fn owned_dir(path: &std::path::Path, user: &User) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io(path.display().to_string()))?;
    chown(path, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
        what: path.display().to_string(),
        source: e.into(),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io(path.display().to_string()))
}

/// Steps 3–5: directories, bootstrap when the volume is new, configuration.
pub(crate) async fn prepare(config: &AgentConfig, reaper: &Reaper) -> Result<()> {
    let engine = config.engine();
    let user = engine_user(config)?;
    let layout = &config.layout;
    owned_dir(&layout.run_dir, &user)?;
    let data = engine.data_dir(layout);
    if !engine.is_initialized(layout) {
        let started = Instant::now();
        info!(data = %data.display(), "bootstrapping a new database");
        // A half-made data directory (a crash during bootstrap) is started over.
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io(data.display().to_string()))?;
        }
        owned_dir(&data, &user)?;
        let var = engine.bootstrap_secret_var();
        let secret = match &config.bootstrap_secret {
            Some(s) => s.clone(),
            None => {
                std::env::var(var).map_err(|_| AgentError::Config(format!("{var} is not set")))?
            }
        };
        let secret_file = layout.run_dir.join("bootstrap-secret");
        std::fs::write(&secret_file, &secret).map_err(io("bootstrap secret file"))?;
        chown(&secret_file, Some(user.uid), Some(user.gid)).map_err(|e| AgentError::Io {
            what: "bootstrap secret file".into(),
            source: e.into(),
        })?;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
            .map_err(io("bootstrap secret file"))?;
        let mut result = Ok(());
        for spec in engine.initialize_commands(&config.version, layout, &secret_file, &secret) {
            let exit = reaper
                .run(&mut engine_command(&spec, &user), spec.stdin.as_deref())
                .await
                .map_err(io(format!("running {}", spec.program)))?;
            if !exit.success() {
                result = Err(AgentError::Bootstrap(format!(
                    "{} failed with {exit}",
                    spec.program
                )));
                break;
            }
        }
        let _ = std::fs::remove_file(&secret_file);
        result?;
        info!(
            millis = started.elapsed().as_millis() as u64,
            "database bootstrapped"
        );
    }
    engine.render_config(layout, &crate::current_settings(config))?;
    Ok(())
}

/// Step 7: run the engine until told to stop. Returns the agent's exit code.
pub(crate) async fn supervise(config: &AgentConfig, reaper: &Reaper, health: &Health) -> i32 {
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
                if started.elapsed() > Duration::from_secs(60) {
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
    prepare(config, reaper).await?;
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

//! The Berth agent: PID 1 of every member container.
//!
//! Start-up, in order:
//! 1. read the member's configuration from the environment ([`AgentConfig`]);
//! 2. start the reaper (PID 1 must reap every orphan);
//! 3. make the runtime and data directories, owned by the engine's user;
//! 4. make sure the data directory holds a database ([`bootstrap`]): bootstrap an
//!    empty one (superuser password from a verifier, never the password itself), redo
//!    Berth's own unfinished bootstrap, adopt one made elsewhere, or refuse — leaving
//!    the files untouched, never starting the engine, and saying why in the API;
//! 5. install the server certificate the control plane left on the data volume
//!    (owned by the engine's user, 0600) and render the engine's configuration for
//!    the member's real limits (its cgroup) and the parameters the control plane last sent (kept on the data volume);
//! 6. serve the agent API (health, for now) on the instance's private network;
//! 7. start the engine and supervise it: restart it with backoff if it dies; on
//!    SIGTERM or SIGINT ask it for a fast, clean shutdown and exit when it has.

mod api;
mod backup;
mod bootstrap;
mod cgroup;
mod elect;
mod lease;
mod metrics;
mod reaper;
mod rejoin;
mod replication;
mod role;
mod supervisor;
mod switchover;
mod tls;

pub use lease::watchdog;
pub use reaper::{Exit, Reaper};
pub use supervisor::{Health, HealthState};

use berth_engine::{engine, Engine, Layout, Resources};
use berth_model::{EngineKind, EngineVersion};
use std::net::SocketAddr;

pub use berth_model::agent::{env, AGENT_PORT};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A variable is missing or malformed.
    #[error("agent configuration: {0}")]
    Config(String),
    /// Preparing the data directory failed.
    #[error("preparing {what}: {source}")]
    Io {
        /// What was being prepared.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Bootstrapping the database failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// An engine hook failed.
    #[error(transparent)]
    Engine(#[from] berth_engine::EngineError),
}

/// Result of agent operations.
pub type Result<T> = std::result::Result<T, AgentError>;

/// What the agent needs to know, read from its environment.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The engine.
    pub engine: EngineKind,
    /// Its version.
    pub version: EngineVersion,
    /// The member's resources.
    pub resources: Resources,
    /// SHA-256 of the API token, hex.
    pub token_sha256: String,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Paths inside the container.
    pub layout: Layout,
    /// The bootstrap secret, when not read from the environment (catalog mode).
    pub bootstrap_secret: Option<String>,
    /// An external lease store the members elect through: (URL, key prefix, the
    /// instance's lease name). `None`: the control plane grants the lease.
    pub lease_store: Option<(String, String, String)>,
}

impl AgentConfig {
    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self> {
        let var =
            |k: &str| std::env::var(k).map_err(|_| AgentError::Config(format!("{k} is not set")));
        let engine: EngineKind = var(env::ENGINE)?
            .parse()
            .map_err(|e| AgentError::Config(format!("{e}")))?;
        let version = engine
            .version(&var(env::VERSION)?)
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let memory_mib = var(env::MEMORY_MIB)?
            .parse()
            .map_err(|_| AgentError::Config(format!("{} is not a number", env::MEMORY_MIB)))?;
        let cpu_millis = var(env::CPU_MILLIS)?
            .parse()
            .map_err(|_| AgentError::Config(format!("{} is not a number", env::CPU_MILLIS)))?;
        Ok(Self {
            engine,
            version,
            resources: Resources {
                memory_mib,
                cpu_millis,
            },
            token_sha256: var(env::TOKEN_SHA256)?,
            listen: SocketAddr::from(([0, 0, 0, 0], AGENT_PORT)),
            layout: Layout::standard(),
            bootstrap_secret: None,
            lease_store: std::env::var(env::LEASE_STORE).ok().map(|url| {
                (
                    url,
                    std::env::var(env::LEASE_PREFIX).unwrap_or_else(|_| "berth".into()),
                    std::env::var(env::LEASE_NAME).unwrap_or_default(),
                )
            }),
        })
    }

    /// The engine module.
    pub fn engine(&self) -> &'static dyn Engine {
        engine(self.engine)
    }
}

/// Where the parameters the control plane sent are kept, so a restart keeps them.
fn params_path(config: &AgentConfig) -> std::path::PathBuf {
    config.layout.volume.join("berth-params.json")
}

/// What the engine's configuration is rendered from now: the container's limits
/// and the stored parameters.
pub fn current_settings(config: &AgentConfig) -> berth_engine::Settings {
    let params = std::fs::read_to_string(params_path(config))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    berth_engine::Settings {
        resources: cgroup::resources(config.resources),
        params,
        replication: replication::read(config),
    }
}

/// Keeps new parameters on the data volume (write, sync, rename).
fn store_params(
    config: &AgentConfig,
    params: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<()> {
    use std::io::Write;
    let path = params_path(config);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(
        serde_json::to_string_pretty(params)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Catalog mode (`berth agent catalog`): prints the engine's settings catalog as JSON
/// on stdout. Needs only `BERTH_ENGINE` and `BERTH_ENGINE_VERSION`; works in a
/// scratch directory and leaves nothing behind worth keeping.
pub async fn catalog() -> Result<berth_model::params::Catalog> {
    let var = |k: &str| std::env::var(k).map_err(|_| AgentError::Config(format!("{k} is not set")));
    let engine: EngineKind = var(env::ENGINE)?
        .parse()
        .map_err(|e| AgentError::Config(format!("{e}")))?;
    let version = engine
        .version(&var(env::VERSION)?)
        .map_err(|e| AgentError::Config(e.to_string()))?;
    // A throwaway password: the scratch database never leaves this container.
    let throwaway = berth_model::Secret::new(format!("catalog-{}", std::process::id()));
    let secret = berth_engine::engine(engine)
        .bootstrap_env(&throwaway)
        .into_iter()
        .next()
        .map(|(_, v)| v);
    let config = AgentConfig {
        engine,
        version: version.clone(),
        resources: Resources {
            memory_mib: 512,
            cpu_millis: 1000,
        },
        token_sha256: String::new(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        layout: Layout {
            volume: std::path::PathBuf::from("/tmp/berth-catalog"),
            run_dir: std::path::PathBuf::from("/tmp/berth-catalog-run"),
        },
        bootstrap_secret: secret,
        lease_store: None,
    };
    std::fs::create_dir_all(&config.layout.volume).map_err(|source| AgentError::Io {
        what: "the scratch directory".into(),
        source,
    })?;
    if nix::unistd::Uid::effective().is_root() {
        let _ = nix::unistd::setgroups(&[]);
    }
    let reaper = Reaper::start().map_err(|source| AgentError::Io {
        what: "the child reaper".into(),
        source,
    })?;
    let params = supervisor::dump_catalog(&config, &reaper).await?;
    Ok(berth_model::params::Catalog {
        engine: engine.to_string(),
        version: version.to_string(),
        params: params.into_iter().map(|p| (p.name.clone(), p)).collect(),
    })
}

/// Starts `berth agent watchdog` beside the agent (see [`lease::watchdog`]): a
/// process of its own, so a frozen agent does not freeze it.
fn start_watchdog(config: &AgentConfig, reaper: &Reaper) {
    // A deadline left from an earlier run of this container (the run directory
    // outlives a stop) is no lease of this one.
    lease::clear_deadline(config);
    let Ok(exe) = std::env::current_exe() else {
        tracing::error!("cannot find the agent's own binary: no watchdog");
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["agent", "watchdog"])
        .arg(&config.layout.run_dir)
        .arg(config.engine().os_user());
    match reaper.spawn(&mut cmd) {
        Ok((pid, _)) => tracing::info!(pid, "watchdog started"),
        Err(e) => tracing::error!(error = %e, "cannot start the watchdog"),
    }
}

/// Runs the agent until it is told to stop; returns the process exit code.
pub async fn run(config: AgentConfig) -> Result<i32> {
    // Children inherit supplementary groups; the engine must not keep root's.
    if nix::unistd::Uid::effective().is_root() {
        let _ = nix::unistd::setgroups(&[]);
    }
    let reaper = Reaper::start().map_err(|source| AgentError::Io {
        what: "the child reaper".into(),
        source,
    })?;
    // Before `prepare` renders the configuration: TLS is on only with the files.
    std::fs::create_dir_all(&config.layout.run_dir).map_err(|source| AgentError::Io {
        what: config.layout.run_dir.display().to_string(),
        source,
    })?;
    tls::install(&config)?;
    let outcome = supervisor::prepare(&config, &reaper).await?;
    let health = Health::new();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("agent API on {}", config.listen),
            source,
        })?;
    if let bootstrap::Outcome::Refused(reason) = &outcome {
        health.refuse(reason.clone());
    }
    let lease = lease::Lease::default();
    tokio::spawn(replication::watch_sync(config.clone(), health.clone()));
    tokio::spawn(lease::keep(config.clone(), lease.clone()));
    if let Some(store) = elect::open(&config) {
        tokio::spawn(elect::run(
            config.clone(),
            lease.clone(),
            health.clone(),
            store,
        ));
    }
    start_watchdog(&config, &reaper);
    tokio::spawn(api::serve(
        listener,
        config.clone(),
        health.clone(),
        reaper.clone(),
        lease.clone(),
    ));
    match outcome {
        bootstrap::Outcome::Ready => {
            Ok(supervisor::supervise(&config, &reaper, &health, &lease).await)
        }
        bootstrap::Outcome::Refused(_) => Ok(supervisor::stay_refused().await),
    }
}

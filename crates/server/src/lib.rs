//! `berth serve`: the control plane.
//!
//! Principle: the data path never goes through here. Member containers run with a
//! Docker restart policy and their own agent, so stopping this process pauses
//! management only. Every change is stored as desired state plus a task (one
//! transaction) and answered at once; workers ([`tasks`]) and the reconciler
//! ([`reconcile`]) then move Docker towards it, one idempotent step at a time.

pub mod api;
mod auth;
mod backup;
mod endpoint;
mod error;
mod failover;
mod members;
pub mod metrics;
pub mod monitor;
pub mod reconcile;
mod rejoins;
mod replicas;
mod steps;
mod switchover;
pub mod tasks;
pub mod tls;
mod views;

pub use auth::write_private;
pub use backup::{
    BackupAccepted, BackupPolicyView, BackupStoreConfig, BackupView, S3Config, S3Credentials,
};
pub use error::ApiError;
pub use monitor::email::SmtpConfig;
pub use monitor::history::{MetricPoint, MetricSeries, MetricsView};
pub use monitor::MonitorConfig;
pub use views::{CaView, CredentialsView, EndpointView, InstanceView, TaskView};

use berth_model::params::Catalog;
use berth_model::SiteId;
use berth_runtime::image::ImageBuilder;
use berth_runtime::Runtime;
use berth_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Errors that stop the control plane from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Local files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another `berth serve` runs on the same data directory.
    #[error("another berth serve{holder} is running on the data directory {dir}; stop it first, or give this one its own --data-dir")]
    Busy {
        /// The data directory.
        dir: String,
        /// ` (pid N)` when the lock file names it.
        holder: String,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    /// Docker.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    /// A setting `berth serve` was given cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// Result of starting the control plane.
pub type Result<T> = std::result::Result<T, ServeError>;

/// How `berth serve` was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the store, the admin token and caches live.
    pub data_dir: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// The host name or address clients use to reach published ports.
    pub endpoint_host: String,
    /// Host address published ports bind to.
    pub publish_address: String,
    /// Where the CLI's config (URL and token) is written when there is none.
    pub cli_config: Option<PathBuf>,
    /// Replace an existing CLI config so it points at this installation.
    pub write_cli_config: bool,
    /// Root file system cache for image builds.
    pub image_cache: PathBuf,
    /// How long an image build or pull may take.
    pub image_build_timeout: Duration,
    /// How often reconcile runs.
    pub reconcile_interval: Duration,
    /// How long events are kept (at least `model::event::MIN_RETENTION`).
    pub event_retention: Duration,
    /// The `berth` binary members run as their agent.
    pub agent_binary: PathBuf,
    /// Upstream images to use instead of building, per engine version (where a
    /// registry is reachable).
    pub upstream_images: Vec<UpstreamImage>,
    /// Where backups are kept (`--backup-store`).
    pub backup_store: BackupStoreConfig,
    /// The schedule of an instance until one is set (`--default-backup-schedule`),
    /// a cron expression or `off`.
    pub default_backup_schedule: String,
    /// The verify policy of an instance until one is set (`--default-verify`).
    pub default_verify: berth_model::verify::VerifyPolicy,
    /// Metric sampling and history resolutions.
    pub monitor: MonitorConfig,
    /// A failed primary whose container still runs is stopped through Docker
    /// before a failover (an extra fence; safety never depends on it). Off only to
    /// prove that the lease alone fences (`--docker-fence off`, tests).
    pub fence_through_docker: bool,
    /// An external lease store (`etcd://host:port,…`) through which the members'
    /// agents elect their primary themselves; `None`: this control plane grants
    /// leases (the embedded store).
    pub lease_store: Option<String>,
    /// The SMTP relay alarm emails go out through (`--smtp`); `None`: no email.
    pub smtp: Option<SmtpConfig>,
}

/// An operator's choice of a registry image for one engine version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamImage {
    /// The engine.
    pub engine: berth_model::EngineKind,
    /// The version.
    pub version: berth_model::EngineVersion,
    /// Image reference, like `registry.example/postgres:15`.
    pub reference: String,
}

impl std::str::FromStr for UpstreamImage {
    type Err = String;
    /// Parses `ENGINE:VERSION=REFERENCE`, like `postgres:15=postgres:15-bookworm`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let usage =
            || format!("{s:?} is not ENGINE:VERSION=IMAGE (like postgres:15=postgres:15-bookworm)");
        let (key, reference) = s.split_once('=').ok_or_else(usage)?;
        let (engine, version) = key.split_once(':').ok_or_else(usage)?;
        let engine: berth_model::EngineKind = engine.parse().map_err(|e| format!("{e}"))?;
        let version = engine.version(version).map_err(|e| e.to_string())?;
        if reference.trim().is_empty() {
            return Err(usage());
        }
        Ok(Self {
            engine,
            version,
            reference: reference.trim().to_owned(),
        })
    }
}

impl Config {
    /// The upstream image configured for an engine version, if any.
    pub fn upstream_image(
        &self,
        engine: berth_model::EngineKind,
        version: &berth_model::EngineVersion,
    ) -> Option<&str> {
        self.upstream_images
            .iter()
            .find(|u| u.engine == engine && &u.version == version)
            .map(|u| u.reference.as_str())
    }
}

/// The agent binary: where it is and its hash (which names its volume).
#[derive(Clone, Debug)]
pub struct AgentBinary {
    /// Path on this host.
    pub path: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Settings catalogs by engine and version, each loaded once. A cell per key: a
/// slow image build for one engine version never holds up another's catalog.
pub type CatalogCache = std::collections::HashMap<
    (berth_model::EngineKind, String),
    Arc<tokio::sync::OnceCell<Arc<Catalog>>>,
>;

/// Everything handlers, tasks and reconcile share.
#[derive(Clone)]
pub struct Ctx {
    /// The metadata store.
    pub store: Store,
    /// Docker.
    pub runtime: Runtime,
    /// Image builder.
    pub images: Arc<ImageBuilder>,
    /// Configuration.
    pub config: Arc<Config>,
    /// The agent binary.
    pub agent: Arc<AgentBinary>,
    /// Client for agent APIs.
    pub http: reqwest::Client,
    /// Runs tasks.
    pub tasks: tasks::TaskRunner,
    /// This installation.
    pub site: SiteId,
    /// Findings reconcile already reported (reported once per process).
    pub reported: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Settings catalogs, loaded once per engine version.
    pub catalogs: Arc<tokio::sync::Mutex<CatalogCache>>,
    /// The certificate authority that signs instances' server certificates.
    pub ca: Arc<tls::Ca>,
    /// Set when the control plane is stopping: long-lived responses (event streams)
    /// end, so a graceful shutdown does not wait on them forever.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// The control plane's own metrics, for `GET /metrics`.
    pub metrics: metrics::Metrics,
    /// Where backups are kept, opened (and checked) once at start.
    pub(crate) backups: backup::BackupStore,
    /// The leader leases this control plane grants (the embedded lease store).
    pub failover: failover::Leases,
    /// The external lease store, when there is one (agents elect through it).
    pub(crate) lease_store: Option<Arc<dyn berth_lease::LeaseStore>>,
    /// The exclusive lock on the data directory, held while this context lives.
    _lock: Arc<DataDirLock>,
}

/// An exclusive `flock` on `<data-dir>/serve.lock`: two control planes on one store
/// would run the same tasks twice. The kernel drops it when the process dies, so a
/// crash never leaves a stale lock behind.
struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl DataDirLock {
    fn acquire(dir: &std::path::Path) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = dir.join("serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        let mut lock =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    let pid = pid.trim();
                    return Err(ServeError::Busy {
                        dir: dir.display().to_string(),
                        holder: if pid.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {pid})")
                        },
                    });
                }
                Err((_, e)) => {
                    return Err(ServeError::Io {
                        what: format!("locking {}", path.display()),
                        source: e.into(),
                    })
                }
            };
        let pid = std::process::id().to_string();
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(pid.as_bytes()))
            .map_err(io(format!("writing {}", path.display())))?;
        Ok(Self(lock))
    }
}

impl Ctx {
    /// The image members of an engine version run, ensured present: an operator's
    /// upstream image when configured, else the one built from Debian packages.
    pub async fn ensure_image(
        &self,
        kind: berth_model::EngineKind,
        version: &berth_model::EngineVersion,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> std::result::Result<(String, bool), berth_runtime::RuntimeError> {
        match self.config.upstream_image(kind, version) {
            Some(reference) => {
                self.images
                    .ensure_pulled(&self.runtime, reference, progress)
                    .await
            }
            None => {
                self.images
                    .ensure(&self.runtime, berth_engine::engine(kind), version, progress)
                    .await
            }
        }
    }

    /// The settings catalog of an engine version, read from the engine in its image
    /// (once per image; cached on disk and here).
    pub async fn catalog(
        &self,
        kind: berth_model::EngineKind,
        version: &berth_model::EngineVersion,
    ) -> std::result::Result<Arc<Catalog>, berth_runtime::RuntimeError> {
        let cell = self
            .catalogs
            .lock()
            .await
            .entry((kind, version.to_string()))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.load_catalog(kind, version))
            .await
            .cloned()
    }

    async fn load_catalog(
        &self,
        kind: berth_model::EngineKind,
        version: &berth_model::EngineVersion,
    ) -> std::result::Result<Arc<Catalog>, berth_runtime::RuntimeError> {
        let (tag, _) = self.ensure_image(kind, version, &|_| {}).await?;
        if let Some(c) = self.images.cached_catalog(&tag).await {
            return Ok(Arc::new(c));
        }
        let (agent_volume, _) = self
            .runtime
            .ensure_agent_volume(&self.agent.path, &self.agent.sha256, &tag)
            .await?;
        Ok(Arc::new(
            self.images
                .ensure_catalog(&self.runtime, &tag, &agent_volume, kind, version)
                .await?,
        ))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Hashes the agent binary (read once at start).
pub fn hash_binary(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Opens everything and returns the shared context, without serving yet.
pub async fn start(config: Config) -> Result<Ctx> {
    use std::os::unix::fs::PermissionsExt;
    // Never silently shorter: a retention below the least is refused, not raised.
    if config.event_retention < berth_model::event::MIN_RETENTION {
        return Err(ServeError::Invalid(format!(
            "an event retention of {}s is shorter than the least Berth keeps (1d); give --event-retention 1d or more",
            config.event_retention.as_secs()
        )));
    }
    if config.monitor.sample_interval < Duration::from_secs(1) || config.monitor.tiers.is_empty() {
        return Err(ServeError::Invalid(
            "metrics need a --sample-interval of 1s or more and at least one --metric-resolutions entry".into(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io(format!("creating {}", config.data_dir.display())))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting the data directory"))?;
    if config.default_backup_schedule != berth_model::backup::Schedule::OFF {
        berth_model::backup::Schedule::parse(&config.default_backup_schedule)
            .map_err(|e| ServeError::Invalid(format!("--default-backup-schedule: {e}")))?;
    }
    let lock = DataDirLock::acquire(&config.data_dir)?;
    // A store that cannot be reached stops serve now, not the first backup later.
    let backups = backup::BackupStore::open(&config.backup_store, &config.data_dir)
        .await
        .map_err(|e| ServeError::Invalid(e.to_string()))?;
    let store = Store::open(&config.data_dir.join("berth.db")).await?;
    let site = store.site_id().await?;
    auth::bootstrap_admin_token(&store, &config).await?;
    let ca = Arc::new(tls::Ca::load_or_create(&config.data_dir, site)?);
    let runtime = Runtime::connect(site).await?;
    let sha256 = hash_binary(&config.agent_binary)
        .map_err(io(format!("reading {}", config.agent_binary.display())))?;
    let agent = AgentBinary {
        path: config.agent_binary.clone(),
        sha256,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ServeError::Io {
            what: "building the HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
    let lease_store = match &config.lease_store {
        None => None,
        Some(url) => Some(failover::open_lease_store(url, &site).await?),
    };
    let images = Arc::new(ImageBuilder::new(
        config.image_cache.clone(),
        config.image_build_timeout,
    ));
    let ctx = Ctx {
        store,
        runtime,
        images,
        config: Arc::new(config),
        agent: Arc::new(agent),
        http,
        tasks: tasks::TaskRunner::default(),
        site,
        reported: Default::default(),
        catalogs: Default::default(),
        ca,
        stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        metrics: metrics::Metrics::default(),
        backups,
        failover: failover::Leases::default(),
        lease_store,
        _lock: Arc::new(lock),
    };
    Ok(ctx)
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    let listen = config.listen;
    let ctx = start(config).await?;
    info!(site = %ctx.site, %listen, "berth control plane starting");
    // Resume what a previous run left unfinished before anything else moves.
    let resumed = ctx.tasks.resume_all(&ctx).await?;
    if resumed > 0 {
        info!(resumed, "resuming unfinished tasks");
    }
    // A backup whose task is gone can never complete: never leave it looking alive.
    if let Ok(n @ 1..) = ctx.store.fail_abandoned_backups().await {
        warn!(
            backups = n,
            "marked backups abandoned by a stopped control plane failed"
        );
    }
    match ctx.runtime.prune_agent_volumes(&ctx.agent.sha256).await {
        Ok(removed) if !removed.is_empty() => {
            info!(?removed, "removed agent volumes of older Berth builds")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not prune old agent volumes"),
    }
    tokio::spawn(prebuild_images(ctx.clone()));
    tokio::spawn(reconcile::run_forever(ctx.clone()));
    tokio::spawn(failover::run_forever(ctx.clone()));
    tokio::spawn(prune_events_forever(ctx.clone()));
    tokio::spawn(backup::schedule::run_forever(ctx.clone()));
    tokio::spawn(monitor::run_forever(ctx.clone()));
    tokio::spawn(monitor::deliver_forever(ctx.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(io(format!("listening on {listen}")))?;
    let app = api::router(ctx.clone());
    let stopping = ctx.stopping.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Event streams never end by themselves: end them, or shutdown waits.
            stopping.send_replace(true);
        })
        .await
        .map_err(io("serving the API"))?;
    info!("berth control plane stopped; running databases keep serving");
    Ok(())
}

/// How often events older than the retention are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Removes events older than `--event-retention`, at start and then every hour,
/// saying how many.
async fn prune_events_forever(ctx: Ctx) {
    loop {
        match ctx.store.prune_events(ctx.config.event_retention).await {
            Ok(0) => {}
            Ok(pruned) => info!(
                pruned,
                retention_secs = ctx.config.event_retention.as_secs(),
                "removed events older than the retention"
            ),
            Err(e) => warn!(error = %e, "could not prune old events; will try again"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

async fn prebuild_images(ctx: Ctx) {
    for &kind in berth_model::EngineKind::ALL {
        let version = kind.default_version();
        let log = |line: &str| info!(engine = %kind, "image: {line}");
        match ctx.ensure_image(kind, &version, &log).await {
            Ok((tag, true)) => info!(%tag, "image ready"),
            Ok((_, false)) => {}
            Err(e) => {
                warn!(error = %e, "could not prepare the {kind} image now; creates will retry")
            }
        }
        match ctx.catalog(kind, &version).await {
            Ok(c) => info!(engine = %kind, settings = c.params.len(), "settings catalog loaded"),
            Err(e) => {
                warn!(error = %e, "could not read the {kind} settings catalog now; will retry when needed")
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_images_parse() {
        let u: UpstreamImage = "postgres:15=registry.local:5000/postgres:15"
            .parse()
            .expect("valid");
        assert_eq!(u.reference, "registry.local:5000/postgres:15");
        assert_eq!(u.version.as_str(), "15");
        for bad in [
            "postgres=x",
            "postgres:15",
            "postgres:15=",
            "oracle:1=x",
            "postgres:9=x",
        ] {
            assert!(bad.parse::<UpstreamImage>().is_err(), "{bad}");
        }
    }
}

//! Database engines behind one trait.
//!
//! Everything that differs between PostgreSQL and the engines that follow lives in
//! one module per engine; the control plane and the agent only call [`Engine`].
//! Architecture invariant: no other crate matches on [`EngineKind`] to decide
//! behaviour — adding an engine touches this crate (and the catalog in `model`) only.

mod datadir;
pub(crate) mod mariadb;
mod params;
pub(crate) mod postgres;
mod tls;

use berth_model::{EngineKind, EngineVersion, Secret};
use std::path::{Path, PathBuf};

pub use datadir::DataDirState;
pub(crate) use datadir::{inspect_dir, some_names};
pub use mariadb::Mariadb;
pub(crate) use params::{is_setting_name, refuse_params, usable_params};
pub use postgres::Postgres;
pub use tls::{install_crypto_provider, shell_line, TLS_CA, TLS_CERT, TLS_KEY};

/// Errors an engine hook can give.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine does not answer yet (or any more).
    #[error("{engine} does not answer: {reason}")]
    NotReady {
        /// Which engine.
        engine: EngineKind,
        /// What the client said.
        reason: String,
    },
    /// What was to be created exists already.
    #[error("{0}")]
    Exists(String),
    /// What was to be changed does not exist.
    #[error("{0}")]
    Missing(String),
    /// The engine refused the statement.
    #[error("{engine} refused: {reason}")]
    Refused {
        /// Which engine.
        engine: EngineKind,
        /// What it said.
        reason: String,
    },
    /// Writing the engine's files failed.

    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// A grant names a database that does not exist.
    pub(crate) fn no_database_to_grant(db: &berth_model::account::DbName) -> Self {
        EngineError::Missing(format!(
            "no database {db}; create it first with `berth db create`"
        ))
    }
}

/// The bound of one [`Engine::probe_role`].
pub const ROLE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a role probe within [`ROLE_PROBE_TIMEOUT`].
pub(crate) async fn bounded_probe<F>(
    engine: EngineKind,
    probe: F,
) -> Result<berth_model::agent::RoleReport>
where
    F: std::future::Future<Output = Result<berth_model::agent::RoleReport>>,
{
    tokio::time::timeout(ROLE_PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::NotReady {
                engine,
                reason: format!("no answer within {ROLE_PROBE_TIMEOUT:?}"),
            })
        })
}

/// Result of engine hooks.
pub type Result<T> = std::result::Result<T, EngineError>;

/// How to build an image of an engine version from Debian packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecipe {
    /// Debian suite, like `bookworm`.
    pub suite: &'static str,
    /// Packages to install on top of the essential set.
    pub packages: Vec<&'static str>,
    /// Shell snippets run by the builder with `$1` set to the root file system, after
    /// the packages are installed (remove a default cluster, make directories, …).
    pub customize: Vec<&'static str>,
}

/// A program to run, as the agent or the CLI should run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program path or name.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment. Secrets go here, never into `args` (visible in `ps`).
    pub env: Vec<(String, String)>,
    /// Text fed to the program's standard input, if any.
    pub stdin: Option<String>,
}

/// Where the agent keeps things inside a member container.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The mounted data volume.
    pub volume: PathBuf,
    /// Runtime directory (sockets, lock files); not persistent.
    pub run_dir: PathBuf,
}

impl Layout {
    /// The layout of every Berth member container.
    pub fn standard() -> Self {
        Self {
            volume: PathBuf::from("/var/lib/berth"),
            run_dir: PathBuf::from("/run/berth"),
        }
    }
}

/// Settings the agent derives from the member's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in MiB.
    pub memory_mib: u64,
    /// CPU limit in thousandths of a core.
    pub cpu_millis: u32,
}

/// Everything an engine's configuration is rendered from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The member's resources (memory-derived settings follow them).
    pub resources: Resources,
    /// Settings the user chose (a parameter group). They win over derived ones.
    pub params: std::collections::BTreeMap<String, String>,
    /// How the member replicates (none: a lone primary).
    pub replication: Option<berth_model::agent::Replication>,
}

/// How a replica's empty data directory is filled from its primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClonePlan {
    /// Commands (run as [`Engine::os_user`]) that pull the copy from the primary
    /// themselves, over the engine's replication protocol.
    Pull(Vec<CommandSpec>),
    /// The primary's agent streams its engine's physical backup (`GET /clone`, see
    /// [`Engine::clone_source_command`]) into `receive`'s standard input; `finish`
    /// then makes the copy startable.
    Stream {
        /// Reads the stream into the data directory.
        receive: CommandSpec,
        /// Run after the stream ended well.
        finish: Vec<CommandSpec>,
    },
}

/// One database engine: what the control plane, the agent and the CLI must know.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Which engine.
    fn kind(&self) -> EngineKind;

    /// How to build its image.
    fn image_recipe(&self, version: &EngineVersion) -> ImageRecipe;

    /// The port clients connect to inside the container.
    fn client_port(&self) -> u16;

    /// The superuser's name.
    fn superuser(&self) -> &'static str;

    /// The operating-system user the engine runs as inside the container.
    fn os_user(&self) -> &'static str;

    /// Environment for the agent that lets it set the superuser password at bootstrap
    /// without the password itself being visible in `docker inspect`.
    fn bootstrap_env(&self, password: &Secret) -> Vec<(String, String)>;

    /// A client URI with credentials that verifies the server's certificate (host name
    /// included) against the CA in `ca_file`.
    fn uri(&self, host: &str, port: u16, user: &str, password: &Secret, ca_file: &str) -> Secret;

    /// The interactive client command for `berth connect`: TLS, the server verified
    /// against the CA in `ca_file`, the password in the environment.
    fn client_command(
        &self,
        host: &str,
        port: u16,
        user: &str,
        password: &Secret,
        ca_file: &str,
    ) -> CommandSpec;

    /// Makes the running engine use the certificate files the agent installed, without
    /// a restart.
    async fn reload_tls(&self, layout: &Layout) -> Result<()>;

    /// The data directory inside the volume.
    fn data_dir(&self, layout: &Layout) -> PathBuf;

    /// What the data directory holds, as far as the engine can tell from its files.
    /// Only reads; the agent's bootstrap decides what to do with the answer.
    fn inspect_data_dir(&self, version: &EngineVersion, layout: &Layout) -> DataDirState;

    /// Commands (run as [`Engine::os_user`]) that create a fresh database in the data
    /// directory. `secret` is the value [`Engine::bootstrap_env`] passed (a verifier,
    /// not a password), also written to `secret_file` (0600, removed afterwards).
    fn initialize_commands(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        secret_file: &Path,
        secret: &str,
    ) -> Vec<CommandSpec>;

    /// The name of the bootstrap variable whose value goes into `secret_file`.
    fn bootstrap_secret_var(&self) -> &'static str;

    /// Writes the engine's configuration files for these resources.
    fn render_config(&self, layout: &Layout, settings: &Settings) -> Result<()>;

    /// The settings Berth derives from memory, as the engine spells them.
    fn memory_settings(&self, memory_mib: u64) -> Vec<(String, String)>;

    /// Renders the configuration and applies to the running engine whatever can
    /// change without a restart; `reset` names settings a group no longer sets, which
    /// go back to their defaults. Returns the names of settings that wait for a restart.
    async fn apply_live(
        &self,
        layout: &Layout,
        settings: &Settings,
        reset: &[String],
    ) -> Result<Vec<String>>;

    /// The engine server process (run as [`Engine::os_user`], supervised by the agent).
    fn server_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec;

    /// The signal that asks the server for a clean, quick shutdown.
    fn stop_signal(&self) -> i32;

    /// Succeeds once the engine answers a trivial query over its local socket.
    async fn check_ready(&self, layout: &Layout) -> Result<()>;

    /// The member's role, replication lag and load, asked of the running engine over
    /// the local socket; bounded by [`ROLE_PROBE_TIMEOUT`]. Fails (`NotReady`) when
    /// the engine does not answer in time.
    async fn probe_role(&self, layout: &Layout) -> Result<berth_model::agent::RoleReport>;

    /// The engine's own consistency check of everything it holds (amcheck, `CHECK
    /// TABLE`) and a count of every table's rows, read to the end: what a restored
    /// backup must pass. Problems found are in the report; an error means the check
    /// itself could not run.
    async fn check_consistency(
        &self,
        layout: &Layout,
    ) -> Result<berth_model::verify::ConsistencyReport>;

    /// One round of the engine's metrics, read over the local socket by a dedicated
    /// low-privilege monitoring account (made on first use) with a small connection
    /// limit and a 2 s statement timeout.
    async fn collect_metrics(&self, layout: &Layout)
        -> Result<berth_model::metrics::EngineMetrics>;

    /// Every setting the engine has, read from the running engine (over the layout's
    /// local socket): type, unit, range, allowed values, default, restart flag.
    async fn read_catalog(&self, layout: &Layout) -> Result<Vec<berth_model::params::ParamSpec>>;

    /// Settings Berth sets itself (addresses, paths, logging it relies on).
    fn managed_settings(&self) -> &'static [&'static str];

    /// Settings that run a command or load code on the database server (archive and
    /// restore commands, preloaded libraries, plugins, startup SQL files): never
    /// settable by a user, for a reason of their own.
    fn code_settings(&self) -> &'static [&'static str];

    /// Both lists, as the catalog check takes them.
    fn reserved(&self) -> berth_model::params::Reserved<'static> {
        berth_model::params::Reserved {
            managed: self.managed_settings(),
            runs_code: self.code_settings(),
        }
    }

    /// Refuses parameters with which an instance of this memory would not start.
    fn check_fits(
        &self,
        params: &std::collections::BTreeMap<String, String>,
        memory_mib: u64,
    ) -> std::result::Result<(), String>;

    /// Connects to the engine for administration of databases and users.
    async fn admin(&self, target: &AdminTarget) -> Result<Box<dyn Admin>>;

    /// The agent's logical dump of every database (and the engine's users), written to
    /// standard output over the local socket, consistent as of one moment.
    fn logical_dump_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec;

    /// The agent's loader of such a dump, read from standard input over the local
    /// socket; it stops at the first error.
    fn logical_load_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec;

    /// SQL fed to the loader after a dump: the dump carries the source's superuser
    /// password, and the new instance keeps its own (`secret` is the bootstrap secret:
    /// a verifier or hash, never a password).
    fn after_logical_load(&self, secret: &str) -> String;

    /// Lines of a logical dump's header the loader must not run in a fresh instance
    /// (its superuser exists already), if any.
    fn logical_load_skips(&self) -> Option<LoadSkips>;

    /// How a replica's empty data directory is filled from `repl.source`.
    fn clone_plan(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> ClonePlan;

    /// On a primary: the command whose standard output is the stream a
    /// [`ClonePlan::Stream`] replica reads (none when replicas pull by themselves).
    fn clone_source_command(&self, version: &EngineVersion, layout: &Layout)
        -> Option<CommandSpec>;

    /// Brings the running engine in line with `repl` (the configuration files were
    /// rendered from it already): on a primary the replication account, one slot per
    /// replica and the synchronous replicas; on a replica whom it follows. Idempotent;
    /// its own writes never wait for synchronous replicas.
    async fn apply_replication(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<()>;

    /// On the primary, before a switchover: stops it taking writes from now on,
    /// with `guard` holding the stop until it is dropped (or the member stops), and
    /// says up to where it wrote. `None` when the engine's own clean shutdown is the
    /// fence (PostgreSQL ships all it wrote to its replicas before it exits).
    async fn fence(&self, layout: &Layout) -> Result<Option<Fence>>;

    /// On the switchover's target: whether it has everything the old primary wrote
    /// (`position` from [`Engine::fence`], when it gave one) and applied it.
    async fn caught_up(&self, layout: &Layout, position: Option<&str>) -> Result<bool>;

    /// Makes this replica the primary, writable.
    async fn promote(&self, layout: &Layout) -> Result<()>;

    /// Commands that make a former primary's stopped data directory fit to follow
    /// `repl.source` (PostgreSQL: `pg_rewind`); none where the engine does it while
    /// it follows (MariaDB, by GTID). A failing command means: clone afresh.
    fn rejoin_commands(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Vec<CommandSpec>;

    /// On a replica: `Some(why)` when it holds changes its primary lacks, so it can
    /// never follow as it is and must be rewound or cloned afresh (PostgreSQL: its
    /// timeline ended, in the primary's history, before what it replayed; MariaDB:
    /// I/O error 1236).
    /// `repl` is the member's role (MariaDB asks its primary how many of this
    /// member's transactions it lacks, for the reason).
    async fn diverged(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<Option<String>>;

    /// On a primary with synchronous replicas: `None` while at least `repl.sync` of
    /// them confirm commits, else why not. In `available` mode commits are released
    /// while that lasts (PostgreSQL: `synchronous_standby_names` cleared through
    /// `ALTER SYSTEM`, reset once enough replicas are back; MariaDB does it itself
    /// after its semi-sync timeout).
    async fn sync_status(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<Option<String>>;
}

/// A primary that takes no more writes while this lives.
pub struct Fence {
    /// How far it wrote (an engine-specific position: a GTID list).
    pub position: String,
    /// Keeps the fence up (a session holding a lock).
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

/// Exact lines dropped from the start of a dump, up to the first line that begins
/// with `header_ends` (only the header: never a line of table data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSkips {
    /// Lines to drop, without their newline.
    pub lines: &'static [&'static str],
    /// Where the header ends.
    pub header_ends: &'static str,
}

/// The engine module for a kind.
pub fn engine(kind: EngineKind) -> &'static dyn Engine {
    match kind {
        EngineKind::Postgres => &Postgres,
        EngineKind::Mariadb => &Mariadb,
    }
}

/// Refuses a memory setting above `fraction` of the instance's memory: the engine
/// would fail to allocate it at start. `base` is the setting's unit (`8kB`, `B`).
pub(crate) fn fits_in_memory(
    params: &std::collections::BTreeMap<String, String>,
    key: &str,
    base: &str,
    fraction: f64,
    memory_mib: u64,
) -> std::result::Result<(), String> {
    let Some(v) = params.get(key) else {
        return Ok(());
    };
    let bytes = berth_model::params::bytes_value(v, base).unwrap_or(0.0);
    let limit_mib = (memory_mib as f64 * fraction) as u64;
    if bytes > limit_mib as f64 * 1024.0 * 1024.0 {
        return Err(format!(
            "{key} = {v} would not fit an instance with {memory_mib}MiB of memory (at most {}%, {limit_mib}MiB)",
            (fraction * 100.0) as u64
        ));
    }
    Ok(())
}

/// `sync -f DIR`: one syncfs of the volume holding `dir`, cheaper than fsyncing each
/// file a bootstrap or clone wrote.
pub(crate) fn sync_command(dir: &Path) -> CommandSpec {
    CommandSpec {
        program: "sync".into(),
        args: vec!["-f".into(), dir.display().to_string()],
        env: vec![],
        stdin: None,
    }
}

pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| EngineError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Where and as whom the control plane reaches an engine for administration.
#[derive(Clone, Debug)]
pub struct AdminTarget {
    /// Host (the member's address on its network).
    pub host: String,
    /// The engine's port.
    pub port: u16,
    /// Superuser.
    pub user: String,
    /// Superuser's password.
    pub password: Secret,
    /// The CA (PEM) the engine's certificate must chain to.
    pub ca_pem: String,
    /// The name the certificate must carry (the connection goes to `host`, an address).
    pub server_name: String,
}

/// A user and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserInfo {
    /// Name.
    #[schema(value_type = String)]
    pub name: berth_model::account::UserName,
    /// Access, per database.
    pub grants: Vec<berth_model::account::Grant>,
}

/// Databases and users of one instance, as the engine has them.
#[async_trait::async_trait]
pub trait Admin: Send {
    /// User databases, by name.
    async fn list_databases(&mut self) -> Result<Vec<String>>;
    /// Creates a database.
    async fn create_database(&mut self, name: &berth_model::account::DbName) -> Result<()>;
    /// Drops a database, disconnecting its sessions.
    async fn drop_database(&mut self, name: &berth_model::account::DbName) -> Result<()>;
    /// Login users (not the superuser), by name, with their grants.
    async fn list_users(&mut self) -> Result<Vec<UserInfo>>;
    /// Creates a user with a password and grants.
    async fn create_user(
        &mut self,
        name: &berth_model::account::UserName,
        password: &Secret,
        grants: &[berth_model::account::Grant],
    ) -> Result<()>;
    /// Drops a user.
    async fn drop_user(&mut self, name: &berth_model::account::UserName) -> Result<()>;
    /// Sets a user's password.
    async fn set_password(
        &mut self,
        name: &berth_model::account::UserName,
        password: &Secret,
    ) -> Result<()>;
}

//! The instance commands, each top-level (`berth create`, `berth list`, …):
//! create, list, show, start/stop/restart, resize, delete, and the ways in:
//! credentials, ca, connect.

use crate::env::{follow, Env};
use berth_cli::CreateArgs;

#[derive(clap::Args)]
pub struct CreateCmd {
    /// Instance name.
    name: String,
    /// Engine.
    #[arg(long)]
    engine: String,
    /// Engine major version (default: newest).
    #[arg(long)]
    version: Option<String>,
    /// CPU cores, like 0.5 or 2.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory, like 512MiB or 2GiB.
    #[arg(long)]
    memory: Option<String>,
    /// Storage, like 10GiB.
    #[arg(long)]
    storage: Option<String>,
    /// Parameter group to attach.
    #[arg(long)]
    params: Option<String>,
    /// Host port of the endpoint, fixed for the instance's life (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Members: a primary and N-1 replicas, each its own container and volume (1-5).
    #[arg(long)]
    members: Option<u16>,
    /// Replicas that must have a commit before it returns (default 0: asynchronous).
    #[arg(long)]
    sync: Option<u8>,
    /// While a synchronous replica is missing: strict (commits wait) or available.
    #[arg(long, value_parser = ["strict", "available"])]
    sync_mode: Option<String>,
    /// A replica further behind than this gets no new read-only connections (like
    /// 10s, the default, or 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_lag: Option<std::time::Duration>,
    /// When the primary fails: auto (the default) promotes the best replica;
    /// manual restarts the primary in place, and only `berth failover` promotes.
    #[arg(long, value_parser = ["auto", "manual"])]
    failover: Option<String>,
    /// Asynchronous instances: how far behind the primary a replica may be and still
    /// be promoted automatically, like 512kB or 4MB (default 1MB; binary units).
    #[arg(long, value_name = "SIZE")]
    max_failover_lag: Option<String>,
    /// When to back up: a cron expression, five fields, UTC, or `off` (default: the
    /// server's `--default-backup-schedule`); `berth backup schedule` changes it later.
    #[arg(long, value_name = "CRON")]
    backup_schedule: Option<String>,
    /// Keep backups taken within this many days (default: no limit by age).
    #[arg(long)]
    keep_days: Option<u32>,
    /// Keep this many newest complete backups (default: no limit by count).
    #[arg(long)]
    keep_count: Option<u32>,
    /// Verify backups by restoring them: after-each, weekly or off (default: the
    /// server's `--default-verify`).
    #[arg(long, value_parser = ["after-each", "weekly", "off"])]
    verify: Option<String>,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn create(c: CreateCmd, env: &Env) -> anyhow::Result<u8> {
    let args = CreateArgs {
        name: c.name,
        engine: c.engine,
        version: c.version,
        cpus: c.cpus,
        memory: c.memory,
        storage: c.storage,
        params: c.params,
        port: c.port,
        members: c.members,
        sync: c.sync,
        sync_mode: c.sync_mode,
        max_lag_ms: c.max_lag.map(|d| d.as_millis() as u64),
        failover: c.failover,
        max_failover_lag: c.max_failover_lag,
        backup_schedule: c.backup_schedule,
        keep_days: c.keep_days,
        keep_count: c.keep_count,
        verify: c.verify,
    };
    berth_cli::create(&env.client()?, args, follow(c.no_wait), env.fmt).await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct ListCmd {}

pub async fn list(_: ListCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::list(&env.client()?, env.fmt).await?;
    Ok(0)
}

/// An instance named on its own: `show`, `credentials`.
#[derive(clap::Args)]
pub struct NameCmd {
    /// Instance name.
    name: String,
}

pub async fn show(c: NameCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::show(&env.client()?, &c.name, env.fmt).await?;
    Ok(0)
}

/// `start`, `stop` and `restart`: an instance and whether to wait.
#[derive(clap::Args)]
pub struct ActionCmd {
    /// Instance name.
    name: String,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

/// `verb` is the API action: `start`, `stop` or `restart`.
pub async fn action(c: ActionCmd, verb: &str, env: &Env) -> anyhow::Result<u8> {
    berth_cli::action(&env.client()?, &c.name, verb, follow(c.no_wait), env.fmt).await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct ResizeCmd {
    /// Instance name.
    name: String,
    /// CPU cores, like 0.5 or 2.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory, like 512MiB or 2GiB.
    #[arg(long)]
    memory: Option<String>,
    /// Storage (only where the volume driver can grow it).
    #[arg(long)]
    storage: Option<String>,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn resize(c: ResizeCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::resize(
        &env.client()?,
        &c.name,
        c.cpus,
        c.memory,
        c.storage,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct DeleteCmd {
    /// Instance name.
    name: String,
    /// Also remove the data volume.
    #[arg(long)]
    purge: bool,
    /// Delete without taking a final backup first (by default one is taken, and
    /// kept after the instance: `berth backup list NAME`).
    #[arg(long)]
    skip_final_backup: bool,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn delete(c: DeleteCmd, env: &Env) -> anyhow::Result<u8> {
    let client = env.client()?;
    berth_cli::delete(
        &client,
        &c.name,
        c.purge,
        c.skip_final_backup,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

pub async fn credentials(c: NameCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::credentials(&env.client()?, &c.name, env.fmt).await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct CaCmd {}

pub async fn ca(_: CaCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::ca(&env.client()?, env.fmt).await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct ConnectCmd {
    /// Instance name.
    name: String,
    /// Arguments passed on to the client (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Exits with the client's own exit code.
pub async fn connect(c: ConnectCmd, env: &Env) -> anyhow::Result<u8> {
    let code = berth_cli::connect(&env.client()?, &c.name, &c.args).await?;
    Ok(u8::try_from(code).unwrap_or(1))
}

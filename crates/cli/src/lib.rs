//! The CLI's work: a client of the REST API, and how results are shown.
//! Argument parsing lives in the `berth` binary (only it knows clap).

mod accounts;
pub mod alarms;
pub mod backups;
mod client;
pub mod events;
mod login;
pub mod metrics;
mod output;
pub mod params;
mod tasks;
mod tls;
mod wait;

pub use accounts::{db_create, db_drop, db_list, user_create, user_drop, user_list, user_password};
pub use client::{default_config_path, Client, ClientConfig};
pub use login::login;
pub use output::Format;
pub use tasks::{task, task_cancel, tasks};
pub use tls::{ca, connect, credentials};

use berth_server::{InstanceView, TaskView};
use serde_json::Value;

/// CLI errors; each is printed as one line and makes the process exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with a problem.
    #[error("{detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Problem type.
        kind: String,
        /// What to do.
        detail: String,
    },
    /// The API could not be reached.
    #[error("cannot reach Berth at {url}: {reason}; is `berth serve` running? (set BERTH_URL to point elsewhere)")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// No URL or token configured.
    #[error("{0}")]
    Config(String),
    /// A task failed.
    #[error("task {id} failed: {error}")]
    TaskFailed {
        /// The task.
        id: String,
        /// Why.
        error: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Result of CLI commands.
pub type Result<T> = std::result::Result<T, CliError>;

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    /// Name.
    pub name: String,
    /// Engine.
    pub engine: String,
    /// Version.
    pub version: Option<String>,
    /// Cores.
    pub cpus: Option<String>,
    /// Memory.
    pub memory: Option<String>,
    /// Storage.
    pub storage: Option<String>,
    /// Parameter group.
    pub params: Option<String>,
    /// Host port of the endpoint.
    pub port: Option<u16>,
    /// Members (a primary and replicas).
    pub members: Option<u16>,
    /// Replicas that confirm a commit.
    pub sync: Option<u8>,
    /// `strict` or `available`.
    pub sync_mode: Option<String>,
    /// Lag beyond which a replica gets no new read-only connections, in ms.
    pub max_lag_ms: Option<u64>,
    /// `auto` or `manual`.
    pub failover: Option<String>,
    /// How far behind a replica may be and still be promoted, like `4MB` (checked
    /// by the server, which names the flag when it refuses).
    pub max_failover_lag: Option<String>,
    /// The backup policy to start with: cron schedule or `off`.
    pub backup_schedule: Option<String>,
    /// Keep backups this many days.
    pub keep_days: Option<u32>,
    /// Keep this many newest complete backups.
    pub keep_count: Option<u32>,
    /// Verify backups by restoring them: `after-each`, `weekly` or `off`.
    pub verify: Option<String>,
}

/// Whether to follow a task to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Wait, with progress.
    Wait,
    /// Return at once.
    NoWait,
}

fn accepted_task(v: &Value) -> Result<TaskView> {
    serde_json::from_value(v["task"].clone())
        .map_err(|e| CliError::Other(format!("unexpected answer: {e}")))
}

pub(crate) async fn finish_accepted(
    client: &Client,
    v: Value,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let task = accepted_task(&v)?;
    if follow == Follow::NoWait {
        return output::accepted(&v, &task, fmt);
    }
    let done = wait::follow(client, &task, fmt).await?;
    if fmt == Format::Json {
        output::print_json(&serde_json::to_value(&done).unwrap_or_default());
    }
    if done.state == berth_model::TaskState::Failed {
        return Err(CliError::TaskFailed {
            id: done.id.to_string(),
            error: done.error.unwrap_or_default(),
        });
    }
    if fmt == Format::Table && task.kind == berth_model::TaskKind::Create {
        let inst: InstanceView = client
            .get(&format!("/v1/instances/{}", task.instance))
            .await?;
        output::instance(&inst, fmt)?;
    }
    Ok(())
}

/// `berth create`.
pub async fn create(client: &Client, args: CreateArgs, follow: Follow, fmt: Format) -> Result<()> {
    let mut body = serde_json::json!({"name": args.name, "engine": args.engine});
    for (k, v) in [
        ("version", args.version),
        ("cpus", args.cpus),
        ("memory", args.memory),
        ("storage", args.storage),
        ("params", args.params),
        ("failover", args.failover),
        ("max_failover_lag", args.max_failover_lag),
    ] {
        if let Some(v) = v {
            body[k] = Value::String(v);
        }
    }
    if let Some(p) = args.port {
        body["port"] = Value::from(p);
    }
    if let Some(m) = args.members {
        body["members"] = Value::from(m);
    }
    if let Some(k) = args.sync {
        body["sync"] = Value::from(k);
    }
    if let Some(m) = args.sync_mode {
        body["sync_mode"] = Value::String(m);
    }
    if let Some(ms) = args.max_lag_ms {
        body["max_lag_ms"] = Value::from(ms);
    }
    let mut policy = serde_json::Map::new();
    if let Some(c) = args.backup_schedule {
        policy.insert("schedule".into(), Value::String(c));
    }
    if let Some(d) = args.keep_days {
        policy.insert("keep_days".into(), Value::from(d));
    }
    if let Some(n) = args.keep_count {
        policy.insert("keep_count".into(), Value::from(n));
    }
    if let Some(v) = args.verify {
        policy.insert("verify".into(), Value::String(v));
    }
    if !policy.is_empty() {
        body["backup_policy"] = Value::Object(policy);
    }
    let v: Value = client.post("/v1/instances", &body).await?;
    finish_accepted(client, v, follow, fmt).await
}

/// `berth scale` and `berth switchover`: `POST /v1/instances/{name}/{action}`,
/// followed, then the instance shown.
pub async fn members_change(
    client: &Client,
    name: &str,
    action: &str,
    body: Value,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .post(&format!("/v1/instances/{name}/{action}"), &body)
        .await?;
    finish_and_show(client, v, follow, fmt).await
}

/// `berth failover pause|resume NAME`: `action` is `pause` or `resume`; shows the
/// instance as it now is.
pub async fn failover_pause(client: &Client, name: &str, action: &str, fmt: Format) -> Result<()> {
    let inst: InstanceView = client
        .post(
            &format!("/v1/instances/{name}/failover/{action}"),
            &serde_json::json!({}),
        )
        .await?;
    output::instance(&inst, fmt)
}

/// Follows an accepted change, then shows the instance as it now is.
async fn finish_and_show(client: &Client, v: Value, follow: Follow, fmt: Format) -> Result<()> {
    let task = accepted_task(&v)?;
    finish_accepted(client, v, follow, fmt).await?;
    if fmt == Format::Table && follow == Follow::Wait {
        let inst: InstanceView = client
            .get(&format!("/v1/instances/{}", task.instance))
            .await?;
        output::instance(&inst, fmt)?;
    }
    Ok(())
}

/// `berth start|stop|restart`.
pub async fn action(
    client: &Client,
    name: &str,
    action: &str,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .post(
            &format!("/v1/instances/{name}/{action}"),
            &serde_json::json!({}),
        )
        .await?;
    finish_accepted(client, v, follow, fmt).await
}

/// `berth resize`.
pub async fn resize(
    client: &Client,
    name: &str,
    cpus: Option<String>,
    memory: Option<String>,
    storage: Option<String>,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let mut body = serde_json::json!({});
    for (k, v) in [("cpus", cpus), ("memory", memory), ("storage", storage)] {
        if let Some(v) = v {
            body[k] = Value::String(v);
        }
    }
    let v: Value = client
        .patch(&format!("/v1/instances/{name}"), &body)
        .await?;
    finish_and_show(client, v, follow, fmt).await
}

/// `berth delete`.
pub async fn delete(
    client: &Client,
    name: &str,
    purge: bool,
    skip_final_backup: bool,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .delete(&format!(
            "/v1/instances/{name}?purge={purge}&skip_final_backup={skip_final_backup}"
        ))
        .await?;
    finish_accepted(client, v, follow, fmt).await
}

/// `berth list`.
pub async fn list(client: &Client, fmt: Format) -> Result<()> {
    let v: Vec<InstanceView> = client.get("/v1/instances").await?;
    output::instances(&v, fmt)
}

/// `berth show`.
pub async fn show(client: &Client, name: &str, fmt: Format) -> Result<()> {
    let v: InstanceView = client.get(&format!("/v1/instances/{name}")).await?;
    output::instance(&v, fmt)
}

//! Members: `berth scale NAME [--members N] [--sync K] [--sync-mode M] [--purge]`,
//! `berth switchover NAME [--to MEMBER]` and `berth failover NAME [--to MEMBER]
//! [--accept-data-loss]`.

use crate::env::{follow, Env};

#[derive(clap::Args)]
pub struct ScaleCmd {
    /// Instance name.
    name: String,
    /// Members afterwards (1-5): replicas are added (cloned from the primary) or the
    /// highest removed; never the primary.
    #[arg(long)]
    members: Option<u16>,
    /// Replicas that must have a commit before it returns.
    #[arg(long)]
    sync: Option<u8>,
    /// While a synchronous replica is missing: strict (commits wait) or available.
    #[arg(long, value_parser = ["strict", "available"])]
    sync_mode: Option<String>,
    /// Also remove the volumes of removed replicas.
    #[arg(long)]
    purge: bool,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn scale(c: ScaleCmd, env: &Env) -> anyhow::Result<u8> {
    let mut body = serde_json::json!({ "purge": c.purge });
    if let Some(m) = c.members {
        body["members"] = m.into();
    }
    if let Some(k) = c.sync {
        body["sync"] = k.into();
    }
    if let Some(m) = c.sync_mode {
        body["sync_mode"] = m.into();
    }
    berth_cli::members_change(
        &env.client()?,
        &c.name,
        "scale",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct SwitchoverCmd {
    /// Instance name.
    name: String,
    /// The replica that becomes the primary (`NAME-N` as `show` lists it, or N);
    /// default: a ready replica.
    #[arg(long)]
    to: Option<String>,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn switchover(c: SwitchoverCmd, env: &Env) -> anyhow::Result<u8> {
    let body = match c.to {
        Some(to) => serde_json::json!({ "to": to }),
        None => serde_json::json!({}),
    };
    berth_cli::members_change(
        &env.client()?,
        &c.name,
        "switchover",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct FailoverCmd {
    /// Instance name.
    name: String,
    /// The replica to promote (`NAME-N` as `show` lists it, or N); default: the most
    /// advanced one that has every acknowledged commit.
    #[arg(long)]
    to: Option<String>,
    /// Promote even a replica that may lack acknowledged commits.
    #[arg(long)]
    accept_data_loss: bool,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

pub async fn failover(c: FailoverCmd, env: &Env) -> anyhow::Result<u8> {
    let mut body = serde_json::json!({ "accept_data_loss": c.accept_data_loss });
    if let Some(to) = c.to {
        body["to"] = to.into();
    }
    berth_cli::members_change(
        &env.client()?,
        &c.name,
        "failover",
        body,
        follow(c.no_wait),
        env.fmt,
    )
    .await?;
    Ok(0)
}

//! `berth tasks` (recent tasks) and `berth task ID` (one task, `--wait` to follow it).

use crate::env::{follow, Env};

#[derive(clap::Args)]
pub struct TasksCmd {
    /// Only this instance's.
    #[arg(long)]
    instance: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<u32>,
}

pub async fn list(c: TasksCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::tasks(&env.client()?, c.instance.as_deref(), c.limit, env.fmt).await?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct TaskCmd {
    /// Task id.
    id: String,
    /// Follow until it finishes.
    #[arg(long)]
    wait: bool,
}

pub async fn show(c: TaskCmd, env: &Env) -> anyhow::Result<u8> {
    berth_cli::task(&env.client()?, &c.id, follow(!c.wait), env.fmt).await?;
    Ok(0)
}

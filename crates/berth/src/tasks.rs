//! `berth tasks` (recent tasks), `berth task ID` (one task, `--wait` to follow it)
//! and `berth task cancel ID`.

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
#[command(args_conflicts_with_subcommands = true)]
pub struct TaskCmd {
    #[command(subcommand)]
    action: Option<TaskAction>,
    /// Task id.
    #[arg(required = true)]
    id: Option<String>,
    /// Follow until it finishes.
    #[arg(long)]
    wait: bool,
}

#[derive(clap::Subcommand)]
enum TaskAction {
    /// Stop a resize, parameter change or backup that is under way (the task ends
    /// failed, saying it was cancelled; steps already done stay done).
    Cancel {
        /// Task id.
        id: String,
        /// Follow it until it has ended.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn show(c: TaskCmd, env: &Env) -> anyhow::Result<u8> {
    let client = env.client()?;
    match (c.action, c.id) {
        (Some(TaskAction::Cancel { id, wait }), _) => {
            berth_cli::task_cancel(&client, &id, follow(!wait), env.fmt).await?;
        }
        (None, Some(id)) => berth_cli::task(&client, &id, follow(!c.wait), env.fmt).await?,
        (None, None) => anyhow::bail!("give a task id: `berth task ID`, or `berth task cancel ID`"),
    }
    Ok(0)
}

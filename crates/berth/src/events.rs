//! `berth events`: its arguments and dispatch.

use crate::env::Env;

/// `berth events` arguments.
#[derive(clap::Args)]
pub(crate) struct EventsArgs {
    /// Only this instance's events (a deleted instance's too).
    name: Option<String>,
    /// Only events since this age (`10m`, `2h`, `7d`) or RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Keep printing new events as they happen (one JSON object per line with `-o json`).
    #[arg(long, short)]
    follow: bool,
}

/// Runs `berth events`.
pub(crate) async fn run(args: EventsArgs, env: &Env) -> anyhow::Result<u8> {
    let args = berth_cli::events::EventsArgs {
        instance: args.name,
        since: args.since,
        follow: args.follow,
    };
    berth_cli::events::events(&env.client()?, &args, env.fmt).await?;
    Ok(0)
}

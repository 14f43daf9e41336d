//! `berth events`: its arguments and dispatch.

use berth_cli::{Client, Format};

/// Show the event log: what changed, in order.
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
pub(crate) async fn run(client: &Client, args: EventsArgs, fmt: Format) -> anyhow::Result<u8> {
    let args = berth_cli::events::EventsArgs {
        instance: args.name,
        since: args.since,
        follow: args.follow,
    };
    berth_cli::events::events(client, &args, fmt).await?;
    Ok(0)
}

//! `berth metrics`: its arguments and dispatch.

use crate::env::Env;

/// `berth metrics` arguments.
#[derive(clap::Args)]
pub(crate) struct MetricsArgs {
    /// Instance name.
    name: String,
    /// One metric (like tps, connections, cpu_percent); all when absent.
    #[arg(long)]
    metric: Option<String>,
    /// How far back: an age like 10m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Width of a point, like 10s, 1m, 1h (default: about 120 points).
    #[arg(long)]
    step: Option<String>,
}

/// Runs `berth metrics`.
pub(crate) async fn run(args: MetricsArgs, env: &Env) -> anyhow::Result<u8> {
    let args = berth_cli::metrics::MetricsArgs {
        instance: args.name,
        metric: args.metric,
        since: Some(args.since),
        step: args.step,
    };
    berth_cli::metrics::metrics(&env.client()?, &args, env.fmt).await?;
    Ok(0)
}

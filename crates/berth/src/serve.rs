//! `berth serve`: run the control plane. Also the shared process setup of the
//! long-running modes (`init_tracing`) and the default image cache, which
//! `berth image build` uses too.

use crate::env::Env;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where the store and admin token live.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API address.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Host name clients use to reach instances.
    #[arg(long, env = "BERTH_ENDPOINT_HOST", default_value = "127.0.0.1")]
    endpoint_host: String,
    /// Host address instance ports are published on.
    #[arg(long, env = "BERTH_PUBLISH_ADDRESS", default_value = "0.0.0.0")]
    publish_address: String,
    /// How often to compare the store with Docker.
    #[arg(long, env = "BERTH_RECONCILE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    reconcile_interval: std::time::Duration,
    /// Root file system cache for image builds.
    #[arg(long, env = "BERTH_IMAGE_CACHE")]
    image_cache: Option<PathBuf>,
    /// Use a registry image for an engine version instead of building one, as
    /// ENGINE:VERSION=IMAGE (repeatable), like postgres:15=postgres:15-bookworm.
    #[arg(long = "image", env = "BERTH_IMAGES", value_delimiter = ',')]
    images: Vec<berth_server::UpstreamImage>,
    /// Give up on an engine image build (or pull) that takes longer than this.
    #[arg(long, env = "BERTH_IMAGE_BUILD_TIMEOUT", default_value = "20m", value_parser = humantime::parse_duration)]
    image_build_timeout: std::time::Duration,
    /// How long the event log keeps events (at least 1d; a shorter one is refused).
    #[arg(long, env = "BERTH_EVENT_RETENTION", default_value = "30d", value_parser = berth_model::event::parse_retention)]
    event_retention: std::time::Duration,
    /// How often every running member's metrics are sampled into the history.
    #[arg(long, env = "BERTH_SAMPLE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    sample_interval: std::time::Duration,
    /// The metric history's resolutions, STEP:KEPT finest first, each step a whole
    /// multiple of the one before.
    #[arg(long, env = "BERTH_METRIC_RESOLUTIONS", default_value = "10s:1d,1m:15d,5m:63d,1h:456d", value_parser = berth_model::metrics::rollup::parse_tiers)]
    metric_resolutions: ::std::vec::Vec<berth_model::metrics::rollup::Tier>,
    /// Point the CLI configuration at this installation even if one exists already
    /// (by default it is written only when there is none).
    #[arg(long)]
    write_cli_config: bool,
}

pub async fn run(args: ServeArgs, env: &Env) -> anyhow::Result<u8> {
    init_tracing();
    let data_dir = args
        .data_dir
        .or_else(|| dirs::data_dir().map(|d| d.join("berth")))
        .context("no data directory: pass --data-dir")?;
    let config = berth_server::Config {
        data_dir,
        listen: args.listen,
        endpoint_host: args.endpoint_host,
        publish_address: args.publish_address,
        cli_config: env.config.clone().or_else(berth_cli::default_config_path),
        write_cli_config: args.write_cli_config,
        image_build_timeout: args.image_build_timeout,
        event_retention: args.event_retention,
        image_cache: args.image_cache.unwrap_or_else(default_image_cache),
        reconcile_interval: args.reconcile_interval,
        agent_binary: std::env::current_exe().context("finding the berth binary")?,
        upstream_images: args.images,
        monitor: berth_server::MonitorConfig {
            sample_interval: args.sample_interval,
            tiers: args.metric_resolutions,
        },
    };
    berth_server::serve(config).await?;
    Ok(0)
}

/// Where engine root file systems are cached when no `--image-cache` is given.
pub fn default_image_cache() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("berth")
        .join("images")
}

/// Logs to stderr, filtered by `BERTH_LOG` (default `info`); colour only on a terminal.
/// Only the long-running modes log: the CLI commands report through their output.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

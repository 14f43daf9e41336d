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
    /// Where backups are kept: `local` (under the data directory) or
    /// `s3://BUCKET/PREFIX` on an S3-compatible store. S3 credentials come from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) or
    /// --s3-credentials-file; the store must answer at start.
    #[arg(long, env = "BERTH_BACKUP_STORE", default_value = "local")]
    backup_store: String,
    /// The S3 endpoint URL, for a store that is not AWS (like http://127.0.0.1:9000).
    #[arg(long, env = "BERTH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "BERTH_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Address buckets as ENDPOINT/BUCKET (path style), as most self-hosted S3
    /// servers want; the default with --s3-endpoint.
    #[arg(long, env = "BERTH_S3_PATH_STYLE")]
    s3_path_style: Option<bool>,
    /// A file with aws_access_key_id and aws_secret_access_key (AWS credentials
    /// file format, [default] section) instead of the environment.
    #[arg(long, env = "BERTH_S3_CREDENTIALS_FILE")]
    s3_credentials_file: Option<PathBuf>,
    /// The backup schedule of an instance until one is set (`berth backup
    /// schedule`): a cron expression (five fields, UTC), or `off`.
    #[arg(
        long,
        env = "BERTH_DEFAULT_BACKUP_SCHEDULE",
        default_value = "0 0 * * *"
    )]
    default_backup_schedule: String,
    /// How an instance's backups are verified by restoring them, until one is set
    /// (`berth backup schedule --verify`): after-each, weekly or off.
    #[arg(long, env = "BERTH_DEFAULT_VERIFY", default_value = "weekly")]
    default_verify: berth_model::verify::VerifyPolicy,
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
    /// `off`: a failed primary is never stopped through Docker before a failover;
    /// its lease alone fences it (for tests that prove the lease suffices).
    #[arg(long, hide = true, default_value = "on", value_parser = ["on", "off"])]
    docker_fence: String,
    /// Where leader leases live: unset, `berth serve` grants them itself; with
    /// `etcd://host:port,…` the members' agents hold them in etcd and elect a new
    /// primary among themselves, so failover works while `berth serve` is down. The
    /// address must be reachable from containers (not 127.0.0.1).
    #[arg(long, env = "BERTH_LEASE_STORE")]
    lease_store: Option<String>,
    /// The SMTP relay alarm emails go out through: `smtp://HOST:PORT` (add
    /// `?tls=required` for STARTTLS) or `smtps://HOST:PORT`. Its account, if it
    /// wants one, comes from BERTH_SMTP_USERNAME and BERTH_SMTP_PASSWORD.
    #[arg(long, env = "BERTH_SMTP")]
    smtp: Option<String>,
    /// Who alarm emails are from, like `Berth <berth@example.com>`.
    #[arg(long, env = "BERTH_SMTP_FROM", requires = "smtp")]
    smtp_from: Option<String>,
}

pub async fn run(args: ServeArgs, env: &Env) -> anyhow::Result<u8> {
    init_tracing();
    let data_dir = args
        .data_dir
        .or_else(|| dirs::data_dir().map(|d| d.join("berth")))
        .context("no data directory: pass --data-dir")?;
    let backup_store = backup_store(
        &args.backup_store,
        args.s3_endpoint,
        args.s3_region,
        args.s3_path_style,
        args.s3_credentials_file.as_deref(),
    )?;
    let smtp = match &args.smtp {
        Some(url) => Some(
            berth_server::SmtpConfig::parse(
                url,
                args.smtp_from.as_deref(),
                std::env::var("BERTH_SMTP_USERNAME").ok(),
                std::env::var("BERTH_SMTP_PASSWORD").ok(),
            )
            .map_err(|e| anyhow::anyhow!("--smtp: {e}"))?,
        ),
        None => None,
    };
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
        backup_store,
        default_backup_schedule: args.default_backup_schedule,
        default_verify: args.default_verify,
        monitor: berth_server::MonitorConfig {
            sample_interval: args.sample_interval,
            tiers: args.metric_resolutions,
        },
        fence_through_docker: args.docker_fence == "on",
        lease_store: args.lease_store,
        smtp,
    };
    berth_server::serve(config).await?;
    Ok(0)
}

/// `--backup-store` with its S3 settings; S3-only flags without an S3 store are refused.
fn backup_store(
    location: &str,
    endpoint: Option<String>,
    region: String,
    path_style: Option<bool>,
    credentials_file: Option<&std::path::Path>,
) -> anyhow::Result<berth_server::BackupStoreConfig> {
    use berth_server::{BackupStoreConfig, S3Credentials};
    let credentials = || match credentials_file {
        Some(path) => S3Credentials::from_file(path),
        None => S3Credentials::from_env(),
    };
    let mut config = BackupStoreConfig::parse_location(location, credentials)
        .map_err(|e| anyhow::anyhow!("--backup-store: {e}"))?;
    match &mut config {
        BackupStoreConfig::S3(s3) => {
            s3.path_style = path_style.unwrap_or(endpoint.is_some());
            s3.endpoint = endpoint;
            s3.region = region;
        }
        BackupStoreConfig::Local => {
            if endpoint.is_some() || credentials_file.is_some() {
                anyhow::bail!(
                    "--s3-endpoint and --s3-credentials-file need --backup-store s3://BUCKET/PREFIX"
                );
            }
        }
    }
    Ok(config)
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

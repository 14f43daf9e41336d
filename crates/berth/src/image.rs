//! `berth image build`: build (or find cached) an engine image from Debian
//! packages and read its settings catalog, without a running control plane.

use crate::env::Env;
use crate::serve::default_image_cache;
use anyhow::Context;
use berth_cli::Format;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build (or find cached) the image of an engine version.
    Build {
        /// Engine.
        engine: String,
        /// Version (default: newest).
        #[arg(long)]
        version: Option<String>,
        /// Root file system cache.
        #[arg(long, env = "BERTH_IMAGE_CACHE")]
        cache: Option<PathBuf>,
        /// Give up on a build that takes longer than this.
        #[arg(long, env = "BERTH_IMAGE_BUILD_TIMEOUT", default_value = "20m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

pub async fn run(args: ImageArgs, env: &Env) -> anyhow::Result<u8> {
    match args.command {
        ImageCommand::Build {
            engine,
            version,
            cache,
            timeout,
        } => build(&engine, version, cache, timeout, env.fmt).await,
    }
}

async fn build(
    engine: &str,
    version: Option<String>,
    cache: Option<PathBuf>,
    timeout: std::time::Duration,
    fmt: Format,
) -> anyhow::Result<u8> {
    let kind: berth_model::EngineKind = engine.parse()?;
    let version = match version {
        Some(v) => kind.version(&v)?,
        None => kind.default_version(),
    };
    let runtime = berth_runtime::Runtime::connect(berth_model::SiteId::new_random()).await?;
    let builder =
        berth_runtime::image::ImageBuilder::new(cache.unwrap_or_else(default_image_cache), timeout);
    let started = std::time::Instant::now();
    let (tag, built) = builder
        .ensure(
            &runtime,
            berth_engine::engine(kind),
            &version,
            &|line: &str| eprintln!("  {line}"),
        )
        .await?;
    // The settings catalog is read from the engine in the image, once.
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let sha = berth_server::hash_binary(&exe).context("hashing the berth binary")?;
    let (agent_volume, _) = runtime.ensure_agent_volume(&exe, &sha, &tag).await?;
    let catalog = builder
        .ensure_catalog(&runtime, &tag, &agent_volume, kind, &version)
        .await?;
    let verb = if built { "built" } else { "cached" };
    let seconds = started.elapsed().as_secs_f64();
    match fmt {
        Format::Json => println!(
            "{}",
            serde_json::json!({"image": tag, "built": built, "seconds": seconds, "catalog_settings": catalog.params.len()})
        ),
        Format::Table => println!(
            "{tag} ({verb}, {seconds:.1}s; catalog of {} settings)",
            catalog.params.len()
        ),
    }
    Ok(0)
}

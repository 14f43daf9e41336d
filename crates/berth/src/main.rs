//! `berth`: one binary for the control plane (`serve`), the agent inside every
//! member container (`agent`), the image builder (`image build`) and the CLI.
//! This file only parses arguments and dispatches.

mod backups;

use anyhow::Context;
use berth_cli::{Client, CreateArgs, Follow, Format};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted database service on Docker"
)]
struct Cli {
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// Control plane URL (default: from the CLI config, else http://127.0.0.1:7070).
    #[arg(long, global = true, env = "BERTH_URL")]
    url: Option<String>,
    /// API token (default: from the CLI config).
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CLI config file (default: ~/.config/berth/config.json).
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Run as a member container's agent (PID 1). Not for interactive use.
    Agent {
        /// `catalog`: print the engine's settings catalog as JSON and exit.
        mode: Option<String>,
    },
    /// Build engine images from Debian packages (no registry needed).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Create an instance.
    Create {
        /// Instance name.
        name: String,
        /// Engine.
        #[arg(long)]
        engine: String,
        /// Engine major version (default: newest).
        #[arg(long)]
        version: Option<String>,
        /// CPU cores, like 0.5 or 2.
        #[arg(long)]
        cpus: Option<String>,
        /// Memory, like 512MiB or 2GiB.
        #[arg(long)]
        memory: Option<String>,
        /// Storage, like 10GiB.
        #[arg(long)]
        storage: Option<String>,
        /// Parameter group to attach.
        #[arg(long)]
        params: Option<String>,
        /// Host port of the endpoint, fixed for the instance's life (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Return as soon as the task is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// List instances.
    List,
    /// Show an instance.
    Show {
        /// Instance name.
        name: String,
    },
    /// Start a stopped instance.
    Start(ActionArgs),
    /// Stop an instance (its data stays).
    Stop(ActionArgs),
    /// Restart an instance.
    Restart(ActionArgs),
    /// Change CPU and memory of a running instance, without a restart.
    Resize {
        /// Instance name.
        name: String,
        /// CPU cores, like 0.5 or 2.
        #[arg(long)]
        cpus: Option<String>,
        /// Memory, like 512MiB or 2GiB.
        #[arg(long)]
        memory: Option<String>,
        /// Storage (only where the volume driver can grow it).
        #[arg(long)]
        storage: Option<String>,
        /// Return as soon as the task is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an instance; its data volume is kept unless --purge.
    Delete {
        /// Instance name.
        name: String,
        /// Also remove the data volume.
        #[arg(long)]
        purge: bool,
        /// Return as soon as the task is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the superuser's credentials and a connection URI.
    Credentials {
        /// Instance name.
        name: String,
    },
    /// Print Berth's CA certificate (PEM): clients verify instances with it.
    Ca,
    /// Open the engine's interactive client on an instance.
    Connect {
        /// Instance name.
        name: String,
        /// Arguments passed on to the client (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Backups: take, list, show, delete.
    Backup {
        #[command(subcommand)]
        command: backups::BackupCommand,
    },
    /// Restore a backup into a new instance.
    Restore(backups::RestoreArgs),
    /// Parameter groups: named engine settings, validated against the engine's catalog.
    Params {
        #[command(subcommand)]
        command: ParamsCommand,
    },
    /// Databases in an instance.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Users in an instance.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Point the CLI at an installation: checks the URL and token, then writes the
    /// CLI configuration (`berth serve` writes it only when there is none).
    /// Give the URL with the global `--url` (like http://127.0.0.1:7070).
    Login {
        /// File holding the API token (the admin token is in <data-dir>/admin-token).
        #[arg(long)]
        token_file: PathBuf,
    },
    /// List recent tasks.
    Tasks {
        /// Only this instance's.
        #[arg(long)]
        instance: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a task; --wait follows it to its end.
    Task {
        /// Task id.
        id: String,
        /// Follow until it finishes.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(clap::Args)]
struct ActionArgs {
    /// Instance name.
    name: String,
    /// Return as soon as the task is accepted.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand)]
enum ParamsCommand {
    /// List parameter groups.
    List,
    /// Create an empty parameter group for an engine version.
    Create {
        /// Group name.
        group: String,
        /// Engine.
        #[arg(long)]
        engine: String,
        /// Engine major version (default: newest).
        #[arg(long)]
        version: Option<String>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show a group's settings and where it is attached.
    Show {
        /// Group name.
        group: String,
    },
    /// Set settings (NAME=VALUE …); attached instances get them live or pending restart.
    Set {
        /// Group name.
        group: String,
        /// NAME=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Return without waiting for the instances.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove settings from a group.
    Unset {
        /// Group name.
        group: String,
        /// Setting names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Return without waiting for the instances.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a group no instance uses.
    Delete {
        /// Group name.
        group: String,
    },
    /// Attach a group to an instance (`--none` detaches).
    Attach {
        /// Instance name.
        instance: String,
        /// Group name.
        group: Option<String>,
        /// Detach the current group.
        #[arg(long, conflicts_with = "group")]
        none: bool,
        /// Return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// The engine's settings catalog: types, ranges, and which need a restart.
    Catalog {
        /// Engine.
        engine: String,
        /// Version (default: newest).
        #[arg(long)]
        version: Option<String>,
        /// Only settings whose name contains this.
        #[arg(long)]
        search: Option<String>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create a database.
    Create {
        /// Instance name.
        instance: String,
        /// Database name.
        db: String,
    },
    /// List databases.
    List {
        /// Instance name.
        instance: String,
    },
    /// Drop a database and everything in it.
    Drop {
        /// Instance name.
        instance: String,
        /// Database name.
        db: String,
        /// Confirm: the data is deleted.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; its password is printed once.
    Create {
        /// Instance name.
        instance: String,
        /// User name.
        user: String,
        /// Access, as DB:readonly, DB:readwrite or DB:owner (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    /// List users and their access.
    List {
        /// Instance name.
        instance: String,
    },
    /// Drop a user.
    Drop {
        /// Instance name.
        instance: String,
        /// User name.
        user: String,
    },
    /// Give a user a new password (printed once).
    Password {
        /// Instance name.
        instance: String,
        /// User name.
        user: String,
    },
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

#[derive(clap::Args)]
struct ServeArgs {
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
    /// Point the CLI configuration at this installation even if one exists already
    /// (by default it is written only when there is none).
    #[arg(long)]
    write_cli_config: bool,
}

fn default_image_cache() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("berth")
        .join("images")
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth_engine::install_crypto_provider();
    if !matches!(cli.command, Command::Serve(_) | Command::Agent { .. }) {
        // A CLI whose output is piped into `head` should end quietly, as Unix tools
        // do, instead of panicking on a closed pipe: restore the default SIGPIPE.
        // SAFETY: called before any thread exists; SIG_DFL is always valid.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let fmt = match cli.output {
        Output::Table => Format::Table,
        Output::Json => Format::Json,
    };
    let client = || Client::new(cli.url.clone(), cli.token.clone(), cli.config.clone());
    let follow = |no_wait: bool| {
        if no_wait {
            Follow::NoWait
        } else {
            Follow::Wait
        }
    };
    match cli.command {
        Command::Serve(args) => {
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
                cli_config: cli.config.or_else(berth_cli::default_config_path),
                write_cli_config: args.write_cli_config,
                image_build_timeout: args.image_build_timeout,
                image_cache: args.image_cache.unwrap_or_else(default_image_cache),
                reconcile_interval: args.reconcile_interval,
                agent_binary: std::env::current_exe().context("finding the berth binary")?,
                upstream_images: args.images,
            };
            berth_server::serve(config).await?;
            Ok(0)
        }
        Command::Agent { mode: Some(mode) } if mode == "catalog" => {
            init_tracing();
            let catalog = berth_agent::catalog().await?;
            println!("{}", serde_json::to_string(&catalog)?);
            Ok(0)
        }
        Command::Agent { mode: Some(mode) } => {
            anyhow::bail!("unknown agent mode {mode:?}; the only one is `catalog`")
        }
        Command::Agent { mode: None } => {
            init_tracing();
            let config = berth_agent::AgentConfig::from_env()?;
            let code = berth_agent::run(config).await?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::Image {
            command:
                ImageCommand::Build {
                    engine,
                    version,
                    cache,
                    timeout,
                },
        } => {
            let kind: berth_model::EngineKind = engine.parse()?;
            let version = match version {
                Some(v) => kind.version(&v)?,
                None => kind.default_version(),
            };
            let runtime =
                berth_runtime::Runtime::connect(berth_model::SiteId::new_random()).await?;
            let builder = berth_runtime::image::ImageBuilder::new(
                cache.unwrap_or_else(default_image_cache),
                timeout,
            );
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
        Command::Create {
            name,
            engine,
            version,
            cpus,
            memory,
            storage,
            params,
            port,
            no_wait,
        } => {
            let args = CreateArgs {
                name,
                engine,
                version,
                cpus,
                memory,
                storage,
                params,
                port,
            };
            berth_cli::create(&client()?, args, follow(no_wait), fmt).await?;
            Ok(0)
        }
        Command::List => {
            berth_cli::list(&client()?, fmt).await?;
            Ok(0)
        }
        Command::Show { name } => {
            berth_cli::show(&client()?, &name, fmt).await?;
            Ok(0)
        }
        Command::Start(a) => {
            berth_cli::action(&client()?, &a.name, "start", follow(a.no_wait), fmt).await?;
            Ok(0)
        }
        Command::Stop(a) => {
            berth_cli::action(&client()?, &a.name, "stop", follow(a.no_wait), fmt).await?;
            Ok(0)
        }
        Command::Restart(a) => {
            berth_cli::action(&client()?, &a.name, "restart", follow(a.no_wait), fmt).await?;
            Ok(0)
        }
        Command::Resize {
            name,
            cpus,
            memory,
            storage,
            no_wait,
        } => {
            berth_cli::resize(
                &client()?,
                &name,
                cpus,
                memory,
                storage,
                follow(no_wait),
                fmt,
            )
            .await?;
            Ok(0)
        }
        Command::Delete {
            name,
            purge,
            no_wait,
        } => {
            berth_cli::delete(&client()?, &name, purge, follow(no_wait), fmt).await?;
            Ok(0)
        }
        Command::Credentials { name } => {
            berth_cli::credentials(&client()?, &name, fmt).await?;
            Ok(0)
        }
        Command::Ca => {
            berth_cli::ca(&client()?, fmt).await?;
            Ok(0)
        }
        Command::Connect { name, args } => {
            let code = berth_cli::connect(&client()?, &name, &args).await?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::Backup { command } => backups::run(command, client()?, fmt).await,
        Command::Restore(args) => backups::restore(args, client()?, fmt).await,
        Command::Params { command } => {
            use berth_cli::params as p;
            let c = client()?;
            match command {
                ParamsCommand::List => p::list(&c, fmt).await?,
                ParamsCommand::Create {
                    group,
                    engine,
                    version,
                    description,
                } => {
                    p::create(
                        &c,
                        &group,
                        &engine,
                        version.as_deref(),
                        description.as_deref(),
                        fmt,
                    )
                    .await?
                }
                ParamsCommand::Show { group } => p::show(&c, &group, fmt).await?,
                ParamsCommand::Set {
                    group,
                    pairs,
                    no_wait,
                } => p::set(&c, &group, &pairs, follow(no_wait), fmt).await?,
                ParamsCommand::Unset {
                    group,
                    names,
                    no_wait,
                } => p::unset(&c, &group, &names, follow(no_wait), fmt).await?,
                ParamsCommand::Delete { group } => p::delete(&c, &group, fmt).await?,
                ParamsCommand::Attach {
                    instance,
                    group,
                    none,
                    no_wait,
                } => {
                    if group.is_none() && !none {
                        anyhow::bail!("name a group to attach, or pass --none to detach");
                    }
                    p::attach(&c, &instance, group.as_deref(), follow(no_wait), fmt).await?
                }
                ParamsCommand::Catalog {
                    engine,
                    version,
                    search,
                } => p::catalog(&c, &engine, version.as_deref(), search.as_deref(), fmt).await?,
            }
            Ok(0)
        }
        Command::Db { command } => {
            let c = client()?;
            match command {
                DbCommand::Create { instance, db } => {
                    berth_cli::db_create(&c, &instance, &db, fmt).await?
                }
                DbCommand::List { instance } => berth_cli::db_list(&c, &instance, fmt).await?,
                DbCommand::Drop { instance, db, yes } => {
                    berth_cli::db_drop(&c, &instance, &db, yes, fmt).await?
                }
            }
            Ok(0)
        }
        Command::User { command } => {
            let c = client()?;
            match command {
                UserCommand::Create {
                    instance,
                    user,
                    grants,
                } => berth_cli::user_create(&c, &instance, &user, &grants, fmt).await?,
                UserCommand::List { instance } => berth_cli::user_list(&c, &instance, fmt).await?,
                UserCommand::Drop { instance, user } => {
                    berth_cli::user_drop(&c, &instance, &user, fmt).await?
                }
                UserCommand::Password { instance, user } => {
                    berth_cli::user_password(&c, &instance, &user, fmt).await?
                }
            }
            Ok(0)
        }
        Command::Login { token_file } => {
            let login_url = cli.url.context(
                "say which installation: berth login --url http://HOST:PORT --token-file FILE",
            )?;
            let path = berth_cli::login(&login_url, &token_file, cli.config).await?;
            eprintln!(
                "the CLI now uses {login_url} (configuration in {})",
                path.display()
            );
            Ok(0)
        }
        Command::Tasks { instance, limit } => {
            berth_cli::tasks(&client()?, instance.as_deref(), limit, fmt).await?;
            Ok(0)
        }
        Command::Task { id, wait } => {
            berth_cli::task(&client()?, &id, follow(!wait), fmt).await?;
            Ok(0)
        }
    }
}

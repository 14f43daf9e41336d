//! `berth`: one binary for the control plane (`serve`), the agent inside every
//! member container (`agent`), the image builder (`image build`) and the CLI.
//!
//! This file holds the global flags, the list of commands and the dispatch; each
//! command group's arguments and glue live in a module of its own (one per group,
//! calling `berth_cli` for the client side). A new command is a module, one
//! variant and one dispatch line. Only this crate knows clap.

mod accounts;
mod agent;
mod alarms;
mod backups;
mod endpoint;
mod env;
mod events;
mod image;
mod instances;
mod login;
mod metrics;
mod params;
mod scale;
mod serve;
mod tasks;

use berth_cli::Format;
use clap::{Parser, Subcommand, ValueEnum};
use env::Env;
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

/// The commands in the order `berth --help` lists them. The doc comment of each
/// variant is its one-line help.
#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(serve::ServeArgs),
    /// Run as a member container's agent (PID 1). Not for interactive use.
    Agent(agent::AgentArgs),
    /// Run as an instance's endpoint (PID 1 of its container). Not for interactive use.
    #[command(hide = true)]
    Endpoint(endpoint::EndpointArgs),
    /// Build engine images from Debian packages (no registry needed).
    Image(image::ImageArgs),
    /// Create an instance.
    Create(instances::CreateCmd),
    /// List instances.
    List(instances::ListCmd),
    /// Show an instance.
    Show(instances::NameCmd),
    /// Start a stopped instance.
    Start(instances::ActionCmd),
    /// Stop an instance (its data stays).
    Stop(instances::ActionCmd),
    /// Restart an instance.
    Restart(instances::ActionCmd),
    /// Change CPU and memory of a running instance, without a restart.
    Resize(instances::ResizeCmd),
    /// Add or remove replicas, or change synchronous replication, online.
    Scale(scale::ScaleCmd),
    /// Make a replica the primary with no transaction lost.
    Switchover(scale::SwitchoverCmd),
    /// Promote a replica now, without waiting for the primary (it is fenced); or
    /// `failover pause|resume NAME` to hold automatic failover for maintenance.
    Failover(scale::FailoverCmd),
    /// Delete an instance; its data volume is kept unless --purge.
    Delete(instances::DeleteCmd),
    /// Show the superuser's credentials and a connection URI.
    Credentials(instances::NameCmd),
    /// Print Berth's CA certificate (PEM): clients verify instances with it.
    Ca(instances::CaCmd),
    /// Open the engine's interactive client on an instance.
    Connect(instances::ConnectCmd),
    /// Parameter groups: named engine settings, validated against the engine's catalog.
    Params(params::ParamsArgs),
    /// Databases in an instance.
    Db(accounts::DbArgs),
    /// Users in an instance.
    User(accounts::UserArgs),
    /// Point the CLI at an installation: checks the URL and token, then writes the
    /// CLI configuration (`berth serve` writes it only when there is none).
    /// Give the URL with the global `--url` (like http://127.0.0.1:7070).
    Login(login::LoginArgs),
    /// List recent tasks.
    Tasks(tasks::TasksCmd),
    /// Show a task (--wait follows it to its end), or cancel one.
    Task(tasks::TaskCmd),
    /// Show the event log: what changed, in order.
    Events(events::EventsArgs),
    /// Backups: take, list, show, delete.
    Backup {
        #[command(subcommand)]
        command: backups::BackupCommand,
    },
    /// Restore a backup into a new instance.
    Restore(backups::RestoreArgs),
    /// An instance's metric history: a chart per member on a terminal, JSON with -o json.
    Metrics(metrics::MetricsArgs),
    /// Alarms: list, show, create, delete, silence; the webhooks they notify.
    Alarms {
        #[command(subcommand)]
        command: alarms::AlarmsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth_engine::install_crypto_provider();
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Agent(_) | Command::Endpoint(_)
    ) {
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
    let env = Env {
        fmt: match cli.output {
            Output::Table => Format::Table,
            Output::Json => Format::Json,
        },
        url: cli.url,
        token: cli.token,
        config: cli.config,
    };
    match runtime.block_on(dispatch(cli.command, &env)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line per command; the result is the process exit code.
async fn dispatch(command: Command, env: &Env) -> anyhow::Result<u8> {
    match command {
        Command::Serve(a) => serve::run(a, env).await,
        Command::Agent(a) => agent::run(a, env).await,
        Command::Endpoint(a) => endpoint::run(a, env).await,
        Command::Image(a) => image::run(a, env).await,
        Command::Create(a) => instances::create(a, env).await,
        Command::List(a) => instances::list(a, env).await,
        Command::Show(a) => instances::show(a, env).await,
        Command::Start(a) => instances::action(a, "start", env).await,
        Command::Stop(a) => instances::action(a, "stop", env).await,
        Command::Restart(a) => instances::action(a, "restart", env).await,
        Command::Resize(a) => instances::resize(a, env).await,
        Command::Scale(a) => scale::scale(a, env).await,
        Command::Switchover(a) => scale::switchover(a, env).await,
        Command::Failover(a) => scale::failover(a, env).await,
        Command::Delete(a) => instances::delete(a, env).await,
        Command::Credentials(a) => instances::credentials(a, env).await,
        Command::Ca(a) => instances::ca(a, env).await,
        Command::Connect(a) => instances::connect(a, env).await,
        Command::Params(a) => params::run(a, env).await,
        Command::Db(a) => accounts::db(a, env).await,
        Command::User(a) => accounts::user(a, env).await,
        Command::Login(a) => login::run(a, env).await,
        Command::Tasks(a) => tasks::list(a, env).await,
        Command::Task(a) => tasks::show(a, env).await,
        Command::Events(a) => events::run(a, env).await,
        Command::Backup { command } => backups::run(command, env.client()?, env.fmt).await,
        Command::Restore(a) => backups::restore(a, env.client()?, env.fmt).await,
        Command::Metrics(a) => metrics::run(a, env).await,
        Command::Alarms { command } => alarms::run(command, env).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// clap checks the whole tree (duplicate flags, conflicting names, bad
    /// `conflicts_with` targets) only when asked; a command module that breaks
    /// it fails here rather than at a user's first run.
    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! `berth params …`: parameter groups (named engine settings, validated against the
//! engine's catalog), attaching them to instances, and reading the catalog.

use crate::env::{follow, Env};
use berth_cli::params as p;
use clap::Subcommand;

#[derive(clap::Args)]
pub struct ParamsArgs {
    #[command(subcommand)]
    command: ParamsCommand,
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

pub async fn run(args: ParamsArgs, env: &Env) -> anyhow::Result<u8> {
    let c = env.client()?;
    let fmt = env.fmt;
    match args.command {
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

//! `berth db …` and `berth user …`: databases, users and grants inside an instance.
//! They run directly against the engine (no task), so nothing here follows one.

use crate::env::Env;
use clap::Subcommand;

#[derive(clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
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

pub async fn db(args: DbArgs, env: &Env) -> anyhow::Result<u8> {
    let c = env.client()?;
    let fmt = env.fmt;
    match args.command {
        DbCommand::Create { instance, db } => berth_cli::db_create(&c, &instance, &db, fmt).await?,
        DbCommand::List { instance } => berth_cli::db_list(&c, &instance, fmt).await?,
        DbCommand::Drop { instance, db, yes } => {
            berth_cli::db_drop(&c, &instance, &db, yes, fmt).await?
        }
    }
    Ok(0)
}

#[derive(clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
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

pub async fn user(args: UserArgs, env: &Env) -> anyhow::Result<u8> {
    let c = env.client()?;
    let fmt = env.fmt;
    match args.command {
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

//! `berth backup …`: argument parsing only; the work is in `berth_cli::backups`.

use berth_cli::{Client, Format};
use clap::Subcommand;

/// Backups of instances, kept in the backup store.
#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Take a backup of a running instance (it keeps serving meanwhile).
    Create {
        /// Instance name.
        name: String,
        /// How: `logical` (the engine's own dump).
        #[arg(long, default_value = "logical")]
        kind: String,
        /// Return at once instead of following the task.
        #[arg(long)]
        no_wait: bool,
    },
    /// List backups, newest first.
    List {
        /// Only backups of this instance (it may be deleted since).
        name: Option<String>,
    },
    /// Show a backup: state, size, checksum.
    Show {
        /// Backup id.
        id: String,
    },
    /// Verify a backup by restoring it: into a throwaway instance with the source's
    /// limits, then the engine's own consistency check (amcheck, CHECK TABLE) and a
    /// read of every table. The outcome is kept on the backup; the throwaway
    /// instance is deleted. Exits non-zero when the backup fails it.
    Verify {
        /// Backup id.
        id: String,
        /// Return at once instead of following the task.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a backup and its stored object.
    Delete {
        /// Backup id.
        id: String,
    },
    /// Show or change an instance's backup schedule, retention and verification. Scheduled
    /// backups run when due (one missed while `berth serve` was down runs when it is
    /// back); retention deletes expired backups, never the newest complete one.
    Schedule {
        /// Instance name.
        name: String,
        /// When to back up: a cron expression, five fields, UTC (default "0 0 * * *"),
        /// or `off`.
        #[arg(long)]
        cron: Option<String>,
        /// Keep backups taken within this many days (0: no limit by age).
        #[arg(long)]
        keep_days: Option<u32>,
        /// Keep this many newest complete backups (0: no limit by count).
        #[arg(long)]
        keep_count: Option<u32>,
        /// When backups are verified by restoring them: after-each, weekly (the
        /// default) or off.
        #[arg(long, value_parser = ["after-each", "weekly", "off"])]
        verify: Option<String>,
    },
}

/// `berth restore`: a new instance from a backup.
#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// The instance the backup was taken from (it may be deleted since).
    source: String,
    /// The new instance's name (restoring into the source itself is not offered:
    /// restore beside it, then switch clients).
    #[arg(long)]
    to: String,
    /// The backup to restore (`berth backup list SOURCE`).
    #[arg(long)]
    backup: String,
    /// CPU limit (default: the source's).
    #[arg(long)]
    cpus: Option<String>,
    /// Memory (default: the source's).
    #[arg(long)]
    memory: Option<String>,
    /// Storage (default: the source's).
    #[arg(long)]
    storage: Option<String>,
    /// Return at once instead of following the task.
    #[arg(long)]
    no_wait: bool,
}

/// Runs `berth restore`.
pub(crate) async fn restore(args: RestoreArgs, client: Client, fmt: Format) -> anyhow::Result<u8> {
    let follow = crate::env::follow(args.no_wait);
    let a = berth_cli::backups::RestoreArgs {
        source: args.source,
        to: args.to,
        backup: args.backup,
        cpus: args.cpus,
        memory: args.memory,
        storage: args.storage,
    };
    berth_cli::backups::restore(&client, a, follow, fmt).await?;
    Ok(0)
}

/// Runs one `berth backup` command.
pub(crate) async fn run(command: BackupCommand, client: Client, fmt: Format) -> anyhow::Result<u8> {
    use berth_cli::backups as b;
    match command {
        BackupCommand::Create {
            name,
            kind,
            no_wait,
        } => {
            let follow = crate::env::follow(no_wait);
            b::create(&client, &name, &kind, follow, fmt).await?
        }
        BackupCommand::List { name } => b::list(&client, name.as_deref(), fmt).await?,
        BackupCommand::Show { id } => b::show(&client, &id, fmt).await?,
        BackupCommand::Delete { id } => b::delete(&client, &id, fmt).await?,
        BackupCommand::Verify { id, no_wait } => {
            let follow = crate::env::follow(no_wait);
            b::verify(&client, &id, follow, fmt).await?
        }
        BackupCommand::Schedule {
            name,
            cron,
            keep_days,
            keep_count,
            verify,
        } => {
            let change = b::PolicyChange {
                cron,
                keep_days,
                keep_count,
                verify,
            };
            b::schedule(&client, &name, change, fmt).await?
        }
    }
    Ok(0)
}

//! `berth backup …`: argument parsing only; the work is in `berth_cli::backups`.

use berth_cli::{Client, Follow, Format};
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
    /// Delete a backup and its stored object.
    Delete {
        /// Backup id.
        id: String,
    },
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
            let follow = if no_wait {
                Follow::NoWait
            } else {
                Follow::Wait
            };
            b::create(&client, &name, &kind, follow, fmt).await?
        }
        BackupCommand::List { name } => b::list(&client, name.as_deref(), fmt).await?,
        BackupCommand::Show { id } => b::show(&client, &id, fmt).await?,
        BackupCommand::Delete { id } => b::delete(&client, &id, fmt).await?,
    }
    Ok(0)
}

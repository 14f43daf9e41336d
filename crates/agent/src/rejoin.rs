//! A former primary becoming a replica of the member that replaced it, without an
//! operator: before its engine starts as a replica, the engine's own tool takes its
//! data directory back to the new primary's history (`Engine::rejoin_commands`:
//! PostgreSQL's `pg_rewind`); where that fails, or the engine finds later that the
//! new primary lacks transactions this member wrote (`Engine::diverged`: MariaDB's
//! GTID check), the directory is set aside (`discarded-<time>` on the volume, the
//! latest one kept) and cloned afresh. What happened is kept in `berth-rejoin.json`
//! on the volume, reported by `/health`, and written to the event log by the
//! control plane.

use crate::{AgentConfig, AgentError, Reaper, Result};
use berth_model::agent::Replication;
use berth_model::member::Role;
use nix::unistd::User;
use std::path::PathBuf;
use tracing::{info, warn};

/// The role the engine last started in, kept on the volume.
fn ran_as_path(config: &AgentConfig) -> PathBuf {
    config.layout.volume.join("berth-ran-as")
}

/// Set when the running replica found it diverged: the next start clones afresh.
fn reclone_path(config: &AgentConfig) -> PathBuf {
    config.layout.volume.join("berth-reclone")
}

fn stale_path(config: &AgentConfig) -> PathBuf {
    config.layout.volume.join(berth_model::agent::STALE_FILE)
}

fn outcome_path(config: &AgentConfig) -> PathBuf {
    config.layout.volume.join("berth-rejoin.json")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Records the role the engine runs in from now: at its start, and before a promotion.
pub(crate) fn record_start(config: &AgentConfig, role: Role) {
    let _ = std::fs::write(ran_as_path(config), role.as_str());
}

fn ran_as_primary(config: &AgentConfig) -> bool {
    std::fs::read_to_string(ran_as_path(config)).is_ok_and(|s| s.trim() == "primary")
}

/// Promotes the running engine, said on the volume first: if this member stops from
/// here on, it comes back through a rejoin (a rewind, or a GTID check) and not as a
/// replica that may hold writes the next primary never had.
pub(crate) async fn promote(config: &AgentConfig) -> berth_engine::Result<()> {
    record_start(config, Role::Primary);
    config.engine().promote(&config.layout).await
}

/// Held while a rejoin changes the data directory. Whoever else would render the
/// configuration into it meanwhile (the control plane's `/replication`, the
/// election) only keeps the role file: the rejoin renders from it at its end. A
/// render in the middle of a rewind would be overwritten, or mix two members' files.
pub(crate) static DATA_DIR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether a running engine must not take `repl` live: it ran as the primary and is
/// told to follow, so it may hold writes the new primary lacks. Then the engine is
/// stopped here, and its next start goes through the rejoin.
pub(crate) fn restart_to_follow(
    config: &AgentConfig,
    health: &crate::Health,
    repl: &Replication,
) -> bool {
    if repl.role != Role::Replica || !ran_as_primary(config) {
        return false;
    }
    warn!("this member ran as the primary and is told to follow: it restarts to rejoin");
    stop_to_rejoin(config, health.view().engine_pid);
    true
}

/// Stops the running engine so that its next start goes through the rejoin: with
/// the engine's own stop signal (PostgreSQL's fast shutdown ends with a checkpoint,
/// and pg_rewind then needs no crash recovery of the directory), or, when the
/// supervisor knows no engine process, by killing every process of the engine's user.
fn stop_to_rejoin(config: &AgentConfig, pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        crate::lease::kill_engine(config);
        return;
    };
    let signal = nix::sys::signal::Signal::try_from(config.engine().stop_signal())
        .unwrap_or(nix::sys::signal::Signal::SIGTERM);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Whether the engine must be made fit before it starts as this replica.
pub(crate) fn needed(config: &AgentConfig, repl: &Replication) -> bool {
    repl.role == Role::Replica
        && repl.source.is_some()
        && (ran_as_primary(config) || reclone_path(config).exists() || stale_path(config).exists())
}

/// The last rejoin, as `/health` reports it.
pub(crate) fn last(config: &AgentConfig) -> Option<serde_json::Value> {
    std::fs::read_to_string(outcome_path(config))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

fn keep_outcome(config: &AgentConfig, how: &str, why: Option<&str>) {
    let v = serde_json::json!({
        "how": how,
        "reason": why,
        "at_unix": unix_now(),
    });
    let _ = std::fs::write(outcome_path(config), v.to_string());
}

/// Makes the stopped data directory fit to follow `repl.source`, then renders the
/// configuration from the role file as it is by then (a rewind or a clone copies
/// the new primary's files; a role sent meanwhile was only kept, see [`DATA_DIR`]).
pub(crate) async fn run(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    repl: &Replication,
) -> Result<()> {
    let _data_dir = DATA_DIR.lock().await;
    rewind_or_clone(config, reaper, user, repl).await?;
    config
        .engine()
        .render_config(&config.layout, &crate::current_settings(config))?;
    Ok(())
}

async fn rewind_or_clone(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    repl: &Replication,
) -> Result<()> {
    let engine = config.engine();
    // Data left from an earlier member: no rewind can bring it forward.
    if let Ok(why) = std::fs::read_to_string(stale_path(config)) {
        // Nothing in it is worth keeping aside: the primary has all of it and more.
        let data = engine.data_dir(&config.layout);
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|source| AgentError::Io {
                what: format!("removing the stale {}", data.display()),
                source,
            })?;
        }
        return reclone(config, reaper, user, repl, why.trim()).await;
    }
    let diverged = std::fs::read_to_string(reclone_path(config)).ok();
    let commands = engine.rejoin_commands(&config.version, &config.layout, repl);
    if commands.is_empty() {
        if let Some(why) = diverged {
            return reclone(config, reaper, user, repl, &why).await;
        }
        keep_outcome(config, "follows from its own position", None);
        return Ok(());
    }
    match crate::replication::run_all(reaper, user, &commands).await {
        Ok(()) => {
            info!("the data directory was rewound to the new primary's history");
            let _ = std::fs::remove_file(reclone_path(config));
            keep_outcome(config, "rewound", diverged.as_deref());
            Ok(())
        }
        Err(e) => {
            let why = format!("rewinding failed ({e})");
            reclone(config, reaper, user, repl, &why).await
        }
    }
}

/// Sets the data directory aside and clones the new primary's.
async fn reclone(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    repl: &Replication,
    why: &str,
) -> Result<()> {
    let engine = config.engine();
    let data = engine.data_dir(&config.layout);
    let volume = &config.layout.volume;
    // One discarded copy at most: the volume must not fill with them.
    if let Ok(entries) = std::fs::read_dir(volume) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("discarded-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let aside = volume.join(format!("discarded-{}", unix_now()));
    warn!(reason = %why, aside = %aside.display(), "this member cannot follow as it is: cloning afresh");
    if data.exists() {
        std::fs::rename(&data, &aside).map_err(|source| AgentError::Io {
            what: format!("setting {} aside", data.display()),
            source,
        })?;
    }
    crate::bootstrap::reclone(config, reaper, user, repl).await?;
    let _ = std::fs::remove_file(reclone_path(config));
    let _ = std::fs::remove_file(stale_path(config));
    keep_outcome(config, "cloned afresh", Some(why));
    Ok(())
}

/// While the engine runs as a replica (started as `pid`), soon after the start and
/// then every 2 s: when the engine
/// says it diverged from its primary, the engine is stopped and its next start goes
/// through the rejoin (a rewind where the engine has one, else a fresh clone). Any
/// replica, not only a former primary: one that received more than the member
/// promoted instead of it (an asynchronous failover, `--accept-data-loss`) cannot
/// follow either.
pub(crate) async fn watch_diverged(config: &AgentConfig, health: &crate::Health, pid: u32) {
    let engine = config.engine();
    // The first look soon after the start: a refused position shows at once, and
    // the sooner the clone begins, the sooner the member is a replica again.
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        tokio::time::sleep(wait).await;
        wait = std::time::Duration::from_secs(2);
        if health.view().engine_pid != Some(pid) {
            return;
        }
        let Some(repl) = crate::replication::read(config).filter(|r| r.role == Role::Replica)
        else {
            continue;
        };
        if let Ok(Some(why)) = engine.diverged(&config.layout, &repl).await {
            warn!(reason = %why, "this replica diverged from its primary: it restarts to rejoin");
            let _ = std::fs::write(reclone_path(config), &why);
            stop_to_rejoin(config, Some(pid));
            return;
        }
    }
}

//! Replication as the agent does it: the member's role kept on its volume
//! ([`REPLICATION_FILE`]), the clone of a new replica from its primary, the
//! primary's side of a streamed clone (`GET /clone`), and bringing the running
//! engine in line (`POST /replication`, and after every start of the engine).

use crate::backup::{spawn_as, Spawned};
use crate::{AgentConfig, AgentError, Reaper, Result};
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_engine::ClonePlan;
use berth_model::agent::{Replication, AGENT_PORT, REPLICATION_FILE};
use futures_util::StreamExt;
use nix::unistd::User;
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

fn path(config: &AgentConfig) -> std::path::PathBuf {
    config.layout.volume.join(REPLICATION_FILE)
}

/// The member's replication, as the control plane last sent it (none: a lone primary).
pub(crate) fn read(config: &AgentConfig) -> Option<Replication> {
    let text = std::fs::read_to_string(path(config)).ok()?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(error = %e, "unreadable replication file; starting as a lone primary");
            None
        }
    }
}

/// Keeps it on the volume, durably (write, fsync, rename), readable by root only.
pub(crate) fn store(config: &AgentConfig, repl: &Replication) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path(config);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(repl).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Fills an empty data directory from the primary: the engine's own client pulls it
/// (PostgreSQL), or the primary's agent streams it in (MariaDB).
pub(crate) async fn clone(
    config: &AgentConfig,
    reaper: &Reaper,
    user: &User,
    repl: &Replication,
) -> Result<()> {
    let engine = config.engine();
    let Some((host, _)) = &repl.source else {
        return Err(AgentError::Bootstrap(
            "this member is a replica without a primary to clone".into(),
        ));
    };
    info!(source = %host, "cloning the data directory from the primary");
    match engine.clone_plan(&config.version, &config.layout, repl) {
        ClonePlan::Pull(commands) => run_all(reaper, user, &commands).await,
        ClonePlan::Stream { receive, finish } => {
            stream_from_source(reaper, user, host, repl, &receive).await?;
            run_all(reaper, user, &finish).await
        }
    }
}

pub(crate) async fn run_all(
    reaper: &Reaper,
    user: &User,
    commands: &[berth_engine::CommandSpec],
) -> Result<()> {
    for spec in commands {
        let exit = reaper
            .run(
                &mut crate::supervisor::engine_command(spec, user),
                spec.stdin.as_deref(),
            )
            .await
            .map_err(|source| AgentError::Io {
                what: format!("running {}", spec.program),
                source,
            })?;
        if !exit.success() {
            return Err(AgentError::Bootstrap(format!(
                "{} failed with {exit}; `docker logs` of this member has its output",
                spec.program
            )));
        }
    }
    Ok(())
}

/// GET http://<primary>:8008/clone into `receive`'s standard input.
async fn stream_from_source(
    reaper: &Reaper,
    user: &User,
    host: &str,
    repl: &Replication,
    receive: &berth_engine::CommandSpec,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let fail = |what: String| AgentError::Bootstrap(what);
    // Plain HTTP on the instance's network: no proxy, and no certificate roots to
    // load (the image has none; TLS is never used here).
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::new())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(format!("http client: {e}")))?;
    let resp = client
        .get(format!("http://{host}:{AGENT_PORT}/clone"))
        .bearer_auth(repl.password.expose())
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "the primary's agent does not answer: {}",
                e.without_url()
            ))
        })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(fail(format!(
            "the primary refused the clone ({status}): {text}"
        )));
    }
    let Spawned {
        mut child,
        stdin,
        stderr,
        ..
    } = spawn_as(reaper, receive, Some(user), true, false)
        .map_err(|e| fail(format!("cannot run {}: {e}", receive.program)))?;
    let (Some(mut stdin), Some(stderr)) = (stdin, stderr) else {
        return Err(fail("no pipes to the receiver".into()));
    };
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.take(4096).read_to_string(&mut s).await;
        s
    });
    let mut body = resp.bytes_stream();
    let mut bytes = 0u64;
    let mut fed = Ok(());
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                bytes += c.len() as u64;
                if let Err(e) = stdin.write_all(&c).await {
                    fed = Err(format!("feeding {}: {e}", receive.program));
                    break;
                }
            }
            Err(e) => {
                fed = Err(format!("the clone stream broke: {}", e.without_url()));
                break;
            }
        }
    }
    drop(stdin);
    let status = child.wait().await;
    let stderr = stderr_text.await.unwrap_or_default();
    fed.map_err(fail)?;
    match status {
        Ok(s) if s.success() => {
            info!(bytes, "clone received");
            Ok(())
        }
        Ok(s) => Err(fail(format!(
            "{} failed ({s}): {}",
            receive.program,
            stderr.trim()
        ))),
        Err(e) => Err(fail(format!("{}: {e}", receive.program))),
    }
}

/// Whether a member's call carries the replication password as its bearer token
/// (members call each other with it: they do not hold the control plane's token).
pub(crate) fn password_matches(headers: &HeaderMap, repl: &Replication) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    crate::api::constant_time_eq(given.as_bytes(), repl.password.expose().as_bytes())
}

/// `GET /clone` on the primary: the engine's physical backup as the body, for a new
/// replica. Authorised by the replication password, which only members hold.
pub(crate) async fn clone_source(
    config: &AgentConfig,
    reaper: &Reaper,
    headers: &HeaderMap,
) -> Response {
    let Some(repl) = read(config) else {
        return (StatusCode::CONFLICT, "this member has no replicas").into_response();
    };
    if !password_matches(headers, &repl) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let engine = config.engine();
    let Some(spec) = engine.clone_source_command(&config.version, &config.layout) else {
        return (
            StatusCode::NOT_FOUND,
            "replicas of this engine pull their clone themselves",
        )
            .into_response();
    };
    let scratch = config.layout.run_dir.join("clone");
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::create_dir_all(&scratch);
    let Spawned {
        mut child,
        stdout,
        stderr,
        ..
    } = match spawn_as(reaper, &spec, None, false, true) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::CONFLICT,
                format!("cannot run {}: {e}", spec.program),
            )
                .into_response()
        }
    };
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no pipes to the backup").into_response();
    };
    info!(program = %spec.program, "streaming a clone to a new replica");
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.take(64 * 1024).read_to_string(&mut s).await;
        s
    });
    let body = tokio_util::io::ReaderStream::new(stdout);
    let end = futures_util::stream::once(async move {
        let status = child.wait().await;
        let stderr = stderr_text.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(bytes::Bytes::new()),
            Ok(s) => {
                let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
                warn!(%s, stderr = %tail, "the clone's backup failed");
                Err(std::io::Error::other(format!(
                    "the backup failed ({s}): {tail}"
                )))
            }
            Err(e) => Err(e),
        }
    });
    Body::from_stream(body.chain(end)).into_response()
}

/// Applies `repl` to the running engine, one application at a time: the start's
/// own, the control plane's and the election's may overlap, and MariaDB refuses a
/// `CHANGE MASTER` another application's `START SLAVE` ran under (error 1198).
pub(crate) async fn apply_live(
    config: &AgentConfig,
    repl: &Replication,
) -> berth_engine::Result<()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE_AT_A_TIME.lock().await;
    config
        .engine()
        .apply_replication(&config.layout, repl)
        .await
}

/// `POST /replication`: keeps the new role, renders the configuration from it, and
/// brings the running engine in line.
pub(crate) async fn set(
    config: &AgentConfig,
    health: &crate::Health,
    repl: Replication,
) -> Response {
    if let Err(e) = store(config, &repl) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the replication settings: {e}"),
        )
            .into_response();
    }
    let Ok(data_dir) = crate::rejoin::DATA_DIR.try_lock() else {
        return (
            StatusCode::ACCEPTED,
            "kept; this member is rejoining and takes it when its data directory is ready",
        )
            .into_response();
    };
    let engine = config.engine();
    if let Err(e) = engine.render_config(&config.layout, &crate::current_settings(config)) {
        return (StatusCode::CONFLICT, e.to_string()).into_response();
    }
    drop(data_dir);
    if health.view().state != crate::HealthState::Ready {
        return (
            StatusCode::ACCEPTED,
            "kept; the engine takes it when it is ready",
        )
            .into_response();
    }
    if crate::rejoin::restart_to_follow(config, health, &repl) {
        return (
            StatusCode::ACCEPTED,
            "kept; this member ran as the primary, so its engine restarts and rejoins as a replica",
        )
            .into_response();
    }
    match apply_live(config, &repl).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// After the engine became ready: what the file says is applied, retried for a while
/// (a replica's primary may still be starting).
pub(crate) async fn apply_after_start(config: &AgentConfig) {
    let Some(repl) = read(config) else { return };
    for attempt in 1..=30u32 {
        match apply_live(config, &repl).await {
            Ok(()) => {
                info!(role = repl.role.as_str(), "replication applied");
                return;
            }
            Err(e) => {
                if attempt == 30 {
                    warn!(error = %e, "replication not applied; the control plane will retry");
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// On a primary with synchronous replicas, about every second: how many confirm
/// commits (and, in `available` mode, commits released or made to wait again),
/// kept in the health report for the control plane.
pub(crate) async fn watch_sync(config: AgentConfig, health: crate::Health) {
    let engine = config.engine();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let repl =
            read(&config).filter(|r| r.role == berth_model::member::Role::Primary && r.sync > 0);
        let Some(repl) = repl else {
            health.set_sync_degraded(None);
            continue;
        };
        if health.view().state != crate::HealthState::Ready {
            continue;
        }
        match engine.sync_status(&config.layout, &repl).await {
            Ok(why) => {
                let before = health.view().sync_degraded;
                if before != why {
                    match &why {
                        Some(w) => warn!(reason = %w, "synchronous replication degraded"),
                        None => info!("synchronous replication restored"),
                    }
                }
                health.set_sync_degraded(why);
            }
            Err(e) => warn!(error = %e, "cannot read synchronous replication's state"),
        }
    }
}

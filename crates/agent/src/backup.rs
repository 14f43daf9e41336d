//! `POST /backup/logical`: the engine's logical dump, compressed with zstd inside the
//! member and streamed as the response body, so no copy of the dump is ever written
//! to a disk on the way. A dump that fails ends the body with an error, so the
//! receiver cannot take a truncated dump for a complete one.

use crate::AgentConfig;
use async_compression::tokio::bufread::ZstdEncoder;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, BufReader};
use tokio_util::io::ReaderStream;

/// At most this much of the dump tool's standard error is kept for the error message.
const STDERR_KEPT: u64 = 4096;

/// A child of the reaper (as PID 1 the agent must never wait on a child itself),
/// killed if the request goes away before it ended.
pub(crate) struct Child {
    pid: u32,
    exit: Option<tokio::sync::oneshot::Receiver<crate::Exit>>,
}

impl Child {
    pub(crate) async fn wait(&mut self) -> std::io::Result<crate::Exit> {
        let rx = self
            .exit
            .take()
            .ok_or_else(|| std::io::Error::other("waited twice"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the reaper lost the child's exit"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_some() {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The pipes of a spawned command, as tokio types.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdin: Option<tokio::process::ChildStdin>,
    pub(crate) stdout: Option<tokio::process::ChildStdout>,
    pub(crate) stderr: Option<tokio::process::ChildStderr>,
}

fn spawn(
    reaper: &crate::Reaper,
    spec: &berth_engine::CommandSpec,
    stdin: bool,
    stdout: bool,
) -> std::io::Result<Spawned> {
    spawn_as(reaper, spec, None, stdin, stdout)
}

/// Spawns `spec` with the pipes asked for, as `user` when given (else as root).
pub(crate) fn spawn_as(
    reaper: &crate::Reaper,
    spec: &berth_engine::CommandSpec,
    user: Option<&nix::unistd::User>,
    stdin: bool,
    stdout: bool,
) -> std::io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&spec.program);
    if let Some(user) = user {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &user.dir)
            .env("USER", &user.name);
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let p = reaper.spawn_piped(&mut cmd)?;
    Ok(Spawned {
        child: Child {
            pid: p.pid,
            exit: Some(p.exit),
        },
        stdin: p
            .stdin
            .map(tokio::process::ChildStdin::from_std)
            .transpose()?,
        stdout: p
            .stdout
            .map(tokio::process::ChildStdout::from_std)
            .transpose()?,
        stderr: p
            .stderr
            .map(tokio::process::ChildStderr::from_std)
            .transpose()?,
    })
}

/// Why recent dumps failed, by the backup id the control plane sent
/// (`x-berth-backup`): a body cut short cannot carry the dump's own words, so the
/// control plane asks for them afterwards (`GET /backup/logical/failure`).
#[derive(Clone, Default)]
pub(crate) struct Failures(
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(String, String)>>>,
);

impl Failures {
    /// How many are kept.
    const KEPT: usize = 16;

    fn record(&self, backup: &str, why: String) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|(b, _)| b != backup);
        if f.len() >= Self::KEPT {
            f.pop_front();
        }
        f.push_back((backup.to_owned(), why));
    }

    /// Why the dump of `backup` failed, if it did.
    pub(crate) fn of(&self, backup: &str) -> Option<String> {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.iter().find(|(b, _)| b == backup).map(|(_, w)| w.clone())
    }
}

pub(crate) async fn logical(
    config: &AgentConfig,
    reaper: &crate::Reaper,
    failures: Failures,
    backup: Option<String>,
) -> Response {
    let engine = config.engine();
    let spec = engine.logical_dump_command(&config.version, &config.layout);
    let Spawned {
        mut child,
        stdout,
        stderr,
        ..
    } = match spawn(reaper, &spec, false, true) {
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
        return (StatusCode::INTERNAL_SERVER_ERROR, "no pipes to the dump").into_response();
    };
    tracing::info!(program = %spec.program, "logical backup streaming");
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.take(STDERR_KEPT).read_to_string(&mut s).await;
        s
    });
    let body = ReaderStream::new(ZstdEncoder::new(BufReader::new(stdout)));
    // After the last compressed byte: the dump's exit decides whether the body ends
    // cleanly or with an error (which aborts the response).
    let end = futures_util::stream::once(async move {
        let status = child.wait().await;
        let stderr = stderr_text.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => {
                tracing::info!("logical backup streamed");
                Ok(bytes::Bytes::new())
            }
            Ok(s) => {
                tracing::warn!(%s, stderr = %stderr.trim(), "logical backup failed");
                let why = format!("the dump failed ({s}): {}", stderr.trim());
                if let Some(b) = &backup {
                    failures.record(b, why.clone());
                }
                Err(std::io::Error::other(why))
            }
            Err(e) => {
                tracing::warn!(error = %e, "logical backup failed");
                if let Some(b) = &backup {
                    failures.record(b, format!("the dump could not be waited for: {e}"));
                }
                Err(e)
            }
        }
    });
    Body::from_stream(body.chain(end)).into_response()
}

/// `POST /restore/logical`: the body is a stored backup (zstd); it is decompressed
/// into the engine's loader, then the superuser gets this instance's password again.
/// The SHA-256 of the body must equal `expected_sha256`, or the load is reported
/// failed (the control plane verified the object before; this catches a change since).
pub(crate) async fn restore_logical(
    config: &AgentConfig,
    reaper: &crate::Reaper,
    expected_sha256: &str,
    body: Body,
) -> Response {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let engine = config.engine();
    let var = engine.bootstrap_secret_var();
    let secret = match &config.bootstrap_secret {
        Some(s) => s.clone(),
        None => match std::env::var(var) {
            Ok(s) => s,
            Err(_) => return (StatusCode::CONFLICT, format!("{var} is not set")).into_response(),
        },
    };
    // A dump carries the source's monitoring account as `CREATE ROLE` (skipped, see
    // `logical_load_skips`) and `ALTER ROLE` lines: make sure this instance has it
    // (a round of metrics makes it when missing) before those lines run.
    if let Err(e) = engine.collect_metrics(&config.layout).await {
        tracing::warn!(error = %e, "metrics before a restore failed; loading anyway");
    }
    let spec = engine.logical_load_command(&config.version, &config.layout);
    let Spawned {
        mut child,
        stdin,
        stderr,
        ..
    } = match spawn(reaper, &spec, true, false) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::CONFLICT,
                format!("cannot run {}: {e}", spec.program),
            )
                .into_response()
        }
    };
    let (Some(mut stdin), Some(stderr)) = (stdin, stderr) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no pipes to the loader").into_response();
    };
    let stderr_text = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.take(STDERR_KEPT).read_to_string(&mut s).await;
        s
    });
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        h.lock().unwrap_or_else(|p| p.into_inner()).update(&chunk);
        Ok::<_, std::io::Error>(chunk)
    });
    let reader = tokio_util::io::StreamReader::new(stream);
    let mut dump = BufReader::new(async_compression::tokio::bufread::ZstdDecoder::new(
        BufReader::new(reader),
    ));
    let copied = feed(engine.logical_load_skips(), &mut dump, &mut stdin).await;
    let digest = hex::encode(
        hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .finalize(),
    );
    let fed = match copied {
        Ok(_) if digest != expected_sha256 => Err(format!(
            "the backup's bytes changed: SHA-256 {digest}, expected {expected_sha256}"
        )),
        Ok(_) => stdin
            .write_all(engine.after_logical_load(&secret).as_bytes())
            .await
            .map_err(|e| format!("feeding the loader: {e}")),
        Err(e) => Err(format!("reading the backup: {e}")),
    };
    drop(stdin);
    let status = child.wait().await;
    let stderr = stderr_text.await.unwrap_or_default();
    match (fed, status) {
        (Ok(()), Ok(s)) if s.success() => {
            tracing::info!("logical backup loaded");
            StatusCode::NO_CONTENT.into_response()
        }
        (Err(e), _) => (StatusCode::CONFLICT, e).into_response(),
        (Ok(()), Ok(s)) => (
            StatusCode::CONFLICT,
            format!("the load failed ({s}): {}", stderr.trim()),
        )
            .into_response(),
        (Ok(()), Err(e)) => (StatusCode::CONFLICT, format!("the loader: {e}")).into_response(),
    }
}

/// Copies the dump into the loader, leaving out the header lines the engine skips.
async fn feed<R, W>(
    skips: Option<berth_engine::LoadSkips>,
    dump: &mut R,
    loader: &mut W,
) -> std::io::Result<u64>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut n = 0u64;
    if let Some(skips) = skips {
        let mut line = Vec::new();
        loop {
            line.clear();
            if dump.read_until(b'\n', &mut line).await? == 0 {
                return Ok(n);
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if !skips.lines.contains(&text) {
                loader.write_all(&line).await?;
                n += line.len() as u64;
            }
            if text.starts_with(skips.header_ends) {
                break;
            }
        }
    }
    Ok(n + tokio::io::copy(dump, loader).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_header_lines_are_skipped() {
        let skips = berth_engine::LoadSkips {
            lines: &["CREATE ROLE \"postgres\";"],
            header_ends: "\\connect",
        };
        let dump = "SET x;\nCREATE ROLE \"postgres\";\nALTER ROLE \"postgres\";\n\\connect a\nCREATE ROLE \"postgres\";\n";
        let mut out = Vec::new();
        let mut r = tokio::io::BufReader::new(dump.as_bytes());
        feed(Some(skips), &mut r, &mut out).await.expect("feed");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "SET x;\nALTER ROLE \"postgres\";\n\\connect a\nCREATE ROLE \"postgres\";\n"
        );
    }
}

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

pub(crate) async fn logical(config: &AgentConfig) -> Response {
    let engine = config.engine();
    let spec = engine.logical_dump_command(&config.version, &config.layout);
    let mut child = match tokio::process::Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::CONFLICT,
                format!("cannot run {}: {e}", spec.program),
            )
                .into_response()
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
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
                Err(std::io::Error::other(format!(
                    "the dump failed ({s}): {}",
                    stderr.trim()
                )))
            }
            Err(e) => Err(e),
        }
    });
    Body::from_stream(body.chain(end)).into_response()
}

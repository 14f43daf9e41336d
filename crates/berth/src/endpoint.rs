//! `berth endpoint`: PID 1 of an instance's endpoint container (hidden: not for
//! interactive use). Reads the environment contract (`berth_model::endpoint::env`)
//! and runs `berth_endpoint` until SIGTERM or SIGINT.
//!
//! As PID 1 it gets no default signal handling, so both are caught here; it starts
//! no child process, so there is nothing to reap. Stopping closes the listeners and
//! exits 0; open client connections end with the process.

use crate::env::Env;
use crate::serve::init_tracing;
use tokio::signal::unix::{signal, SignalKind};

#[derive(clap::Args)]
pub struct EndpointArgs {}

pub async fn run(_args: EndpointArgs, _env: &Env) -> anyhow::Result<u8> {
    init_tracing();
    let config = berth_endpoint::EndpointConfig::from_env()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    berth_endpoint::run(config, stop).await?;
    Ok(0)
}

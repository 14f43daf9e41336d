//! `berth agent`: PID 1 of a member container, or `berth agent catalog` to print
//! the engine's settings catalog (run by the image builder, once per image).

use crate::env::Env;
use crate::serve::init_tracing;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// `catalog`: print the engine's settings catalog as JSON and exit.
    /// `watchdog RUN_DIR ENGINE_USER`: the agent's watchdog (started by the agent).
    mode: Option<String>,
    /// The watchdog's run directory and engine user.
    #[arg(hide = true)]
    rest: Vec<String>,
}

pub async fn run(args: AgentArgs, _env: &Env) -> anyhow::Result<u8> {
    match args.mode.as_deref() {
        Some("catalog") => {
            init_tracing();
            let catalog = berth_agent::catalog().await?;
            println!("{}", serde_json::to_string(&catalog)?);
            Ok(0)
        }
        Some("watchdog") => match args.rest.as_slice() {
            [run_dir, user] => berth_agent::watchdog(std::path::Path::new(run_dir), user),
            _ => anyhow::bail!("usage: berth agent watchdog RUN_DIR ENGINE_USER"),
        },
        Some(mode) => anyhow::bail!("unknown agent mode {mode:?}; the only one is `catalog`"),
        None => {
            init_tracing();
            let config = berth_agent::AgentConfig::from_env()?;
            let code = berth_agent::run(config).await?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
    }
}

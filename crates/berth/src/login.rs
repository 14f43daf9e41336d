//! `berth login`: point the CLI at an installation on purpose, after checking the
//! token (the only command besides `serve` that writes the CLI configuration).

use crate::env::Env;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct LoginArgs {
    /// File holding the API token (the admin token is in <data-dir>/admin-token).
    #[arg(long)]
    token_file: PathBuf,
}

pub async fn run(args: LoginArgs, env: &Env) -> anyhow::Result<u8> {
    let login_url = env
        .url
        .clone()
        .context("say which installation: berth login --url http://HOST:PORT --token-file FILE")?;
    let path = berth_cli::login(&login_url, &args.token_file, env.config.clone()).await?;
    eprintln!(
        "the CLI now uses {login_url} (configuration in {})",
        path.display()
    );
    Ok(0)
}

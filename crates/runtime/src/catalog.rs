//! Settings catalogs, read from the engine in its own image.
//!
//! A short-lived container of the image runs `berth agent catalog` (the agent volume
//! mounted read-only as always): it bootstraps a scratch database, starts the engine,
//! reads every setting (`pg_settings`, `SYSTEM_VARIABLES`) and prints them. The
//! result is cached beside the image cache, keyed by the image tag (which already
//! encodes every input of the image), so it is read once per image.

use crate::agent_volume::AGENT_MOUNT;
use crate::image::ImageBuilder;
use crate::{Result, Runtime, RuntimeError};
use berth_model::agent::env;
use berth_model::params::Catalog;
use berth_model::{EngineKind, EngineVersion};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;

fn cache_file(builder: &ImageBuilder, tag: &str) -> PathBuf {
    let safe: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    builder
        .cache_dir()
        .join("catalogs")
        .join(format!("{safe}.json"))
}

impl ImageBuilder {
    /// The catalog of the engine in `tag` if it was read before.
    pub async fn cached_catalog(&self, tag: &str) -> Option<Catalog> {
        let text = tokio::fs::read_to_string(cache_file(self, tag))
            .await
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The catalog of the engine in `tag`, from the cache or read from the engine.
    pub async fn ensure_catalog(
        &self,
        runtime: &Runtime,
        tag: &str,
        agent_volume: &str,
        engine: EngineKind,
        version: &EngineVersion,
    ) -> Result<Catalog> {
        let path = cache_file(self, tag);
        if let Some(c) = self.cached_catalog(tag).await {
            return Ok(c);
        }
        let fail = |reason: String| RuntimeError::ImageBuild {
            tag: tag.to_owned(),
            reason: format!("reading the settings catalog: {reason}"),
        };
        let name = format!(
            "berth-catalog-{}",
            berth_model::TaskId::new_random().short()
        );
        let body = ContainerCreateBody {
            image: Some(tag.to_owned()),
            entrypoint: Some(vec![
                format!("{AGENT_MOUNT}/berth"),
                "agent".into(),
                "catalog".into(),
            ]),
            cmd: Some(vec![]),
            env: Some(vec![
                format!("{}={engine}", env::ENGINE),
                format!("{}={version}", env::VERSION),
            ]),
            // The site's label too: whoever cleans up this installation's containers
            // (the test harness, an operator's `docker ps --filter`) finds one left
            // by a control plane killed while it read the catalog.
            labels: Some(HashMap::from([
                ("io.berth.catalog".to_owned(), tag.to_owned()),
                (
                    berth_model::labels::SITE.to_owned(),
                    runtime.site().to_string(),
                ),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    source: Some(agent_volume.to_owned()),
                    target: Some(AGENT_MOUNT.into()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                memory: Some(1024 * 1024 * 1024),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker = runtime.docker();
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await?;
        let result = async {
            docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await?;
            let mut wait = docker.wait_container(
                &name,
                None::<bollard::query_parameters::WaitContainerOptions>,
            );
            let mut code = 0;
            while let Some(r) = wait.next().await {
                match r {
                    Ok(w) => code = w.status_code,
                    Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                        code = c
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut logs = docker.logs(
                &name,
                Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
            );
            while let Some(chunk) = logs.next().await {
                match chunk? {
                    bollard::container::LogOutput::StdOut { message } => {
                        out.extend_from_slice(&message)
                    }
                    other => err.extend_from_slice(&other.into_bytes()),
                }
            }
            if code != 0 {
                let tail: String = String::from_utf8_lossy(&err)
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(fail(format!("the catalog run exited with {code}:\n{tail}")));
            }
            serde_json::from_slice::<Catalog>(&out)
                .map_err(|e| fail(format!("unreadable output: {e}")))
        }
        .await;
        let _ = docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let catalog = result?;
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let _ = tokio::fs::write(&path, serde_json::to_vec(&catalog).unwrap_or_default()).await;
        Ok(catalog)
    }
}

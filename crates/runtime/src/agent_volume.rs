//! The volume that carries the `berth` binary into member containers.
//!
//! Images hold the engine only (DESIGN principle 6). Each build of Berth gets a
//! volume named after its binary's hash; members mount it read-only as their
//! entrypoint. A new Berth makes a new volume, so a running container keeps the agent
//! it started with, and no image is ever rebuilt for a new Berth.

use crate::{Outcome, Result, Runtime, RuntimeError};
use berth_model::labels;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::path::Path;

/// Where the agent volume is mounted in member containers.
pub const AGENT_MOUNT: &str = "/opt/berth";

fn marker(sha: &str) -> String {
    format!(".complete-{sha}")
}

impl Runtime {
    /// Makes sure the agent volume for this binary exists and holds the binary.
    /// `image` is any local image with a shell-less root file system to host the
    /// short-lived helper container used for the copy.
    pub async fn ensure_agent_volume(
        &self,
        binary: &Path,
        sha256: &str,
        image: &str,
    ) -> Result<(String, Outcome)> {
        let name = labels::agent_volume_name(sha256);
        let mut verified = self.agent_lock.lock().await;
        if verified.as_deref() == Some(name.as_str()) {
            return Ok((name, Outcome::AlreadyThere));
        }
        // Agent volumes are shared by every site on this engine: no site label.
        let vol_labels = HashMap::from([(labels::AGENT.to_owned(), sha256.to_owned())]);
        let present = match self.docker().inspect_volume(&name).await {
            Ok(v) if v.labels.get(labels::AGENT).map(String::as_str) == Some(sha256) => true,
            Ok(_) => {
                return Err(RuntimeError::NotOurs {
                    kind: "volume",
                    name,
                })
            }
            Err(e) if crate::status(&e) == Some(404) => false,
            Err(e) => return Err(e.into()),
        };
        if !present {
            let req = bollard::models::VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(vol_labels),
                ..Default::default()
            };
            self.docker().create_volume(req).await?;
        }
        let helper = format!("{name}-fill-{}", berth_model::TaskId::new_random().short());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["/bin/true".into()]),
            // The site's label too, so one left by a control plane killed mid-fill
            // is removed with the site's other containers.
            labels: Some(HashMap::from([
                (labels::AGENT.to_owned(), sha256.to_owned()),
                (labels::SITE.to_owned(), self.site.to_string()),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    source: Some(name.clone()),
                    target: Some(AGENT_MOUNT.into()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker()
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&helper).build()),
                body,
            )
            .await?;
        let result = self.fill(&helper, binary, sha256).await;
        let _ = self
            .docker()
            .remove_container(
                &helper,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let outcome = result?;
        *verified = Some(name.clone());
        Ok((name, outcome))
    }

    /// Removes agent volumes of other Berth builds that no container uses (Docker
    /// refuses to remove a volume any container, even a stopped one, mounts), and
    /// helper containers a crash left behind. Volumes younger than an hour are kept. Returns the names removed.
    pub async fn prune_agent_volumes(&self, current_sha256: &str) -> Result<Vec<String>> {
        let filter = HashMap::from([("label".to_owned(), vec![labels::AGENT.to_owned()])]);
        let helpers = self
            .docker()
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filter)
                    .build(),
            ))
            .await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for h in helpers {
            // A helper lives for a second; one older than ten minutes was left by a
            // crash. Younger ones may be another process's copy in progress.
            let stale = h.created.is_some_and(|c| now - c > 600);
            if let (true, Some(id)) = (stale, h.id) {
                let _ = self
                    .docker()
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
            }
        }
        let volumes = self
            .docker()
            .list_volumes(Some(
                bollard::query_parameters::ListVolumesOptionsBuilder::new()
                    .filters(&filter)
                    .build(),
            ))
            .await?
            .volumes
            .unwrap_or_default();
        let mut removed = vec![];
        for v in volumes {
            if v.labels.get(labels::AGENT).map(String::as_str) == Some(current_sha256) {
                continue;
            }
            // Another Berth build may be creating a member with a volume it just
            // made: only volumes over an hour old are candidates.
            let old_enough = v
                .created_at
                .as_deref()
                .and_then(|c| {
                    time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_some_and(|c| time::OffsetDateTime::now_utc() - c > time::Duration::hours(1));
            if !old_enough {
                continue;
            }
            if self.remove_volume(&v.name).await.is_ok() {
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    async fn fill(&self, helper: &str, binary: &Path, sha256: &str) -> Result<Outcome> {
        let mark = format!("{AGENT_MOUNT}/{}", marker(sha256));
        let probe = self
            .docker()
            .download_from_container(
                helper,
                Some(
                    DownloadFromContainerOptionsBuilder::new()
                        .path(&mark)
                        .build(),
                ),
            )
            .try_collect::<Vec<_>>()
            .await;
        if probe.is_ok() {
            return Ok(Outcome::AlreadyThere);
        }
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| RuntimeError::Io { what, source }
        };
        let bytes = tokio::fs::read(binary)
            .await
            .map_err(io("reading the berth binary"))?;
        // One archive, binary first, marker last: an interrupted copy leaves no marker.
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        archive
            .append_data(&mut header, "berth", bytes.as_slice())
            .map_err(io("packing the berth binary"))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, marker(sha256), std::io::empty())
            .map_err(io("packing the marker"))?;
        let tar = archive
            .into_inner()
            .map_err(io("packing the agent archive"))?;
        self.docker()
            .upload_to_container(
                helper,
                Some(
                    UploadToContainerOptionsBuilder::new()
                        .path(AGENT_MOUNT)
                        .build(),
                ),
                bollard::body_full(tar.into()),
            )
            .await?;
        Ok(Outcome::Done)
    }
}

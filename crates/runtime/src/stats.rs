//! Resource usage of member containers, as Docker's stats report it, for the
//! control plane's `/metrics`.
//!
//! One call per container (`one-shot`, no stream): Docker answers from the cgroup
//! at once instead of sampling twice a second apart. A container that is not
//! running has no usage to report and reads as `None` — never as zeros, which a
//! dashboard would take for an idle database.

use crate::{containers::working_set, status, Labelled, Result, Runtime};
use berth_model::labels;
use bollard::models::ContainerStatsResponse;

/// What one member container uses now.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberStats {
    /// CPU time used since the container started, in seconds.
    pub cpu_seconds: f64,
    /// CPU time the container was throttled by its limit, in seconds.
    pub cpu_throttled_seconds: Option<f64>,
    /// Memory really in use (see [`working_set`]), in bytes.
    pub memory_working_set: u64,
    /// The container's memory limit, in bytes.
    pub memory_limit: Option<u64>,
}

/// A member container of this site, as found by its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberContainerRef {
    /// Docker's id.
    pub id: String,
    /// The `io.berth.instance` label.
    pub instance: String,
    /// The `io.berth.member` label.
    pub member: String,
}

impl MemberContainerRef {
    /// The member containers among a site's labelled containers that should run:
    /// running or paused (stopped ones have no usage to report).
    pub fn running_members(containers: Vec<Labelled>) -> Vec<Self> {
        containers
            .into_iter()
            // A paused member is read too: it answers nothing, which the monitor
            // must see (a frozen replica replicates nothing).
            .filter(|c| c.running || c.paused)
            .filter_map(|c| {
                Some(Self {
                    instance: c.labels.get(labels::INSTANCE)?.clone(),
                    member: c.labels.get(labels::MEMBER)?.clone(),
                    id: c.id,
                })
            })
            .collect()
    }
}

impl Runtime {
    /// What a container uses now; `None` when it is gone or not running.
    pub async fn container_stats(&self, id: &str) -> Result<Option<MemberStats>> {
        use futures_util::StreamExt;
        let opts = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker().stats(id, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => Ok(member_stats(&s)),
            Some(Err(e)) if status(&e) == Some(404) => Ok(None),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }
}

/// Reads Docker's answer. A stopped container's answer has no memory usage (and a
/// CPU total of zero): that is "no data", not a measurement.
pub fn member_stats(s: &ContainerStatsResponse) -> Option<MemberStats> {
    let memory = s.memory_stats.as_ref()?;
    let usage = memory.usage?;
    let cpu = s.cpu_stats.as_ref()?;
    let total_ns = cpu.cpu_usage.as_ref()?.total_usage?;
    Some(MemberStats {
        cpu_seconds: total_ns as f64 / 1e9,
        cpu_throttled_seconds: cpu
            .throttling_data
            .as_ref()
            .and_then(|t| t.throttled_time)
            .map(|ns| ns as f64 / 1e9),
        memory_working_set: working_set(usage, &memory.stats.clone().unwrap_or_default()),
        memory_limit: memory.limit.filter(|&l| l > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats, ContainerThrottlingData,
    };
    use std::collections::HashMap;

    fn running() -> ContainerStatsResponse {
        ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(2_500_000_000),
                    ..Default::default()
                }),
                throttling_data: Some(ContainerThrottlingData {
                    throttled_time: Some(500_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100 << 20),
                limit: Some(256 << 20),
                stats: Some(HashMap::from([("inactive_file".to_owned(), 10 << 20)])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_container_reads_in_seconds_and_bytes() {
        let s = member_stats(&running()).expect("stats");
        assert_eq!(s.cpu_seconds, 2.5);
        assert_eq!(s.cpu_throttled_seconds, Some(0.5));
        assert_eq!(s.memory_working_set, 90 << 20);
        assert_eq!(s.memory_limit, Some(256 << 20));
    }

    #[test]
    fn a_stopped_container_is_no_data_not_zero() {
        let mut s = running();
        s.memory_stats = Some(ContainerMemoryStats::default());
        assert_eq!(member_stats(&s), None);
        assert_eq!(member_stats(&ContainerStatsResponse::default()), None);
    }

    #[test]
    fn only_running_or_paused_labelled_members_are_asked() {
        let c = |id: &str, running: bool, labelled: bool| Labelled {
            id: id.into(),
            name: id.into(),
            labels: if labelled {
                HashMap::from([
                    (labels::INSTANCE.to_owned(), "i1".to_owned()),
                    (labels::MEMBER.to_owned(), "0".to_owned()),
                ])
            } else {
                HashMap::new()
            },
            running,
            paused: false,
        };
        let paused = Labelled {
            paused: true,
            ..c("d", false, true)
        };
        let found = MemberContainerRef::running_members(vec![
            c("a", true, true),
            c("b", false, true),
            c("c", true, false),
            paused,
        ]);
        let member = |id: &str| MemberContainerRef {
            id: id.into(),
            instance: "i1".into(),
            member: "0".into(),
        };
        assert_eq!(found, vec![member("a"), member("d")]);
    }
}

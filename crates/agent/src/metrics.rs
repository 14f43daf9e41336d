//! `GET /metrics`: one round of this member's metrics, as JSON
//! ([`berth_model::metrics::AgentMetrics`]). The engine's part is read through
//! [`berth_engine::Engine::collect_metrics`] and bounded by [`ENGINE_BUDGET`]; the
//! data volume's space from `statvfs`; network counters from `/proc/net/dev` (the
//! agent shares the container's network namespace). What cannot be read is left
//! out (the engine's with its reason), never given as zero.

use crate::AgentConfig;
use berth_model::metrics::{AgentMetrics, DiskUsage, NetworkCounters};
use std::path::Path;
use std::time::Duration;

/// The longest the engine's part may take; the control plane waits a little more.
pub(crate) const ENGINE_BUDGET: Duration = Duration::from_secs(3);

/// Reads everything once.
pub(crate) async fn collect(config: &AgentConfig, refused: Option<String>) -> AgentMetrics {
    let (engine, engine_error) = match refused {
        Some(reason) => (None, Some(format!("the engine is not started: {reason}"))),
        None => {
            let read = config.engine().collect_metrics(&config.layout);
            match tokio::time::timeout(ENGINE_BUDGET, read).await {
                Ok(Ok(m)) => (Some(m), None),
                Ok(Err(e)) => (None, Some(e.to_string())),
                Err(_) => (
                    None,
                    Some(format!(
                        "the engine did not answer within {}s",
                        ENGINE_BUDGET.as_secs()
                    )),
                ),
            }
        }
    };
    AgentMetrics {
        engine_up: engine.is_some(),
        engine,
        engine_error,
        disk: disk_usage(&config.layout.volume),
        network: std::fs::read_to_string("/proc/net/dev")
            .ok()
            .map(|s| network_counters(&s)),
    }
}

/// The file system's own count: what is used, and what the engine could use.
fn disk_usage(volume: &Path) -> Option<DiskUsage> {
    let s = nix::sys::statvfs::statvfs(volume).ok()?;
    let frsize = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let free = s.blocks_free() as u64;
    let avail = s.blocks_available() as u64;
    let used = blocks.saturating_sub(free);
    Some(DiskUsage {
        used_bytes: used * frsize,
        total_bytes: (used + avail) * frsize,
    })
}

/// Sums received and sent bytes of every interface but loopback.
fn network_counters(proc_net_dev: &str) -> NetworkCounters {
    let mut out = NetworkCounters::default();
    for line in proc_net_dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            out.rx_bytes += fields[0];
            out.tx_bytes += fields[8];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_counts_every_interface_but_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:   52000     400    0    0    0     0          0         0    31000     300    0    0    0     0       0          0
  eth1:      10       1    0    0    0     0          0         0       20       1    0    0    0     0       0          0
";
        assert_eq!(
            network_counters(dev),
            NetworkCounters {
                rx_bytes: 52010,
                tx_bytes: 31020
            }
        );
    }

    #[test]
    fn disk_usage_reads_the_file_system() {
        let d = tempfile::tempdir().expect("tmp");
        let u = disk_usage(d.path()).expect("statvfs");
        assert!(u.total_bytes >= u.used_bytes && u.total_bytes > 0);
    }
}

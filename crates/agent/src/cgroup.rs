//! The member's real limits, read from its cgroup: what `docker update` changed is
//! what the engine's memory-derived settings follow, with no restart and no message
//! that could be lost. cgroup v2 and v1 are both read.

use berth_engine::Resources;
use std::path::Path;

/// Memory limit from `memory.max` (v2) or `memory.limit_in_bytes` (v1), in MiB.
/// `None` when unlimited or unreadable.
pub(crate) fn parse_memory(v2: Option<&str>, v1: Option<&str>) -> Option<u64> {
    let bytes: u64 = match (v2.map(str::trim), v1.map(str::trim)) {
        (Some("max"), _) => return None,
        (Some(v), _) => v.parse().ok()?,
        (None, Some(v)) => v.parse().ok()?,
        (None, None) => return None,
    };
    // v1 reports "unlimited" as a huge page-aligned number.
    if bytes >= 1 << 60 {
        return None;
    }
    Some(bytes / (1024 * 1024))
}

/// CPU limit from `cpu.max` (v2: "QUOTA PERIOD") or `cpu.cfs_quota_us` and
/// `cpu.cfs_period_us` (v1), in thousandths of a core. `None` when unlimited.
pub(crate) fn parse_cpu(
    v2: Option<&str>,
    v1_quota: Option<&str>,
    v1_period: Option<&str>,
) -> Option<u32> {
    let (quota, period): (i64, i64) = match v2.map(str::trim) {
        Some(line) => {
            let mut parts = line.split_whitespace();
            let q = parts.next()?;
            if q == "max" {
                return None;
            }
            (q.parse().ok()?, parts.next()?.parse().ok()?)
        }
        None => (
            v1_quota?.trim().parse().ok()?,
            v1_period?.trim().parse().ok()?,
        ),
    };
    if quota <= 0 || period <= 0 {
        return None;
    }
    u32::try_from(quota * 1000 / period).ok()
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(path)).ok()
}

/// The container's limits; `fallback` fills in what the cgroup does not say.
pub(crate) fn resources(fallback: Resources) -> Resources {
    let memory = parse_memory(
        read("/sys/fs/cgroup/memory.max").as_deref(),
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes").as_deref(),
    );
    let cpu = parse_cpu(
        read("/sys/fs/cgroup/cpu.max").as_deref(),
        read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").as_deref(),
        read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").as_deref(),
    );
    Resources {
        memory_mib: memory.unwrap_or(fallback.memory_mib),
        cpu_millis: cpu.unwrap_or(fallback.cpu_millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_in_both_versions() {
        assert_eq!(parse_memory(Some("536870912\n"), None), Some(512));
        assert_eq!(parse_memory(Some("max\n"), None), None);
        assert_eq!(parse_memory(None, Some("268435456")), Some(256));
        assert_eq!(parse_memory(None, Some("9223372036854771712")), None);
        assert_eq!(parse_memory(None, None), None);
        assert_eq!(parse_memory(Some("garbage"), None), None);
    }

    #[test]
    fn cpu_limits_in_both_versions() {
        assert_eq!(parse_cpu(Some("50000 100000\n"), None, None), Some(500));
        assert_eq!(parse_cpu(Some("max 100000"), None, None), None);
        assert_eq!(parse_cpu(None, Some("150000"), Some("100000")), Some(1500));
        assert_eq!(parse_cpu(None, Some("-1"), Some("100000")), None);
        assert_eq!(parse_cpu(None, None, None), None);
    }
}

//! The backup series of an instance, from its backup records and policy: whether
//! its newest backup failed (`backup_failed`) and how long its schedule has gone
//! without one (`backup_overdue_seconds`). Pure; the monitor records them each round
//! so that alarms see backups that failed or never ran, and clear when a good one
//! follows.

use super::Metric;
use crate::backup::{parse_time, BackupPolicyRecord, BackupRecord, BackupState, Schedule};
use crate::verify::VerifyOutcome;
use chrono::{DateTime, Utc};

/// The values of the backup series at `now`; `backups` are the instance's.
pub fn backup_samples(
    policy: Option<&BackupPolicyRecord>,
    backups: &[BackupRecord],
    now: DateTime<Utc>,
) -> Vec<(Metric, f64)> {
    let mut out = vec![(Metric::BackupFailed, failed(backups))];
    if let Some(secs) = policy.and_then(|p| overdue_seconds(p, backups, now)) {
        out.push((Metric::BackupOverdueSeconds, secs));
    }
    out
}

/// 1 when the newest finished backup failed, or the newest complete one failed its
/// verification; else 0. A later good backup clears it.
fn failed(backups: &[BackupRecord]) -> f64 {
    let newest = |pred: &dyn Fn(&BackupRecord) -> bool| {
        backups
            .iter()
            .filter(|b| pred(b))
            .max_by(|a, b| a.started_at.cmp(&b.started_at))
    };
    let last_finished = newest(&|b| b.state != BackupState::Running);
    let last_complete = newest(&|b| b.is_complete());
    let bad = last_finished.is_some_and(|b| b.state == BackupState::Failed)
        || last_complete
            .and_then(|b| b.verification.as_ref())
            .is_some_and(|v| v.outcome == VerifyOutcome::Failed);
    if bad {
        1.0
    } else {
        0.0
    }
}

/// Seconds since the schedule's latest slot when no complete backup was taken at or
/// after it and one was due then; 0 when one was (or none was due); `None` with no
/// schedule. A policy's `last_slot` is the slot of its last scheduled run, or when
/// it was set: later than the slot means the schedule was set after it (nothing
/// was due), earlier means the run has not started.
fn overdue_seconds(
    policy: &BackupPolicyRecord,
    backups: &[BackupRecord],
    now: DateTime<Utc>,
) -> Option<f64> {
    let schedule = Schedule::parse(&policy.schedule).ok()?;
    let Some(slot) = schedule.latest_at_or_before(now) else {
        return Some(0.0);
    };
    let last = parse_time(&policy.last_slot)?;
    if last > slot {
        return Some(0.0);
    }
    let covered = backups
        .iter()
        .filter(|b| b.is_complete())
        .filter_map(|b| parse_time(&b.started_at))
        .any(|t| t >= slot);
    if covered {
        return Some(0.0);
    }
    Some((now - slot).num_seconds().max(0) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::Retention;
    use crate::verify::Verification;
    use crate::InstanceId;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("time")
    }

    fn backup(started: &str, state: BackupState) -> BackupRecord {
        let mut b = BackupRecord::sample(started);
        b.state = state;
        if state == BackupState::Succeeded {
            b.size_bytes = Some(1);
            b.sha256 = Some("ab".into());
        }
        b
    }

    fn policy(schedule: &str, last_slot: &str) -> BackupPolicyRecord {
        BackupPolicyRecord {
            instance_id: InstanceId::new_random(),
            instance_name: "db1".into(),
            schedule: schedule.into(),
            retention: Retention::default(),
            last_slot: last_slot.into(),
            verify: crate::verify::VerifyPolicy::Off,
        }
    }

    fn value(samples: &[(Metric, f64)], m: Metric) -> Option<f64> {
        samples.iter().find(|(k, _)| *k == m).map(|(_, v)| *v)
    }

    #[test]
    fn the_newest_attempt_decides_whether_backups_are_failing() {
        let now = at("2026-01-02T12:00:00Z");
        let ok = backup("2026-01-01T00:00:00Z", BackupState::Succeeded);
        let bad = backup("2026-01-02T00:00:00Z", BackupState::Failed);
        let s = backup_samples(None, &[ok.clone(), bad.clone()], now);
        assert_eq!(value(&s, Metric::BackupFailed), Some(1.0));
        // A good one after it clears it; one still running changes nothing.
        let later = backup("2026-01-02T06:00:00Z", BackupState::Succeeded);
        let running = backup("2026-01-02T11:00:00Z", BackupState::Running);
        let s = backup_samples(None, &[ok, bad, later.clone(), running], now);
        assert_eq!(value(&s, Metric::BackupFailed), Some(0.0));
        // The newest complete backup failed its verification.
        let mut unverifiable = later;
        unverifiable.verification = Some(Verification {
            outcome: VerifyOutcome::Failed,
            at: "2026-01-02T07:00:00Z".into(),
            detail: "checksum mismatch".into(),
        });
        let s = backup_samples(None, &[unverifiable], now);
        assert_eq!(value(&s, Metric::BackupFailed), Some(1.0));
        // No schedule: no overdue series; no backups: nothing failed.
        let s = backup_samples(None, &[], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), None);
        assert_eq!(value(&s, Metric::BackupFailed), Some(0.0));
    }

    #[test]
    fn overdue_counts_from_the_slot_that_has_no_complete_backup() {
        let daily = "0 0 * * *";
        let now = at("2026-01-02T03:00:00Z");
        // The run of 00:00 started (last_slot is that slot) but nothing completed.
        let p = policy(daily, "2026-01-02T00:00:00Z");
        let s = backup_samples(Some(&p), &[], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), Some(3.0 * 3600.0));
        // It completed: not overdue.
        let done = backup("2026-01-02T00:00:05Z", BackupState::Succeeded);
        let s = backup_samples(Some(&p), &[done], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), Some(0.0));
        // The run never started (serve was down): overdue as well.
        let missed = policy(daily, "2026-01-01T00:00:00Z");
        let old = backup("2026-01-01T00:00:05Z", BackupState::Succeeded);
        let s = backup_samples(Some(&missed), &[old], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), Some(3.0 * 3600.0));
        // The schedule was set after the slot: nothing was due yet.
        let fresh = policy(daily, "2026-01-02T01:00:00Z");
        let s = backup_samples(Some(&fresh), &[], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), Some(0.0));
        // Off: no series.
        let off = policy("off", "2026-01-02T01:00:00Z");
        let s = backup_samples(Some(&off), &[], now);
        assert_eq!(value(&s, Metric::BackupOverdueSeconds), None);
    }
}

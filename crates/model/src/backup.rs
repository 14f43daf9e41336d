//! Backups: what a backup is, where its object lives in the backup store, and when it
//! may be called good.
//!
//! A backup's record is written `running` before the first byte is streamed and
//! becomes `succeeded` only together with the size and checksum of the complete
//! object, so a backup cut short (a crash, a failed dump) is never listed as good.

use crate::{EngineKind, EngineVersion, InstanceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a backup; it outlives the instance it was taken from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct BackupId(uuid::Uuid);

impl BackupId {
    /// A fresh random id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for BackupId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// How a backup is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// The engine's own dump (`pg_dumpall`, `mariadb-dump`): SQL, portable, slower to
    /// restore than a physical copy.
    Logical,
}

impl BackupKind {
    /// The kind as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logical => "logical",
        }
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logical" => Ok(Self::Logical),
            other => Err(format!(
                "unknown backup kind {other:?}; use logical (physical backups come later)"
            )),
        }
    }
}

/// Where a backup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupState {
    /// Being taken (or was, when the control plane stopped: its task takes it again).
    Running,
    /// Complete: the object is stored and its size and checksum recorded.
    Succeeded,
    /// Not usable; the record's error says why.
    Failed,
}

impl BackupState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for BackupState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown backup state {s:?}"))
    }
}

/// A backup as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// The backup.
    pub id: BackupId,
    /// The instance it was taken from (which may since be gone).
    pub instance_id: InstanceId,
    /// That instance's name when the backup was taken.
    pub instance_name: String,
    /// The engine.
    pub engine: EngineKind,
    /// Its version: a backup restores into the same one.
    pub version: EngineVersion,
    /// How it was taken.
    pub kind: BackupKind,
    /// Where it is.
    pub state: BackupState,
    /// The object's key in the backup store.
    pub object: String,
    /// Bytes stored (compressed), once complete.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the stored bytes, hex, once complete.
    pub sha256: Option<String>,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended, either way.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its last verification by restoring, if it had one.
    pub verification: Option<crate::verify::Verification>,
    /// The member it was taken from (`db1-1`), once complete.
    pub taken_from: Option<String>,
}

impl BackupRecord {
    /// A PostgreSQL 15 logical backup of `db1` begun at `started`, for tests.
    #[cfg(test)]
    pub(crate) fn sample(started: &str) -> Self {
        Self::begin(
            BackupId::new_random(),
            InstanceId::new_random(),
            "db1".into(),
            EngineKind::Postgres,
            EngineKind::Postgres.version("15").expect("version"),
            BackupKind::Logical,
            started,
        )
    }

    /// A backup about to be taken.
    pub fn begin(
        id: BackupId,
        instance_id: InstanceId,
        instance_name: String,
        engine: EngineKind,
        version: EngineVersion,
        kind: BackupKind,
        now: &str,
    ) -> Self {
        Self {
            object: object_key(instance_id, id, kind),
            id,
            instance_id,
            instance_name,
            engine,
            version,
            kind,
            state: BackupState::Running,
            size_bytes: None,
            sha256: None,
            started_at: now.to_owned(),
            finished_at: None,
            error: None,
            verification: None,
            taken_from: None,
        }
    }

    /// Usable for a restore: finished, with the checksum that proves its bytes.
    pub fn is_complete(&self) -> bool {
        self.state == BackupState::Succeeded && self.sha256.is_some() && self.size_bytes.is_some()
    }
}

/// The object's key: under the instance's id, so that a name reused later never mixes
/// two instances' backups.
pub fn object_key(instance: InstanceId, backup: BackupId, kind: BackupKind) -> String {
    let ext = match kind {
        BackupKind::Logical => "sql.zst",
    };
    format!("{instance}/{backup}.{kind}.{ext}")
}

/// When an instance is backed up by itself: a five-field cron expression (minute,
/// hour, day of month, month, day of week), in UTC.
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// Every instance's schedule until one is set: daily at midnight UTC.
    pub const DEFAULT: &'static str = "0 0 * * *";
    /// A policy's schedule when no backup is to run by itself (retention still
    /// applies). Not a cron expression: [`Schedule::parse`] refuses it.
    pub const OFF: &'static str = "off";

    /// Parses a cron expression; the error says what a good one looks like.
    pub fn parse(s: &str) -> Result<Self, String> {
        let text = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let usage = |why: &str| {
            format!(
                "{s:?} is not a cron expression ({why}); give five fields, minute hour \
                 day-of-month month day-of-week, in UTC, like \"0 3 * * *\" for 03:00 daily"
            )
        };
        if text.split(' ').count() != 5 {
            return Err(usage("it needs exactly five fields"));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&text)
            .map_err(|e| usage(&e.to_string()))?;
        Ok(Self { text, cron })
    }

    /// The expression, normalised (single spaces).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The run that is due at `now`, if any: the latest slot after `last` (the slot
    /// of the previous run, or when the schedule was set) and no later than `now`.
    /// Slots missed while the control plane was down collapse into this one run.
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let slot = self.cron.find_previous_occurrence(&now, true).ok()?;
        (slot > last).then_some(slot)
    }

    /// The latest slot no later than `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }

    /// The first slot after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

/// How long backups are kept: each rule keeps what it names, and a backup goes only
/// when no rule keeps it. With neither, every backup is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retention {
    /// Keep backups taken within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub keep_days: Option<u32>,
    /// Keep this many newest complete backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub keep_count: Option<u32>,
}

/// A backup policy as the API takes it, whole: what is left out takes its default.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicyRequest {
    /// Cron expression, five fields (minute hour day-of-month month day-of-week), in
    /// UTC, or `off` for no scheduled backups; default `0 0 * * *` (daily at
    /// midnight; at create, the server's `--default-backup-schedule`).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub schedule: Option<String>,
    /// Keep backups taken within this many days.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 36500)]
    pub keep_days: Option<u32>,
    /// Keep this many newest complete backups. The newest complete backup is always
    /// kept, whatever the rules.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 10000)]
    pub keep_count: Option<u32>,
    /// When backups are verified by restoring them into a throwaway instance:
    /// `after-each`, `weekly` or `off`; default `weekly` (at create, the server's
    /// `--default-verify`).
    #[serde(default)]
    pub verify: Option<crate::verify::VerifyPolicy>,
}

/// The most days a retention can name (100 years).
pub const MAX_KEEP_DAYS: u32 = 36_500;
/// The most backups a retention can name.
pub const MAX_KEEP_COUNT: u32 = 10_000;
/// The longest cron expression accepted.
pub const MAX_SCHEDULE_LEN: usize = 200;

impl BackupPolicyRequest {
    /// Whether the numbers and lengths are within what the API document states
    /// (a 400 when not); the error says what to change.
    pub fn check_ranges(&self) -> Result<(), String> {
        if self
            .schedule
            .as_deref()
            .is_some_and(|s| s.len() > MAX_SCHEDULE_LEN)
        {
            return Err(format!(
                "the schedule is longer than {MAX_SCHEDULE_LEN} characters"
            ));
        }
        for (field, value, max) in [
            ("keep_days", self.keep_days, MAX_KEEP_DAYS),
            ("keep_count", self.keep_count, MAX_KEEP_COUNT),
        ] {
            if value.is_some_and(|v| !(1..=max).contains(&v)) {
                return Err(format!(
                    "{field} must be between 1 and {max}; leave it out for no limit"
                ));
            }
        }
        Ok(())
    }

    /// The policy of instance `id` (`name`) this asks for, from `now`; the defaults
    /// give what is left out. Its ranges are checked first ([`Self::check_ranges`]);
    /// the error here is a schedule that is not a cron expression, saying what one
    /// looks like.
    pub fn policy(
        &self,
        id: InstanceId,
        name: &str,
        now: &str,
        default_schedule: &str,
        default_verify: crate::verify::VerifyPolicy,
    ) -> Result<BackupPolicyRecord, String> {
        let schedule = self.schedule.as_deref().unwrap_or(default_schedule);
        let schedule = if schedule == Schedule::OFF {
            Schedule::OFF.to_owned()
        } else {
            Schedule::parse(schedule)?.as_str().to_owned()
        };
        Ok(BackupPolicyRecord {
            instance_id: id,
            instance_name: name.to_owned(),
            schedule,
            retention: Retention {
                keep_days: self.keep_days,
                keep_count: self.keep_count,
            },
            last_slot: now.to_owned(),
            verify: self.verify.unwrap_or(default_verify),
        })
    }
}

/// An instance's backup policy as the store keeps it. It outlives the instance, so
/// retention goes on removing the backups of a deleted instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPolicyRecord {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its name.
    pub instance_name: String,
    /// The cron expression (checked by [`Schedule::parse`] before it is stored).
    pub schedule: String,
    /// How long backups are kept.
    pub retention: Retention,
    /// The slot of the last scheduled run, or when the schedule was set (RFC 3339):
    /// the next run is the first slot after it.
    pub last_slot: String,
    /// When its backups are verified by restoring them.
    pub verify: crate::verify::VerifyPolicy,
}

/// A time as the store writes it (RFC 3339, UTC, seconds).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// When an RFC 3339 timestamp is, if it is one.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionCandidate {
    /// The backup.
    pub id: BackupId,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// Where it is.
    pub state: BackupState,
    /// Complete and checksummed (see [`BackupRecord::is_complete`]).
    pub complete: bool,
    /// Backups a restore from this one needs too (a base backup, archived logs).
    /// Logical backups need none.
    pub needs: Vec<BackupId>,
}

/// The backups of one instance that retention deletes now. Never the newest complete
/// one (the last good backup), never one still running, never one a kept backup
/// needs (transitively); a failed one goes once it is older than the oldest complete
/// backup kept.
pub fn expired(
    backups: &[RetentionCandidate],
    retention: Retention,
    now: DateTime<Utc>,
) -> Vec<BackupId> {
    if retention.keep_days.is_none() && retention.keep_count.is_none() {
        return Vec::new();
    }
    let mut good: Vec<&RetentionCandidate> = backups.iter().filter(|b| b.complete).collect();
    good.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    let mut kept = std::collections::BTreeSet::new();
    for (i, b) in good.iter().enumerate() {
        let by_count = retention
            .keep_count
            .is_some_and(|n| i < usize::try_from(n).unwrap_or(usize::MAX));
        let by_days = retention.keep_days.is_some_and(|d| {
            now.signed_duration_since(b.started_at) < chrono::TimeDelta::days(i64::from(d))
        });
        if i == 0 || by_count || by_days {
            kept.insert(b.id);
        }
    }
    let oldest_kept = good
        .iter()
        .filter(|b| kept.contains(&b.id))
        .map(|b| b.started_at)
        .min();
    for b in backups.iter().filter(|b| !b.complete) {
        let newer_than_kept = oldest_kept.is_none_or(|t| b.started_at >= t);
        if b.state == BackupState::Running || newer_than_kept {
            kept.insert(b.id);
        }
    }
    // What a kept backup needs is kept too, and what that needs.
    let mut todo: Vec<BackupId> = kept.iter().copied().collect();
    while let Some(id) = todo.pop() {
        for b in backups.iter().filter(|b| b.id == id) {
            for n in &b.needs {
                if kept.insert(*n) {
                    todo.push(*n);
                }
            }
        }
    }
    backups
        .iter()
        .map(|b| b.id)
        .filter(|id| !kept.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_finished_checksummed_backup_is_complete() {
        let mut b = BackupRecord::sample("2026-01-01T00:00:00Z");
        assert!(!b.is_complete());
        b.state = BackupState::Succeeded;
        assert!(!b.is_complete(), "no checksum yet");
        b.sha256 = Some("ab".into());
        b.size_bytes = Some(2);
        assert!(b.is_complete());
        b.state = BackupState::Failed;
        assert!(!b.is_complete());
    }

    #[test]
    fn names_round_trip_and_keys_are_per_instance() {
        for s in [
            BackupState::Running,
            BackupState::Succeeded,
            BackupState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<BackupState>(), Ok(s));
        }
        assert_eq!("logical".parse::<BackupKind>(), Ok(BackupKind::Logical));
        assert!("physical".parse::<BackupKind>().is_err());
        let i = InstanceId::new_random();
        let b = BackupId::new_random();
        assert_eq!(
            object_key(i, b, BackupKind::Logical),
            format!("{i}/{b}.logical.sql.zst")
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_and_a_missed_run_is_due_once() {
        let s = Schedule::parse("*/15  3 * * *").expect("parsed");
        assert_eq!(s.as_str(), "*/15 3 * * *");
        assert!(Schedule::parse(Schedule::DEFAULT).is_ok());
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "x y z * *",
            "0 0 32 * *",
        ] {
            let err = Schedule::parse(bad).expect_err(bad);
            assert!(err.contains("five fields"), "{err}");
        }
        let daily = Schedule::parse("0 3 * * *").expect("daily");
        let set = at("2026-01-01T12:00:00Z");
        assert_eq!(daily.due(set, at("2026-01-02T02:59:59Z")), None);
        assert_eq!(
            daily.due(set, at("2026-01-02T03:00:00Z")),
            Some(at("2026-01-02T03:00:00Z"))
        );
        // Down for three days: one run, for the latest slot.
        let slot = daily.due(set, at("2026-01-05T10:00:00Z"));
        assert_eq!(slot, Some(at("2026-01-05T03:00:00Z")));
        assert_eq!(
            daily.due(slot.expect("slot"), at("2026-01-05T10:00:01Z")),
            None
        );
        assert_eq!(daily.next_after(set), Some(at("2026-01-02T03:00:00Z")));
    }

    fn candidate(n: u8, day: u32, state: BackupState) -> RetentionCandidate {
        RetentionCandidate {
            id: BackupId(uuid::Uuid::from_u128(u128::from(n))),
            started_at: at(&format!("2026-01-{day:02}T00:00:00Z")),
            state,
            complete: state == BackupState::Succeeded,
            needs: Vec::new(),
        }
    }

    #[test]
    fn retention_keeps_what_a_rule_keeps_and_always_the_last_good_one() {
        use BackupState::{Failed, Running, Succeeded};
        let now = at("2026-01-10T12:00:00Z");
        let bs = vec![
            candidate(1, 1, Succeeded),
            candidate(2, 2, Failed),
            candidate(3, 3, Succeeded),
            candidate(4, 8, Succeeded),
            candidate(5, 9, Failed),
            candidate(6, 9, Running),
        ];
        let ids = |v: &[u8]| -> Vec<BackupId> {
            v.iter()
                .map(|n| BackupId(uuid::Uuid::from_u128(u128::from(*n))))
                .collect()
        };
        assert!(expired(&bs, Retention::default(), now).is_empty());
        let count2 = Retention {
            keep_count: Some(2),
            keep_days: None,
        };
        assert_eq!(expired(&bs, count2, now), ids(&[1, 2]));
        let days1 = Retention {
            keep_days: Some(1),
            keep_count: None,
        };
        // Nothing within a day: the last good one stays all the same.
        assert_eq!(expired(&bs, days1, now), ids(&[1, 2, 3]));
        let both = Retention {
            keep_days: Some(8),
            keep_count: Some(1),
        };
        assert_eq!(expired(&bs, both, now), ids(&[1, 2]));
        // A kept backup's needs are kept.
        let mut needy = bs.clone();
        needy[3].needs = ids(&[1]);
        assert_eq!(expired(&needy, count2, now), ids(&[2]));
    }

    proptest::proptest! {
        #[test]
        fn retention_never_deletes_the_last_good_a_running_or_a_needed_backup(
            days in proptest::collection::vec((1u32..28, 0u8..3, proptest::option::of(0usize..12)), 0..12),
            keep_days in proptest::option::of(1u32..30),
            keep_count in proptest::option::of(1u32..5),
        ) {
            let states = [BackupState::Running, BackupState::Succeeded, BackupState::Failed];
            let mut bs: Vec<RetentionCandidate> = days
                .iter()
                .enumerate()
                .map(|(i, (d, s, _))| candidate(u8::try_from(i).unwrap_or(0), *d, states[usize::from(*s)]))
                .collect();
            for (i, (_, _, need)) in days.iter().enumerate() {
                if let Some(n) = need.filter(|n| *n < bs.len() && *n != i) {
                    let id = bs[n].id;
                    bs[i].needs.push(id);
                }
            }
            let r = Retention { keep_days, keep_count };
            let gone = expired(&bs, r, at("2026-02-01T00:00:00Z"));
            let newest_good = bs.iter().filter(|b| b.complete).max_by(|a, b| {
                a.started_at.cmp(&b.started_at).then(b.id.cmp(&a.id))
            });
            if let Some(b) = newest_good {
                proptest::prop_assert!(!gone.contains(&b.id));
            }
            for b in &bs {
                if b.state == BackupState::Running {
                    proptest::prop_assert!(!gone.contains(&b.id));
                }
                if !gone.contains(&b.id) {
                    for n in &b.needs {
                        proptest::prop_assert!(!gone.contains(n), "a kept backup's need went");
                    }
                }
            }
            let good = bs.iter().filter(|b| b.complete).count();
            let good_gone = bs.iter().filter(|b| b.complete && gone.contains(&b.id)).count();
            if let Some(n) = keep_count {
                proptest::prop_assert!(good - good_gone >= good.min(n as usize));
            }
            if keep_days.is_none() && keep_count.is_none() {
                proptest::prop_assert!(gone.is_empty());
            }
        }
    }
}

//! Verifying backups by restoring them: the per-instance policy, what a verification
//! found, and which backup is due for one. Pure: the scheduler asks, the store keeps.
//!
//! A backup is only called good once it was restored into a throwaway instance, the
//! engine's own consistency check passed and every table could be read to its end.
//! `after-each` verifies every backup once it is complete; `weekly` (the default)
//! verifies the newest complete backup when none of the instance's backups was
//! verified in the last seven days; `off` verifies only on request.

use crate::backup::{parse_time, BackupId, BackupRecord};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// When an instance's backups are verified by themselves.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyPolicy {
    /// Every backup, once it is complete.
    AfterEach,
    /// The newest backup, when none was verified in the last seven days.
    #[default]
    Weekly,
    /// Only when asked (`berth backup verify`).
    Off,
}

impl VerifyPolicy {
    /// The policy as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AfterEach => "after-each",
            Self::Weekly => "weekly",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for VerifyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VerifyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::AfterEach, Self::Weekly, Self::Off]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown verify policy {s:?}; use after-each, weekly or off"))
    }
}

/// How a verification ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyOutcome {
    /// Restored, consistent, every table read.
    Passed,
    /// The backup could not be restored, or the restored data is damaged.
    Failed,
    /// The verification could not run to its end for a reason that is not the
    /// backup's (Docker, the host's capacity, the image): neither good nor bad.
    Inconclusive,
}

impl VerifyOutcome {
    /// The outcome as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Inconclusive => "inconclusive",
        }
    }
}

impl std::str::FromStr for VerifyOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Passed, Self::Failed, Self::Inconclusive]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown verify outcome {s:?}"))
    }
}

/// The last verification of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// How it ended.
    pub outcome: VerifyOutcome,
    /// When it ended (RFC 3339).
    pub at: String,
    /// What was checked and found: tables and rows read, or what failed.
    pub detail: String,
}

/// What the engine's consistency check of a restored instance found (the agent's
/// `POST /verify` answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// Databases checked.
    pub databases: u32,
    /// Tables read to their end.
    pub tables: u32,
    /// Rows counted in them.
    pub rows: u64,
    /// Indexes checked (PostgreSQL's amcheck).
    pub indexes: u32,
    /// What the checks found wrong, one sentence each; empty when consistent.
    pub problems: Vec<String>,
}

impl ConsistencyReport {
    /// One sentence for the task log and the backup's record.
    pub fn summary(&self) -> String {
        let read = format!(
            "{} database(s), {} table(s) with {} row(s) read{}",
            self.databases,
            self.tables,
            self.rows,
            if self.indexes > 0 {
                format!(", {} index(es) checked", self.indexes)
            } else {
                String::new()
            }
        );
        match self.problems.as_slice() {
            [] => format!("consistent: {read}"),
            [one] => format!("the restored data is damaged: {one} ({read})"),
            [first, rest @ ..] => format!(
                "the restored data is damaged: {first}, and {} more problem(s) ({read})",
                rest.len()
            ),
        }
    }
}

/// How long `weekly` lets pass between verifications.
pub const WEEK: Duration = Duration::days(7);

/// The backup of one instance the policy says to verify now, if any. `backups` are
/// that instance's; `running` says a verification of one of them is under way (one
/// at a time per instance: a throwaway instance costs the instance's resources).
pub fn due(
    policy: VerifyPolicy,
    backups: &[BackupRecord],
    running: bool,
    now: DateTime<Utc>,
) -> Option<BackupId> {
    if running || policy == VerifyPolicy::Off {
        return None;
    }
    let newest_unverified = backups
        .iter()
        .filter(|b| b.is_complete() && b.verification.is_none())
        .max_by(|a, b| a.started_at.cmp(&b.started_at))
        .map(|b| b.id);
    match policy {
        VerifyPolicy::Off => None,
        VerifyPolicy::AfterEach => newest_unverified,
        VerifyPolicy::Weekly => {
            let last = backups
                .iter()
                .filter_map(|b| b.verification.as_ref())
                .filter_map(|v| parse_time(&v.at))
                .max();
            match last {
                Some(t) if now - t < WEEK => None,
                _ => newest_unverified,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::BackupState;

    fn backup(started: &str, complete: bool, verified: Option<&str>) -> BackupRecord {
        let mut b = BackupRecord::sample(started);
        if complete {
            b.state = BackupState::Succeeded;
            b.size_bytes = Some(1);
            b.sha256 = Some("ab".into());
        }
        b.verification = verified.map(|at| Verification {
            outcome: VerifyOutcome::Passed,
            at: at.into(),
            detail: String::new(),
        });
        b
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("time")
    }

    #[test]
    fn after_each_verifies_the_newest_complete_unverified_backup() {
        let old = backup("2026-01-01T00:00:00Z", true, None);
        let new = backup("2026-01-02T00:00:00Z", true, None);
        let running = backup("2026-01-03T00:00:00Z", false, None);
        let all = [old.clone(), new.clone(), running];
        let now = at("2026-01-03T00:00:01Z");
        assert_eq!(due(VerifyPolicy::AfterEach, &all, false, now), Some(new.id));
        assert_eq!(due(VerifyPolicy::AfterEach, &all, true, now), None);
        assert_eq!(due(VerifyPolicy::Off, &all, false, now), None);
        let done = [backup(
            "2026-01-02T00:00:00Z",
            true,
            Some("2026-01-02T01:00:00Z"),
        )];
        assert_eq!(due(VerifyPolicy::AfterEach, &done, false, now), None);
    }

    #[test]
    fn weekly_waits_seven_days_after_the_last_verification() {
        let verified = backup("2026-01-01T00:00:00Z", true, Some("2026-01-01T01:00:00Z"));
        let newer = backup("2026-01-05T00:00:00Z", true, None);
        let all = [verified, newer.clone()];
        assert_eq!(
            due(
                VerifyPolicy::Weekly,
                &all,
                false,
                at("2026-01-07T00:00:00Z")
            ),
            None
        );
        assert_eq!(
            due(
                VerifyPolicy::Weekly,
                &all,
                false,
                at("2026-01-08T01:00:00Z")
            ),
            Some(newer.id)
        );
        // Never verified: the newest now.
        let fresh = [backup("2026-01-05T00:00:00Z", true, None)];
        assert_eq!(
            due(
                VerifyPolicy::Weekly,
                &fresh,
                false,
                at("2026-01-05T00:01:00Z")
            ),
            Some(fresh[0].id)
        );
        assert_eq!(
            due(VerifyPolicy::Weekly, &[], false, at("2026-01-05T00:01:00Z")),
            None
        );
    }

    #[test]
    fn policies_round_trip_and_a_bad_one_says_what_is_allowed() {
        for p in [
            VerifyPolicy::AfterEach,
            VerifyPolicy::Weekly,
            VerifyPolicy::Off,
        ] {
            assert_eq!(p.as_str().parse::<VerifyPolicy>(), Ok(p));
        }
        let e = "daily".parse::<VerifyPolicy>().expect_err("refused");
        assert!(e.contains("after-each, weekly or off"), "{e}");
        assert_eq!(VerifyPolicy::default(), VerifyPolicy::Weekly);
    }

    #[test]
    fn a_report_says_what_was_read_and_what_is_wrong() {
        let mut r = ConsistencyReport {
            databases: 2,
            tables: 3,
            rows: 10,
            indexes: 4,
            problems: vec![],
        };
        assert_eq!(
            r.summary(),
            "consistent: 2 database(s), 3 table(s) with 10 row(s) read, 4 index(es) checked"
        );
        r.problems = vec!["table app.t: corrupt".into(), "x".into()];
        assert!(r
            .summary()
            .starts_with("the restored data is damaged: table app.t: corrupt, and 1 more"));
    }
}

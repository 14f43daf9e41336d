//! Alarm rules and their evaluation, purely: the last N periods' statistic (a
//! period without a sample is `None`) and the alarm's state go in, the new state
//! comes out. The sampler evaluates after every round; a state change is an event
//! and a notification.

use super::rollup::Statistic;
use super::Metric;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a period's value is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// value > threshold breaches.
    GreaterThan,
    /// value >= threshold breaches.
    GreaterOrEqual,
    /// value < threshold breaches.
    LessThan,
    /// value <= threshold breaches.
    LessOrEqual,
}

impl Comparison {
    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThan => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::LessThan => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }
}

/// What a period without a sample means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingData {
    /// Unknown: when no period has data the alarm is INSUFFICIENT_DATA.
    #[default]
    Missing,
    /// Counts as breaching (an absent member is a problem).
    Breaching,
    /// Counts as not breaching.
    NotBreaching,
    /// Keeps the alarm's state when no period has data.
    Ignore,
}

/// An alarm's state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    /// Not breaching.
    Ok,
    /// Breaching in at least M of the last N periods.
    Alarm,
    /// Not enough data to tell.
    #[default]
    InsufficientData,
}

impl AlarmState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AlarmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            AlarmState::Ok,
            AlarmState::Alarm,
            AlarmState::InsufficientData,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("no alarm state {s:?}"))
    }
}

/// What an alarm watches and when it fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// The metric (merged over the instance's members).
    pub metric: Metric,
    /// Which value of each period.
    #[serde(default)]
    pub statistic: Statistic,
    /// Period length in seconds (a whole multiple of the finest resolution).
    pub period: i64,
    /// Periods looked at (N).
    pub evaluation_periods: u32,
    /// Breaching periods among them that fire the alarm (M).
    pub datapoints_to_alarm: u32,
    /// The threshold.
    pub threshold: f64,
    /// How a value is compared with it.
    pub comparison: Comparison,
    /// What a period without a sample means.
    #[serde(default)]
    pub missing_data: MissingData,
}

/// Periods looked at, at most.
pub const MAX_EVALUATION_PERIODS: u32 = 100;

impl AlarmRule {
    /// Refuses a rule that could never be evaluated, saying what to fix.
    /// `finest_step` is the history's finest resolution.
    pub fn validate(&self, finest_step: i64) -> Result<(), String> {
        if self.period <= 0 || self.period % finest_step != 0 {
            return Err(format!(
                "period {} is not a whole multiple of the finest resolution ({finest_step}s)",
                self.period
            ));
        }
        if self.evaluation_periods == 0 || self.evaluation_periods > MAX_EVALUATION_PERIODS {
            return Err(format!(
                "evaluation_periods must be 1 to {MAX_EVALUATION_PERIODS}"
            ));
        }
        if self.datapoints_to_alarm == 0 || self.datapoints_to_alarm > self.evaluation_periods {
            return Err(format!(
                "datapoints_to_alarm must be 1 to evaluation_periods ({})",
                self.evaluation_periods
            ));
        }
        if !self.threshold.is_finite() {
            return Err("threshold must be a finite number".into());
        }
        Ok(())
    }
}

/// The state after looking at the last N periods (oldest first; `None` where no
/// sample was taken), given the state before. ALARM when at least M periods breach;
/// else OK when any period has data (or counts as not breaching); else
/// INSUFFICIENT_DATA, or the state before when missing data is ignored.
pub fn evaluate(rule: &AlarmRule, periods: &[Option<f64>], before: AlarmState) -> AlarmState {
    let (mut breaching, mut known) = (0u32, 0u32);
    for p in periods {
        let breach = match (p, rule.missing_data) {
            (Some(v), _) => Some(rule.comparison.breaches(*v, rule.threshold)),
            (None, MissingData::Breaching) => Some(true),
            (None, MissingData::NotBreaching) => Some(false),
            (None, MissingData::Missing | MissingData::Ignore) => None,
        };
        if let Some(b) = breach {
            known += 1;
            breaching += u32::from(b);
        }
    }
    if breaching >= rule.datapoints_to_alarm {
        AlarmState::Alarm
    } else if known > 0 {
        AlarmState::Ok
    } else if rule.missing_data == MissingData::Ignore {
        before
    } else {
        AlarmState::InsufficientData
    }
}

/// An alarm as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmRecord {
    /// Stable id.
    pub id: String,
    /// The instance's id.
    #[schema(value_type = String)]
    pub instance_id: crate::InstanceId,
    /// The instance's name.
    pub instance: String,
    /// Unique per instance.
    pub name: String,
    /// What it watches.
    pub rule: AlarmRule,
    /// Its state.
    pub state: AlarmState,
    /// Why it is in that state.
    pub reason: String,
    /// Since when (RFC 3339).
    pub state_since: String,
    /// Notifications are held back until this time (Unix seconds); the state still
    /// changes.
    pub silenced_until: Option<i64>,
}

/// One delivery attempt, for `berth alarms show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The notification.
    pub notification: i64,
    /// How it is delivered.
    pub channel: Channel,
    /// The webhook's or the email recipient's id.
    pub target: String,
    /// 1, 2, …
    pub attempt: i64,
    /// When.
    pub at: String,
    /// The HTTP status the receiver answered, if it answered.
    pub status: Option<i64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// How a notification is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// POSTed to a webhook, signed.
    Webhook,
    /// Mailed to a recipient over SMTP.
    Email,
}

impl Channel {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webhook" => Ok(Self::Webhook),
            "email" => Ok(Self::Email),
            other => Err(format!("{other:?} is not a notification channel")),
        }
    }
}

/// Someone alarm notifications are mailed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmailRecipient {
    /// Stable id.
    pub id: String,
    /// The address, as given.
    pub address: String,
    /// When it was added (RFC 3339).
    pub created_at: String,
}

/// The alarms every instance gets, by name.
pub fn defaults() -> Vec<(&'static str, AlarmRule)> {
    let rule = |metric, statistic, period, n, m, threshold, comparison, missing_data| AlarmRule {
        metric,
        statistic,
        period,
        evaluation_periods: n,
        datapoints_to_alarm: m,
        threshold,
        comparison,
        missing_data,
    };
    use Comparison::*;
    use MissingData::*;
    use Statistic::*;
    vec![
        (
            "engine-down",
            rule(Metric::EngineUp, Minimum, 60, 2, 2, 1.0, LessThan, Missing),
        ),
        (
            "connections-high",
            rule(
                Metric::ConnectionsPercent,
                Maximum,
                60,
                3,
                3,
                80.0,
                GreaterThan,
                Missing,
            ),
        ),
        (
            "memory-near-limit",
            rule(
                Metric::MemoryPercent,
                Average,
                300,
                1,
                1,
                90.0,
                GreaterThan,
                Missing,
            ),
        ),
        (
            "storage-high",
            rule(
                Metric::DiskUsedPercent,
                Maximum,
                300,
                1,
                1,
                85.0,
                GreaterThan,
                Missing,
            ),
        ),
        (
            "engine-restarted",
            rule(
                Metric::EngineRestarted,
                Maximum,
                60,
                1,
                1,
                1.0,
                GreaterOrEqual,
                NotBreaching,
            ),
        ),
        // The replication alarms count a period without a value as not breaching:
        // an instance of one member never has these series and is fine, not
        // INSUFFICIENT_DATA for ever. A replica that stops reporting is not missed
        // by that: an engine that does not answer is `engine-down`'s, and a
        // PostgreSQL primary reports `replication_running` 0 itself once the silent
        // replica's slot goes inactive. The minimum over the members means any
        // member that says 0 in a period makes it breach.
        (
            "replication-stopped",
            rule(
                Metric::ReplicationRunning,
                Minimum,
                10,
                3,
                3,
                1.0,
                LessThan,
                NotBreaching,
            ),
        ),
        (
            "replication-lagging",
            rule(
                Metric::ReplicationLagSeconds,
                Maximum,
                10,
                3,
                3,
                30.0,
                GreaterThan,
                NotBreaching,
            ),
        ),
        // A slot keeps WAL until its replica has it: an absent replica fills the
        // primary's volume. MariaDB has no slots, so never this series.
        (
            "replication-slot-retention",
            rule(
                Metric::ReplicationSlotRetainedBytes,
                Maximum,
                60,
                3,
                3,
                1024.0 * 1024.0 * 1024.0,
                GreaterThan,
                NotBreaching,
            ),
        ),
        // Backups: the newest failed (or failed its verification), until a good one
        // follows; and a scheduled slot two hours past with no complete backup (a
        // run that never started, or one still not done).
        (
            "backup-failed",
            rule(
                Metric::BackupFailed,
                Maximum,
                60,
                1,
                1,
                1.0,
                GreaterOrEqual,
                NotBreaching,
            ),
        ),
        (
            "backup-overdue",
            rule(
                Metric::BackupOverdueSeconds,
                Maximum,
                300,
                1,
                1,
                2.0 * 3600.0,
                GreaterThan,
                NotBreaching,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(n: u32, m: u32, missing: MissingData) -> AlarmRule {
        AlarmRule {
            metric: Metric::Connections,
            statistic: Statistic::Maximum,
            period: 10,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 5.0,
            comparison: Comparison::GreaterThan,
            missing_data: missing,
        }
    }

    #[test]
    fn m_of_n_breaching_periods_fire() {
        use AlarmState::*;
        let r = rule(3, 2, MissingData::Missing);
        let cases: [(&[Option<f64>], AlarmState); 6] = [
            (&[Some(9.0), Some(1.0), Some(9.0)], Alarm),
            (&[Some(9.0), Some(1.0), Some(1.0)], Ok),
            (&[None, Some(9.0), Some(9.0)], Alarm),
            (&[None, None, Some(9.0)], Ok),
            (&[None, None, None], InsufficientData),
            (&[Some(5.0), Some(5.0), Some(5.0)], Ok),
        ];
        for (periods, want) in cases {
            assert_eq!(evaluate(&r, periods, Ok), want, "{periods:?}");
        }
    }

    #[test]
    fn missing_data_means_what_the_rule_says() {
        let none = [None, None];
        let at = |m| evaluate(&rule(2, 2, m), &none, AlarmState::Alarm);
        assert_eq!(at(MissingData::Missing), AlarmState::InsufficientData);
        assert_eq!(at(MissingData::Breaching), AlarmState::Alarm);
        assert_eq!(at(MissingData::NotBreaching), AlarmState::Ok);
        assert_eq!(at(MissingData::Ignore), AlarmState::Alarm);
    }

    #[test]
    fn rules_that_cannot_be_evaluated_are_refused() {
        assert!(rule(3, 2, MissingData::Missing).validate(10).is_ok());
        assert!(rule(3, 4, MissingData::Missing).validate(10).is_err());
        assert!(rule(0, 0, MissingData::Missing).validate(10).is_err());
        assert!(rule(3, 2, MissingData::Missing).validate(3).is_err());
        for (name, r) in defaults() {
            assert!(r.validate(10).is_ok(), "{name}");
        }
        let json = serde_json::to_value(AlarmState::InsufficientData).expect("json");
        assert_eq!(json, "INSUFFICIENT_DATA");
        assert_eq!("ALARM".parse::<AlarmState>(), Result::Ok(AlarmState::Alarm));
    }

    fn default_rule(name: &str) -> AlarmRule {
        defaults()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no default alarm {name}"))
    }

    #[test]
    fn replication_alarms_fire_on_three_bad_periods_and_not_on_silence() {
        use AlarmState::*;
        let stopped = default_rule("replication-stopped");
        let lagging = default_rule("replication-lagging");
        let retention = default_rule("replication-slot-retention");
        let cases: [(&AlarmRule, &[Option<f64>], AlarmState); 10] = [
            (&stopped, &[Some(0.0), Some(0.0), Some(0.0)], Alarm),
            // Replication came back in the last period.
            (&stopped, &[Some(0.0), Some(0.0), Some(1.0)], Ok),
            (&stopped, &[Some(1.0), Some(1.0), Some(1.0)], Ok),
            // One member, or MariaDB's primary alone: no series, no alarm.
            (&stopped, &[None, None, None], Ok),
            (&stopped, &[None, Some(0.0), Some(0.0)], Ok),
            (&lagging, &[Some(45.0), Some(31.0), Some(120.0)], Alarm),
            (&lagging, &[Some(45.0), Some(30.0), Some(120.0)], Ok),
            (&lagging, &[None, None, None], Ok),
            (&retention, &[Some(2e9), Some(2e9), Some(2e9)], Alarm),
            (&retention, &[Some(2e9), Some(5e8), Some(2e9)], Ok),
        ];
        for (rule, periods, want) in cases {
            assert_eq!(
                evaluate(rule, periods, InsufficientData),
                want,
                "{} {periods:?}",
                rule.metric
            );
        }
        assert_eq!(retention.threshold, 1073741824.0);
        assert_eq!((stopped.period, lagging.period), (10, 10));
    }

    #[test]
    fn default_names_are_unique() {
        let names: std::collections::HashSet<_> = defaults().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), defaults().len());
    }

    fn periods() -> impl Strategy<Value = Vec<Option<f64>>> {
        proptest::collection::vec(proptest::option::of(0.0f64..10.0), 1..12)
    }

    proptest! {
        #[test]
        fn more_breaching_never_clears_an_alarm(p in periods(), i in 0usize..12, m in 1u32..12) {
            let n = p.len() as u32;
            let r = rule(n, m.min(n), MissingData::Missing);
            let before = evaluate(&r, &p, AlarmState::Ok);
            let mut worse = p.clone();
            let i = i % worse.len();
            worse[i] = Some(9.0);
            let after = evaluate(&r, &worse, AlarmState::Ok);
            if before == AlarmState::Alarm {
                prop_assert_eq!(after, AlarmState::Alarm);
            }
            prop_assert_ne!(after, AlarmState::InsufficientData);
        }

        #[test]
        fn the_state_before_matters_only_when_missing_data_is_ignored(
            p in periods(), m in 1u32..12,
        ) {
            let n = p.len() as u32;
            for missing in [MissingData::Missing, MissingData::Breaching, MissingData::NotBreaching] {
                let r = rule(n, m.min(n), missing);
                prop_assert_eq!(
                    evaluate(&r, &p, AlarmState::Ok),
                    evaluate(&r, &p, AlarmState::Alarm)
                );
            }
        }
    }
}

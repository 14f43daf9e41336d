//! `/v1/instances/{name}/backup-policy`: an instance's backup schedule and retention.
//! A malformed cron expression is refused (422) and changes nothing.

use super::problems::{NotFound, Unprocessable};
use crate::backup::schedule::default_policy;
use crate::backup::BackupPolicyView;
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use berth_model::backup::{BackupPolicyRecord, Retention, Schedule};
use berth_model::event::{EventKind, NewEvent};
use berth_model::ProjectId;
use serde::Deserialize;

/// The most days a retention can name (100 years).
const MAX_KEEP_DAYS: u32 = 36_500;
/// The most backups a retention can name.
const MAX_KEEP_COUNT: u32 = 10_000;
/// The longest cron expression accepted.
const MAX_SCHEDULE_LEN: usize = 200;

/// A backup policy, whole: what is left out takes its default.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetBackupPolicy {
    /// Cron expression, five fields (minute hour day-of-month month day-of-week), in
    /// UTC, or `off` for no scheduled backups; default `0 0 * * *` (daily at midnight).
    #[serde(default)]
    #[schema(max_length = 200)]
    schedule: Option<String>,
    /// Keep backups taken within this many days.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 36500)]
    keep_days: Option<u32>,
    /// Keep this many newest complete backups. The newest complete backup is always
    /// kept, whatever the rules.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 10000)]
    keep_count: Option<u32>,
    /// When backups are verified by restoring them into a throwaway instance:
    /// `after-each`, `weekly` (the default) or `off`.
    #[serde(default)]
    verify: berth_model::verify::VerifyPolicy,
}

/// A JSON integer as JSON Schema means it: `7` and `7.0` alike (range checked later).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|w| u32::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!("{n} is not a whole number of at most {}", u32::MAX))
        })
}

async fn instance(ctx: &Ctx, name: &str) -> Result<berth_model::InstanceRecord, ApiError> {
    Ok(ctx
        .store
        .instance_by_name(&ProjectId::default_project(), name)
        .await?)
}

/// An instance's backup schedule and retention (the default until one is set).
#[utoipa::path(get, operation_id = "show_backup_policy", path = "/v1/instances/{name}/backup-policy",
    params(("name" = String, Path)), responses(
    (status = 200, body = BackupPolicyView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<BackupPolicyView>, ApiError> {
    let inst = instance(&ctx, &name).await?;
    let p = match ctx.store.backup_policy(inst.id).await? {
        Some(p) => p,
        None => default_policy(&ctx, &inst, &berth_store::now()),
    };
    Ok(Json(BackupPolicyView::from(&p)))
}

/// Set an instance's backup schedule and retention. The next scheduled run is the
/// first slot from now; retention applies at the scheduler's next look.
#[utoipa::path(put, operation_id = "set_backup_policy", path = "/v1/instances/{name}/backup-policy",
    params(("name" = String, Path)), request_body = SetBackupPolicy, responses(
    (status = 200, body = BackupPolicyView),
    NotFound, Unprocessable,
))]
pub(crate) async fn set(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<SetBackupPolicy>, JsonRejection>,
) -> Result<Json<BackupPolicyView>, ApiError> {
    let Json(body) = body?;
    let schedule = body.schedule.as_deref().unwrap_or(Schedule::DEFAULT);
    if schedule.len() > MAX_SCHEDULE_LEN {
        return Err(ApiError::InvalidRequest(format!(
            "the schedule is longer than {MAX_SCHEDULE_LEN} characters"
        )));
    }
    for (field, value, max) in [
        ("keep_days", body.keep_days, MAX_KEEP_DAYS),
        ("keep_count", body.keep_count, MAX_KEEP_COUNT),
    ] {
        if value.is_some_and(|v| !(1..=max).contains(&v)) {
            return Err(ApiError::InvalidRequest(format!(
                "{field} must be between 1 and {max}; leave it out for no limit"
            )));
        }
    }
    let inst = instance(&ctx, &name).await?;
    let schedule = if schedule == Schedule::OFF {
        Schedule::OFF.to_owned()
    } else {
        let s = Schedule::parse(schedule).map_err(ApiError::Unprocessable)?;
        s.as_str().to_owned()
    };
    let p = BackupPolicyRecord {
        instance_id: inst.id,
        instance_name: inst.name.to_string(),
        schedule,
        retention: Retention {
            keep_days: body.keep_days,
            keep_count: body.keep_count,
        },
        last_slot: berth_store::now(),
        verify: body.verify,
    };
    let view = BackupPolicyView::from(&p);
    let event = NewEvent::instance(
        inst.id,
        &p.instance_name,
        EventKind::BackupPolicyChanged,
        format!(
            "backup policy of {}: schedule {:?}, keep {} days, keep {} backups, verify {}",
            p.instance_name,
            p.schedule,
            p.retention
                .keep_days
                .map_or("any number of".to_owned(), |d| d.to_string()),
            p.retention
                .keep_count
                .map_or("any number of".to_owned(), |d| d.to_string()),
            p.verify,
        ),
        serde_json::to_value(&view).unwrap_or_default(),
    );
    ctx.store.set_backup_policy(&p, Some(&event)).await?;
    Ok(Json(view))
}

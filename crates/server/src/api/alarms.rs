//! Alarms (`/v1/instances/{name}/alarms`, `/v1/alarms/…`) and webhooks
//! (`/v1/webhooks`).

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::metrics::alarm::{AlarmRecord, AlarmRule, Attempt};
use berth_model::ProjectId;
use serde::{Deserialize, Serialize};

/// Alarm names: lower-case letters, digits and dashes.
const NAME_PATTERN: &str = r"^[a-z][a-z0-9-]{0,62}$";

/// A new alarm of an instance.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAlarm {
    /// Unique per instance.
    #[schema(pattern = r"^[a-z][a-z0-9-]{0,62}$")]
    name: String,
    /// What it watches and when it fires.
    rule: AlarmRule,
}

/// Add an alarm to an instance (its state starts INSUFFICIENT_DATA).
#[utoipa::path(post, operation_id = "create_alarm", path = "/v1/instances/{name}/alarms",
    params(("name" = String, Path)), request_body = CreateAlarm, responses(
    (status = 201, body = AlarmRecord),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<CreateAlarm>, JsonRejection>,
) -> Result<(StatusCode, Json<AlarmRecord>), ApiError> {
    let Json(body) = body?;
    if !regex_lite_match(&body.name) {
        return Err(ApiError::InvalidRequest(format!(
            "alarm name {:?} must match {NAME_PATTERN}",
            body.name
        )));
    }
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    body.rule
        .validate(ctx.config.monitor.tiers[0].step)
        .map_err(ApiError::Unprocessable)?;
    let alarm = crate::monitor::new_alarm(&inst, &body.name, body.rule);
    ctx.store.create_alarm(&alarm).await?;
    Ok((StatusCode::CREATED, Json(alarm)))
}

/// `^[a-z][a-z0-9-]{0,62}$` without a regex engine.
fn regex_lite_match(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The alarms of an instance.
#[utoipa::path(get, operation_id = "list_instance_alarms", path = "/v1/instances/{name}/alarms",
    params(("name" = String, Path)), responses(
    (status = 200, body = [AlarmRecord]),
    NotFound,
))]
pub(crate) async fn list_of(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AlarmRecord>>, ApiError> {
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), &name)
        .await?;
    Ok(Json(ctx.store.alarms(Some(inst.id)).await?))
}

/// Every alarm.
#[utoipa::path(get, operation_id = "list_alarms", path = "/v1/alarms", responses(
    (status = 200, body = [AlarmRecord]),
))]
pub(crate) async fn list(State(ctx): State<Ctx>) -> Result<Json<Vec<AlarmRecord>>, ApiError> {
    Ok(Json(ctx.store.alarms(None).await?))
}

/// An alarm and every delivery attempt of its notifications.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmView {
    /// The alarm.
    #[serde(flatten)]
    pub alarm: AlarmRecord,
    /// Delivery attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

async fn find(ctx: &Ctx, id: &str) -> Result<AlarmRecord, ApiError> {
    ctx.store
        .alarm(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alarm {id}; `berth alarms list` lists them")))
}

/// One alarm, with its notifications' delivery attempts.
#[utoipa::path(get, operation_id = "show_alarm", path = "/v1/alarms/{id}",
    params(("id" = String, Path, description = "Alarm id")), responses(
    (status = 200, body = AlarmView),
    NotFound,
))]
pub(crate) async fn show(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<AlarmView>, ApiError> {
    let alarm = find(&ctx, &id).await?;
    let attempts = ctx.store.attempts(&alarm.id).await?;
    Ok(Json(AlarmView { alarm, attempts }))
}

/// Delete an alarm (a default one comes back at the next start of `berth serve`).
#[utoipa::path(delete, operation_id = "delete_alarm", path = "/v1/alarms/{id}",
    params(("id" = String, Path, description = "Alarm id")), responses(
    (status = 204, description = "Deleted."),
    NotFound,
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if ctx.store.delete_alarm(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no alarm {id}; `berth alarms list` lists them"
        )))
    }
}

/// How long to silence.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Silence {
    /// An age like `30m`, `2h`, `1d` (`0s` lifts a silence).
    #[schema(pattern = r"^[0-9]{1,9}[smhdw]$")]
    duration: String,
}

/// Silence an alarm's notifications for a while; its state still changes.
#[utoipa::path(post, operation_id = "silence_alarm", path = "/v1/alarms/{id}/silence",
    params(("id" = String, Path, description = "Alarm id")), request_body = Silence, responses(
    (status = 200, body = AlarmRecord),
    NotFound,
))]
pub(crate) async fn silence(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<Silence>, JsonRejection>,
) -> Result<Json<AlarmRecord>, ApiError> {
    let Json(body) = body?;
    let d = berth_model::event::parse_age(&body.duration)
        .map_err(ApiError::InvalidRequest)?
        .as_secs() as i64;
    let until = crate::monitor::unix_now() as i64 + d;
    if !ctx.store.silence_alarm(&id, until).await? {
        return Err(ApiError::NotFound(format!(
            "no alarm {id}; `berth alarms list` lists them"
        )));
    }
    Ok(Json(find(&ctx, &id).await?))
}

/// A new webhook.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// Where notifications are POSTed: an http or https URL.
    #[schema(pattern = r"^[hH][tT][tT][pP][sS]?://[^\s]+$")]
    url: String,
}

/// A webhook; the secret is shown only when it is made.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Stable id.
    pub id: String,
    /// Where notifications go.
    pub url: String,
    /// When it was added.
    pub created_at: String,
    /// The HMAC-SHA256 key that signs every body (`X-Berth-Signature: sha256=<hex>`);
    /// only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Add a webhook: every alarm state change is POSTed to it, signed.
#[utoipa::path(post, operation_id = "create_webhook", path = "/v1/webhooks",
    request_body = CreateWebhook, responses((status = 201, body = WebhookView)))]
pub(crate) async fn create_webhook(
    State(ctx): State<Ctx>,
    body: Result<Json<CreateWebhook>, JsonRejection>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let Json(body) = body?;
    let url = reqwest::Url::parse(body.url.trim()).map_err(|e| {
        ApiError::InvalidRequest(format!("webhook url {:?} is not a URL: {e}", body.url))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::InvalidRequest(format!(
            "webhook url {:?} must be http:// or https:// with a host",
            body.url
        )));
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let w = berth_store::Webhook {
        id: uuid::Uuid::new_v4().to_string(),
        url: url.to_string(),
        secret: berth_model::Secret::new(secret.clone()),
        created_at: berth_store::now(),
    };
    ctx.store.create_webhook(&w).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookView {
            id: w.id,
            url: w.url,
            created_at: w.created_at,
            secret: Some(secret),
        }),
    ))
}

/// Webhooks (without their secrets).
#[utoipa::path(get, operation_id = "list_webhooks", path = "/v1/webhooks",
    responses((status = 200, body = [WebhookView])))]
pub(crate) async fn list_webhooks(
    State(ctx): State<Ctx>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    Ok(Json(
        ctx.store
            .webhooks()
            .await?
            .into_iter()
            .map(|w| WebhookView {
                id: w.id,
                url: w.url,
                created_at: w.created_at,
                secret: None,
            })
            .collect(),
    ))
}

/// Delete a webhook; what it had still to deliver is cancelled.
#[utoipa::path(delete, operation_id = "delete_webhook", path = "/v1/webhooks/{id}",
    params(("id" = String, Path, description = "Webhook id")), responses(
    (status = 204, description = "Deleted."),
    NotFound,
))]
pub(crate) async fn delete_webhook(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if ctx.store.delete_webhook(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no webhook {id}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn alarm_names_follow_their_pattern() {
        for ok in ["connections-high", "a", "x9-1"] {
            assert!(super::regex_lite_match(ok), "{ok}");
        }
        for bad in ["", "9a", "Upper", "a_b", &"a".repeat(64)] {
            assert!(!super::regex_lite_match(bad), "{bad}");
        }
    }
}

//! Email recipients of alarm notifications (`/v1/email-recipients`): every alarm
//! state change is mailed to each, through the SMTP relay `berth serve --smtp` names.

use crate::api::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::metrics::alarm::EmailRecipient;
use serde::Deserialize;

/// A new recipient.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEmailRecipient {
    /// Where alarm emails go, like `ops@example.com`.
    #[schema(pattern = r"^[^@\s]+@[^@\s]+$", max_length = 254)]
    address: String,
}

/// Add an email recipient: every alarm state change is mailed to it. Needs an SMTP
/// relay (`berth serve --smtp smtp://HOST:PORT`).
#[utoipa::path(post, operation_id = "create_email_recipient", path = "/v1/email-recipients",
    request_body = CreateEmailRecipient, responses(
    (status = 201, body = EmailRecipient),
    Conflict, Unprocessable,
))]
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    body: Result<Json<CreateEmailRecipient>, JsonRejection>,
) -> Result<(StatusCode, Json<EmailRecipient>), ApiError> {
    let Json(body) = body?;
    let address = body.address.trim();
    crate::monitor::email::check_address(address).map_err(ApiError::Unprocessable)?;
    if ctx.config.smtp.is_none() {
        return Err(ApiError::InvalidState(
            "berth serve has no SMTP relay to send email through; start it with \
             --smtp smtp://HOST:PORT (and --smtp-from), then add the recipient"
                .into(),
        ));
    }
    let r = EmailRecipient {
        id: uuid::Uuid::new_v4().to_string(),
        address: address.to_owned(),
        created_at: berth_store::now(),
    };
    ctx.store.create_email_recipient(&r).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Email recipients, oldest first.
#[utoipa::path(get, operation_id = "list_email_recipients", path = "/v1/email-recipients",
    responses((status = 200, body = [EmailRecipient])))]
pub(crate) async fn list(State(ctx): State<Ctx>) -> Result<Json<Vec<EmailRecipient>>, ApiError> {
    Ok(Json(ctx.store.email_recipients().await?))
}

/// Remove an email recipient; what it had still to receive is cancelled.
#[utoipa::path(delete, operation_id = "delete_email_recipient", path = "/v1/email-recipients/{id}",
    params(("id" = String, Path, description = "Recipient id")), responses(
    (status = 204, description = "Removed."),
    NotFound,
))]
pub(crate) async fn delete(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if ctx.store.delete_email_recipient(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no email recipient {id}; `berth alarms email list` lists them"
        )))
    }
}

//! API errors as `application/problem+json`: one `match` gives each error its HTTP
//! status and stable `type`; the `detail` says what to do next. Client errors and
//! internal ones are kept apart, and internal details are logged once, here.
//!
//! The split between 400 and 422 is part of the API contract: 400 means the request
//! breaks a rule `/v1/openapi.json` states (type, pattern, enum, range, required or
//! unknown field, malformed JSON); 422 means it is well-formed but cannot be done
//! (beyond the host, a reserved name, a value the engine's catalog refuses). A request
//! the document allows is therefore never answered 400.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_model::account::{GrantError, IdentError};
use berth_model::{SizeError, SpecError};
use berth_store::StoreError;
use serde::Serialize;

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a rule the API document states.
    #[error("{0}")]
    InvalidRequest(String),
    /// A setting no parameter group may hold (it runs code on the server), or a value
    /// no engine may receive (a control character).
    #[error("{0}")]
    SettingRefused(String),
    /// The request is well-formed, but a value cannot be accepted.
    #[error("{0}")]
    Unprocessable(String),
    /// The body is larger than the API accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request took too long and was abandoned.
    #[error("{0}")]
    TimedOut(String),
    /// The spec asks for more than the host has.
    #[error("{0}")]
    InsufficientCapacity(String),
    /// No or a wrong token.
    #[error("a valid API token is required; pass it as `Authorization: Bearer <token>` (the CLI reads it from its config or BERTH_TOKEN)")]
    Unauthorized,
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name is in use.
    #[error("{0}")]
    NameTaken(String),
    /// The instance's status does not allow the action.
    #[error("{0}")]
    InvalidState(String),
    /// The change is not possible with this setup.
    #[error("{0}")]
    NotSupported(String),
    /// The engine refused a statement.
    #[error("{0}")]
    EngineRefused(String),
    /// Docker cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The problem document (RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this case, and what to do.
    pub detail: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
            ),
            ApiError::SettingRefused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "setting-refused",
                "Setting not allowed",
            ),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-value",
                "Value not accepted",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", "Request timed out"),
            ApiError::InsufficientCapacity(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient-capacity",
                "Not enough capacity",
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::NameTaken(_) => (StatusCode::CONFLICT, "name-taken", "Name already in use"),
            ApiError::InvalidState(_) => (
                StatusCode::CONFLICT,
                "invalid-state",
                "Not possible in the current state",
            ),
            ApiError::NotSupported(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-supported",
                "Not supported here",
            ),
            ApiError::EngineRefused(_) => {
                (StatusCode::CONFLICT, "engine-refused", "The engine refused")
            }
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Dependency unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The stable problem type.
    pub fn problem_type(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = Problem {
            kind: format!("https://berth.dev/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response()
    }
}

impl From<berth_model::member::MemberError> for ApiError {
    /// Outside the ranges the document states: 400; within them but refused by the
    /// rules between fields (sync against members, the engine's limit): 422.
    fn from(e: berth_model::member::MemberError) -> Self {
        use berth_model::member::MemberError as M;
        match e {
            M::Count(_) | M::MaxLag(_) | M::MaxFailoverLag(_) => {
                ApiError::InvalidRequest(e.to_string())
            }
            M::SyncBeyondReplicas { sync } if sync > 4 => ApiError::InvalidRequest(e.to_string()),
            M::SyncBeyondReplicas { .. } | M::EngineSyncLimit(_) => {
                ApiError::Unprocessable(e.to_string())
            }
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::BeyondHost { .. } => ApiError::InsufficientCapacity(e.to_string()),
            SpecError::Size(s) => s.into(),
            // The document lists every version, not which engine has which.
            SpecError::Version(_) => ApiError::Unprocessable(e.to_string()),
            SpecError::Members(m) => m.into(),
            SpecError::Name(_) | SpecError::Engine(_) => ApiError::InvalidRequest(e.to_string()),
        }
    }
}

impl From<SizeError> for ApiError {
    fn from(e: SizeError) -> Self {
        match e {
            // The pattern in the document admits them; the range is checked after.
            SizeError::TooSmall { .. } | SizeError::TooLarge { .. } => {
                ApiError::Unprocessable(e.to_string())
            }
            SizeError::Malformed { .. }
            | SizeError::UnknownUnit { .. }
            | SizeError::MalformedCpus(_) => ApiError::InvalidRequest(e.to_string()),
        }
    }
}

impl From<IdentError> for ApiError {
    fn from(e: IdentError) -> Self {
        match e {
            IdentError::Invalid { .. } => ApiError::InvalidRequest(e.to_string()),
            IdentError::Reserved { .. } => ApiError::Unprocessable(e.to_string()),
        }
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Malformed(_) => ApiError::InvalidRequest(e.to_string()),
            GrantError::Database(d) => d.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(_) => ApiError::NameTaken(e.to_string()),
            StoreError::NoSuchInstance(_)
            | StoreError::NoSuchTask(_)
            | StoreError::NoSuchGroup(_) => ApiError::NotFound(e.to_string()),
            StoreError::GroupTaken(_)
            | StoreError::AlarmExists(_)
            | StoreError::RecipientExists(_) => ApiError::NameTaken(e.to_string()),
            StoreError::GroupInUse { .. } | StoreError::PortTaken { .. } => {
                ApiError::InvalidState(e.to_string())
            }
            StoreError::Refused(_) => ApiError::Unprocessable(e.to_string()),
            StoreError::Held { task, kind, .. } => ApiError::InvalidState(format!(
                "{e}; wait for it (`berth task {task} --wait`){}",
                if kind.stops_safely() {
                    format!(" or cancel it (`berth task cancel {task}`)")
                } else {
                    String::new()
                }
            )),
            StoreError::InvalidTransition { ref name, source } => {
                ApiError::InvalidState(format!("{e}{}", crate::views::hint(name, source)))
            }
            StoreError::Db(_) | StoreError::Migrate(_) | StoreError::Corrupt { .. } => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<berth_runtime::RuntimeError> for ApiError {
    fn from(e: berth_runtime::RuntimeError) -> Self {
        match e {
            e if e.is_unreachable() => ApiError::Unavailable(e.to_string()),
            berth_runtime::RuntimeError::NotOurs { .. } => ApiError::InvalidState(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
                "the request body is larger than {} KiB; send less",
                crate::api::BODY_LIMIT / 1024
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "the request body must be JSON; send it with `Content-Type: application/json`"
                    .into(),
            ),
            // Wrong types, unknown or missing fields: rules the document states.
            _ => ApiError::InvalidRequest(format!(
                "the request body is not valid: {}",
                e.body_text()
            )),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::InvalidRequest(format!("the query string is not valid: {}", e.body_text()))
    }
}

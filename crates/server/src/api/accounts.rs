//! `/v1/instances/{name}/databases` and `/v1/instances/{name}/users`.
//!
//! These run their SQL directly and answer when it is done, rather than as tasks:
//! each is a single transactional change inside the engine that either happens or
//! does not, so there is nothing to resume. The engine's catalogs are the record;
//! Berth keeps no copy that could drift.

use super::problems::{Conflict, NotFound, Unprocessable};
use crate::error::ApiError;
use crate::Ctx;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_engine::{engine, Admin, AdminTarget, EngineError, UserInfo};
use berth_model::account::{DbName, Grant, UserName};
use berth_model::{InstanceStatus, ProjectId, Secret};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Exists(_) => ApiError::NameTaken(e.to_string()),
            EngineError::Missing(_) => ApiError::NotFound(e.to_string()),
            EngineError::Refused { .. } => ApiError::EngineRefused(e.to_string()),
            EngineError::NotReady { .. } => ApiError::Unavailable(format!(
                "{e}; the instance may be restarting, try again shortly"
            )),
            EngineError::Io { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

/// An administrative session on an available instance.
async fn session(ctx: &Ctx, name: &str) -> Result<Box<dyn Admin>, ApiError> {
    let inst = ctx
        .store
        .instance_by_name(&ProjectId::default_project(), name)
        .await?;
    match inst.status {
        InstanceStatus::Available => {}
        InstanceStatus::Stopped => {
            return Err(ApiError::InvalidState(format!(
                "instance {name} is stopped; run `berth start {name}` first"
            )))
        }
        s => {
            return Err(ApiError::InvalidState(format!(
                "instance {name} is {s}; wait until it is available"
            )))
        }
    }
    let ip = ctx
        .runtime
        .inspect_member(crate::members::primary_key(&inst))
        .await?
        .and_then(|o| o.ip)
        .ok_or_else(|| {
            ApiError::Unavailable(format!("instance {name} has no running member right now"))
        })?;
    let eng = engine(inst.spec.engine);
    let target = AdminTarget {
        host: ip.to_string(),
        port: eng.client_port(),
        user: eng.superuser().to_owned(),
        password: inst.superuser_password.clone(),
        ca_pem: ctx.ca.certificate().to_owned(),
        server_name: berth_model::tls::internal_name(inst.id),
    };
    Ok(eng.admin(&target).await?)
}

/// Parses a name or grant: a bad shape is a 400 (the document states it), a reserved
/// name a 422.
fn parse<T: std::str::FromStr>(s: &str) -> Result<T, ApiError>
where
    T::Err: Into<ApiError>,
{
    s.parse().map_err(Into::into)
}

/// `POST …/databases`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDatabase {
    /// Lowercase letters, digits and underscores.
    #[schema(schema_with = berth_model::schema::ident)]
    name: String,
}

/// A database.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DatabaseView {
    /// Name.
    name: String,
}

/// The instance's databases.
#[utoipa::path(get, path = "/v1/instances/{name}/databases", params(("name" = String, Path)), responses(
    (status = 200, body = [DatabaseView]),
    NotFound, Conflict,
))]
pub(crate) async fn list_databases(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DatabaseView>>, ApiError> {
    let mut admin = session(&ctx, &name).await?;
    let dbs = admin.list_databases().await?;
    Ok(Json(
        dbs.into_iter().map(|name| DatabaseView { name }).collect(),
    ))
}

/// Create a database.
#[utoipa::path(post, path = "/v1/instances/{name}/databases", params(("name" = String, Path)), request_body = CreateDatabase, responses(
    (status = 201, body = DatabaseView),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn create_database(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<CreateDatabase>, JsonRejection>,
) -> Result<(StatusCode, Json<DatabaseView>), ApiError> {
    let Json(req) = body?;
    let db: DbName = parse(&req.name)?;
    let mut admin = session(&ctx, &name).await?;
    admin.create_database(&db).await?;
    tracing::info!(instance = %name, database = %db, "database created");
    Ok((
        StatusCode::CREATED,
        Json(DatabaseView {
            name: db.to_string(),
        }),
    ))
}

/// Drop a database and everything in it.
#[utoipa::path(delete, path = "/v1/instances/{name}/databases/{db}", params(("name" = String, Path), ("db" = String, Path)), responses(
    (status = 204),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn drop_database(
    State(ctx): State<Ctx>,
    Path((name, db)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let db: DbName = parse(&db)?;
    let mut admin = session(&ctx, &name).await?;
    admin.drop_database(&db).await?;
    tracing::info!(instance = %name, database = %db, "database dropped");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    /// Lowercase letters, digits and underscores.
    #[schema(schema_with = berth_model::schema::ident)]
    name: String,
    /// Access, as `DB:readonly`, `DB:readwrite` or `DB:owner`.
    #[serde(default)]
    #[schema(schema_with = berth_model::schema::grants)]
    grants: Vec<String>,
}

/// A user with its password: shown once, at creation or rotation.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UserWithPassword {
    /// Name.
    name: String,
    /// The password. Berth does not keep it; store it now.
    password: String,
    /// Access, per database.
    grants: Vec<Grant>,
}

/// The instance's users (the superuser aside), with their access.
#[utoipa::path(get, path = "/v1/instances/{name}/users", params(("name" = String, Path)), responses(
    (status = 200, body = [UserInfo]),
    NotFound, Conflict,
))]
pub(crate) async fn list_users(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
) -> Result<Json<Vec<UserInfo>>, ApiError> {
    let mut admin = session(&ctx, &name).await?;
    Ok(Json(admin.list_users().await?))
}

fn new_password() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 32))
}

/// Create a user with a generated password and grants.
#[utoipa::path(post, path = "/v1/instances/{name}/users", params(("name" = String, Path)), request_body = CreateUser, responses(
    (status = 201, body = UserWithPassword),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn create_user(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserWithPassword>), ApiError> {
    let Json(req) = body?;
    let user: UserName = parse(&req.name)?;
    let mut grants: Vec<Grant> = req
        .grants
        .iter()
        .map(|g| parse(g))
        .collect::<Result<_, _>>()?;
    grants.sort();
    grants.dedup();
    let mut admin = session(&ctx, &name).await?;
    let password = new_password();
    admin.create_user(&user, &password, &grants).await?;
    tracing::info!(instance = %name, user = %user, "user created");
    Ok((
        StatusCode::CREATED,
        Json(UserWithPassword {
            name: user.to_string(),
            password: password.expose().to_owned(),
            grants,
        }),
    ))
}

/// Drop a user (what it owned passes to the superuser).
#[utoipa::path(delete, path = "/v1/instances/{name}/users/{user}", params(("name" = String, Path), ("user" = String, Path)), responses(
    (status = 204),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn drop_user(
    State(ctx): State<Ctx>,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user: UserName = parse(&user)?;
    let mut admin = session(&ctx, &name).await?;
    admin.drop_user(&user).await?;
    tracing::info!(instance = %name, user = %user, "user dropped");
    Ok(StatusCode::NO_CONTENT)
}

/// Give a user a new generated password (shown once).
#[utoipa::path(post, path = "/v1/instances/{name}/users/{user}/password", params(("name" = String, Path), ("user" = String, Path)), responses(
    (status = 200, body = UserWithPassword),
    NotFound, Conflict, Unprocessable,
))]
pub(crate) async fn rotate_password(
    State(ctx): State<Ctx>,
    Path((name, user)): Path<(String, String)>,
) -> Result<Json<UserWithPassword>, ApiError> {
    let user: UserName = parse(&user)?;
    let mut admin = session(&ctx, &name).await?;
    let password = new_password();
    admin.set_password(&user, &password).await?;
    let grants = admin
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.name == user)
        .map(|u| u.grants)
        .unwrap_or_default();
    tracing::info!(instance = %name, user = %user, "password rotated");
    Ok(Json(UserWithPassword {
        name: user.to_string(),
        password: password.expose().to_owned(),
        grants,
    }))
}

//! The REST API under `/v1`, its OpenAPI document, and `/healthz`.

mod accounts;
mod alarms;
mod backup_policy;
mod backups;
mod email;
mod events;
mod failover_pause;
pub(crate) mod instances;
mod members;
mod metrics;
mod monitor;
mod params;
mod problems;
mod tasks;

use crate::error::{ApiError, Problem};
use crate::Ctx;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::time::Duration;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth", description = "Self-hosted database service on Docker."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Largest request body the API reads; a larger one is answered 413.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// The OpenAPI document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

/// The routes and their document, completed with the statuses every operation shares.
fn routes_and_document() -> (Router<Ctx>, utoipa::openapi::OpenApi) {
    let (api, mut doc) = api_routes().split_for_parts();
    problems::complete(&mut doc);
    (api, doc)
}

fn api_routes() -> OpenApiRouter<Ctx> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(instances::list, instances::create))
        .routes(routes!(
            instances::show,
            instances::delete,
            instances::resize
        ))
        .routes(routes!(instances::action))
        .routes(routes!(members::scale))
        .routes(routes!(members::switchover))
        .routes(routes!(members::failover))
        .routes(routes!(failover_pause::pause))
        .routes(routes!(failover_pause::resume))
        .routes(routes!(instances::credentials))
        .routes(routes!(accounts::list_databases, accounts::create_database))
        .routes(routes!(accounts::drop_database))
        .routes(routes!(accounts::list_users, accounts::create_user))
        .routes(routes!(accounts::drop_user))
        .routes(routes!(accounts::rotate_password))
        .routes(routes!(params::list, params::create))
        .routes(routes!(params::show, params::update, params::delete))
        .routes(routes!(params::attach))
        .routes(routes!(params::catalog))
        .routes(routes!(backups::create))
        .routes(routes!(backups::restore))
        .routes(routes!(backups::list))
        .routes(routes!(backups::show, backups::delete))
        .routes(routes!(backups::verify))
        .routes(routes!(backup_policy::show, backup_policy::set))
        .routes(routes!(monitor::show))
        .routes(routes!(alarms::list_of, alarms::create))
        .routes(routes!(alarms::list))
        .routes(routes!(alarms::show, alarms::delete))
        .routes(routes!(alarms::silence))
        .routes(routes!(alarms::list_webhooks, alarms::create_webhook))
        .routes(routes!(alarms::delete_webhook))
        .routes(routes!(email::list, email::create))
        .routes(routes!(email::delete))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::show))
        .routes(routes!(tasks::cancel))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(info))
        .routes(routes!(ca))
}

/// About this installation.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Info {
    /// Berth's version.
    version: String,
    /// This installation's id; every Docker object it makes carries it as the
    /// `io.berth.site` label.
    site: String,
    /// SHA-256 of the agent binary new members get.
    agent_sha256: String,
}

/// About this installation.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = Info)))]
pub(crate) async fn info(State(ctx): State<Ctx>) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        site: ctx.site.to_string(),
        agent_sha256: ctx.agent.sha256.clone(),
    })
}

/// Berth's certificate authority: clients verify instances' certificates with it.
#[utoipa::path(get, path = "/v1/ca", responses((status = 200, body = crate::CaView)))]
pub(crate) async fn ca(State(ctx): State<Ctx>) -> Json<crate::CaView> {
    Json(crate::CaView {
        site: ctx.site.to_string(),
        certificate: ctx.ca.certificate().to_owned(),
    })
}

/// The whole HTTP surface.
pub fn router(ctx: Ctx) -> Router {
    let (api, doc) = routes_and_document();
    let doc = std::sync::Arc::new(doc);
    let api = api
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json((*doc).clone()) }
            }),
        )
        // After routing (the path template is known), inside the token layer (the
        // token's name is known).
        .route_layer(middleware::from_fn_with_state(
            ctx.clone(),
            events::record_api_call,
        ))
        .fallback(|| async { ApiError::NotFound("no such API route; see /v1/openapi.json".into()) })
        .layer(middleware::from_fn_with_state(ctx.clone(), require_token))
        .layer(middleware::from_fn_with_state(
            ctx.clone(),
            metrics::time_api_call,
        ));
    // Not under /v1 and not in the document: Prometheus' text format, not JSON.
    let scrape =
        get(metrics::metrics).layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", scrape)
        .merge(api)
        // In the extractors (not a tower layer), so an oversized body is a 413
        // problem document like every other refusal.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::map_response(timeout_as_problem))
        .with_state(ctx)
}

/// How long a request may take before it is abandoned with 408.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeout layer answers with an empty 408; make it a problem document like
/// every other status the API answers.
async fn timeout_as_problem(resp: Response) -> Response {
    if resp.status() == axum::http::StatusCode::REQUEST_TIMEOUT
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return ApiError::TimedOut(format!(
            "the request took longer than {}s and was abandoned; retry, and if it happens again \
             the serve log says what was slow",
            REQUEST_TIMEOUT.as_secs()
        ))
        .into_response();
    }
    resp
}

async fn require_token(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::Unauthorized.into_response();
    };
    match ctx.store.token_name(&crate::auth::token_hash(token)).await {
        Ok(Some(name)) => {
            req.extensions_mut().insert(events::TokenName(name));
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's contract: a change to any route, body or schema shows up here as a
    /// snapshot diff to review (CI never rewrites snapshots).
    #[test]
    fn openapi_document_is_stable() {
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        insta::assert_json_snapshot!("openapi", doc);
    }

    /// Every operation lists the statuses the layers around it can answer, each a
    /// problem document, and has its own operation id (generated clients name
    /// methods after it).
    #[test]
    fn every_operation_lists_its_problems() {
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                let mut must = vec!["401"];
                if path != "/v1/info" {
                    must.extend(["408", "500", "503"]);
                }
                if op.get("requestBody").is_some() {
                    must.extend(["400", "413", "415"]);
                }
                if op.get("parameters").is_some() {
                    must.push("400");
                }
                for status in must {
                    let r = &responses[status];
                    assert!(
                        r["content"]["application/problem+json"]["schema"]["$ref"]
                            == "#/components/schemas/Problem",
                        "{method} {path} lacks a problem response {status}"
                    );
                }
                let id = op["operationId"].as_str().expect("operation id");
                assert!(ids.insert(id.to_owned()), "operation id {id} is used twice");
            }
        }
    }

    /// Path parameters carry the same rules as the bodies that name the same things.
    #[test]
    fn path_parameters_carry_their_rules() {
        let doc = serde_json::to_value(openapi()).expect("serialisable");
        let params = doc["paths"]["/v1/instances/{name}/users/{user}"]["delete"]["parameters"]
            .as_array()
            .expect("parameters")
            .clone();
        assert_eq!(
            params[0]["schema"]["pattern"],
            berth_model::name::NAME_PATTERN
        );
        assert_eq!(
            params[1]["schema"]["pattern"],
            berth_model::account::IDENT_PATTERN
        );
        let q = &doc["paths"]["/v1/tasks"]["get"]["parameters"];
        assert!(q
            .as_array()
            .expect("query")
            .iter()
            .all(|p| p["in"] == "query" && p["required"] == false));
    }

    #[tokio::test]
    async fn a_well_formed_but_refused_value_is_422_and_a_malformed_one_400() {
        let r = ApiError::from(berth_model::SpecError::Size(
            berth_model::SizeError::TooSmall {
                what: "memory",
                input: "64MiB".into(),
                min: "128MiB".into(),
            },
        ))
        .into_response();
        assert_eq!(r.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let r = ApiError::from(
            "Bad:owner"
                .parse::<berth_model::account::Grant>()
                .expect_err("bad"),
        )
        .into_response();
        assert_eq!(r.status(), axum::http::StatusCode::BAD_REQUEST);
        let r = ApiError::from(
            "postgres"
                .parse::<berth_model::account::DbName>()
                .expect_err("reserved"),
        )
        .into_response();
        assert_eq!(r.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn a_timeout_is_a_problem_document() {
        // What tower-http's timeout layer answers: a status and nothing else.
        let mut empty = axum::http::StatusCode::REQUEST_TIMEOUT.into_response();
        empty.headers_mut().remove(header::CONTENT_TYPE);
        let resp = timeout_as_problem(empty).await;
        assert_eq!(resp.status(), axum::http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[tokio::test]
    async fn problems_are_problem_json_with_a_stable_type() {
        use axum::response::IntoResponse;
        let resp =
            ApiError::InvalidState("instance db1 is stopped; run `berth start db1` first".into())
                .into_response();
        assert_eq!(resp.status(), axum::http::StatusCode::CONFLICT);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        insta::assert_json_snapshot!("problem_invalid_state", v);
    }
}

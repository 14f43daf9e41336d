//! The problem responses of the API document, so that it lists every status an
//! operation can answer (a client or fuzzer generated from it meets no surprise).
//!
//! Statuses that follow from what an operation is made of are added to every
//! operation by [`complete`]: 401 (the token layer), 408 (the timeout layer), 500
//! and 503 (store, Docker),
//! 400 when it takes parameters or a body, 413 and 415 when it takes a JSON body.
//! Those that depend on what the handler does (404, 409, 422) are listed in each
//! `#[utoipa::path]` with the types below. Path parameters get their rules by name.

use berth_model::schema;
use std::collections::BTreeMap;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

const PROBLEM_JSON: &str = "application/problem+json";

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

macro_rules! problem_response {
    ($(#[$doc:meta])* $name:ident, $status:literal, $description:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_owned(), problem($description).into())])
            }
        }
    };
}

const NOT_FOUND: &str = "No such instance, parameter group, task, database or user.";
const CONFLICT: &str = "Not possible now: the name is taken, the instance is busy or in \
    another state, or the engine refused.";
const UNPROCESSABLE: &str = "Well-formed but not accepted: beyond the host's capacity, out of \
    range, a reserved name, a version of another engine, or a setting the engine's catalog refuses.";

problem_response!(
    /// `404` for an operation that looks something up by name or id.
    NotFound, "404", NOT_FOUND
);
problem_response!(
    /// `409` for an operation that depends on state or a free name.
    Conflict, "409", CONFLICT
);
problem_response!(
    /// `422` for an operation with checks a schema cannot state.
    Unprocessable, "422", UNPROCESSABLE
);

/// Operations that touch neither the store nor Docker.
const INFALLIBLE: &[&str] = &["/v1/info"];

/// Adds the statuses every operation shares and the path parameters' rules.
pub(crate) fn complete(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            complete_operation(op, INFALLIBLE.contains(&path.as_str()));
        }
    }
}

fn complete_operation(op: &mut Operation, infallible: bool) {
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description).into());
    };
    add("401", "No or a wrong API token.");
    if !infallible {
        add(
            "408",
            &format!(
                "The request took longer than {}s and was abandoned.",
                super::REQUEST_TIMEOUT.as_secs()
            ),
        );
        add(
            "500",
            "Internal error (a bug or an unexpected failure); the log says more.",
        );
        add(
            "503",
            "Docker or the instance's engine cannot be reached right now; try again.",
        );
    }
    if has_body || has_params {
        add(
            "400",
            "The request breaks a rule this document states: malformed JSON or query, a wrong \
             type, pattern or enum value, a missing or unknown field.",
        );
    }
    if has_body {
        add(
            "413",
            &format!("The body is larger than {} KiB.", super::BODY_LIMIT / 1024),
        );
        add("415", "The body is not `application/json`.");
    }
    for p in op.parameters.iter_mut().flatten() {
        let RefOr::T(p) = p else { continue };
        if p.parameter_in == ParameterIn::Path {
            if let Some(s) = path_schema(&p.name) {
                p.schema = Some(RefOr::T(s));
            }
        }
    }
}

/// The rule of a path parameter, by its name (the same name means the same thing in
/// every route).
fn path_schema(name: &str) -> Option<Schema> {
    Some(match name {
        "name" | "group" => schema::instance_name(),
        "db" | "user" => schema::ident(),
        "engine" => schema::engine(),
        "version" => schema::version(),
        "action" => ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["start", "stop", "restart"]))
            .into(),
        _ => return None,
    })
}

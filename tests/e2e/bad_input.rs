//! Every kind of bad input gets a 4xx problem+json that says what to fix, and
//! changes nothing: no instance, no task, no Docker object.

use anyhow::Context;
use berth_e2e::{unique, Berth};
use reqwest::Method;
use serde_json::{json, Value};

async fn nothing_changed(b: &Berth, tasks_before: usize) -> anyhow::Result<()> {
    let tasks = b.get("/v1/tasks").await?;
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(tasks_before),
        "a task was created"
    );
    // One instance at most: its member and endpoint containers, one volume, one network.
    for (kind, per_instance) in [("container", 2), ("volume", 1), ("network", 1)] {
        let n = b.docker_objects(kind, None).len();
        assert_eq!(
            n,
            per_instance * usize::from(tasks_before > 0),
            "{kind} objects changed"
        );
    }
    Ok(())
}

fn check_problem(
    status: u16,
    v: &Value,
    want_status: u16,
    want_type: &str,
    detail_has: &str,
    case: &str,
) {
    assert_eq!(status, want_status, "{case}: {v}");
    assert_eq!(v["_content_type"], "application/problem+json", "{case}");
    assert_eq!(v["status"], want_status, "{case}");
    assert_eq!(
        v["type"],
        format!("https://berth.dev/problems/{want_type}"),
        "{case}: {v}"
    );
    let detail = v["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(detail_has),
        "{case}: detail {detail:?} lacks {detail_has:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_creates_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let ok = json!({"name": "db1", "engine": "postgres"});
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        o
    };
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "uppercase name",
            with("name", json!("DB1")),
            400,
            "invalid-request",
            "lowercase",
        ),
        (
            "name with a quote",
            with("name", json!("db'; drop")),
            400,
            "invalid-request",
            "contains",
        ),
        (
            "name starting with a digit",
            with("name", json!("1db")),
            400,
            "invalid-request",
            "must start with a lowercase letter",
        ),
        (
            "empty name",
            with("name", json!("")),
            400,
            "invalid-request",
            "empty",
        ),
        (
            "long name",
            with("name", json!("a".repeat(64))),
            400,
            "invalid-request",
            "at most 40",
        ),
        (
            "unknown engine",
            with("engine", json!("oracle")),
            400,
            "invalid-request",
            "choose one of: postgres",
        ),
        (
            "unknown version",
            with("version", json!("9.6")),
            422,
            "invalid-value",
            "choose one of: 15",
        ),
        (
            "malformed memory",
            with("memory", json!("lots")),
            400,
            "invalid-request",
            "512MiB",
        ),
        (
            "memory without unit",
            with("memory", json!("512")),
            400,
            "invalid-request",
            "unit",
        ),
        (
            "tiny memory",
            with("memory", json!("1MiB")),
            422,
            "invalid-value",
            "minimum is 128MiB",
        ),
        (
            "absurd memory",
            with("memory", json!("9000TiB")),
            422,
            "invalid-value",
            "maximum",
        ),
        (
            "memory beyond host",
            with("memory", json!("2TiB")),
            422,
            "insufficient-capacity",
            "more than this host has",
        ),
        (
            "malformed cpus",
            with("cpus", json!("two")),
            400,
            "invalid-request",
            "number of cores",
        ),
        (
            "negative cpus",
            with("cpus", json!(-1)),
            400,
            "invalid-request",
            "cores",
        ),
        (
            "cpus beyond host",
            with("cpus", json!(512)),
            422,
            "insufficient-capacity",
            "more than this host has",
        ),
        (
            "storage beyond disk",
            with("storage", json!("60TiB")),
            422,
            "insufficient-capacity",
            "free",
        ),
        (
            "unknown field",
            with("memroy", json!("1GiB")),
            400,
            "invalid-request",
            "memroy",
        ),
        (
            "missing engine",
            json!({"name": "db1"}),
            400,
            "invalid-request",
            "engine",
        ),
        (
            "six members",
            with("members", json!(6)),
            400,
            "invalid-request",
            "from 1 to 5",
        ),
        (
            "sync not below members",
            json!({"name": "db1", "engine": "postgres", "members": 2, "sync": 2}),
            422,
            "invalid-value",
            "--sync 2 needs at least 3 members",
        ),
        (
            "sync 2 on mariadb",
            json!({"name": "db1", "engine": "mariadb", "members": 3, "sync": 2}),
            422,
            "invalid-value",
            "waits for one replica only",
        ),
        (
            "unknown sync mode",
            with("sync_mode", json!("eventually")),
            400,
            "invalid-request",
            "sync_mode",
        ),
    ];
    for (case, body, status, kind, detail) in cases {
        let (s, v) = b.request(Method::POST, "/v1/instances", Some(body)).await?;
        check_problem(s, &v, status, kind, detail, case);
    }
    // Not JSON at all.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/instances", b.url))
        .bearer_auth(&b.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // JSON without saying so, and a body beyond the limit: problems like the others.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/instances", b.url))
        .bearer_auth(&b.token)
        .body(ok.to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/instances", b.url))
        .bearer_auth(&b.token)
        .header("content-type", "application/json")
        .body(with("name", json!("a".repeat(100 * 1024))).to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    nothing_changed(&b, 0).await?;
    assert_eq!(b.get("/v1/instances").await?, json!([]));

    // The CLI prints the detail and exits non-zero.
    let out = b.cli(&["create", "Bad_Name", "--engine", "postgres"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use only lowercase letters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.cli(&["create", "db1", "--engine", "postgres", "--memory", "lots"]);
    assert!(!out.status.success());
    nothing_changed(&b, 0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_unknown_names_duplicates_and_wrong_states() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let http = reqwest::Client::new();
    // No token, a wrong token: 401, nothing created.
    for token in [None, Some("berth_wrong")] {
        let mut req = http
            .post(format!("{}/v1/instances", b.url))
            .json(&json!({"name": "x", "engine": "postgres"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let resp = http.get(format!("{}/v1/instances", b.url)).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        http.get(format!("{}/healthz", b.url))
            .send()
            .await?
            .status()
            .as_u16(),
        200
    );
    let out = std::process::Command::new(berth_e2e::berth_bin())
        .args(["list"])
        .env("BERTH_URL", &b.url)
        .env("BERTH_TOKEN", "berth_wrong")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid API token"));
    nothing_changed(&b, 0).await?;

    // Acting on an unknown instance.
    for (m, path) in [
        (Method::GET, "/v1/instances/nope"),
        (Method::POST, "/v1/instances/nope/stop"),
        (Method::POST, "/v1/instances/nope/start"),
        (Method::DELETE, "/v1/instances/nope"),
        (Method::GET, "/v1/instances/nope/credentials"),
        (Method::GET, "/v1/tasks/not-a-task"),
    ] {
        let (s, v) = b.request(m.clone(), path, None).await?;
        check_problem(s, &v, 404, "not-found", "", &format!("{m} {path}"));
    }
    let out = b.cli(&["stop", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance named nope"));
    nothing_changed(&b, 0).await?;

    // A duplicate name, and actions that make no sense in the current state.
    let name = unique("dup");
    b.create(&name, json!({})).await?;
    let (s, v) = b
        .request(
            Method::POST,
            "/v1/instances",
            Some(json!({"name": name, "engine": "postgres"})),
        )
        .await?;
    check_problem(s, &v, 409, "name-taken", "already exists", "duplicate");
    let (s, v) = b
        .request(Method::POST, &format!("/v1/instances/{name}/start"), None)
        .await?;
    check_problem(
        s,
        &v,
        409,
        "invalid-state",
        "available",
        "start a running instance",
    );
    let (s, v) = b
        .request(Method::POST, &format!("/v1/instances/{name}/reboot"), None)
        .await?;
    check_problem(
        s,
        &v,
        404,
        "not-found",
        "start, stop or restart",
        "unknown action",
    );
    let (s, v) = b
        .request(
            Method::DELETE,
            &format!("/v1/instances/{name}?purge=maybe"),
            None,
        )
        .await?;
    check_problem(s, &v, 400, "invalid-request", "purge", "bad purge flag");
    nothing_changed(&b, 1).await?;
    b.cli_json(&["stop", &name])?;
    let (s, v) = b
        .request(Method::POST, &format!("/v1/instances/{name}/restart"), None)
        .await?;
    check_problem(
        s,
        &v,
        409,
        "invalid-state",
        &format!("berth start {name}"),
        "restart a stopped instance",
    );
    assert_eq!(b.get("/v1/tasks").await?.as_array().map(Vec::len), Some(2));

    // A program takes the endpoint's port while the instance is stopped: start says
    // which port and what to do, keeps the port (the endpoint never moves), and
    // works once the port is free again.
    let port = b.cli_json(&["show", &name])?["endpoint"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("port")?;
    let squatter = std::net::TcpListener::bind(("0.0.0.0", port))?;
    let out = b.cli(&["start", &name]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a taken port");
    assert!(
        said.contains(&format!("host port {port}")) && said.contains("free it"),
        "{said}"
    );
    drop(squatter);
    b.cli_json(&["start", &name])?;
    let inst = b.cli_json(&["show", &name])?;
    assert_eq!(inst["status"], "available");
    assert_eq!(inst["endpoint"]["port"], json!(port), "the port moved");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_the_api() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let doc = b.get("/v1/openapi.json").await?;
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    for path in [
        "/v1/instances",
        "/v1/instances/{name}",
        "/v1/instances/{name}/{action}",
        "/v1/tasks",
        "/v1/tasks/{id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["CreateRequest"].is_object());
    Ok(())
}

/// One task holds an instance from its begin to its end: a scale or a switchover
/// asked meanwhile is refused with a 409 that names the holding task and what to
/// do, and begins nothing; once the task has ended, the same request is taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_holds_its_instance_until_it_ends() -> anyhow::Result<()> {
    let b = Berth::start().await?;
    let name = unique("hd-po");
    let create = b.begin_create_with_cli(&name, "postgres", &["--members", "2"])?;
    let create_id = create["task"]["id"]
        .as_str()
        .or_else(|| create["id"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no task id in {create}"))?
        .to_owned();
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(
        shown["task"],
        create_id.as_str(),
        "show names the holder: {shown}"
    );
    let tasks_before = b.get("/v1/tasks").await?.as_array().map(Vec::len);
    for (path, body, what) in [
        (
            format!("/v1/instances/{name}/switchover"),
            json!({}),
            "switchover",
        ),
        (
            format!("/v1/instances/{name}/scale"),
            json!({"members": 3}),
            "scale",
        ),
    ] {
        let (s, v) = b.request(Method::POST, &path, Some(body)).await?;
        check_problem(s, &v, 409, "invalid-state", &create_id, what);
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("(create)") && detail.contains("--wait"),
            "{what}: {detail}"
        );
    }
    assert_eq!(
        b.get("/v1/tasks").await?.as_array().map(Vec::len),
        tasks_before,
        "a refused request begins no task"
    );
    let done = b.cli_json(&["task", &create_id, "--wait"])?;
    assert_eq!(done["state"], "succeeded", "{done}");
    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert!(
        shown.get("task").is_none(),
        "given back at its end: {shown}"
    );
    let scaled = b.cli_json(&["scale", &name, "--members", "3"])?;
    assert_eq!(scaled["state"], "succeeded", "{scaled}");
    Ok(())
}

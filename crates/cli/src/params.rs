//! `berth params …`.

use crate::output::{print_json, Format};
use crate::wait;
use crate::{CliError, Client, Follow, Result};
use berth_server::TaskView;
use serde_json::{json, Value};

/// The strings of a JSON array (nothing for anything else).
fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .collect()
}

fn show_group(v: &Value, fmt: Format) {
    if fmt == Format::Json {
        return print_json(v);
    }
    println!(
        "{} ({} {}, revision {}){}",
        v["name"].as_str().unwrap_or("?"),
        v["engine"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["revision"],
        v["description"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    );
    let restart: Vec<&str> = strs(&v["restart_required"]);
    for (k, val) in v["params"].as_object().into_iter().flatten() {
        let flag = if restart.contains(&k.as_str()) {
            "  (restart)"
        } else {
            ""
        };
        println!("  {k} = {}{flag}", val.as_str().unwrap_or(""));
    }
    let instances: Vec<&str> = strs(&v["instances"]);
    println!(
        "attached to: {}",
        if instances.is_empty() {
            "-".to_owned()
        } else {
            instances.join(", ")
        }
    );
}

/// `berth params list`.
pub async fn list(client: &Client, fmt: Format) -> Result<()> {
    let v: Value = client.get("/v1/parameter-groups").await?;
    if fmt == Format::Json {
        print_json(&v);
        return Ok(());
    }
    for g in v.as_array().into_iter().flatten() {
        println!(
            "{}\t{} {}\t{} settings\trevision {}",
            g["name"].as_str().unwrap_or("?"),
            g["engine"].as_str().unwrap_or("?"),
            g["version"].as_str().unwrap_or("?"),
            g["params"].as_object().map(|m| m.len()).unwrap_or(0),
            g["revision"]
        );
    }
    Ok(())
}

/// `berth params create`.
pub async fn create(
    client: &Client,
    name: &str,
    engine: &str,
    version: Option<&str>,
    description: Option<&str>,
    fmt: Format,
) -> Result<()> {
    let mut body = json!({"name": name, "engine": engine});
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    let v: Value = client.post("/v1/parameter-groups", &body).await?;
    show_group(&v, fmt);
    Ok(())
}

/// `berth params show`.
pub async fn show(client: &Client, name: &str, fmt: Format) -> Result<()> {
    let v: Value = client.get(&format!("/v1/parameter-groups/{name}")).await?;
    show_group(&v, fmt);
    Ok(())
}

async fn change(
    client: &Client,
    name: &str,
    body: Value,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .patch(&format!("/v1/parameter-groups/{name}"), &body)
        .await?;
    let tasks: Vec<TaskView> = serde_json::from_value(v["tasks"].clone()).unwrap_or_default();
    if fmt == Format::Json && follow == Follow::NoWait {
        print_json(&v);
        return Ok(());
    }
    if fmt == Format::Table {
        show_group(&v["group"], fmt);
    }
    let mut failed = vec![];
    if follow == Follow::Wait {
        for t in &tasks {
            let done = wait::follow(client, t, fmt).await?;
            if done.state == berth_model::TaskState::Failed {
                failed.push(format!(
                    "{}: {}",
                    done.instance,
                    done.error.unwrap_or_default()
                ));
            }
        }
    }
    if fmt == Format::Json {
        let instances: Vec<Value> = futures_join(client, &tasks).await?;
        print_json(&json!({"group": v["group"], "instances": instances}));
    } else {
        for t in &tasks {
            let i: Value = client.get(&format!("/v1/instances/{}", t.instance)).await?;
            let pending: Vec<&str> = strs(&i["pending_restart"]);
            if !pending.is_empty() {
                println!(
                    "{}: pending restart for {} (run `berth restart {}`)",
                    t.instance,
                    pending.join(", "),
                    t.instance
                );
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "applying the group failed on {}",
            failed.join("; ")
        )))
    }
}

async fn futures_join(client: &Client, tasks: &[TaskView]) -> Result<Vec<Value>> {
    let mut out = vec![];
    for t in tasks {
        out.push(client.get(&format!("/v1/instances/{}", t.instance)).await?);
    }
    Ok(out)
}

/// `berth params set GROUP k=v …`.
pub async fn set(
    client: &Client,
    name: &str,
    pairs: &[String],
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let mut set = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::Config(format!("{p:?} is not NAME=VALUE")))?;
        set.insert(k.trim().to_owned(), json!(v.trim()));
    }
    change(client, name, json!({"set": set}), follow, fmt).await
}

/// `berth params unset GROUP k …`.
pub async fn unset(
    client: &Client,
    name: &str,
    keys: &[String],
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    change(client, name, json!({"unset": keys}), follow, fmt).await
}

/// `berth params delete`.
pub async fn delete(client: &Client, name: &str, fmt: Format) -> Result<()> {
    client
        .delete_empty(&format!("/v1/parameter-groups/{name}"))
        .await?;
    match fmt {
        Format::Json => print_json(&json!({"deleted": name})),
        Format::Table => println!("parameter group {name} deleted"),
    }
    Ok(())
}

/// `berth params attach INSTANCE GROUP`.
pub async fn attach(
    client: &Client,
    instance: &str,
    group: Option<&str>,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .put(
            &format!("/v1/instances/{instance}/parameter-group"),
            &json!({"group": group}),
        )
        .await?;
    if let (Some(t), Follow::Wait) = (v.get("task").filter(|t| !t.is_null()), follow) {
        let task: TaskView =
            serde_json::from_value(t.clone()).map_err(|e| CliError::Other(e.to_string()))?;
        let done = wait::follow(client, &task, fmt).await?;
        if done.state == berth_model::TaskState::Failed {
            return Err(CliError::TaskFailed {
                id: done.id.to_string(),
                error: done.error.unwrap_or_default(),
            });
        }
    }
    let i: Value = client.get(&format!("/v1/instances/{instance}")).await?;
    match fmt {
        Format::Json => print_json(&i),
        Format::Table => {
            println!(
                "{instance}: parameter group {}",
                i["param_group"].as_str().unwrap_or("(none)")
            );
            let pending: Vec<&str> = strs(&i["pending_restart"]);
            if !pending.is_empty() {
                println!(
                    "pending restart for {} (run `berth restart {instance}`)",
                    pending.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// `berth params catalog ENGINE`.
pub async fn catalog(
    client: &Client,
    engine: &str,
    version: Option<&str>,
    search: Option<&str>,
    fmt: Format,
) -> Result<()> {
    let version = match version {
        Some(v) => v.to_owned(),
        None => engine
            .parse::<berth_model::EngineKind>()
            .map_err(|e| CliError::Config(e.to_string()))?
            .default_version()
            .to_string(),
    };
    let mut path = format!("/v1/catalog/{engine}/{version}");
    if let Some(s) = search {
        path.push_str(&format!("?search={s}"));
    }
    let v: Value = client.get(&path).await?;
    if fmt == Format::Json {
        print_json(&v);
        return Ok(());
    }
    for p in v.as_array().into_iter().flatten() {
        let range = match (p["min"].as_f64(), p["max"].as_f64()) {
            (Some(a), Some(b)) => match p["unit"].as_str() {
                Some(u) => format!(" [{a}..{b}, in {u}]"),
                None => format!(" [{a}..{b}]"),
            },
            _ => String::new(),
        };
        let allowed = p["allowed"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!(" {{{s}}}"))
            .unwrap_or_default();
        println!(
            "{}\t{}{range}{allowed}\t{}\t{}",
            p["name"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            if p["restart"].as_bool().unwrap_or(true) {
                "restart"
            } else {
                "live"
            },
            p["description"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

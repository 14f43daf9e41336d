//! Tables for people, JSON (`-o json`) for programs.

use crate::Result;
use berth_model::MemberId;
use berth_server::{CredentialsView, InstanceView, TaskView};
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use serde::Serialize;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text.
    Table,
    /// JSON, as the API returns it.
    Json,
}

pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn json<T: Serialize>(v: &T) -> Result<()> {
    print_json(&serde_json::to_value(v).unwrap_or_default());
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

fn kv(rows: &[(&str, String)]) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    for (k, v) in rows {
        t.add_row(vec![format!("{k}:"), v.clone()]);
    }
    println!("{t}");
}

fn status_text(i: &InstanceView) -> String {
    match &i.status_detail {
        Some(d) => format!("{} ({d})", i.status.as_str()),
        None => i.status.as_str().to_owned(),
    }
}

pub(crate) fn instances(v: &[InstanceView], fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        return json(&v);
    }
    let mut t = table(&[
        "name", "engine", "status", "cpus", "memory", "storage", "endpoint",
    ]);
    for i in v {
        t.add_row(vec![
            i.name.to_string(),
            format!("{} {}", i.engine, i.version),
            status_text(i),
            i.cpus.clone(),
            i.memory.clone(),
            i.storage.clone(),
            format!("{}:{}", i.endpoint.host, i.endpoint.port),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub(crate) fn instance(i: &InstanceView, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        return json(i);
    }
    let mut rows = vec![
        ("name", i.name.to_string()),
        ("id", i.id.to_string()),
        ("engine", format!("{} {}", i.engine, i.version)),
        ("status", status_text(i)),
        (
            "task",
            i.task
                .map(|t| format!("{t} holds the instance until it ends"))
                .unwrap_or_else(|| "-".into()),
        ),
        ("cpus", i.cpus.clone()),
        ("memory", i.memory.clone()),
        ("storage", i.storage.clone()),
        (
            "endpoint",
            format!("{}:{} (read-write)", i.endpoint.host, i.endpoint.port),
        ),
        (
            "read-only endpoint",
            match (&i.endpoint.ro_fallback, &i.endpoint.ro_reason) {
                (Some(true), Some(why)) => format!(
                    "{}:{} (to the primary now: {why})",
                    i.endpoint.host, i.endpoint.ro_port
                ),
                _ => format!("{}:{}", i.endpoint.host, i.endpoint.ro_port),
            },
        ),
        (
            "follows memory",
            i.memory_settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "pending restart",
            if i.pending_restart.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{} (apply with `berth restart {}`)",
                    i.pending_restart.join(", "),
                    i.name
                )
            },
        ),
        (
            "replication",
            match (i.members.len(), i.sync) {
                (1, _) => "one member".to_owned(),
                (n, 0) => format!("{n} members, asynchronous"),
                (n, k) => format!(
                    "{n} members, a commit waits for {k} replica(s) ({})",
                    i.sync_mode
                ),
            },
        ),
        (
            "degraded",
            i.sync_degraded.clone().unwrap_or_else(|| "-".to_owned()),
        ),
    ];
    if i.members.len() > 1 || i.failover_paused {
        rows.push(("failover", failover_text(i)));
    }
    rows.push(("created", i.created_at.clone()));
    kv(&rows);
    let mut t = table(&["member", "role", "state", "sync", "lag", "container"]);
    for m in &i.members {
        let lag = match (m.lag_bytes, m.lag_seconds) {
            (Some(b), Some(s)) => format!("{b} B, {s:.1} s"),
            (Some(b), None) => format!("{b} B"),
            (None, Some(s)) => format!("{s:.1} s"),
            (None, None) => "-".to_owned(),
        };
        t.add_row(vec![
            m.name.clone(),
            m.role.as_str().to_owned(),
            m.state.clone().unwrap_or_else(|| "-".into()),
            if m.sync { "yes" } else { "no" }.to_owned(),
            lag,
            m.container.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `auto, max lag 1MiB`, `manual, paused (…)`: how a failed primary is handled.
fn failover_text(i: &InstanceView) -> String {
    let paused = if i.failover_paused {
        format!(
            ", paused (a failed primary is restarted in place; `berth failover resume {}` ends it)",
            i.name
        )
    } else {
        String::new()
    };
    format!(
        "{}{paused}, max failover lag {}",
        i.failover.as_str(),
        berth_model::bytes::ShowBytes(i.max_failover_lag_bytes)
    )
}

pub(crate) fn credentials(c: &CredentialsView, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        return json(c);
    }
    kv(&[
        ("user", c.user.clone()),
        ("password", c.password.clone()),
        ("host", c.host.clone()),
        ("port", c.port.to_string()),
        ("uri", c.uri.clone()),
        ("read-only uri", c.ro_uri.clone()),
        ("command", c.command.clone()),
        ("ca", c.ca_file.clone()),
    ]);
    Ok(())
}

pub(crate) fn tasks(v: &[TaskView], fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        return json(&v);
    }
    let mut t = table(&["id", "instance", "kind", "state", "progress", "created"]);
    for task in v {
        t.add_row(vec![
            task.id.to_string(),
            task.instance.to_string(),
            task.kind.as_str().to_owned(),
            task.state.as_str().to_owned(),
            format!("{}%", task.progress),
            task.created_at.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub(crate) fn task(task: &TaskView, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        return json(task);
    }
    kv(&[
        ("id", task.id.to_string()),
        ("instance", task.instance.to_string()),
        ("kind", task.kind.as_str().to_owned()),
        ("state", task.state.as_str().to_owned()),
        ("progress", format!("{}%", task.progress)),
        ("error", task.error.clone().unwrap_or_else(|| "-".into())),
    ]);
    let mut t = table(&["step", "member", "state", "ms", "detail"]);
    for s in &task.steps {
        t.add_row(vec![
            s.name.as_str().to_owned(),
            s.member
                .map(|m| berth_model::member::display_name(&task.instance, MemberId(m)))
                .unwrap_or_default(),
            format!("{:?}", s.state).to_lowercase(),
            s.millis.map(|m| m.to_string()).unwrap_or_default(),
            step_detail(s),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// A step's sentence, and what it decided (`target=db-2, term=3`).
pub(crate) fn step_detail(s: &berth_model::StepStatus) -> String {
    let mut said = s.detail.clone().unwrap_or_default();
    if !s.decided.is_empty() {
        let decided: Vec<_> = s
            .decided
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(text) => format!("{k}={text}"),
                other => format!("{k}={other}"),
            })
            .collect();
        said.push_str(&format!(" [decided: {}]", decided.join(", ")));
    }
    said
}

pub(crate) fn accepted(v: &serde_json::Value, task: &TaskView, fmt: Format) -> Result<()> {
    if fmt == Format::Json {
        print_json(v);
        return Ok(());
    }
    println!(
        "{} {}: task {} accepted (follow it with `berth task {} --wait`)",
        task.kind, task.instance, task.id, task.id
    );
    Ok(())
}

//! `berth backup …`.

use crate::output::{print_json, Format};
use crate::{wait, CliError, Client, Follow, Result};
use berth_server::{BackupAccepted, BackupPolicyView, BackupView};
use comfy_table::presets::NOTHING;
use comfy_table::Table;

fn size_text(b: &BackupView) -> String {
    match b.size_bytes {
        Some(n) if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        Some(n) => format!("{:.1} KiB", n as f64 / 1024.0),
        None => "-".into(),
    }
}

fn json(b: &impl serde::Serialize) {
    print_json(&serde_json::to_value(b).unwrap_or_default());
}

/// `berth backup create`: starts the backup task and, unless told not to, follows it
/// and shows the finished backup.
pub async fn create(
    client: &Client,
    instance: &str,
    kind: &str,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let accepted: BackupAccepted = client
        .post(
            &format!("/v1/instances/{instance}/backups"),
            &serde_json::json!({ "kind": kind }),
        )
        .await?;
    if follow == Follow::NoWait {
        match fmt {
            Format::Json => json(&accepted),
            Format::Table => println!(
                "backup {} of {instance} started (task {}); `berth backup show {}` follows it",
                accepted.backup, accepted.task.id, accepted.backup
            ),
        }
        return Ok(());
    }
    let done = wait::follow(client, &accepted.task, fmt).await?;
    if done.state == berth_model::TaskState::Failed {
        return Err(CliError::TaskFailed {
            id: done.id.to_string(),
            error: done.error.unwrap_or_default(),
        });
    }
    show(client, &accepted.backup.to_string(), fmt).await
}

/// `berth backup verify`: restores the backup into a throwaway instance and checks
/// it; unless told not to, follows the task and shows the backup with the outcome.
pub async fn verify(client: &Client, id: &str, follow: Follow, fmt: Format) -> Result<()> {
    let accepted: BackupAccepted = client
        .post(&format!("/v1/backups/{id}/verify"), &serde_json::json!({}))
        .await?;
    if follow == Follow::NoWait {
        match fmt {
            Format::Json => json(&accepted),
            Format::Table => println!(
                "verifying backup {id} (task {}); `berth backup show {id}` shows the outcome",
                accepted.task.id
            ),
        }
        return Ok(());
    }
    let done = wait::follow(client, &accepted.task, fmt).await?;
    // The outcome is written on the backup as the task ends: wait (briefly) for it.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(15) {
        let b: BackupView = client.get(&format!("/v1/backups/{id}")).await?;
        if b.verification
            .as_ref()
            .is_some_and(|v| v.at >= accepted.task.created_at)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    show(client, id, fmt).await?;
    if done.state == berth_model::TaskState::Failed {
        return Err(CliError::TaskFailed {
            id: done.id.to_string(),
            error: done.error.unwrap_or_default(),
        });
    }
    Ok(())
}

fn verified_text(b: &BackupView) -> String {
    b.verification
        .as_ref()
        .map_or("-".into(), |v| v.outcome.as_str().to_owned())
}

/// `berth backup list`.
pub async fn list(client: &Client, instance: Option<&str>, fmt: Format) -> Result<()> {
    let path = match instance {
        Some(name) => format!("/v1/backups?instance={name}"),
        None => "/v1/backups".to_owned(),
    };
    let v: Vec<BackupView> = client.get(&path).await?;
    if fmt == Format::Json {
        json(&v);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "ID", "INSTANCE", "ENGINE", "KIND", "STATE", "SIZE", "SHA256", "VERIFIED", "STARTED",
    ]);
    for b in &v {
        t.add_row(vec![
            b.id.to_string(),
            b.instance.clone(),
            format!("{} {}", b.engine, b.version),
            b.kind.to_string(),
            b.state.as_str().to_owned(),
            size_text(b),
            b.sha256
                .as_deref()
                .map_or("-".into(), |s| s[..12.min(s.len())].to_owned()),
            verified_text(b),
            b.started_at.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `berth backup show`.
pub async fn show(client: &Client, id: &str, fmt: Format) -> Result<()> {
    let b: BackupView = client.get(&format!("/v1/backups/{id}")).await?;
    if fmt == Format::Json {
        json(&b);
        return Ok(());
    }
    let mut rows = vec![
        ("id", b.id.to_string()),
        ("instance", format!("{} ({})", b.instance, b.instance_id)),
        ("engine", format!("{} {}", b.engine, b.version)),
        ("kind", b.kind.to_string()),
        ("state", b.state.as_str().to_owned()),
        ("complete", b.complete.to_string()),
        ("size", size_text(&b)),
        ("sha256", b.sha256.clone().unwrap_or_else(|| "-".into())),
        (
            "taken from",
            b.taken_from.clone().unwrap_or_else(|| "-".into()),
        ),
        ("object", b.object.clone()),
        ("started", b.started_at.clone()),
        (
            "finished",
            b.finished_at.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Some(e) = &b.error {
        rows.push(("error", e.clone()));
    }
    if let Some(v) = &b.verification {
        rows.push(("verified", format!("{} at {}", v.outcome.as_str(), v.at)));
        rows.push(("verify detail", v.detail.clone()));
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    for (k, v) in rows {
        t.add_row(vec![format!("{k}:"), v]);
    }
    println!("{t}");
    Ok(())
}

/// `berth backup delete`.
pub async fn delete(client: &Client, id: &str, fmt: Format) -> Result<()> {
    client.delete_empty(&format!("/v1/backups/{id}")).await?;
    match fmt {
        Format::Json => print_json(&serde_json::json!({ "deleted": id })),
        Format::Table => println!("backup {id} deleted"),
    }
    Ok(())
}

/// What `berth restore` makes.
#[derive(Debug, Clone, Default)]
pub struct RestoreArgs {
    /// The instance the backup was taken from.
    pub source: String,
    /// The new instance.
    pub to: String,
    /// The backup.
    pub backup: String,
    /// CPU limit (default: the source's).
    pub cpus: Option<String>,
    /// Memory (default: the source's).
    pub memory: Option<String>,
    /// Storage (default: the source's).
    pub storage: Option<String>,
}

/// `berth restore`: a new instance from a backup, checked by checksum first.
pub async fn restore(
    client: &Client,
    args: RestoreArgs,
    follow: Follow,
    fmt: Format,
) -> Result<()> {
    let mut body = serde_json::json!({ "to": args.to, "backup": args.backup });
    for (k, v) in [
        ("cpus", args.cpus),
        ("memory", args.memory),
        ("storage", args.storage),
    ] {
        if let Some(v) = v {
            body[k] = serde_json::Value::String(v);
        }
    }
    let v: serde_json::Value = client
        .post(&format!("/v1/instances/{}/restore", args.source), &body)
        .await?;
    crate::finish_accepted(client, v, follow, fmt).await
}

/// What `berth backup schedule` changes; `None` keeps the current value, `Some(0)`
/// for a retention rule removes it.
#[derive(Debug, Default)]
pub struct PolicyChange {
    /// A new cron expression.
    pub cron: Option<String>,
    /// Keep backups this many days (0: no limit by age).
    pub keep_days: Option<u32>,
    /// Keep this many backups (0: no limit by count).
    pub keep_count: Option<u32>,
    /// A new verify policy: after-each, weekly or off.
    pub verify: Option<String>,
}

/// `berth backup schedule`: shows an instance's backup policy, changed first when
/// anything is given.
pub async fn schedule(
    client: &Client,
    instance: &str,
    change: PolicyChange,
    fmt: Format,
) -> Result<()> {
    let path = format!("/v1/instances/{instance}/backup-policy");
    let mut p: BackupPolicyView = client.get(&path).await?;
    if change.cron.is_some()
        || change.keep_days.is_some()
        || change.keep_count.is_some()
        || change.verify.is_some()
    {
        let rule = |given: Option<u32>, current| match given {
            Some(0) => None,
            Some(n) => Some(n),
            None => current,
        };
        let body = serde_json::json!({
            "schedule": change.cron.unwrap_or(p.schedule),
            "keep_days": rule(change.keep_days, p.keep_days),
            "keep_count": rule(change.keep_count, p.keep_count),
            "verify": change.verify.unwrap_or_else(|| p.verify.to_string()),
        });
        p = client.put(&path, &body).await?;
    }
    if fmt == Format::Json {
        json(&p);
        return Ok(());
    }
    let none = || "-".to_owned();
    let mut t = Table::new();
    t.load_preset(NOTHING);
    for (k, v) in [
        ("instance", p.instance.clone()),
        (
            "schedule",
            match p.next_run {
                Some(_) => format!("{} (UTC)", p.schedule),
                None => p.schedule.clone(),
            },
        ),
        (
            "keep days",
            p.keep_days.map_or_else(none, |d| d.to_string()),
        ),
        (
            "keep count",
            p.keep_count.map_or_else(none, |d| d.to_string()),
        ),
        ("next run", p.next_run.clone().unwrap_or_else(none)),
        ("verify", p.verify.to_string()),
    ] {
        t.add_row(vec![format!("{k}:"), v]);
    }
    println!("{t}");
    Ok(())
}

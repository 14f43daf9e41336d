//! `berth alarms …`: alarm rules, their states, silences, and the webhooks and
//! email recipients notifications go to.

use crate::output::{print_json, Format};
use crate::{Client, Result};
use berth_model::metrics::alarm::{AlarmRecord, EmailRecipient};
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use serde_json::Value;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

fn rule_text(a: &AlarmRecord) -> String {
    let r = &a.rule;
    format!(
        "{} {:?} {:?} {} ({} of {} × {}s)",
        r.metric,
        r.statistic,
        r.comparison,
        r.threshold,
        r.datapoints_to_alarm,
        r.evaluation_periods,
        r.period
    )
}

fn print_alarms(alarms: &[AlarmRecord], fmt: Format) {
    if fmt == Format::Json {
        print_json(&serde_json::to_value(alarms).unwrap_or_default());
        return;
    }
    let mut t = table(&["instance", "name", "state", "rule", "silenced until", "id"]);
    for a in alarms {
        t.add_row(vec![
            a.instance.clone(),
            a.name.clone(),
            a.state.to_string(),
            rule_text(a),
            a.silenced_until.map(|u| u.to_string()).unwrap_or_default(),
            a.id.clone(),
        ]);
    }
    println!("{t}");
}

/// `berth alarms list [NAME]`.
pub async fn list(client: &Client, instance: Option<&str>, fmt: Format) -> Result<()> {
    let path = match instance {
        Some(n) => format!("/v1/instances/{n}/alarms"),
        None => "/v1/alarms".into(),
    };
    let alarms: Vec<AlarmRecord> = client.get(&path).await?;
    print_alarms(&alarms, fmt);
    Ok(())
}

/// `berth alarms show ID`: the alarm, why it is in its state, and every delivery
/// attempt of its notifications.
pub async fn show(client: &Client, id: &str, fmt: Format) -> Result<()> {
    let v: Value = client.get(&format!("/v1/alarms/{id}")).await?;
    if fmt == Format::Json {
        print_json(&v);
        return Ok(());
    }
    let alarm: AlarmRecord = serde_json::from_value(v.clone())
        .map_err(|e| crate::CliError::Other(format!("the server sent an unreadable alarm: {e}")))?;
    println!(
        "{} of {}: {} since {}\n  rule: {}\n  why: {}",
        alarm.name,
        alarm.instance,
        alarm.state,
        alarm.state_since,
        rule_text(&alarm),
        alarm.reason
    );
    let mut t = table(&[
        "notification",
        "channel",
        "target",
        "attempt",
        "at",
        "status",
        "error",
    ]);
    for a in v["attempts"].as_array().into_iter().flatten() {
        let s = |k: &str| match &a[k] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        t.add_row(vec![
            s("notification"),
            s("channel"),
            s("target"),
            s("attempt"),
            s("at"),
            s("status"),
            s("error"),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `berth alarms create NAME --name … --metric …`.
pub async fn create(
    client: &Client,
    instance: &str,
    name: &str,
    rule: Value,
    fmt: Format,
) -> Result<()> {
    let a: AlarmRecord = client
        .post(
            &format!("/v1/instances/{instance}/alarms"),
            &serde_json::json!({ "name": name, "rule": rule }),
        )
        .await?;
    print_alarms(&[a], fmt);
    Ok(())
}

/// `berth alarms delete ID`.
pub async fn delete(client: &Client, id: &str) -> Result<()> {
    client.delete_empty(&format!("/v1/alarms/{id}")).await?;
    println!("alarm {id} deleted");
    Ok(())
}

/// `berth alarms silence ID --for 1h`.
pub async fn silence(client: &Client, id: &str, duration: &str, fmt: Format) -> Result<()> {
    let a: AlarmRecord = client
        .post(
            &format!("/v1/alarms/{id}/silence"),
            &serde_json::json!({ "duration": duration }),
        )
        .await?;
    print_alarms(&[a], fmt);
    Ok(())
}

/// `berth alarms webhook add URL`: prints the signing secret (shown only now).
pub async fn webhook_add(client: &Client, url: &str, fmt: Format) -> Result<()> {
    let w: Value = client
        .post("/v1/webhooks", &serde_json::json!({ "url": url }))
        .await?;
    match fmt {
        Format::Json => print_json(&w),
        Format::Table => println!(
            "webhook {} added; bodies are signed with X-Berth-Signature: sha256=HMAC-SHA256(secret, body)\nsecret (shown only now): {}",
            w["id"].as_str().unwrap_or_default(),
            w["secret"].as_str().unwrap_or_default()
        ),
    }
    Ok(())
}

/// `berth alarms webhook list`.
pub async fn webhook_list(client: &Client, fmt: Format) -> Result<()> {
    let ws: Vec<Value> = client.get("/v1/webhooks").await?;
    if fmt == Format::Json {
        print_json(&Value::Array(ws));
        return Ok(());
    }
    let mut t = table(&["id", "url", "created"]);
    for w in &ws {
        let s = |k: &str| w[k].as_str().unwrap_or_default().to_owned();
        t.add_row(vec![s("id"), s("url"), s("created_at")]);
    }
    println!("{t}");
    Ok(())
}

/// `berth alarms webhook delete ID`.
pub async fn webhook_delete(client: &Client, id: &str) -> Result<()> {
    client.delete_empty(&format!("/v1/webhooks/{id}")).await?;
    println!("webhook {id} deleted");
    Ok(())
}

/// `berth alarms email add ADDRESS`.
pub async fn email_add(client: &Client, address: &str, fmt: Format) -> Result<()> {
    let r: EmailRecipient = client
        .post(
            "/v1/email-recipients",
            &serde_json::json!({ "address": address }),
        )
        .await?;
    match fmt {
        Format::Json => print_json(&serde_json::to_value(&r).unwrap_or_default()),
        Format::Table => println!(
            "{} gets alarm emails from now on (recipient {})",
            r.address, r.id
        ),
    }
    Ok(())
}

/// `berth alarms email list`.
pub async fn email_list(client: &Client, fmt: Format) -> Result<()> {
    let rs: Vec<EmailRecipient> = client.get("/v1/email-recipients").await?;
    if fmt == Format::Json {
        print_json(&serde_json::to_value(&rs).unwrap_or_default());
        return Ok(());
    }
    let mut t = table(&["id", "address", "created"]);
    for r in rs {
        t.add_row(vec![r.id, r.address, r.created_at]);
    }
    println!("{t}");
    Ok(())
}

/// `berth alarms email delete ID`.
pub async fn email_delete(client: &Client, id: &str) -> Result<()> {
    client
        .delete_empty(&format!("/v1/email-recipients/{id}"))
        .await?;
    println!("email recipient {id} removed");
    Ok(())
}

//! `berth db …` and `berth user …`.

use crate::output::{print_json, Format};
use crate::{CliError, Client, Result};
use serde_json::{json, Value};

fn grants_text(v: &Value) -> String {
    let grants: Vec<String> = v["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            format!(
                "{}:{}",
                g["database"].as_str().unwrap_or("?"),
                g["level"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if grants.is_empty() {
        "-".into()
    } else {
        grants.join(", ")
    }
}

/// `berth db create`.
pub async fn db_create(client: &Client, instance: &str, db: &str, fmt: Format) -> Result<()> {
    let v: Value = client
        .post(
            &format!("/v1/instances/{instance}/databases"),
            &json!({"name": db}),
        )
        .await?;
    match fmt {
        Format::Json => print_json(&v),
        Format::Table => println!("database {db} created in {instance}"),
    }
    Ok(())
}

/// `berth db list`.
pub async fn db_list(client: &Client, instance: &str, fmt: Format) -> Result<()> {
    let v: Value = client
        .get(&format!("/v1/instances/{instance}/databases"))
        .await?;
    match fmt {
        Format::Json => print_json(&v),
        Format::Table => {
            for d in v.as_array().into_iter().flatten() {
                println!("{}", d["name"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(())
}

/// `berth db drop` (refuses without `--yes`: it deletes data).
pub async fn db_drop(
    client: &Client,
    instance: &str,
    db: &str,
    yes: bool,
    fmt: Format,
) -> Result<()> {
    if !yes {
        return Err(CliError::Config(format!(
            "dropping database {db} deletes everything in it; run again with --yes to confirm"
        )));
    }
    client
        .delete_empty(&format!("/v1/instances/{instance}/databases/{db}"))
        .await?;
    match fmt {
        Format::Json => print_json(&json!({"dropped": db})),
        Format::Table => println!("database {db} dropped from {instance}"),
    }
    Ok(())
}

fn show_user_with_password(v: &Value, verb: &str, fmt: Format) {
    match fmt {
        Format::Json => print_json(v),
        Format::Table => {
            println!(
                "user {} {verb}; grants: {}",
                v["name"].as_str().unwrap_or("?"),
                grants_text(v)
            );
            println!("password: {}", v["password"].as_str().unwrap_or(""));
            eprintln!("(shown once: Berth does not keep it)");
        }
    }
}

/// `berth user create`.
pub async fn user_create(
    client: &Client,
    instance: &str,
    user: &str,
    grants: &[String],
    fmt: Format,
) -> Result<()> {
    let v: Value = client
        .post(
            &format!("/v1/instances/{instance}/users"),
            &json!({"name": user, "grants": grants}),
        )
        .await?;
    show_user_with_password(&v, "created", fmt);
    Ok(())
}

/// `berth user list`.
pub async fn user_list(client: &Client, instance: &str, fmt: Format) -> Result<()> {
    let v: Value = client
        .get(&format!("/v1/instances/{instance}/users"))
        .await?;
    match fmt {
        Format::Json => print_json(&v),
        Format::Table => {
            for u in v.as_array().into_iter().flatten() {
                println!("{}\t{}", u["name"].as_str().unwrap_or("?"), grants_text(u));
            }
        }
    }
    Ok(())
}

/// `berth user drop`.
pub async fn user_drop(client: &Client, instance: &str, user: &str, fmt: Format) -> Result<()> {
    client
        .delete_empty(&format!("/v1/instances/{instance}/users/{user}"))
        .await?;
    match fmt {
        Format::Json => print_json(&json!({"dropped": user})),
        Format::Table => println!("user {user} dropped from {instance}"),
    }
    Ok(())
}

/// `berth user password`: rotates, printing the new password once.
pub async fn user_password(client: &Client, instance: &str, user: &str, fmt: Format) -> Result<()> {
    let v: Value = client
        .post(
            &format!("/v1/instances/{instance}/users/{user}/password"),
            &json!({}),
        )
        .await?;
    show_user_with_password(&v, "has a new password", fmt);
    Ok(())
}

//! `berth tasks`, `berth task ID [--wait]` and `berth task cancel ID`.

use crate::{output, wait, CliError, Client, Follow, Format, Result};
use berth_server::TaskView;

/// `berth tasks`.
pub async fn tasks(
    client: &Client,
    instance: Option<&str>,
    limit: Option<u32>,
    fmt: Format,
) -> Result<()> {
    let mut path = String::from("/v1/tasks?");
    if let Some(i) = instance {
        path.push_str(&format!("instance={i}&"));
    }
    if let Some(l) = limit {
        path.push_str(&format!("limit={l}"));
    }
    let v: Vec<TaskView> = client.get(&path).await?;
    output::tasks(&v, fmt)
}

/// `berth task ID [--wait]`.
pub async fn task(client: &Client, id: &str, follow: Follow, fmt: Format) -> Result<()> {
    let t: TaskView = client.get(&format!("/v1/tasks/{id}")).await?;
    if follow == Follow::Wait && !t.state.is_finished() {
        let done = wait::follow(client, &t, fmt).await?;
        if fmt == Format::Json {
            output::print_json(&serde_json::to_value(&done).unwrap_or_default());
        }
        if done.state == berth_model::TaskState::Failed {
            return Err(CliError::TaskFailed {
                id: done.id.to_string(),
                error: done.error.unwrap_or_default(),
            });
        }
        return Ok(());
    }
    output::task(&t, fmt)?;
    // `--wait` promises an exit code that says how the task ended, even when it had
    // ended before the command started.
    if follow == Follow::Wait && t.state == berth_model::TaskState::Failed {
        return Err(CliError::TaskFailed {
            id: t.id.to_string(),
            error: t.error.unwrap_or_default(),
        });
    }
    Ok(())
}

/// `berth task cancel ID [--wait]`: asks the control plane to stop a task that can
/// stop safely; with `--wait`, follows it until it has ended.
pub async fn task_cancel(client: &Client, id: &str, follow: Follow, fmt: Format) -> Result<()> {
    let t: TaskView = client
        .post(&format!("/v1/tasks/{id}/cancel"), &serde_json::json!({}))
        .await?;
    if follow == Follow::Wait {
        let done = wait::follow(client, &t, fmt).await?;
        return output::task(&done, fmt);
    }
    if fmt == Format::Json {
        output::print_json(&serde_json::to_value(&t).unwrap_or_default());
    } else {
        println!(
            "asked task {} ({}) to stop; `berth task {} --wait` follows it until it has ended",
            t.id, t.kind, t.id
        );
    }
    Ok(())
}

//! Following a task to its end, with a progress bar on a terminal and one line per
//! finished step otherwise (logs and CI stay readable).

use crate::{Client, Format, Result};
use berth_model::{StepState, TaskState};
use berth_server::TaskView;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Polls the task until it finishes; returns its last state.
pub(crate) async fn follow(client: &Client, task: &TaskView, fmt: Format) -> Result<TaskView> {
    let tty = std::io::stderr().is_terminal() && fmt == Format::Table;
    let bar = if tty {
        let b = ProgressBar::new(100);
        b.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(format!("{} {}", task.kind, task.instance));
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let mut reported = 0usize;
    let id = task.id;
    loop {
        let t: TaskView = client.get(&format!("/v1/tasks/{id}")).await?;
        if let Some(b) = &bar {
            b.set_position(u64::from(t.progress));
            let current = t
                .steps
                .iter()
                .find(|s| s.state != StepState::Done)
                .map(|s| {
                    format!(
                        "{}{}",
                        s.name,
                        s.detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            b.set_message(current);
        }
        // Report each step once it is done (or failed), in order.
        while let Some(s) = t.steps.get(reported) {
            if !matches!(s.state, StepState::Done | StepState::Failed) {
                break;
            }
            let mark = if s.state == StepState::Done {
                "✓"
            } else {
                "✗"
            };
            let detail = crate::output::step_detail(s);
            let line = format!(
                "{mark} {}{} {}({} ms)",
                s.name,
                s.member
                    .map(|m| format!(
                        " ({})",
                        berth_model::member::display_name(&t.instance, berth_model::MemberId(m))
                    ))
                    .unwrap_or_default(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!("— {detail} ")
                },
                s.millis.unwrap_or(0)
            );
            match &bar {
                Some(b) => b.println(line),
                None if fmt == Format::Table => eprintln!("{line}"),
                None => {}
            }
            reported += 1;
        }
        if t.state.is_finished() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if fmt == Format::Table && t.state == TaskState::Succeeded {
                eprintln!("{} {}: done", t.kind, t.instance);
            }
            return Ok(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

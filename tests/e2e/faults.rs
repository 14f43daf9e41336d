//! When Docker refuses or disappears, the store still tells the truth and every
//! task ends. Faults come from a relay in front of the real Docker engine
//! (`berth_e2e::docker_proxy`), on this test's own socket.

use berth_e2e::docker_proxy::DockerProxy;
use berth_e2e::{berth_bin, docker, unique, Berth};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_resize_docker_refuses_leaves_the_spec_as_it_was() -> anyhow::Result<()> {
    let proxy = DockerProxy::start()?;
    let host = proxy.docker_host();
    let b = Berth::start_with_env(&[], &[("DOCKER_HOST", &host)]).await?;
    let name = unique("refused");
    b.create(&name, json!({"memory": "512MiB", "cpus": "0.5"}))
        .await?;
    let container = b.member_container(&name)?;

    proxy.refuse("/update");
    let out = b.cli(&["resize", &name, "--memory", "768MiB", "--cpus", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the resize must fail: {stderr}");
    assert!(stderr.contains("Docker refused the new limits"), "{stderr}");

    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(shown["memory_mib"], 512, "{shown}");
    assert_eq!(shown["cpu_millis"], 500, "{shown}");
    assert_eq!(
        shown["status"], "available",
        "the instance still runs as it was"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", &container])?,
        (512u64 * 1024 * 1024).to_string()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_keeps_failing_ends_its_task_failed_with_the_reason() -> anyhow::Result<()> {
    let proxy = DockerProxy::start()?;
    let host = proxy.docker_host();
    let b = Berth::start_with_env(&[], &[("DOCKER_HOST", &host)]).await?;
    let name = unique("cut");
    b.create(&name, json!({})).await?;

    // Docker becomes unreachable for this control plane (the engine itself runs on).
    proxy.cut();
    let started = Instant::now();
    let out = b.cli(&["restart", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restart must fail: {stderr}");
    assert!(stderr.contains("gave up after 5 attempts"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the task ends instead of waiting forever"
    );

    let tasks = b.cli_json(&["tasks", "--instance", &name])?;
    let task = tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "restart"))
        .cloned()
        .expect("the restart task is listed");
    assert_eq!(task["state"], "failed");
    assert!(task["error"]
        .as_str()
        .unwrap_or("")
        .contains("gave up after 5 attempts"));
    let id = task["id"].as_str().expect("task id");
    let wait = b.cli(&["task", id, "--wait"]);
    assert!(
        !wait.status.success(),
        "task --wait exits non-zero for a failed task"
    );

    let shown = b.get(&format!("/v1/instances/{name}")).await?;
    assert_eq!(shown["status"], "failed", "{shown}");
    assert!(
        shown["status_detail"]
            .as_str()
            .unwrap_or("")
            .contains("gave up"),
        "the instance says why: {shown}"
    );
    Ok(())
}

/// A package mirror that accepts connections and never answers: the image build
/// stops at its timeout with a clear error instead of hanging.
#[test]
fn an_image_build_that_hangs_times_out_with_a_clear_error() -> anyhow::Result<()> {
    berth_e2e::require_docker();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let held = std::thread::spawn(move || {
        // Accept and hold a few connections without answering, then stop.
        let mut conns = vec![];
        listener.set_nonblocking(true).ok();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until && conns.len() < 16 {
            match listener.accept() {
                Ok((c, _)) => conns.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        conns
    });
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    let out = Command::new(berth_bin())
        .args(["image", "build", "postgres", "--timeout", "3s", "--cache"])
        .arg(cache.path())
        .env(
            "BERTH_DEBIAN_MIRROR",
            format!("http://127.0.0.1:{port}/debian"),
        )
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("did not finish within 3s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    Ok(())
}

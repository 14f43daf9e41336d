//! A user's CLI configuration is theirs: `berth serve` writes one only when there is
//! none, and `berth login` switches on purpose.

use berth_e2e::{berth_bin, docker_labelled, require_docker};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Serve {
    child: std::process::Child,
    url: String,
    /// Its site, to remove what it labelled (a settings-catalog read or an agent
    /// volume's fill cut short by the kill); empty when it could not be asked.
    site: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.site.is_empty() {
            return;
        }
        for c in docker_labelled("container", &self.site, None) {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &c]).output();
        }
    }
}

/// The site a running serve labels its objects with (`/v1/info`, with the admin token
/// it wrote into its data directory).
async fn site_of(url: &str, data: &std::path::Path) -> Option<String> {
    let token = std::fs::read_to_string(data.join("admin-token")).ok()?;
    let info: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v1/info"))
        .bearer_auth(token.trim())
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    info["site"].as_str().map(str::to_owned)
}

/// `berth serve` with a private HOME and no BERTH_CONFIG: it uses the default
/// path, `$HOME/.config/berth/config.json`, as a user's would.
async fn serve(
    home: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Serve> {
    require_docker();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(berth_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut s = Serve {
        child,
        url: format!("http://127.0.0.1:{port}"),
        site: String::new(),
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = reqwest::get(format!("{}/healthz", s.url)).await {
            if r.status().is_success() {
                s.site = site_of(&s.url, data).await.unwrap_or_default();
                return Ok(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("berth serve did not answer within 60s")
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_leaves_an_existing_cli_config_and_login_switches_on_purpose() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let config = home.path().join(".config/berth/config.json");
    std::fs::create_dir_all(config.parent().expect("parent"))?;
    let theirs = "{\n  \"url\": \"http://127.0.0.1:7070\",\n  \"token\": \"the-users-own\"\n}\n";
    std::fs::write(&config, theirs)?;

    // A new installation (as the test suite starts many) leaves it as it was.
    let data = home.path().join("data");
    let s = serve(home.path(), &data, &[]).await?;
    assert_eq!(std::fs::read_to_string(&config)?, theirs);

    // `berth login` points the CLI here on purpose, after checking the token.
    let token_file = data.join("admin-token");
    let bad = Command::new(berth_bin())
        .args(["login", "--url", &s.url, "--token-file"])
        .arg(home.path().join("nope"))
        .env("HOME", home.path())
        .env_remove("BERTH_CONFIG")
        .output()?;
    assert!(!bad.status.success());
    assert_eq!(
        std::fs::read_to_string(&config)?,
        theirs,
        "a failed login changes nothing"
    );
    let login = Command::new(berth_bin())
        .args(["login", "--url", &s.url, "--token-file"])
        .arg(&token_file)
        .env("HOME", home.path())
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .output()?;
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let now: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    assert_eq!(now["url"], s.url.as_str());
    let list = Command::new(berth_bin())
        .args(["list"])
        .env("HOME", home.path())
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .output()?;
    assert!(
        list.status.success(),
        "the CLI works with what login wrote: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    drop(s);

    // Another installation, asked to, takes it over; without asking it would not.
    let other = home.path().join("other");
    let before = std::fs::read_to_string(&config)?;
    let s2 = serve(home.path(), &other, &[]).await?;
    assert_eq!(std::fs::read_to_string(&config)?, before);
    drop(s2);
    let s3 = serve(home.path(), &other, &["--write-cli-config"]).await?;
    let now: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
    assert_eq!(now["url"], s3.url.as_str());
    Ok(())
}

//! Harness for end-to-end tests: runs the real `berth` binary against the real
//! Docker engine. Each [`Berth`] is its own installation (own data directory, own
//! port, own site id), so tests run in parallel without seeing each other, and its
//! `Drop` removes every Docker object labelled with its site, even when a test fails.

pub mod etcd;
pub mod s3;
pub mod smtp;
pub mod writer;

use anyhow::{bail, Context, Result};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `berth` binary under test: `BERTH_BIN`, else the one beside the test binary.
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-hash -> target/<profile>/berth
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("berth"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p berth` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A short random suffix for names that must not collide with other runs.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        Alphanumeric
            .sample_string(&mut rand::rng(), 6)
            .to_lowercase()
    )
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What `scripts/NAME` prints: the path of the tool it installs once per machine
/// (keyed under the cache; later runs only print it). Run once per test process.
pub(crate) fn installed_by(
    cell: &'static std::sync::OnceLock<std::result::Result<std::path::PathBuf, String>>,
    name: &str,
) -> Result<std::path::PathBuf> {
    cell.get_or_init(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(name);
        let out = Command::new("bash")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(std::path::PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        ))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Waits (30 s at most) until the server `child` started listens on the loopback
/// `port`; fails with its log (`log()`) when it exits first or never does.
pub(crate) async fn until_listening(
    child: &mut Child,
    port: u16,
    what: &str,
    log: impl Fn() -> String,
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().ok().flatten() {
            bail!("{what} exited ({status}):\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not listen within 30s:\n{}", log())
}

/// Waits for a process that should end by itself and gives its output; kills it and
/// fails, saying `what` and its stderr, if it is still running after `limit`.
pub fn exited_within(mut child: Child, limit: Duration, what: &str) -> Result<Output> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output()?;
    bail!(
        "{what} was still running after {}s:\n{}",
        limit.as_secs(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails loudly when Docker is not there: an end-to-end test never passes without it.
pub fn require_docker() {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the Docker engine does not answer `docker info`; end-to-end tests need it"
    );
}

/// Builds the engine images once per test process (`berth image build`, which
/// caches them by their inputs: a no-op after the first run on a machine), so
/// `cargo test` alone works on a fresh machine.
pub fn ensure_images() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        for engine in ["postgres", "mariadb"] {
            let out = Command::new(berth_bin())
                .args(["image", "build", engine])
                .stdin(Stdio::null())
                .output()
                .expect("running berth image build");
            assert!(
                out.status.success(),
                "berth image build {engine} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// One running `berth serve`.
pub struct Berth {
    /// Data directory (and CLI config) of this installation.
    pub dir: tempfile::TempDir,
    /// API URL.
    pub url: String,
    /// Admin token.
    pub token: String,
    /// Site id: the label on everything it makes.
    pub site: String,
    port: u16,
    child: Option<Child>,
    http: reqwest::Client,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl Berth {
    /// Starts a fresh installation and waits until its API answers.
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts a fresh installation with extra `berth serve` arguments.
    pub async fn start_with(extra_args: &[&str]) -> Result<Self> {
        Self::start_with_env(extra_args, &[]).await
    }

    /// Starts a fresh installation with extra `berth serve` arguments and
    /// environment (like `DOCKER_HOST` pointing at a fault injector).
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        require_docker();
        ensure_images();
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
        let port = free_port();
        let mut b = Self {
            dir,
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            site: String::new(),
            port,
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        // The port was free when picked, but another test's server or an
        // instance's published port may take it before `serve` binds: pick again.
        for attempt in 1.. {
            match b.spawn().await {
                Ok(()) => break,
                Err(e) if attempt < 5 && b.log().contains("Address already in use") => {
                    eprintln!(
                        "port {} was taken before serve bound it ({e:#}); picking another",
                        b.port
                    );
                    b.port = free_port();
                    b.url = format!("http://127.0.0.1:{}", b.port);
                    std::fs::remove_file(b.dir.path().join("serve.log"))?;
                }
                Err(e) => return Err(e),
            }
        }
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(b.cli_config())?)?;
        b.token = cfg["token"]
            .as_str()
            .context("token in CLI config")?
            .to_owned();
        let info = b.get("/v1/info").await?;
        b.site = info["site"]
            .as_str()
            .context("site in /v1/info")?
            .to_owned();
        Ok(b)
    }

    fn cli_config(&self) -> PathBuf {
        self.dir.path().join("cli.json")
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))?;
        let child = Command::new(berth_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--reconcile-interval", "1s"])
            // No test's instance is backed up by a default schedule at midnight
            // (a backup task would make its other calls wait); tests set one.
            .args(["--default-backup-schedule", "off"])
            .args(["--default-verify", "off"])
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("BERTH_CONFIG", self.cli_config())
            .env("BERTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting berth serve")?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("berth serve exited ({status}); log:\n{}", self.log());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "berth serve did not answer /healthz within 60s; log:\n{}",
            self.log()
        )
    }

    /// Runs a second `berth serve` on this installation's data directory (another
    /// port) and returns how it ended; it must not run beside the first.
    pub fn serve_again_on_same_data_dir(&self) -> Result<Output> {
        let child = Command::new(berth_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("BERTH_CONFIG", self.cli_config())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a second berth serve")?;
        exited_within(
            child,
            Duration::from_secs(30),
            "a second berth serve on the same data directory",
        )
    }

    /// The data directory of this installation.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The control plane's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL the control plane: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the control plane again on the same data directory and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn().await
    }

    /// Starts the control plane again on the same data directory and port, with other
    /// `berth serve` arguments.
    pub async fn restart_with(&mut self, extra_args: &[&str]) -> Result<()> {
        self.extra_args = extra_args.iter().map(|s| (*s).to_owned()).collect();
        self.restart().await
    }

    /// Runs the CLI against this installation.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(berth_bin())
            .args(args)
            .env("BERTH_URL", &self.url)
            .env("BERTH_TOKEN", &self.token)
            .env("BERTH_CONFIG", self.cli_config())
            .stdin(Stdio::null())
            .output()
            .expect("running the berth CLI")
    }

    /// Runs the CLI with `-o json` and parses its output; fails if it failed.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        if !out.status.success() {
            bail!(
                "berth {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Creates a small instance of `engine` through the CLI (256MiB, half a core,
    /// 1GiB) with the `extra` flags (`--members 3`, `--sync 1`, …); fails unless its
    /// task succeeded. Returns the task.
    pub fn create_with_cli(&self, name: &str, engine: &str, extra: &[&str]) -> Result<Value> {
        let args = small_create(name, engine, extra);
        let task = self.cli_json(&args)?;
        if task["state"] != "succeeded" {
            bail!("berth {} did not succeed: {task}", args.join(" "));
        }
        Ok(task)
    }

    /// Begins a create like [`Berth::create_with_cli`] without waiting for it:
    /// returns what the CLI printed (`--no-wait -o json`: the task accepted).
    pub fn begin_create_with_cli(&self, name: &str, engine: &str, extra: &[&str]) -> Result<Value> {
        let mut args = small_create(name, engine, extra);
        args.push("--no-wait");
        self.cli_json(&args)
    }

    /// An API request with the admin token; returns status and body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await?;
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            if let Value::Object(m) = &mut v {
                m.insert("_content_type".into(), Value::String(ctype));
            }
        }
        Ok((status, v))
    }

    /// GET that must succeed.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let (status, v) = self.request(reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {v}");
        }
        Ok(v)
    }

    /// Waits for a task to finish; returns it. Fails if it failed.
    pub async fn wait_task(&self, id: &str) -> Result<Value> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            let t = self.get(&format!("/v1/tasks/{id}")).await?;
            match t["state"].as_str() {
                Some("succeeded") => return Ok(t),
                Some("failed") => bail!("task {id} failed: {}", t["error"]),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        bail!("task {id} did not finish in 300s")
    }

    /// Creates an instance through the API and waits for it; returns the instance.
    pub async fn create(&self, name: &str, extra: Value) -> Result<Value> {
        let mut body = serde_json::json!({"name": name, "engine": "postgres", "memory": "256MiB", "cpus": "0.5", "storage": "1GiB"});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (status, v) = self
            .request(reqwest::Method::POST, "/v1/instances", Some(body))
            .await?;
        if status != 202 {
            bail!("create answered {status}: {v}");
        }
        self.wait_task(v["task"]["id"].as_str().context("task id")?)
            .await?;
        self.get(&format!("/v1/instances/{name}")).await
    }

    /// Connects to an instance as its superuser through the published port.
    pub async fn pg(&self, name: &str) -> Result<tokio_postgres::Client> {
        let creds = self
            .get(&format!("/v1/instances/{name}/credentials"))
            .await?;
        connect_uri(creds["uri"].as_str().context("uri")?).await
    }

    /// Connects to an instance of any engine as its superuser through the published port.
    pub async fn db(&self, name: &str) -> Result<Db> {
        let creds = self
            .get(&format!("/v1/instances/{name}/credentials"))
            .await?;
        Db::connect(creds["uri"].as_str().context("uri")?).await
    }

    /// Names of this site's Docker objects of a kind (`container`, `volume`, `network`),
    /// optionally only those of one instance id.
    pub fn docker_objects(&self, kind: &str, instance: Option<&str>) -> Vec<String> {
        docker_labelled(kind, &self.site, instance)
    }

    /// The name of an instance's first member container, found the way Berth finds
    /// it: by this site's labels (names carry the instance id and are not guessed).
    pub fn member_container(&self, instance: &str) -> Result<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.berth.site={}", self.site),
            "--filter",
            &format!("label=io.berth.instance-name={instance}"),
            "--filter",
            "label=io.berth.member=0",
            "--format",
            "{{.Names}}",
        ])?;
        match out.lines().collect::<Vec<_>>().as_slice() {
            [one] => Ok((*one).to_owned()),
            other => bail!(
                "instance {instance} has {} member-0 containers: {other:?}",
                other.len()
            ),
        }
    }

    /// The container of the member the API shows as primary, if exactly one is.
    pub async fn primary_container(&self, instance: &str) -> Option<String> {
        let v = self.get(&format!("/v1/instances/{instance}")).await.ok()?;
        let primaries: Vec<String> = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "primary")
            .filter_map(|m| m["container"].as_str().map(str::to_owned))
            .collect();
        match primaries.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// The member whose container is `container`, as the API shows it now.
    pub async fn member_view(&self, instance: &str, container: &str) -> Option<Value> {
        let v = self.get(&format!("/v1/instances/{instance}")).await.ok()?;
        v["members"]
            .as_array()?
            .iter()
            .find(|m| m["container"] == container)
            .cloned()
    }

    /// The instance's read-write connection URI (its endpoint).
    pub async fn rw_uri(&self, instance: &str) -> Result<String> {
        let c = self
            .get(&format!("/v1/instances/{instance}/credentials"))
            .await?;
        Ok(c["uri"].as_str().context("uri")?.to_owned())
    }

    /// The kinds of the instance's events, oldest first.
    pub async fn event_kinds(&self, instance: &str) -> Result<Vec<String>> {
        let events = self.get(&format!("/v1/events?instance={instance}")).await?;
        Ok(events["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until `check` holds, polling; fails with `what` after `timeout`.
    pub async fn eventually<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if check().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "{what} did not happen within {timeout:?}; control plane log tail:\n{}",
            tail(&self.log(), 30)
        )
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Connects with a URI, retrying briefly (a just-started server may still be coming up).
pub async fn connect_uri(uri: &str) -> Result<tokio_postgres::Client> {
    let mut last = None;
    for _ in 0..50 {
        match pg_connect_once(uri).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

/// A URI as `berth credentials` prints it, split into the part the Rust clients read
/// and the CA file its TLS parameters name (`sslrootcert` or `ssl-ca`).
fn split_tls(uri: &str) -> (String, Option<PathBuf>) {
    let Some((base, query)) = uri.split_once('?') else {
        return (uri.to_owned(), None);
    };
    let mut ca = None;
    let mut keep = vec![];
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert" | "ssl-ca", v)) => ca = Some(PathBuf::from(percent_decode(v))),
            Some(("sslmode" | "ssl-mode", _)) => {}
            _ => keep.push(pair),
        }
    }
    let base = if keep.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", keep.join("&"))
    };
    (base, ca)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A rustls client that trusts only the CA in `ca_file`.
pub fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert?)?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One attempt with a `postgresql://` URI from `credentials`: TLS, the server's
/// certificate and host name verified against the CA the URI names.
pub async fn pg_connect_once(uri: &str) -> Result<tokio_postgres::Client> {
    let (base, ca) = split_tls(uri);
    let ca = ca.context("the URI names no CA (sslrootcert)")?;
    let mut config: tokio_postgres::Config = base.parse()?;
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&ca)?);
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// One attempt with a `mysql://` URI from `credentials`: TLS, the server's
/// certificate and host name verified against the CA the URI names.
pub async fn my_connect_once(uri: &str) -> Result<mysql_async::Conn> {
    let (base, ca) = split_tls(uri);
    let ca = ca.context("the URI names no CA (ssl-ca)")?;
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&base)?).ssl_opts(
        mysql_async::SslOpts::default()
            .with_root_certs(vec![ca.into()])
            .with_disable_built_in_roots(true),
    );
    Ok(mysql_async::Conn::new(opts).await?)
}

/// Docker objects labelled with a site (and instance).
pub fn docker_labelled(kind: &str, site: &str, instance: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = match kind {
        "container" => vec![
            "ps".into(),
            "-a".into(),
            "--format".into(),
            "{{.Names}}".into(),
        ],
        "volume" => vec![
            "volume".into(),
            "ls".into(),
            "--format".into(),
            "{{.Name}}".into(),
        ],
        "network" => vec![
            "network".into(),
            "ls".into(),
            "--format".into(),
            "{{.Name}}".into(),
        ],
        other => panic!("unknown docker object kind {other}"),
    };
    args.extend(["--filter".into(), format!("label=io.berth.site={site}")]);
    if let Some(i) = instance {
        args.extend(["--filter".into(), format!("label=io.berth.instance={i}")]);
    }
    let out = Command::new("docker").args(&args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs SQL inside a member over its local socket, as the engine's superuser (a
/// replica read directly, not through an endpoint); its output, trimmed.
pub fn member_sql(container: &str, engine: &str, sql: &str) -> Result<String> {
    if engine == "mariadb" {
        docker(&[
            "exec",
            container,
            "mariadb",
            "--socket=/run/berth/mysqld.sock",
            "-uroot",
            "-N",
            "-B",
            "-e",
            sql,
        ])
    } else {
        docker(&[
            "exec",
            "-u",
            "postgres",
            container,
            "psql",
            "-h",
            "/run/berth",
            "-d",
            "postgres",
            "-At",
            "-c",
            sql,
        ])
    }
}

/// Runs a docker command; returns stdout, failing on a non-zero exit.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
        if self.site.is_empty() {
            return;
        }
        for c in docker_labelled("container", &self.site, None) {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &c]).output();
        }
        for n in docker_labelled("network", &self.site, None) {
            let _ = Command::new("docker").args(["network", "rm", &n]).output();
        }
        for v in docker_labelled("volume", &self.site, None) {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &v])
                .output();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- berth serve log ({}) ---\n{}",
                self.url,
                tail(&self.log(), 80)
            );
        }
    }
}

/// A client for either engine, enough for tests: run statements, read text.
pub enum Db {
    /// PostgreSQL.
    Pg(tokio_postgres::Client),
    /// MariaDB.
    My(mysql_async::Conn),
}

impl Db {
    /// Connects with a `postgresql://` or `mysql://` URI, retrying briefly.
    pub async fn connect(uri: &str) -> Result<Self> {
        if uri.starts_with("mysql://") {
            let mut last = None;
            for _ in 0..50 {
                match my_connect_once(uri).await {
                    Ok(c) => return Ok(Db::My(c)),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")));
        }
        Ok(Db::Pg(connect_uri(uri).await?))
    }

    /// One attempt, for logins that must fail fast when refused.
    pub async fn connect_once(uri: &str) -> Result<Self> {
        if uri.starts_with("mysql://") {
            Ok(Db::My(my_connect_once(uri).await?))
        } else {
            Ok(Db::Pg(pg_connect_once(uri).await?))
        }
    }

    /// Runs statements.
    pub async fn exec(&mut self, sql: &str) -> Result<()> {
        use mysql_async::prelude::Queryable;
        match self {
            Db::Pg(c) => c.batch_execute(sql).await?,
            Db::My(c) => c.query_drop(sql).await?,
        }
        Ok(())
    }

    /// The first column of every row, as text.
    pub async fn strings(&mut self, sql: &str) -> Result<Vec<String>> {
        use mysql_async::prelude::Queryable;
        match self {
            Db::Pg(c) => Ok(c
                .simple_query(sql)
                .await?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect()),
            Db::My(c) => Ok(c.query::<String, _>(sql).await?),
        }
    }
}

/// The host PID of the engine's server: the child of the container's PID 1 (the
/// agent) whose command line contains `process`. Only the agent's child counts: a
/// PostgreSQL backend shows the postmaster's command line for a moment after its
/// fork, and taking it for the server would make a restart appear where none was.
pub fn server_pid(container: &str, process: &str) -> Result<String> {
    let init = docker(&["inspect", "-f", "{{.State.Pid}}", container])?;
    let top = docker(&["top", container, "-eo", "pid,ppid,args"])?;
    top.lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (pid, ppid) = (fields.next()?, fields.next()?);
            // The agent's watchdog (`berth agent watchdog … postgres`) is its child too.
            (ppid == init && l.contains(process) && !l.contains("watchdog")).then(|| pid.to_owned())
        })
        .ok_or_else(|| anyhow::anyhow!("no {process} started by the agent (PID {init}) in:\n{top}"))
}

impl Berth {
    /// Waits until the control plane has run `n` whole reconcile passes that began
    /// after this call, so a test can assert that reconcile left something alone
    /// without guessing how long a pass takes. Each pass is witnessed by a network
    /// labelled for this site that no instance owns, which reconcile removes; a
    /// witness made after the previous one is gone can only be seen by a later pass,
    /// so every pass but the last witnessed one has run to its end.
    pub async fn reconcile_passes(&self, n: usize) -> Result<()> {
        for _ in 0..=n {
            let owner = format!(
                "00000000-0000-4000-8000-{:012x}",
                rand::random::<u64>() & 0xffff_ffff_ffff
            );
            let net = unique("berth-e2e-witness");
            docker(&[
                "network",
                "create",
                "--label",
                &format!("io.berth.site={}", self.site),
                "--label",
                &format!("io.berth.instance={owner}"),
                &net,
            ])?;
            self.eventually(
                "a reconcile pass to remove a witness network",
                Duration::from_secs(30),
                || async { docker_labelled("network", &self.site, Some(&owner)).is_empty() },
            )
            .await?;
        }
        Ok(())
    }
}

/// How many times a member's agent has restarted its engine, counted from the
/// agent's own log: every unexpected exit it handles is logged once, before the
/// restart.
pub fn engine_restarts(container: &str) -> Result<usize> {
    let out = Command::new("docker").args(["logs", container]).output()?;
    if !out.status.success() {
        bail!(
            "docker logs {container} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text.matches("engine exited unexpectedly").count())
}

pub mod docker_proxy;

/// A PostgreSQL table `big` of 3 million rows of random-looking text (it compresses
/// poorly), so that a dump of the instance takes a while.
pub async fn big_table(db: &mut Db) -> Result<()> {
    db.exec(
        "CREATE TABLE big AS SELECT g AS n, md5(g::text) || md5((g * 7)::text) AS t \
         FROM generate_series(1, 3000000) g",
    )
    .await
}

impl Berth {
    /// Starts a backup of `instance` with the CLI, not waiting: its backup id and
    /// the id of the task taking it.
    pub fn start_backup(&self, instance: &str) -> Result<(String, String)> {
        let started = self.cli_json(&["backup", "create", instance, "--no-wait"])?;
        let backup = started["backup"].as_str().context("backup id")?.to_owned();
        let task = started["task"]["id"]
            .as_str()
            .with_context(|| format!("a task id in {started}"))?
            .to_owned();
        Ok((backup, task))
    }

    /// The first member of `instance` shown with `role`, as `show -o json` has it.
    pub fn member_with_role(&self, instance: &str, role: &str) -> Result<Value> {
        let shown = self.cli_json(&["show", instance])?;
        shown["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["role"] == role).cloned())
            .with_context(|| format!("no {role} in {shown}"))
    }

    /// Waits (up to 60 s) until backup `id` is being taken: its record exists and is
    /// `running`. Fails if it ended first.
    pub async fn until_backup_runs(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Not found until the task's step begins.
            let (_, v) = self
                .request(reqwest::Method::GET, &format!("/v1/backups/{id}"), None)
                .await?;
            match v["state"].as_str() {
                Some("running") => return Ok(()),
                Some("succeeded" | "failed") => bail!("the backup ended first: {v}"),
                _ if Instant::now() > deadline => bail!("the backup never started: {v}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// A table for a writer (`app.w` on MariaDB, `w` on PostgreSQL), made through `uri`.
pub async fn make_table(uri: &str, engine: &str) -> Result<&'static str> {
    let mut db = Db::connect(uri).await?;
    if engine == "mariadb" {
        db.exec("CREATE DATABASE IF NOT EXISTS app").await?;
        db.exec("CREATE TABLE app.w (n INT PRIMARY KEY)").await?;
        Ok("app.w")
    } else {
        db.exec("CREATE TABLE w (n INT PRIMARY KEY)").await?;
        Ok("w")
    }
}

/// `berth create NAME` of a small instance of `engine` (256MiB, half a core,
/// 1GiB) with the `extra` flags.
pub fn small_create<'a>(name: &'a str, engine: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "create",
        name,
        "--engine",
        engine,
        "--memory",
        "256MiB",
        "--cpus",
        "0.5",
        "--storage",
        "1GiB",
    ];
    args.extend_from_slice(extra);
    args
}

/// Every acknowledged number is in the table, read through `uri`.
pub async fn all_there(uri: &str, table: &str, acked: &[u32]) -> Result<()> {
    let mut db = Db::connect(uri).await?;
    let rows: std::collections::HashSet<String> = db
        .strings(&format!("SELECT n FROM {table}"))
        .await?
        .into_iter()
        .collect();
    let lost: Vec<&u32> = acked
        .iter()
        .filter(|n| !rows.contains(&n.to_string()))
        .collect();
    anyhow::ensure!(
        lost.is_empty(),
        "{} acknowledged commits are missing: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    Ok(())
}

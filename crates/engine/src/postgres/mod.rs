//! PostgreSQL, from Debian's `postgresql-<major>` packages.

pub(crate) mod admin;
mod check;
mod conf;
mod datadir;
mod metrics;
mod replication;
mod role;

use conf::conf_line;
use datadir::judge_data_dir;

use crate::{
    write_file, Admin, AdminTarget, CommandSpec, DataDirState, Engine, EngineError, ImageRecipe,
    Layout, Result, Settings,
};
use berth_model::{EngineKind, EngineVersion, Secret};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The PostgreSQL engine.
pub struct Postgres;

const BOOTSTRAP_VAR: &str = "BERTH_SUPERUSER_VERIFIER";

fn bin(version: &EngineVersion, program: &str) -> String {
    format!("/usr/lib/postgresql/{version}/bin/{program}")
}

/// Memory-derived settings, following the usual rules of thumb: a quarter of memory
/// for shared buffers, three quarters as the planner's cache estimate.
pub(crate) fn memory_settings(memory_mib: u64) -> Vec<(&'static str, String)> {
    let shared = (memory_mib / 4).max(16);
    vec![
        ("shared_buffers", format!("{shared}MB")),
        (
            "effective_cache_size",
            format!("{}MB", (memory_mib * 3 / 4).max(32)),
        ),
        (
            "maintenance_work_mem",
            format!("{}MB", (memory_mib / 16).clamp(16, 2048)),
        ),
        (
            "work_mem",
            format!(
                "{}kB",
                (memory_mib * 1024 / 4 / 100).clamp(1024, 1024 * 1024)
            ),
        ),
    ]
}

fn postgresql_conf(layout: &Layout, settings: &Settings) -> String {
    let resources = settings.resources;
    let mut lines = vec![
        "# Written by the Berth agent at every start; edits here are overwritten.".to_owned(),
        "listen_addresses = '*'".to_owned(),
        "port = 5432".to_owned(),
        format!("unix_socket_directories = '{}'", layout.run_dir.display()),
        "max_connections = 100".to_owned(),
        "password_encryption = 'scram-sha-256'".to_owned(),
        "dynamic_shared_memory_type = posix".to_owned(),
        "logging_collector = off".to_owned(),
        "log_destination = 'stderr'".to_owned(),
        "log_line_prefix = '%m [%p] '".to_owned(),
        "log_timezone = 'UTC'".to_owned(),
        "timezone = 'UTC'".to_owned(),
        "datestyle = 'iso, mdy'".to_owned(),
        "lc_messages = 'C.UTF-8'".to_owned(),
        "default_text_search_config = 'pg_catalog.english'".to_owned(),
    ];
    let workers = (resources.cpu_millis / 1000).max(1);
    lines.push(format!("max_worker_processes = {}", workers.max(8)));
    lines.push(format!("max_parallel_workers = {workers}"));
    for (k, v) in memory_settings(resources.memory_mib) {
        if !settings.params.contains_key(k) {
            lines.push(format!("{k} = '{v}'"));
        }
    }
    lines.extend(replication::conf_lines(settings.replication.as_ref()));
    let (usable, refused) = crate::usable_params(&Postgres, &settings.params);
    if !usable.is_empty() {
        lines.push("# From the instance's parameter group.".to_owned());
    }
    for (k, v) in &usable {
        lines.push(conf_line(k, v));
    }
    if !refused.is_empty() {
        lines.push(format!(
            "# {} parameter(s) left out: not settings a group may set.",
            refused.len()
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// TLS settings: on with the agent's files, off (and the network refused by
/// [`pg_hba`]) without them.
fn ssl_lines(layout: &Layout, tls: bool) -> String {
    if !tls {
        return "ssl = off\n".to_owned();
    }
    format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\nssl_min_protocol_version = 'TLSv1.2'\n",
        layout.tls_file(crate::TLS_CERT),
        layout.tls_file(crate::TLS_KEY),
        layout.tls_file(crate::TLS_CA),
    )
}

/// Local socket: the agent only (the socket directory is private to the container).
/// Network: TLS and a password (SCRAM) for everyone; plaintext is refused, and so is
/// everything while the member has no certificate.
fn pg_hba(tls: bool) -> &'static str {
    if tls {
        "\
# Written by the Berth agent. Local socket: the agent only. Network: TLS + SCRAM.
local     all all trust
hostssl   replication berth_replicator all scram-sha-256
hostssl   all all 0.0.0.0/0 scram-sha-256
hostssl   all all ::/0      scram-sha-256
hostnossl all all all       reject
"
    } else {
        "\
# Written by the Berth agent. No certificate installed: the network is refused.
local all all trust
host  all all all reject
"
    }
}

#[async_trait::async_trait]
impl Engine for Postgres {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgres
    }

    fn image_recipe(&self, version: &EngineVersion) -> ImageRecipe {
        let packages = match version.as_str() {
            "15" => vec!["postgresql-15"],
            _ => vec![],
        };
        ImageRecipe {
            suite: "bookworm",
            packages,
            // Debian's packaging creates a `main` cluster; Berth's agent makes its own.
            customize: vec![
                r#"rm -rf "$1"/var/lib/postgresql/*/main "$1"/etc/postgresql/*/main"#,
                r#"mkdir -p "$1"/var/lib/berth "$1"/run/berth "$1"/opt/berth"#,
            ],
        }
    }

    fn client_port(&self) -> u16 {
        5432
    }

    fn superuser(&self) -> &'static str {
        "postgres"
    }

    fn os_user(&self) -> &'static str {
        "postgres"
    }

    fn bootstrap_env(&self, password: &Secret) -> Vec<(String, String)> {
        // A SCRAM verifier, not the password: what `docker inspect` shows cannot be
        // used to log in, and PostgreSQL stores a verifier given to it as it is.
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        vec![(BOOTSTRAP_VAR.to_owned(), verifier)]
    }

    fn bootstrap_secret_var(&self) -> &'static str {
        BOOTSTRAP_VAR
    }

    fn uri(&self, host: &str, port: u16, user: &str, password: &Secret, ca_file: &str) -> Secret {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Secret::new(format!(
            "postgresql://{user}:{}@{host}:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            percent_encode(password.expose()),
            percent_encode(ca_file)
        ))
    }

    fn client_command(
        &self,
        host: &str,
        port: u16,
        user: &str,
        password: &Secret,
        ca_file: &str,
    ) -> CommandSpec {
        CommandSpec {
            program: "psql".into(),
            args: vec![
                "-h".into(),
                host.into(),
                "-p".into(),
                port.to_string(),
                "-U".into(),
                user.into(),
                "postgres".into(),
            ],
            env: vec![
                ("PGPASSWORD".into(), password.expose().to_owned()),
                ("PGSSLMODE".into(), "verify-full".into()),
                ("PGSSLROOTCERT".into(), ca_file.to_owned()),
            ],
            stdin: None,
        }
    }

    async fn reload_tls(&self, layout: &Layout) -> Result<()> {
        // PostgreSQL rereads its certificate files (and postgresql.conf, which the
        // agent rendered just before) on a configuration reload.
        local_client(layout)
            .await?
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| EngineError::Refused {
                engine: EngineKind::Postgres,
                reason: e.to_string(),
            })
    }

    fn data_dir(&self, layout: &Layout) -> PathBuf {
        layout.volume.join("data")
    }

    fn inspect_data_dir(&self, version: &EngineVersion, layout: &Layout) -> DataDirState {
        let data = self.data_dir(layout);
        crate::inspect_dir(&data, |names| {
            judge_data_dir(&data, names, version.as_str())
        })
    }

    fn initialize_commands(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        secret_file: &Path,
        _secret: &str,
    ) -> Vec<CommandSpec> {
        let data = self.data_dir(layout);
        vec![
            CommandSpec {
                program: bin(version, "initdb"),
                args: vec![
                    format!("--pgdata={}", data.display()),
                    "--username=postgres".into(),
                    format!("--pwfile={}", secret_file.display()),
                    "--auth-local=trust".into(),
                    "--auth-host=scram-sha-256".into(),
                    "--encoding=UTF8".into(),
                    "--locale=C.UTF-8".into(),
                    // Durability comes from one syncfs of the volume below, which is
                    // much cheaper than initdb fsyncing each of its ~1000 files.
                    "--no-sync".into(),
                ],
                env: vec![],
                stdin: None,
            },
            crate::sync_command(&data),
        ]
    }

    fn render_config(&self, layout: &Layout, settings: &Settings) -> Result<()> {
        let data = self.data_dir(layout);
        let tls = layout.tls_installed();
        write_file(
            &data.join("postgresql.conf"),
            &(postgresql_conf(layout, settings) + &ssl_lines(layout, tls)),
        )?;
        write_file(&data.join("pg_hba.conf"), pg_hba(tls))?;
        replication::write_role_files(&data, settings.replication.as_ref())
    }

    fn memory_settings(&self, memory_mib: u64) -> Vec<(String, String)> {
        memory_settings(memory_mib)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    async fn apply_live(
        &self,
        layout: &Layout,
        settings: &Settings,
        _reset: &[String],
    ) -> Result<Vec<String>> {
        let refused = |e: tokio_postgres::Error| EngineError::Refused {
            engine: EngineKind::Postgres,
            reason: e.to_string(),
        };
        let (usable, bad) = crate::usable_params(self, &settings.params);
        if !bad.is_empty() {
            return Err(crate::refuse_params(EngineKind::Postgres, &bad));
        }
        // Names are checked against the running engine's own catalog before any of
        // them goes into postgresql.conf.
        let names: Vec<String> = usable.into_iter().map(|(k, _)| k).collect();
        let unknown: Vec<String> = local_client(layout)
            .await?
            .query(
                "SELECT n FROM unnest($1::text[]) AS n WHERE lower(n) NOT IN (SELECT lower(name) FROM pg_settings) ORDER BY 1",
                &[&names],
            )
            .await
            .map_err(refused)?
            .iter()
            .map(|r| format!("{:?}", r.get::<_, String>(0)))
            .collect();
        if !unknown.is_empty() {
            return Err(EngineError::Refused {
                engine: EngineKind::Postgres,
                reason: format!(
                    "PostgreSQL has no settings {}; nothing was applied",
                    unknown.join(", ")
                ),
            });
        }
        // A setting gone from postgresql.conf returns to its default on reload.
        self.render_config(layout, settings)?;
        let client = local_client(layout).await?;
        let load_time = |c: tokio_postgres::Client| async move {
            c.query_one("SELECT pg_conf_load_time()::text", &[])
                .await
                .map(|r| r.get::<_, String>(0))
        };
        let before = load_time(client).await.map_err(refused)?;
        local_client(layout)
            .await?
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(refused)?;
        // The postmaster rereads its files asynchronously; sessions forked after it did
        // report a newer load time.
        let started = std::time::Instant::now();
        loop {
            let now = load_time(local_client(layout).await?)
                .await
                .map_err(refused)?;
            if now != before || started.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rows = local_client(layout)
            .await?
            .query(
                "SELECT name FROM pg_settings WHERE pending_restart ORDER BY 1",
                &[],
            )
            .await
            .map_err(refused)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn server_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec {
        CommandSpec {
            program: bin(version, "postgres"),
            args: vec!["-D".into(), self.data_dir(layout).display().to_string()],
            env: vec![],
            stdin: None,
        }
    }

    fn stop_signal(&self) -> i32 {
        // SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected and a
        // checkpoint is written, so the next start needs no recovery.
        2
    }

    async fn read_catalog(&self, layout: &Layout) -> Result<Vec<berth_model::params::ParamSpec>> {
        use berth_model::params::{ParamKind, ParamSpec};
        let rows = local_client(layout)
            .await?
            .query(
                "SELECT name, vartype, unit, min_val, max_val, enumvals, boot_val, context, short_desc
                 FROM pg_settings ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| EngineError::Refused {
                engine: EngineKind::Postgres,
                reason: e.to_string(),
            })?;
        Ok(rows
            .iter()
            .map(|r| {
                let vartype: String = r.get(1);
                let context: String = r.get(7);
                let num = |i: usize| {
                    r.get::<_, Option<String>>(i)
                        .and_then(|v| v.parse::<f64>().ok())
                };
                ParamSpec {
                    name: r.get(0),
                    kind: match vartype.as_str() {
                        "bool" => ParamKind::Bool,
                        "integer" => ParamKind::Integer,
                        "real" => ParamKind::Real,
                        "enum" => ParamKind::Enum,
                        _ => ParamKind::String,
                    },
                    unit: r.get(2),
                    min: num(3),
                    max: num(4),
                    allowed: r.get::<_, Option<Vec<String>>>(5).unwrap_or_default(),
                    default: r.get(6),
                    restart: context == "postmaster",
                    settable: context != "internal",
                    description: r.get::<_, Option<String>>(8).unwrap_or_default(),
                }
            })
            .collect())
    }

    fn managed_settings(&self) -> &'static [&'static str] {
        &[
            "listen_addresses",
            "port",
            "unix_socket_directories",
            "unix_socket_group",
            "unix_socket_permissions",
            "data_directory",
            "config_file",
            "hba_file",
            "ident_file",
            "external_pid_file",
            "logging_collector",
            "log_destination",
            "log_directory",
            "password_encryption",
            "ssl",
            "ssl_cert_file",
            "ssl_key_file",
            "ssl_ca_file",
            "ssl_min_protocol_version",
            "ssl_passphrase_command",
            "archive_mode",
            // Replication is Berth's: members, slots and synchronous replicas.
            "wal_level",
            "max_wal_senders",
            "max_replication_slots",
            "hot_standby",
            "hot_standby_feedback",
            "wal_log_hints",
            "primary_conninfo",
            "primary_slot_name",
            "synchronous_standby_names",
        ]
    }

    fn code_settings(&self) -> &'static [&'static str] {
        &[
            // Shell commands the server runs.
            "archive_command",
            "archive_cleanup_command",
            "restore_command",
            "recovery_end_command",
            "ssl_passphrase_command",
            "ssl_passphrase_command_supports_reload",
            // Libraries the server loads.
            "archive_library",
            "shared_preload_libraries",
            "local_preload_libraries",
            "session_preload_libraries",
            "dynamic_library_path",
            "extension_destdir",
            "jit_provider",
        ]
    }

    fn check_fits(
        &self,
        params: &std::collections::BTreeMap<String, String>,
        memory_mib: u64,
    ) -> std::result::Result<(), String> {
        crate::fits_in_memory(params, "shared_buffers", "8kB", 0.6, memory_mib)?;
        if params.get("huge_pages").is_some_and(|v| v == "on") {
            return Err("huge_pages = on would stop PostgreSQL from starting: containers have no huge pages reserved; use try or off".into());
        }
        Ok(())
    }

    fn logical_dump_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec {
        // Every database plus roles (`pg_dumpall` skips CREATE ROLE for the user it runs
        // as, so it loads into a fresh instance's superuser). Local socket, trusted.
        CommandSpec {
            program: bin(version, "pg_dumpall"),
            args: vec![
                format!("--host={}", layout.run_dir.display()),
                "--username=postgres".into(),
                "--no-password".into(),
                "--quote-all-identifiers".into(),
            ],
            env: vec![],
            stdin: None,
        }
    }

    fn logical_load_command(&self, version: &EngineVersion, layout: &Layout) -> CommandSpec {
        CommandSpec {
            program: bin(version, "psql"),
            args: vec![
                format!("--host={}", layout.run_dir.display()),
                "--username=postgres".into(),
                "--dbname=postgres".into(),
                "--no-password".into(),
                "--no-psqlrc".into(),
                "--quiet".into(),
                "--set=ON_ERROR_STOP=1".into(),
            ],
            env: vec![],
            stdin: None,
        }
    }

    fn logical_load_skips(&self) -> Option<crate::LoadSkips> {
        // pg_dumpall creates every role: the superuser, the replication and the
        // monitoring accounts too (the new instance has the first two with passwords
        // of its own, and the agent makes the third before loading); roles come
        // before the first database (`\connect`).
        Some(crate::LoadSkips {
            lines: &[
                "CREATE ROLE \"postgres\";",
                "CREATE ROLE postgres;",
                "CREATE ROLE berth_replicator;",
                "CREATE ROLE berth_monitor;",
                "CREATE ROLE \"berth_monitor\";",
            ],
            header_ends: "\\connect",
        })
    }

    fn after_logical_load(&self, secret: &str) -> String {
        // A SCRAM verifier holds base64 and `$:` only: no quote can end the literal.
        format!(
            "\\connect postgres\nALTER ROLE postgres PASSWORD '{}';\n",
            secret.replace('\'', "''")
        )
    }

    async fn admin(&self, target: &AdminTarget) -> Result<Box<dyn Admin>> {
        Ok(Box::new(admin::PgAdmin::connect(target).await?))
    }

    fn clone_plan(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> crate::ClonePlan {
        crate::ClonePlan::Pull(replication::clone_commands(
            version,
            &self.data_dir(layout),
            repl,
        ))
    }

    fn clone_source_command(&self, _: &EngineVersion, _: &Layout) -> Option<CommandSpec> {
        None
    }

    async fn apply_replication(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<()> {
        replication::apply(layout, repl).await
    }

    async fn fence(&self, _: &Layout) -> Result<Option<crate::Fence>> {
        Ok(None)
    }

    async fn caught_up(&self, layout: &Layout, _: Option<&str>) -> Result<bool> {
        replication::caught_up(layout).await
    }

    async fn promote(&self, layout: &Layout) -> Result<()> {
        replication::promote(layout).await
    }

    fn rejoin_commands(
        &self,
        version: &EngineVersion,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Vec<CommandSpec> {
        replication::rejoin_commands(version, &self.data_dir(layout), repl)
    }

    async fn diverged(
        &self,
        layout: &Layout,
        _: &berth_model::agent::Replication,
    ) -> Result<Option<String>> {
        replication::diverged(layout).await
    }

    async fn sync_status(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<Option<String>> {
        replication::sync_status(layout, repl).await
    }

    async fn probe_role(&self, layout: &Layout) -> Result<berth_model::agent::RoleReport> {
        crate::bounded_probe(EngineKind::Postgres, role::probe(layout)).await
    }

    async fn check_consistency(
        &self,
        layout: &Layout,
    ) -> Result<berth_model::verify::ConsistencyReport> {
        check::check(layout).await
    }

    async fn collect_metrics(
        &self,
        layout: &Layout,
    ) -> Result<berth_model::metrics::EngineMetrics> {
        metrics::collect(layout).await
    }

    async fn check_ready(&self, layout: &Layout) -> Result<()> {
        let client = local_client(layout).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| EngineError::NotReady {
                engine: EngineKind::Postgres,
                reason: e.to_string(),
            })
    }
}

/// Percent-encodes what a URI component must not hold raw.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A session over the local socket as the superuser (trusted: the socket directory
/// is private to the container).
async fn local_client(layout: &Layout) -> Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&layout.run_dir)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    connect(&config).await
}

/// Opens a session; its connection task ends by itself when the client is dropped.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| EngineError::NotReady {
                engine: EngineKind::Postgres,
                reason: e.to_string(),
            })?;
    tokio::spawn(connection);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resources;

    #[test]
    fn memory_settings_follow_memory() {
        let s = memory_settings(1024);
        assert_eq!(s[0], ("shared_buffers", "256MB".to_owned()));
        assert_eq!(s[1], ("effective_cache_size", "768MB".to_owned()));
        let small = memory_settings(128);
        assert_eq!(small[0].1, "32MB");
    }

    #[test]
    fn config_names_the_socket_dir_and_listens_everywhere() {
        let conf = postgresql_conf(
            &Layout::standard(),
            &Settings {
                resources: Resources {
                    memory_mib: 2048,
                    cpu_millis: 2000,
                },
                params: [("work_mem".to_owned(), "64MB".to_owned())].into(),
                replication: None,
            },
        );
        assert!(conf.contains("unix_socket_directories = '/run/berth'"));
        assert!(conf.contains("listen_addresses = '*'"));
        assert!(conf.contains("shared_buffers = '512MB'"));
        // A parameter pins a memory-derived setting: it appears once, with its value.
        assert_eq!(
            conf.lines().filter(|l| l.starts_with("work_mem =")).count(),
            1
        );
        assert!(conf.contains("work_mem = '64MB'"));
    }

    #[test]
    fn bootstrap_env_holds_a_verifier_not_the_password() {
        let env = Postgres.bootstrap_env(&Secret::new("s3cret-pw"));
        assert_eq!(env[0].0, BOOTSTRAP_VAR);
        assert!(env[0].1.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!env[0].1.contains("s3cret-pw"));
    }

    #[test]
    fn client_command_keeps_the_password_out_of_argv() {
        let c = Postgres.client_command(
            "127.0.0.1",
            5433,
            "postgres",
            &Secret::new("pw1"),
            "/ca.crt",
        );
        assert!(c.args.iter().all(|a| !a.contains("pw1")));
        assert_eq!(c.env[0], ("PGPASSWORD".to_owned(), "pw1".to_owned()));
        assert!(c
            .env
            .contains(&("PGSSLMODE".to_owned(), "verify-full".to_owned())));
    }

    #[test]
    fn the_uri_verifies_the_server_and_encodes_what_it_must() {
        let u = Postgres.uri(
            "::1",
            5433,
            "postgres",
            &Secret::new("p@ss word"),
            "/c a.crt",
        );
        assert_eq!(
            u.expose(),
            "postgresql://postgres:p%40ss%20word@[::1]:5433/postgres?sslmode=verify-full&sslrootcert=/c%20a.crt"
        );
    }

    #[test]
    fn the_network_needs_tls_and_without_a_certificate_is_refused() {
        assert!(pg_hba(true).contains("hostnossl all all all       reject"));
        assert!(!pg_hba(true).lines().any(|l| l.starts_with("host ")));
        assert!(pg_hba(false).contains("host  all all all reject"));
        let on = ssl_lines(&Layout::standard(), true);
        assert!(on.contains("ssl = on") && on.contains("/run/berth/tls/server.key"));
        assert_eq!(ssl_lines(&Layout::standard(), false), "ssl = off\n");
    }
}

//! MariaDB, from Debian's `mariadb-server` and `mariadb-backup` packages.

pub(crate) mod admin;
mod check;
mod datadir;
mod literal;
mod metrics;
mod replication;
mod role;

use datadir::{judge_data_dir, MARKER};
use literal::{option_value, sql_literal};

use crate::{
    write_file, Admin, AdminTarget, CommandSpec, DataDirState, Engine, EngineError, ImageRecipe,
    Layout, Result, Settings,
};
use berth_model::{EngineKind, EngineVersion, Secret};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};

/// The MariaDB engine.
pub struct Mariadb;

const BOOTSTRAP_VAR: &str = "BERTH_ROOT_PASSWORD_HASH";

/// `mysql_native_password`'s stored form: `*` + SHA1(SHA1(password)) in upper hex.
/// Knowing it does not let anyone log in (the protocol needs SHA1(password)).
pub(crate) fn native_password_hash(password: &str) -> String {
    let inner = Sha1::digest(password.as_bytes());
    format!("*{}", hex::encode_upper(Sha1::digest(inner)))
}

/// Memory-derived settings: half the memory for the InnoDB buffer pool, the rest for
/// connections, sorts and the operating system.
pub(crate) fn memory_settings(memory_mib: u64) -> Vec<(&'static str, String)> {
    // In bytes: the form both the option file and `SET GLOBAL` accept.
    vec![(
        "innodb_buffer_pool_size",
        ((memory_mib / 2).max(64) * 1024 * 1024).to_string(),
    )]
}

fn config_path(layout: &Layout) -> PathBuf {
    layout.volume.join("berth.cnf")
}

fn socket(layout: &Layout) -> PathBuf {
    layout.run_dir.join("mysqld.sock")
}

/// Memory-derived settings the parameters do not pin, then the parameters that may
/// reach the engine (see [`crate::usable_params`]); and the names of those that may not.
/// How long binary logs are kept: every member writes them, and MariaDB's own
/// default keeps them for ever, filling the volume. No replica holds them back (there
/// are no slots): one away for longer is refused its position by the primary and
/// cloned afresh. A group may set another.
const BINLOG_EXPIRE_SECONDS: &str = "604800";

fn desired(settings: &Settings) -> (Vec<(String, String)>, Vec<String>) {
    let derived = memory_settings(settings.resources.memory_mib)
        .into_iter()
        .chain([(
            "binlog_expire_logs_seconds",
            BINLOG_EXPIRE_SECONDS.to_owned(),
        )]);
    let mut out: Vec<(String, String)> = derived
        .filter(|(k, _)| !settings.params.contains_key(*k))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let (usable, refused) = crate::usable_params(&Mariadb, &settings.params);
    out.extend(usable);
    (out, refused)
}

/// Whether the engine's current value already is the wanted one.
fn same_value(current: &str, wanted: &str) -> bool {
    let norm = |s: &str| match s.to_ascii_uppercase().as_str() {
        "1" | "ON" | "TRUE" => "ON".to_owned(),
        "0" | "OFF" | "FALSE" => "OFF".to_owned(),
        other => other.to_owned(),
    };
    norm(current) == norm(wanted)
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

async fn local_conn(layout: &Layout) -> Result<mysql_async::Conn> {
    // The agent runs as the OS user root, which `unix_socket` maps to root@localhost.
    let opts = mysql_async::OptsBuilder::default()
        .socket(Some(socket(layout).display().to_string()))
        .user(Some("root"))
        .prefer_socket(true);
    mysql_async::Conn::new(opts)
        .await
        .map_err(|e| EngineError::NotReady {
            engine: EngineKind::Mariadb,
            reason: e.to_string(),
        })
}

fn berth_cnf(layout: &Layout, data: &Path, settings: &Settings) -> String {
    let mut lines = vec![
        "# Written by the Berth agent at every start; edits here are overwritten.".to_owned(),
        "[mariadbd]".to_owned(),
        format!("datadir = {}", data.display()),
        format!("socket = {}", socket(layout).display()),
        format!("pid-file = {}", layout.run_dir.join("mysqld.pid").display()),
        "port = 3306".to_owned(),
        "bind-address = 0.0.0.0".to_owned(),
        "skip-name-resolve".to_owned(),
        "character-set-server = utf8mb4".to_owned(),
        "collation-server = utf8mb4_unicode_ci".to_owned(),
        "max_connections = 151".to_owned(),
    ];
    let (wanted, refused) = desired(settings);
    for (k, v) in wanted {
        lines.push(format!("{k} = {}", option_value(&v)));
    }
    if !refused.is_empty() {
        lines.push(format!(
            "# {} parameter(s) left out: not settings a group may set.",
            refused.len()
        ));
    }
    lines.extend(replication::cnf_lines(settings.replication.as_ref()));
    lines.extend(tls_lines(layout, layout.tls_installed()));
    lines.push(String::new());
    lines.join("\n")
}

/// TLS with the agent's files, and no plaintext over the network
/// (`require_secure_transport`; the local socket counts as secure: the agent's).
/// Without a certificate the network is off altogether.
fn tls_lines(layout: &Layout, tls: bool) -> Vec<String> {
    if !tls {
        return vec!["skip-networking".to_owned()];
    }
    vec![
        format!("ssl_cert = {}", layout.tls_file(crate::TLS_CERT)),
        format!("ssl_key = {}", layout.tls_file(crate::TLS_KEY)),
        format!("ssl_ca = {}", layout.tls_file(crate::TLS_CA)),
        "tls_version = TLSv1.2,TLSv1.3".to_owned(),
        "require_secure_transport = ON".to_owned(),
    ]
}

#[async_trait::async_trait]
impl Engine for Mariadb {
    fn kind(&self) -> EngineKind {
        EngineKind::Mariadb
    }

    fn image_recipe(&self, _version: &EngineVersion) -> ImageRecipe {
        ImageRecipe {
            suite: "bookworm",
            packages: vec!["mariadb-server", "mariadb-backup", "mariadb-client"],
            // The package's postinst makes a data directory Berth does not use.
            customize: vec![
                r#"rm -rf "$1"/var/lib/mysql/*"#,
                r#"mkdir -p "$1"/var/lib/berth "$1"/run/berth "$1"/opt/berth"#,
            ],
        }
    }

    fn client_port(&self) -> u16 {
        3306
    }

    fn superuser(&self) -> &'static str {
        "root"
    }

    fn os_user(&self) -> &'static str {
        "mysql"
    }

    fn bootstrap_env(&self, password: &Secret) -> Vec<(String, String)> {
        vec![(
            BOOTSTRAP_VAR.to_owned(),
            native_password_hash(password.expose()),
        )]
    }

    fn bootstrap_secret_var(&self) -> &'static str {
        BOOTSTRAP_VAR
    }

    fn uri(&self, host: &str, port: u16, user: &str, password: &Secret, ca_file: &str) -> Secret {
        // The `mariadb` client takes no URI; this is the form MySQL Shell and the
        // MySQL connectors read (`ssl-mode=VERIFY_IDENTITY`: CA and host name checked).
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        Secret::new(format!(
            "mysql://{user}:{}@{host}:{port}/?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
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
            program: "mariadb".into(),
            args: vec![
                "--protocol=TCP".into(),
                "-h".into(),
                host.into(),
                "-P".into(),
                port.to_string(),
                "-u".into(),
                user.into(),
                format!("--ssl-ca={ca_file}"),
                "--ssl-verify-server-cert".into(),
            ],
            env: vec![("MYSQL_PWD".into(), password.expose().to_owned())],
            stdin: None,
        }
    }

    async fn reload_tls(&self, layout: &Layout) -> Result<()> {
        use mysql_async::prelude::Queryable;
        let mut conn = local_conn(layout).await?;
        let r = conn.query_drop("FLUSH SSL").await;
        let _ = conn.disconnect().await;
        r.map_err(|e| EngineError::Refused {
            engine: EngineKind::Mariadb,
            reason: e.to_string(),
        })
    }

    fn data_dir(&self, layout: &Layout) -> PathBuf {
        layout.volume.join("data")
    }

    fn inspect_data_dir(&self, _version: &EngineVersion, layout: &Layout) -> DataDirState {
        let data = self.data_dir(layout);
        crate::inspect_dir(&data, |names| judge_data_dir(&data, names))
    }

    fn initialize_commands(
        &self,
        _version: &EngineVersion,
        layout: &Layout,
        _secret_file: &Path,
        secret: &str,
    ) -> Vec<CommandSpec> {
        let data = self.data_dir(layout).display().to_string();
        // The hash is checked to be a native password hash: it goes into SQL.
        let hash: String = secret
            .chars()
            .filter(|c| *c == '*' || c.is_ascii_hexdigit())
            .collect();
        let sql = format!(
            "FLUSH PRIVILEGES;\n\
             CREATE USER 'root'@'%' IDENTIFIED BY PASSWORD '{hash}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n"
        );
        vec![
            CommandSpec {
                program: "mariadb-install-db".into(),
                args: vec![
                    "--no-defaults".into(),
                    format!("--datadir={data}"),
                    "--auth-root-authentication-method=socket".into(),
                    "--skip-test-db".into(),
                    "--skip-name-resolve".into(),
                ],
                env: vec![],
                stdin: None,
            },
            CommandSpec {
                program: "/usr/sbin/mariadbd".into(),
                args: vec![
                    "--no-defaults".into(),
                    format!("--datadir={data}"),
                    "--bootstrap".into(),
                    "--skip-networking".into(),
                ],
                env: vec![],
                stdin: Some(sql),
            },
            CommandSpec {
                program: "touch".into(),
                args: vec![format!("{data}/{MARKER}")],
                env: vec![],
                stdin: None,
            },
            crate::sync_command(Path::new(&data)),
        ]
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
        reset: &[String],
    ) -> Result<Vec<String>> {
        use mysql_async::prelude::Queryable;
        let (wanted, bad) = desired(settings);
        if !bad.is_empty() {
            return Err(crate::refuse_params(EngineKind::Mariadb, &bad));
        }
        self.render_config(layout, settings)?;
        let refused = |e: mysql_async::Error| EngineError::Refused {
            engine: EngineKind::Mariadb,
            reason: e.to_string(),
        };
        let mut conn = local_conn(layout).await?;
        // Backslashes in string literals are escapes whatever a group set sql_mode to.
        conn.query_drop("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
            .await
            .map_err(refused)?;
        let mut pending = vec![];
        for (name, value) in wanted.iter().cloned() {
            let row: Option<(String, Option<String>)> = conn
                .exec_first(
                    "SELECT READ_ONLY, GLOBAL_VALUE FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = UPPER(?)",
                    (name.as_str(),),
                )
                .await
                .map_err(refused)?;
            let Some((read_only, current)) = row else {
                continue;
            };
            if same_value(current.as_deref().unwrap_or(""), &value) {
                continue;
            }
            if read_only == "YES" {
                pending.push(name);
                continue;
            }
            // The name is a setting name (checked by `usable_params`) the engine's own
            // catalog has (the row above); the value a literal of its type.
            conn.query_drop(format!("SET GLOBAL {name} = {}", sql_literal(&value)))
                .await
                .map_err(refused)?;
        }
        let wanted: Vec<String> = wanted.into_iter().map(|(k, _)| k).collect();
        for name in reset.iter().filter(|n| !wanted.contains(n)) {
            if !crate::is_setting_name(name) || name.contains('.') {
                continue;
            }
            let read_only: Option<String> = conn
                .exec_first(
                    "SELECT READ_ONLY FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = UPPER(?)",
                    (name.as_str(),),
                )
                .await
                .map_err(refused)?;
            match read_only.as_deref() {
                Some("NO") => conn
                    .query_drop(format!("SET GLOBAL {name} = DEFAULT"))
                    .await
                    .map_err(refused)?,
                Some(_) => pending.push(name.clone()),
                None => {}
            }
        }
        let _ = conn.disconnect().await;
        pending.sort();
        Ok(pending)
    }

    fn render_config(&self, layout: &Layout, settings: &Settings) -> Result<()> {
        write_file(
            &config_path(layout),
            &berth_cnf(layout, &self.data_dir(layout), settings),
        )
    }

    fn server_command(&self, _version: &EngineVersion, layout: &Layout) -> CommandSpec {
        CommandSpec {
            program: "/usr/sbin/mariadbd".into(),
            args: vec![format!("--defaults-file={}", config_path(layout).display())],
            env: vec![],
            stdin: None,
        }
    }

    fn stop_signal(&self) -> i32 {
        // SIGTERM: MariaDB's normal shutdown (flushes InnoDB, closes connections).
        15
    }

    async fn read_catalog(&self, layout: &Layout) -> Result<Vec<berth_model::params::ParamSpec>> {
        use berth_model::params::{ParamKind, ParamSpec};
        use mysql_async::prelude::Queryable;
        let mut conn = local_conn(layout).await?;
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = conn
            .query(
                "SELECT LOWER(VARIABLE_NAME), VARIABLE_TYPE, NUMERIC_MIN_VALUE, NUMERIC_MAX_VALUE, ENUM_VALUE_LIST,
                        DEFAULT_VALUE, READ_ONLY, COMMAND_LINE_ARGUMENT, VARIABLE_COMMENT
                 FROM information_schema.SYSTEM_VARIABLES ORDER BY 1",
            )
            .await
            .map_err(|e| EngineError::Refused {
                engine: EngineKind::Mariadb,
                reason: e.to_string(),
            })?;
        let _ = conn.disconnect().await;
        Ok(rows
            .into_iter()
            .map(
                |(name, vtype, min, max, list, default, read_only, cmdline, comment)| {
                    let kind = match vtype.as_str() {
                        "BOOLEAN" => ParamKind::Bool,
                        t if t.contains("INT") => ParamKind::Integer,
                        "DOUBLE" => ParamKind::Real,
                        "ENUM" => ParamKind::Enum,
                        "SET" => ParamKind::Set,
                        _ => ParamKind::String,
                    };
                    ParamSpec {
                        name,
                        kind,
                        unit: None,
                        min: min.and_then(|v| v.parse().ok()),
                        max: max.and_then(|v| v.parse().ok()),
                        allowed: list
                            .map(|l| {
                                l.split(',')
                                    .map(str::to_owned)
                                    .filter(|s| !s.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        default,
                        restart: read_only == "YES",
                        // Without a command-line form it cannot go in an option file either.
                        settable: cmdline.is_some(),
                        description: comment.unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    fn managed_settings(&self) -> &'static [&'static str] {
        &[
            "datadir",
            "socket",
            "port",
            "bind_address",
            "pid_file",
            "log_error",
            "skip_networking",
            "basedir",
            "plugin_maturity",
            "tmpdir",
            "character_sets_dir",
            "general_log_file",
            "slow_query_log_file",
            "secure_file_priv",
            "log_bin_basename",
            "log_bin_index",
            "lc_messages_dir",
            "ssl_cert",
            "ssl_key",
            "ssl_ca",
            "ssl_capath",
            "tls_version",
            "require_secure_transport",
            // Replication is Berth's: members, GTIDs and semi-synchronous commits.
            "server_id",
            "log_bin",
            "relay_log",
            "binlog_format",
            "log_slave_updates",
            "gtid_strict_mode",
            "skip_slave_start",
            "read_only",
            "rpl_semi_sync_master_enabled",
            "rpl_semi_sync_slave_enabled",
            "rpl_semi_sync_master_wait_point",
            "rpl_semi_sync_master_wait_no_slave",
            "rpl_semi_sync_master_timeout",
        ]
    }

    fn code_settings(&self) -> &'static [&'static str] {
        &[
            // Plugins (shared libraries) loaded at start, and where they come from.
            "plugin_load",
            "plugin_load_add",
            "early_plugin_load",
            "plugin_dir",
            "allow_suspicious_udfs",
            // SQL read from a file at start, as the server itself.
            "init_file",
            // Galera: a provider library and the commands it runs.
            "wsrep_provider",
            "wsrep_notify_cmd",
            "wsrep_sst_method",
            // mysqld_safe's allocator library.
            "malloc_lib",
        ]
    }

    fn check_fits(
        &self,
        params: &std::collections::BTreeMap<String, String>,
        memory_mib: u64,
    ) -> std::result::Result<(), String> {
        crate::fits_in_memory(params, "innodb_buffer_pool_size", "B", 0.8, memory_mib)?;
        if params.get("large_pages").is_some_and(|v| v == "ON") {
            return Err(
                "large_pages = ON needs huge pages the container does not have; leave it OFF"
                    .into(),
            );
        }
        Ok(())
    }

    fn logical_dump_command(&self, _version: &EngineVersion, layout: &Layout) -> CommandSpec {
        // One transaction for InnoDB tables: consistent without locking writers out.
        CommandSpec {
            program: "mariadb-dump".into(),
            args: vec![
                format!("--socket={}", socket(layout).display()),
                "--user=root".into(),
                "--single-transaction".into(),
                "--all-databases".into(),
                "--routines".into(),
                "--events".into(),
            ],
            env: vec![],
            stdin: None,
        }
    }

    fn logical_load_command(&self, _version: &EngineVersion, layout: &Layout) -> CommandSpec {
        CommandSpec {
            program: "mariadb".into(),
            args: vec![
                format!("--socket={}", socket(layout).display()),
                "--user=root".into(),
                "--batch".into(),
            ],
            env: vec![],
            stdin: None,
        }
    }

    fn logical_load_skips(&self) -> Option<crate::LoadSkips> {
        None
    }

    fn after_logical_load(&self, secret: &str) -> String {
        // The dump replaced the privilege tables: read them, then give the network
        // root this instance's password hash again (`*` and hex: nothing to escape).
        format!(
            "FLUSH PRIVILEGES;\nALTER USER 'root'@'%' IDENTIFIED BY PASSWORD '{}';\n",
            secret.replace('\'', "''")
        )
    }

    async fn admin(&self, target: &AdminTarget) -> Result<Box<dyn Admin>> {
        Ok(Box::new(admin::MyAdmin::connect(target).await?))
    }

    fn clone_plan(
        &self,
        _version: &EngineVersion,
        layout: &Layout,
        _repl: &berth_model::agent::Replication,
    ) -> crate::ClonePlan {
        let (receive, finish) = replication::receive(&self.data_dir(layout));
        crate::ClonePlan::Stream { receive, finish }
    }

    fn clone_source_command(&self, _: &EngineVersion, layout: &Layout) -> Option<CommandSpec> {
        Some(replication::source_command(layout))
    }

    async fn apply_replication(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<()> {
        replication::apply(layout, &self.data_dir(layout), repl).await
    }

    async fn fence(&self, layout: &Layout) -> Result<Option<crate::Fence>> {
        replication::fence(layout).await.map(Some)
    }

    async fn caught_up(&self, layout: &Layout, position: Option<&str>) -> Result<bool> {
        replication::caught_up(layout, position).await
    }

    async fn promote(&self, layout: &Layout) -> Result<()> {
        replication::promote(layout).await
    }

    fn rejoin_commands(
        &self,
        _: &EngineVersion,
        _: &Layout,
        _: &berth_model::agent::Replication,
    ) -> Vec<CommandSpec> {
        // It follows from its own binary log's GTID position; `diverged` says when
        // the new primary lacks what it wrote.
        vec![]
    }

    async fn diverged(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<Option<String>> {
        replication::diverged(layout, repl).await
    }

    async fn sync_status(
        &self,
        layout: &Layout,
        repl: &berth_model::agent::Replication,
    ) -> Result<Option<String>> {
        replication::sync_status(layout, repl).await
    }

    async fn probe_role(&self, layout: &Layout) -> Result<berth_model::agent::RoleReport> {
        crate::bounded_probe(EngineKind::Mariadb, role::probe(layout)).await
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
        metrics::collect(layout, &self.data_dir(layout)).await
    }

    async fn check_ready(&self, layout: &Layout) -> Result<()> {
        use mysql_async::prelude::Queryable;
        let not_ready = |reason: String| EngineError::NotReady {
            engine: EngineKind::Mariadb,
            reason,
        };
        let mut conn = local_conn(layout).await?;
        let r: std::result::Result<Option<i64>, _> = conn.query_first("SELECT 1").await;
        let _ = conn.disconnect().await;
        r.map(|_| ()).map_err(|e| not_ready(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_hash_matches_mariadbs_password_function() {
        // SELECT PASSWORD('secret') in MariaDB.
        assert_eq!(
            native_password_hash("secret"),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
    }

    #[test]
    fn the_network_needs_tls_and_without_a_certificate_is_off() {
        let on = tls_lines(&Layout::standard(), true);
        assert!(on.contains(&"require_secure_transport = ON".to_owned()));
        assert!(on.contains(&"ssl_key = /run/berth/tls/server.key".to_owned()));
        assert_eq!(tls_lines(&Layout::standard(), false), ["skip-networking"]);
    }

    #[test]
    fn binary_logs_expire_unless_a_group_says_otherwise() {
        let mut settings = Settings {
            resources: crate::Resources {
                memory_mib: 512,
                cpu_millis: 1000,
            },
            params: Default::default(),
            replication: None,
        };
        let expire = |s: &Settings| {
            desired(s)
                .0
                .into_iter()
                .filter(|(k, _)| k == "binlog_expire_logs_seconds")
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(expire(&settings), ["604800"]);
        settings
            .params
            .insert("binlog_expire_logs_seconds".into(), "86400".into());
        assert_eq!(expire(&settings), ["86400"]);
    }

    #[test]
    fn buffer_pool_follows_memory() {
        assert_eq!(memory_settings(1024)[0].1, "536870912");
        assert_eq!(memory_settings(128)[0].1, "67108864");
        assert!(same_value("1", "ON") && same_value("off", "0") && !same_value("10", "11"));
    }

    #[test]
    fn the_password_stays_out_of_argv_and_env_shows_only_a_hash() {
        let c = Mariadb.client_command("127.0.0.1", 3306, "root", &Secret::new("pw1"), "/c.crt");
        assert!(c.args.iter().all(|a| !a.contains("pw1")));
        assert!(c.args.contains(&"--ssl-verify-server-cert".to_owned()));
        let env = Mariadb.bootstrap_env(&Secret::new("pw1"));
        assert!(!env[0].1.contains("pw1") && env[0].1.starts_with('*'));
    }
}

//! MariaDB, from Debian's `mariadb-server` and `mariadb-backup` packages.

pub(crate) mod admin;

use crate::{
    write_file, Admin, AdminTarget, CommandSpec, Engine, EngineError, ImageRecipe, Layout,
    Resources, Result,
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
    vec![(
        "innodb_buffer_pool_size",
        format!("{}M", (memory_mib / 2).max(64)),
    )]
}

fn config_path(layout: &Layout) -> PathBuf {
    layout.volume.join("berth.cnf")
}

fn socket(layout: &Layout) -> PathBuf {
    layout.run_dir.join("mysqld.sock")
}

fn berth_cnf(layout: &Layout, data: &Path, resources: Resources) -> String {
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
        // Errors to stderr, which Docker keeps: `docker logs` tells the story.
        "log_error = /dev/stderr".to_owned(),
    ];
    for (k, v) in memory_settings(resources.memory_mib) {
        lines.push(format!("{k} = {v}"));
    }
    lines.push(String::new());
    lines.join("\n")
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

    fn uri(&self, host: &str, port: u16, user: &str, password: &Secret) -> Secret {
        Secret::new(format!(
            "mysql://{user}:{}@{host}:{port}/",
            password.expose()
        ))
    }

    fn client_command(&self, host: &str, port: u16, user: &str, password: &Secret) -> CommandSpec {
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
            ],
            env: vec![("MYSQL_PWD".into(), password.expose().to_owned())],
            stdin: None,
        }
    }

    fn data_dir(&self, layout: &Layout) -> PathBuf {
        layout.volume.join("data")
    }

    fn is_initialized(&self, layout: &Layout) -> bool {
        // The last thing bootstrap writes; a crash before it starts bootstrap over.
        layout
            .volume
            .join("data")
            .join("berth-bootstrapped")
            .is_file()
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
                    "--log-error=/dev/stderr".into(),
                ],
                env: vec![],
                stdin: Some(sql),
            },
            CommandSpec {
                program: "touch".into(),
                args: vec![format!("{data}/berth-bootstrapped")],
                env: vec![],
                stdin: None,
            },
            CommandSpec {
                program: "sync".into(),
                args: vec!["-f".into(), data],
                env: vec![],
                stdin: None,
            },
        ]
    }

    fn render_config(&self, layout: &Layout, resources: Resources) -> Result<()> {
        write_file(
            &config_path(layout),
            &berth_cnf(layout, &self.data_dir(layout), resources),
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

    async fn admin(&self, target: &AdminTarget) -> Result<Box<dyn Admin>> {
        Ok(Box::new(admin::MyAdmin::connect(target).await?))
    }

    async fn check_ready(&self, layout: &Layout) -> Result<()> {
        use mysql_async::prelude::Queryable;
        let not_ready = |reason: String| EngineError::NotReady {
            engine: EngineKind::Mariadb,
            reason,
        };
        // The agent runs as the OS user root, which `unix_socket` maps to root@localhost.
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(socket(layout).display().to_string()))
            .user(Some("root"))
            .prefer_socket(true);
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| not_ready(e.to_string()))?;
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
    fn buffer_pool_follows_memory() {
        assert_eq!(memory_settings(1024)[0].1, "512M");
        assert_eq!(memory_settings(128)[0].1, "64M");
    }

    #[test]
    fn the_password_stays_out_of_argv_and_env_shows_only_a_hash() {
        let c = Mariadb.client_command("127.0.0.1", 3306, "root", &Secret::new("pw1"));
        assert!(c.args.iter().all(|a| !a.contains("pw1")));
        let env = Mariadb.bootstrap_env(&Secret::new("pw1"));
        assert!(!env[0].1.contains("pw1") && env[0].1.starts_with('*'));
    }
}

//! Databases and users in MariaDB.
//!
//! Levels map to database-wide privileges (`db.*`), which cover tables created later:
//! readonly = SELECT; readwrite = SELECT, INSERT, UPDATE, DELETE; owner = ALL.
//! Grants are read back from `mysql.db`, never from Berth's memory.

use crate::{Admin, AdminTarget, EngineError, Result, UserInfo};
use berth_model::account::{quote_literal, quote_my, DbName, Grant, GrantLevel, UserName};
use berth_model::{EngineKind, Secret};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

fn refused(e: mysql_async::Error) -> EngineError {
    let reason = match &e {
        mysql_async::Error::Server(s) => s.message.clone(),
        _ => e.to_string(),
    };
    EngineError::Refused {
        engine: EngineKind::Mariadb,
        reason,
    }
}

/// Databases that are the engine's own, never listed or touched.
const SYSTEM: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// An administrative session.
pub(crate) struct MyAdmin {
    conn: Conn,
    superuser: String,
}

impl MyAdmin {
    pub(crate) async fn connect(target: &AdminTarget) -> Result<Self> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(target.host.clone())
            .tcp_port(target.port)
            .user(Some(target.user.clone()))
            .pass(Some(target.password.expose().to_owned()))
            .prefer_socket(false)
            // TLS to the member's address, verifying the instance's internal name
            // against Berth's CA only.
            .ssl_opts(Some(
                mysql_async::SslOpts::default()
                    .with_root_certs(vec![target.ca_pem.clone().into_bytes().into()])
                    .with_disable_built_in_roots(true)
                    .with_danger_tls_hostname_override(Some(target.server_name.clone())),
            ));
        let conn = Conn::new(opts).await.map_err(|e| EngineError::NotReady {
            engine: EngineKind::Mariadb,
            reason: e.to_string(),
        })?;
        Ok(Self {
            conn,
            superuser: target.user.clone(),
        })
    }

    async fn database_exists(&mut self, name: &str) -> Result<bool> {
        let n: Option<i64> = self
            .conn
            .exec_first(
                "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .await
            .map_err(refused)?;
        Ok(n.unwrap_or(0) > 0)
    }

    async fn user_exists(&mut self, name: &str) -> Result<bool> {
        let n: Option<i64> = self
            .conn
            .exec_first(
                "SELECT count(*) FROM mysql.user WHERE User = ? AND Host = '%'",
                (name,),
            )
            .await
            .map_err(refused)?;
        Ok(n.unwrap_or(0) > 0)
    }
}

/// `mysql_native_password`'s stored form, so statements never carry the password.
fn native_hash(password: &Secret) -> String {
    super::native_password_hash(password.expose())
}

#[async_trait::async_trait]
impl Admin for MyAdmin {
    async fn list_databases(&mut self) -> Result<Vec<String>> {
        let all: Vec<String> = self
            .conn
            .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
            .await
            .map_err(refused)?;
        Ok(all
            .into_iter()
            .filter(|d| !SYSTEM.contains(&d.as_str()))
            .collect())
    }

    async fn create_database(&mut self, name: &DbName) -> Result<()> {
        if self.database_exists(name.as_str()).await? {
            return Err(EngineError::Exists(format!(
                "database {name} already exists"
            )));
        }
        self.conn
            .query_drop(format!("CREATE DATABASE {}", quote_my(name.as_str())))
            .await
            .map_err(refused)
    }

    async fn drop_database(&mut self, name: &DbName) -> Result<()> {
        if !self.database_exists(name.as_str()).await? {
            return Err(EngineError::Missing(format!(
                "no database {name}; `berth db list` shows them"
            )));
        }
        self.conn
            .query_drop(format!("DROP DATABASE {}", quote_my(name.as_str())))
            .await
            .map_err(refused)?;
        // Database-level grants outlive the database in MariaDB; remove them with it.
        self.conn
            .exec_drop("DELETE FROM mysql.db WHERE Db = ?", (name.as_str(),))
            .await
            .map_err(refused)?;
        self.conn
            .query_drop("FLUSH PRIVILEGES")
            .await
            .map_err(refused)
    }

    async fn list_users(&mut self) -> Result<Vec<UserInfo>> {
        let names: Vec<String> = self
            .conn
            .exec(
                "SELECT User FROM mysql.user WHERE Host = '%' AND User <> ? AND User <> '' ORDER BY 1",
                (self.superuser.clone(),),
            )
            .await
            .map_err(refused)?;
        let mut users = vec![];
        for name in names {
            let Ok(user) = name.parse::<UserName>() else {
                continue;
            };
            let rows: Vec<(String, String, String, String)> = self
                .conn
                .exec(
                    "SELECT Db, Select_priv, Insert_priv, Create_priv FROM mysql.db WHERE User = ? AND Host = '%' ORDER BY Db",
                    (name.as_str(),),
                )
                .await
                .map_err(refused)?;
            let grants = rows
                .into_iter()
                .filter_map(|(db, select, insert, create)| {
                    let level = match (select.as_str(), insert.as_str(), create.as_str()) {
                        (_, _, "Y") => GrantLevel::Owner,
                        (_, "Y", _) => GrantLevel::Readwrite,
                        ("Y", _, _) => GrantLevel::Readonly,
                        _ => return None,
                    };
                    Some(Grant {
                        database: db.parse().ok()?,
                        level,
                    })
                })
                .collect();
            users.push(UserInfo { name: user, grants });
        }
        Ok(users)
    }

    async fn create_user(
        &mut self,
        name: &UserName,
        password: &Secret,
        grants: &[Grant],
    ) -> Result<()> {
        if self.user_exists(name.as_str()).await? {
            return Err(EngineError::Exists(format!("user {name} already exists")));
        }
        for g in grants {
            if !self.database_exists(g.database.as_str()).await? {
                return Err(EngineError::no_database_to_grant(&g.database));
            }
        }
        let u = format!("{}@'%'", quote_my(name.as_str()));
        let mut sql = vec![format!(
            "CREATE USER {u} IDENTIFIED BY PASSWORD {}",
            quote_literal(&native_hash(password))
        )];
        for g in grants {
            let privileges = match g.level {
                GrantLevel::Readonly => "SELECT",
                GrantLevel::Readwrite => "SELECT, INSERT, UPDATE, DELETE",
                GrantLevel::Owner => "ALL PRIVILEGES",
            };
            sql.push(format!(
                "GRANT {privileges} ON {}.* TO {u}",
                quote_my(g.database.as_str())
            ));
        }
        for (i, stmt) in sql.iter().enumerate() {
            if let Err(e) = self.conn.query_drop(stmt).await {
                if i > 0 {
                    // All or nothing.
                    let _ = self.conn.query_drop(format!("DROP USER {u}")).await;
                }
                return Err(refused(e));
            }
        }
        Ok(())
    }

    async fn drop_user(&mut self, name: &UserName) -> Result<()> {
        if !self.user_exists(name.as_str()).await? {
            return Err(EngineError::Missing(format!(
                "no user {name}; `berth user list` shows them"
            )));
        }
        self.conn
            .query_drop(format!("DROP USER {}@'%'", quote_my(name.as_str())))
            .await
            .map_err(refused)
    }

    async fn set_password(&mut self, name: &UserName, password: &Secret) -> Result<()> {
        if !self.user_exists(name.as_str()).await? {
            return Err(EngineError::Missing(format!(
                "no user {name}; `berth user list` shows them"
            )));
        }
        self.conn
            .query_drop(format!(
                "ALTER USER {}@'%' IDENTIFIED BY PASSWORD {}",
                quote_my(name.as_str()),
                quote_literal(&native_hash(password))
            ))
            .await
            .map_err(refused)
    }
}

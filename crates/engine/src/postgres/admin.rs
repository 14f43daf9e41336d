//! Databases and users in PostgreSQL.
//!
//! Access levels, per database:
//! - owner: owns the database (in PostgreSQL 15 the database owner owns `public`);
//! - readwrite / readonly: may connect; row privileges on existing tables in `public`
//!   and default privileges for tables the owner or the superuser create later.
//!
//! New databases revoke `CONNECT` from `PUBLIC`: a user reaches only the databases it
//! was granted. Grants are read back from the catalogs, never from Berth's memory.

use crate::{Admin, AdminTarget, EngineError, Result, UserInfo};
use berth_model::account::{quote_literal, quote_pg, DbName, Grant, GrantLevel, UserName};
use berth_model::{EngineKind, Secret};
use std::time::Duration;
use tokio_postgres::Client;

fn refused(e: tokio_postgres::Error) -> EngineError {
    let reason = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string());
    EngineError::Refused {
        engine: EngineKind::Postgres,
        reason,
    }
}

/// The SCRAM verifier of a password: what the statement carries, so that not even
/// the engine's log of a failed statement holds the password.
fn verifier(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

async fn connect(target: &AdminTarget, db: &str) -> Result<Client> {
    // TLS to the member's address, verifying the instance's internal name: the
    // engine refuses plaintext from the network anyway.
    let mut config = tokio_postgres::Config::new();
    let ip: std::net::IpAddr = target.host.parse().map_err(|_| EngineError::NotReady {
        engine: EngineKind::Postgres,
        reason: format!("{} is not an address", target.host),
    })?;
    config
        .host(&target.server_name)
        .hostaddr(ip)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .port(target.port)
        .user(&target.user)
        .password(target.password.expose())
        .dbname(db)
        .connect_timeout(Duration::from_secs(5));
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(
        EngineKind::Postgres,
        &target.ca_pem,
    )?);
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| EngineError::NotReady {
            engine: EngineKind::Postgres,
            reason: e.to_string(),
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// An administrative session on the `postgres` database, opening others as needed.
pub(crate) struct PgAdmin {
    target: AdminTarget,
    client: Client,
}

impl PgAdmin {
    pub(crate) async fn connect(target: &AdminTarget) -> Result<Self> {
        Ok(Self {
            client: connect(target, "postgres").await?,
            target: target.clone(),
        })
    }

    async fn database_exists(&self, name: &str) -> Result<bool> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(refused)?
            .get(0);
        Ok(n > 0)
    }

    async fn user_exists(&self, name: &str) -> Result<bool> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(refused)?
            .get(0);
        Ok(n > 0)
    }

    /// Grants one level; the caller has checked that the database exists.
    async fn grant(&self, user: &UserName, g: &Grant) -> Result<()> {
        let u = quote_pg(user.as_str());
        let d = quote_pg(g.database.as_str());
        if g.level == GrantLevel::Owner {
            self.client
                .batch_execute(&format!("ALTER DATABASE {d} OWNER TO {u}"))
                .await
                .map_err(refused)?;
            return Ok(());
        }
        self.client
            .batch_execute(&format!("GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {u}"))
            .await
            .map_err(refused)?;
        let privileges = match g.level {
            GrantLevel::Readonly => "SELECT",
            _ => "SELECT, INSERT, UPDATE, DELETE",
        };
        let owner: String = self
            .client
            .query_one(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
                &[&g.database.as_str()],
            )
            .await
            .map_err(refused)?
            .get(0);
        let mut creators = vec![quote_pg(&self.target.user)];
        if owner != self.target.user {
            creators.push(quote_pg(&owner));
        }
        let db = connect(&self.target, g.database.as_str()).await?;
        let mut sql = vec![
            format!("GRANT USAGE ON SCHEMA public TO {u}"),
            format!("GRANT {privileges} ON ALL TABLES IN SCHEMA public TO {u}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {u}"),
        ];
        for c in &creators {
            sql.push(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} IN SCHEMA public GRANT {privileges} ON TABLES TO {u}"
            ));
            sql.push(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {c} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {u}"
            ));
        }
        db.batch_execute(&sql.join(";\n")).await.map_err(refused)?;
        Ok(())
    }

    /// The levels a user holds, read from the catalogs of each database.
    async fn grants_of(&self, user: &str, databases: &[String]) -> Result<Vec<Grant>> {
        let mut grants = vec![];
        for db in databases {
            let Ok(database) = db.parse::<DbName>() else {
                continue;
            };
            let row = self
                .client
                .query_one(
                    "SELECT pg_get_userbyid(datdba) = $1, has_database_privilege($1, datname, 'CONNECT')
                     FROM pg_database WHERE datname = $2",
                    &[&user, db],
                )
                .await
                .map_err(refused)?;
            let (owner, can_connect): (bool, bool) = (row.get(0), row.get(1));
            if owner {
                grants.push(Grant {
                    database,
                    level: GrantLevel::Owner,
                });
                continue;
            }
            if !can_connect {
                continue;
            }
            let c = connect(&self.target, db).await?;
            let writes: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a
                     WHERE d.defaclobjtype = 'r' AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
                     AND a.privilege_type = 'INSERT')",
                    &[&user],
                )
                .await
                .map_err(refused)?
                .get(0);
            let level = if writes {
                GrantLevel::Readwrite
            } else {
                GrantLevel::Readonly
            };
            grants.push(Grant { database, level });
        }
        Ok(grants)
    }
}

#[async_trait::async_trait]
impl Admin for PgAdmin {
    async fn list_databases(&mut self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
                &[],
            )
            .await
            .map_err(refused)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn create_database(&mut self, name: &DbName) -> Result<()> {
        if self.database_exists(name.as_str()).await? {
            return Err(EngineError::Exists(format!(
                "database {name} already exists"
            )));
        }
        let d = quote_pg(name.as_str());
        self.client
            .batch_execute(&format!("CREATE DATABASE {d}"))
            .await
            .map_err(refused)?;
        self.client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {d} FROM PUBLIC"
            ))
            .await
            .map_err(refused)
    }

    async fn drop_database(&mut self, name: &DbName) -> Result<()> {
        if !self.database_exists(name.as_str()).await? {
            return Err(EngineError::Missing(format!(
                "no database {name}; `berth db list` shows them"
            )));
        }
        self.client
            .batch_execute(&format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_pg(name.as_str())
            ))
            .await
            .map_err(refused)
    }

    async fn list_users(&mut self) -> Result<Vec<UserInfo>> {
        let rows = self
            .client
            .query(
                "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname <> $1 AND rolname !~ '^pg_' ORDER BY 1",
                &[&self.target.user],
            )
            .await
            .map_err(refused)?;
        let databases = self.list_databases().await?;
        let mut users = vec![];
        for r in rows {
            let name: String = r.get(0);
            let Ok(user) = name.parse::<UserName>() else {
                continue;
            };
            let grants = self.grants_of(&name, &databases).await?;
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
        self.client
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                quote_pg(name.as_str()),
                quote_literal(&verifier(password))
            ))
            .await
            .map_err(refused)?;
        for g in grants {
            if let Err(e) = self.grant(name, g).await {
                // All or nothing: a user without the asked-for grants is not what was asked.
                let _ = self.drop_user(name).await;
                return Err(e);
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
        let u = quote_pg(name.as_str());
        // Objects it owns go to the superuser first, in every database, so nothing is lost.
        let su = quote_pg(&self.target.user);
        for db in self.list_databases().await? {
            let c = connect(&self.target, &db).await?;
            c.batch_execute(&format!("REASSIGN OWNED BY {u} TO {su}; DROP OWNED BY {u}"))
                .await
                .map_err(refused)?;
        }
        self.client
            .batch_execute(&format!(
                "REASSIGN OWNED BY {u} TO {su}; DROP OWNED BY {u}; DROP ROLE {u}"
            ))
            .await
            .map_err(refused)
    }

    async fn set_password(&mut self, name: &UserName, password: &Secret) -> Result<()> {
        if !self.user_exists(name.as_str()).await? {
            return Err(EngineError::Missing(format!(
                "no user {name}; `berth user list` shows them"
            )));
        }
        self.client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_pg(name.as_str()),
                quote_literal(&verifier(password))
            ))
            .await
            .map_err(refused)
    }
}

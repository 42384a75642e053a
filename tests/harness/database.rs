//! A database of the test's own, on the backend `AXION_PUSH_TEST_DATABASE`
//! names:
//! - unset or `sqlite`: a file in a temporary directory;
//! - `mysql://root@127.0.0.1:3306` (or `mariadb://…`), `postgres://postgres@127.0.0.1:5432`:
//!   a fresh database on that server, named `axion_push_t_…`, dropped when
//!   the test ends — so runs never see each other's rows.
//!
//! A server that cannot be reached fails the test, naming it: a test must
//! not pass because a service is missing.

use axion_push::config::DatabaseSettings;
use axion_push::store::Backend;

pub struct TestDatabase {
    /// What the daemon connects to: for a server, through a proxy that can
    /// cut the daemon off (see [`TestDatabase::outage`]).
    pub url: String,
    /// The same database without the proxy (benchmarks).
    pub direct_url: String,
    pub backend: Backend,
    /// For a server database: the URL of its server (no database) and the
    /// database's name, to drop it.
    server: Option<(String, String)>,
    proxy: Option<super::proxy::Proxy>,
    _dir: Option<tempfile::TempDir>,
}

/// The backend the tests run on, from `AXION_PUSH_TEST_DATABASE`.
pub fn test_database_spec() -> Option<String> {
    std::env::var("AXION_PUSH_TEST_DATABASE")
        .ok()
        .filter(|s| !s.is_empty() && s != "sqlite")
}

impl TestDatabase {
    /// A database on the backend `AXION_PUSH_TEST_DATABASE` names.
    pub async fn create() -> TestDatabase {
        Self::create_on(test_database_spec().as_deref()).await
    }

    /// A database on `server` (`mysql://…`, `postgres://…`), or SQLite.
    pub async fn create_on(server: Option<&str>) -> TestDatabase {
        let Some(server) = server else {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("axion-push.db").display());
            return TestDatabase {
                direct_url: url.clone(),
                url,
                backend: Backend::Sqlite,
                server: None,
                proxy: None,
                _dir: Some(dir),
            };
        };
        let server = server.trim_end_matches('/');
        let backend = Backend::of_url(server)
            .unwrap_or_else(|| panic!("AXION_PUSH_TEST_DATABASE={server}: not a database URL"));
        let name = format!(
            "axion_push_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        admin(backend, server, &format!("CREATE DATABASE {name}")).await;
        let mut through_proxy = url::Url::parse(server).expect("a server URL");
        let upstream = tokio::net::lookup_host((
            through_proxy.host_str().expect("a host"),
            through_proxy
                .port_or_known_default()
                .unwrap_or(match backend {
                    Backend::Postgres => 5432,
                    _ => 3306,
                }),
        ))
        .await
        .unwrap()
        .next()
        .expect("the server's address");
        let proxy = super::proxy::Proxy::start(upstream).await;
        through_proxy.set_host(Some("127.0.0.1")).unwrap();
        through_proxy.set_port(Some(proxy.addr.port())).unwrap();
        through_proxy.set_path(&name);
        TestDatabase {
            url: through_proxy.to_string(),
            direct_url: format!("{server}/{name}"),
            backend,
            server: Some((server.to_owned(), name)),
            proxy: Some(proxy),
            _dir: None,
        }
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url.clone(),
            ..DatabaseSettings::default()
        }
    }

    /// Runs `sql` (one or more statements) in this database: rows and tables
    /// as other software wrote them.
    pub async fn execute(&self, sql: &str) {
        execute(self.backend, &self.url, sql).await;
    }

    /// `name` as an identifier of this backend (PostgreSQL folds unquoted
    /// names to lower case, and `User` is a reserved word there).
    pub fn ident(&self, name: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("\"{name}\""),
            _ => name.to_owned(),
        }
    }

    /// Writes rows straight into Axion's table, as other software (the
    /// Python module, an administrator) may have: nothing is validated.
    pub async fn insert_rows(&self, rows: &[AxionRow<'_>]) {
        if rows.is_empty() {
            return;
        }
        let columns = [
            "User",
            "Package",
            "Module",
            "Endpoint",
            "KeysP256dh",
            "KeysAuth",
            "CreatedAt",
            "Active",
        ]
        .map(|c| self.ident(c))
        .join(", ");
        for chunk in rows.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|r| {
                    format!(
                        "({}, {}, {}, {}, {}, {}, {}, {})",
                        literal(Some(r.user)),
                        literal(Some(r.package)),
                        literal(r.module),
                        literal(Some(r.endpoint)),
                        literal(r.p256dh),
                        literal(r.auth),
                        match r.created_at {
                            Some(at) => format!("'{at}'"),
                            None => "NULL".into(),
                        },
                        literal(r.active),
                    )
                })
                .collect();
            self.execute(&format!(
                "INSERT INTO def_notify_push_subscription ({columns}) VALUES {}",
                values.join(", ")
            ))
            .await;
        }
    }
}

/// The database made unavailable to the daemon until [`Outage::end`]: on
/// SQLite, another connection holds the write lock (the daemon's writes
/// fail once its `busy_timeout` passes); on a server, the daemon's login is
/// locked and its connections are closed.
pub struct Outage {
    sqlite: Option<sqlx::SqliteConnection>,
    proxy: Option<std::net::SocketAddr>,
    restore: Option<super::proxy::Restorer>,
}

impl TestDatabase {
    pub async fn outage(&self) -> Outage {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Outage {
                    sqlite: Some(conn),
                    proxy: None,
                    restore: None,
                }
            }
            _ => {
                self.proxy.as_ref().expect("a server's proxy").cut();
                Outage {
                    sqlite: None,
                    proxy: self.proxy.as_ref().map(|p| p.addr),
                    restore: self.proxy.as_ref().map(|p| p.restorer()),
                }
            }
        }
    }
}

impl Outage {
    pub async fn end(mut self) {
        if let Some(conn) = &mut self.sqlite {
            sqlx::query("ROLLBACK").execute(conn).await.unwrap();
        }
        if let Some(restore) = self.restore.take() {
            restore.restore();
        }
        let _ = self.proxy;
    }
}

/// A row of Axion's table, as written by software other than the daemon.
#[derive(Debug, Clone, Copy, Default)]
pub struct AxionRow<'a> {
    pub user: &'a str,
    pub package: &'a str,
    pub module: Option<&'a str>,
    pub endpoint: &'a str,
    pub p256dh: Option<&'a str>,
    pub auth: Option<&'a str>,
    /// `YYYY-MM-DD HH:MM:SS`
    pub created_at: Option<&'a str>,
    pub active: Option<&'a str>,
}

/// A SQL string literal (or NULL) that every backend reads alike.
fn literal(text: Option<&str>) -> String {
    match text {
        Some(text) => format!("'{}'", text.replace('\'', "''")),
        None => "NULL".into(),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.server.take() else {
            return;
        };
        let backend = self.backend;
        // Dropped from a thread of its own: Drop cannot await, and the
        // test's runtime may be the one calling it.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if backend == Backend::MySql {
                        end_mysql_sessions(&server, &name).await;
                    }
                    // PostgreSQL ends the sessions still using it itself.
                    let force = if backend == Backend::Postgres {
                        " WITH (FORCE)"
                    } else {
                        ""
                    };
                    admin(
                        backend,
                        &server,
                        &format!("DROP DATABASE IF EXISTS {name}{force}"),
                    )
                    .await;
                });
        })
        .join();
    }
}

/// Ends the connections still using database `name`. A test that failed
/// mid-transaction leaves its pool's connections holding locks, and nothing
/// runs their rollback once the test is over: MariaDB's `DROP DATABASE`
/// would wait for them for good.
async fn end_mysql_sessions(server: &str, name: &str) {
    use sqlx::Connection;
    let url = server.replacen("mariadb://", "mysql://", 1);
    let Ok(mut c) = sqlx::MySqlConnection::connect(&url).await else {
        return;
    };
    let sessions: Vec<u64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.processlist WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(name)
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    for id in sessions {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .execute(&mut c)
            .await;
    }
}

/// Runs `sql` on the server's maintenance database.
async fn admin(backend: Backend, server: &str, sql: &str) {
    let url = match backend {
        Backend::Postgres => format!("{server}/postgres"),
        _ => server.to_owned(),
    };
    execute(backend, &url, sql).await;
}

async fn execute(backend: Backend, url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    let fail = |e: sqlx::Error| -> ! {
        panic!(
            "the test database at {url} ({}) cannot run `{}`: {e} — is the server running? .ci/run starts it",
            backend.name(),
            sql.chars().take(60).collect::<String>()
        )
    };
    let raw = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url)
                .await
                .unwrap_or_else(|e| fail(e));
            c.execute(raw()).await.unwrap_or_else(|e| fail(e));
        }
        Backend::MySql => {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let mut c = sqlx::MySqlConnection::connect(&url)
                .await
                .unwrap_or_else(|e| fail(e));
            c.execute(raw()).await.unwrap_or_else(|e| fail(e));
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .unwrap_or_else(|e| fail(e));
            c.execute(raw()).await.unwrap_or_else(|e| fail(e));
        }
    }
}

//! Everything that talks SQL: the connection pool, the embedded cluster,
//! the migration runner and the named query functions each pipeline stage
//! calls. No SQL is assembled from input anywhere: queries are constants
//! with parameters.

pub mod admin;
pub mod embedded;
pub mod fetch;
pub mod inbox;
pub mod migrate;
pub mod outbox;

use deadpool_postgres::{ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub type Pool = deadpool_postgres::Pool;
pub type Client = deadpool_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no database connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot set up the connection pool: {0}")]
    Build(#[from] deadpool_postgres::CreatePoolError),
    #[error("{0}")]
    Migration(String),
    /// A table or provider the request names is not synced that way.
    #[error("{0}")]
    NotSynced(String),
    /// A set-based write found the database otherwise than its batch read
    /// it (another process wrote meanwhile): the batch is applied again
    /// one event at a time.
    #[error("{0}")]
    Mispredicted(String),
}

/// The server's message (and detail) for a database error, not just
/// tokio-postgres' "db error".
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

impl DbError {
    /// True when retrying later may succeed (connection trouble, or a
    /// transaction chosen as a deadlock or serialization victim — workers
    /// running side by side can meet so), as opposed to an error in the
    /// data or the statement.
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            DbError::Pool(_) | DbError::Build(_) => true,
            DbError::Postgres(e) => {
                e.is_closed()
                    || match e.code() {
                        None => true,
                        Some(c) => {
                            *c == SqlState::T_R_DEADLOCK_DETECTED
                                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                        }
                    }
            }
            DbError::Migration(_) | DbError::NotSynced(_) | DbError::Mispredicted(_) => false,
        }
    }

    /// True when the server refused the data itself (a data exception,
    /// an integrity violation, a value over a limit): the same statement
    /// with the same values fails again, and other values may pass.
    pub fn is_data_error(&self) -> bool {
        match self {
            DbError::Postgres(e) => e
                .code()
                .is_some_and(|c| matches!(&c.code()[..2], "22" | "23" | "54")),
            _ => false,
        }
    }
}

/// A pool of at most `max_size` connections to `url`.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, DbError> {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url.to_owned());
    cfg.manager = Some(ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    });
    cfg.pool = Some(deadpool_postgres::PoolConfig {
        max_size,
        timeouts: deadpool_postgres::Timeouts {
            wait: Some(std::time::Duration::from_secs(10)),
            create: Some(std::time::Duration::from_secs(10)),
            recycle: Some(std::time::Duration::from_secs(5)),
        },
        ..Default::default()
    });
    Ok(cfg.create_pool(Some(Runtime::Tokio1), NoTls)?)
}

/// One connection outside the pool (migrations, LISTEN, admin tasks).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The database `serve` and the other commands use: `DATABASE_URL`, or the
/// embedded cluster when it is unset (stopped when this is dropped or
/// `close`d).
pub struct Database {
    pub url: String,
    pub embedded: Option<embedded::EmbeddedPostgres>,
}

impl Database {
    pub async fn open(config: &crate::config::Config) -> Result<Database, embedded::EmbeddedError> {
        if let Some(url) = &config.database_url {
            return Ok(Database {
                url: url.expose().to_owned(),
                embedded: None,
            });
        }
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(embedded::EmbeddedOptions::default_data_dir);
        let pg = embedded::EmbeddedPostgres::start(embedded::EmbeddedOptions {
            data_dir,
            port: None,
            database: "syncbridge".into(),
        })
        .await?;
        tracing::info!(
            data_dir = %pg.data_dir().display(),
            port = pg.port(),
            "DATABASE_URL is unset: using the embedded PostgreSQL cluster (set DATABASE_URL to use your own)"
        );
        Ok(Database {
            url: pg.url(),
            embedded: Some(pg),
        })
    }

    pub async fn close(self) {
        if let Some(pg) = self.embedded {
            if let Err(e) = pg.stop().await {
                tracing::warn!(error = %e, "could not stop the embedded PostgreSQL cleanly");
            }
        }
    }
}

//! The embedded default database: a private PostgreSQL cluster that syncbridge
//! starts from the server binaries already installed on the machine (no
//! downloads), in a data directory of its own, when `DATABASE_URL` is unset.
//! The test-suite runner uses it too when no PostgreSQL server is reachable.
//!
//! Invariants and behaviour:
//!
//! * The binaries come from [`find_pg_bin_dir`]: `pg_config --bindir`, else the
//!   highest `/usr/lib/postgresql/<version>/bin`, else the directory of the
//!   `initdb` found on `PATH` (symlinks resolved). An existing cluster is run
//!   with `/usr/lib/postgresql/<its PG_VERSION>/bin` when that is installed, so
//!   installing a newer major version alongside does not lock it out.
//! * The cluster is initialised once (`initdb -U syncbridge --auth=trust
//!   --encoding=UTF8 --locale=C`, durable: no `--no-sync`); a data directory
//!   holding `PG_VERSION` is never initialised again. Its superuser is
//!   `syncbridge`, with trust authentication, and the server listens on
//!   127.0.0.1 only, so [`EmbeddedPostgres::url`] needs no password and the
//!   cluster is reachable from this machine only.
//! * Nothing per-start is written into `postgresql.conf`: port, socket
//!   directory, `listen_addresses`, `max_connections=200` and
//!   `shared_buffers=128MB` are passed to `pg_ctl start -o` each time, so a
//!   restart on another free port just works. The Unix socket lives in the data
//!   directory itself (no need for `/var/run/postgresql`); when that path is
//!   too long for a Unix socket (or has characters PostgreSQL's list syntax
//!   cannot hold) the server runs without a Unix socket, TCP only.
//! * If a server is already running on the data directory (`postmaster.pid`
//!   present and `pg_ctl status` says so), it is reused on the port recorded in
//!   `postmaster.pid`, and it is never stopped by this handle: someone else owns
//!   it. A stale `postmaster.pid` is ignored and the server started normally.
//! * A server this handle started is stopped by [`EmbeddedPostgres::stop`], or
//!   failing that, best-effort and synchronously, when the handle is dropped.
//!   A process killed outright leaves it running; the next start reuses it
//!   (and, not having started it, leaves it running in turn).
//! * The data directory path is made absolute and must not contain `"`, `\`,
//!   `$`, `` ` `` or newlines, which `pg_ctl`'s shell command line cannot hold.
//! * The server log is `<data_dir>/server.log` (rotated to `server.log.1` past
//!   16 MiB); when the server fails to start, its last 20 lines are in the error.
//!
//! Running as root: `initdb`, `pg_ctl` and `postgres` refuse to run as root, so
//! when the effective uid is 0 every PostgreSQL command runs as an
//! unprivileged user: the owner of the data directory if it already exists and
//! is not owned by root, else the `postgres` system user if `/etc/passwd` has
//! one, else `nobody`. The data directory (mode 0700, which is also the socket
//! directory) and `server.log` are chowned to that user. That user must be able
//! to traverse every ancestor of the data directory, which fails for the usual
//! root default (`/root` is 0700): in that case the data directory falls back to
//! `/var/tmp/syncbridge-<uid>/postgres`, where `<uid>` is `$SUDO_UID` (the user
//! who ran sudo) or 0, and a warning says so; [`EmbeddedPostgres::data_dir`]
//! returns the directory actually used. The parent `/var/tmp/syncbridge-<uid>`
//! must be a real directory owned by root and writable by root only, so that no
//! other user can plant it beforehand. Not running as root, everything runs as
//! the current user and nothing is chowned.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use postgres_protocol::escape::escape_identifier;
use tokio::process::Command;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, info, warn};

/// The cluster's superuser, created by `initdb -U`, trusted on 127.0.0.1.
const SUPERUSER: &str = "syncbridge";
/// How many ports to try when the caller lets us pick a free one.
const START_ATTEMPTS: usize = 3;
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// Lines of `server.log` quoted in a start error.
const LOG_TAIL_LINES: usize = 20;
/// `server.log` is renamed to `server.log.1` before a start once past this.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest Unix socket path PostgreSQL accepts (`sizeof(sun_path) - 1`).
const MAX_SOCKET_PATH: usize = 107;
/// How long to keep trying to connect after `pg_ctl` reports the server up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What [`EmbeddedPostgres::start`] should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Data directory of the cluster; created (mode 0700) and initialised if it
    /// does not hold one yet. Relative paths are taken from the current
    /// directory. Usually [`EmbeddedOptions::default_data_dir`].
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1 to listen on; `None` picks a free one at each start.
    pub port: Option<u16>,
    /// Database to connect to, created if absent (e.g. `"syncbridge"`).
    pub database: String,
}

impl EmbeddedOptions {
    /// The data directory used when none is configured: `$SYNCBRIDGE_DATA_DIR`
    /// if set, else `$XDG_DATA_HOME/syncbridge/postgres`, else
    /// `$HOME/.local/share/syncbridge/postgres`, else `./.syncbridge/postgres`.
    /// Empty variables count as unset, and so does a relative `XDG_DATA_HOME`
    /// (the XDG spec says to ignore it).
    pub fn default_data_dir() -> PathBuf {
        default_data_dir_from(|name| std::env::var_os(name))
    }
}

fn default_data_dir_from(get: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |name: &str| get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("SYNCBRIDGE_DATA_DIR") {
        return dir;
    }
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("syncbridge").join("postgres");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local/share/syncbridge/postgres");
    }
    PathBuf::from(".syncbridge/postgres")
}

/// Why the embedded cluster could not be found, started, used or stopped.
/// Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "no PostgreSQL server binaries found (looked in {looked_in}): install the postgresql \
         package, or set DATABASE_URL to use an existing server"
    )]
    NoBinaries {
        /// The places searched, in order.
        looked_in: String,
    },
    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but /etc/passwd has neither a \
         `postgres` nor a `nobody` user: create one (`useradd --system postgres`), run syncbridge \
         as an ordinary user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// The data directory cannot be used as it is.
    #[error("cannot use {path} as the PostgreSQL data directory: {reason}")]
    DataDir {
        /// The directory in question.
        path: PathBuf,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// A file-system operation failed.
    #[error(
        "could not {action} {path}: {source}; check its permissions, or set SYNCBRIDGE_DATA_DIR \
         to a directory you can write"
    )]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program could not be run at all.
    #[error(
        "could not run {program}: {source}; check the PostgreSQL installation, or set DATABASE_URL"
    )]
    Spawn {
        /// The program's path.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `initdb` failed.
    #[error(
        "initdb failed for {data_dir} ({status}):\n{output}\nremove that directory (or point \
         SYNCBRIDGE_DATA_DIR at an empty one) and try again"
    )]
    InitDb {
        /// The data directory being initialised.
        data_dir: PathBuf,
        /// initdb's exit status.
        status: String,
        /// initdb's output.
        output: String,
    },
    /// `pg_ctl start` failed, on every port tried.
    #[error(
        "PostgreSQL did not start (data in {data_dir}, log {log_file}, {attempts} attempt(s)): \
         {detail}\nlast lines of {log_file}:\n{log_tail}\nfix the problem shown there, or set \
         DATABASE_URL to use an existing server"
    )]
    Start {
        /// The data directory.
        data_dir: PathBuf,
        /// The server log.
        log_file: PathBuf,
        /// How many starts were tried.
        attempts: usize,
        /// pg_ctl's own output from the last attempt.
        detail: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// `pg_ctl stop` failed and the server still runs.
    #[error(
        "could not stop PostgreSQL (data in {data_dir}): {output}; stop it by hand with \
         `pg_ctl stop -D {data_dir}` as the user owning that directory"
    )]
    Stop {
        /// The data directory.
        data_dir: PathBuf,
        /// pg_ctl's output.
        output: String,
    },
    /// A running server's `postmaster.pid` could not be read.
    #[error(
        "could not read the port of the running PostgreSQL from {path}: {reason}; if no server \
         is running on that data directory, delete that file and try again"
    )]
    PidFile {
        /// The `postmaster.pid` file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The started (or reused) server did not accept a connection.
    #[error(
        "could not connect to the embedded PostgreSQL at {url}: {source}; see its log {log_file}"
    )]
    Connect {
        /// The URL tried.
        url: String,
        /// The server log.
        log_file: PathBuf,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database name is not one PostgreSQL can hold.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidDatabase {
        /// The name given.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Checking for or creating the database failed.
    #[error("could not create database {database:?} in the embedded PostgreSQL: {source}; create it by hand or choose another name")]
    CreateDatabase {
        /// The database name.
        database: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A running private PostgreSQL cluster; see the module documentation.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    pg: PgCtl,
    port: u16,
    database: String,
    /// Whether this handle started the server and so must stop it.
    owned: bool,
}

impl EmbeddedPostgres {
    /// Finds the binaries, prepares and (first time only) initialises the data
    /// directory, starts the server on `127.0.0.1` (or reuses one already
    /// running on that directory), creates `opts.database` if absent, and logs
    /// where it all is. As root, may move the data directory to
    /// `/var/tmp/syncbridge-<uid>/postgres` (see the module documentation).
    ///
    /// # Errors
    ///
    /// Any [`EmbeddedError`]: no binaries, an unusable data directory, initdb,
    /// `pg_ctl start` (with the end of the server log), connection or
    /// `CREATE DATABASE` failures. If a step after starting the server fails,
    /// the server this call started is stopped again.
    pub async fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        check_database_name(&opts.database)?;
        if opts.data_dir.as_os_str().is_empty() {
            return Err(EmbeddedError::DataDir {
                path: opts.data_dir,
                reason: "the path is empty; use EmbeddedOptions::default_data_dir() or set \
                         SYNCBRIDGE_DATA_DIR"
                    .to_owned(),
            });
        }
        let mut bin_dir = find_pg_bin_dir()?;
        let requested =
            std::path::absolute(&opts.data_dir).map_err(|source| EmbeddedError::Io {
                action: "resolve",
                path: opts.data_dir.clone(),
                source,
            })?;
        let (data_dir, run_as) = prepare_data_dir(&requested)?;
        if let Some(matching) = bin_dir_for_existing_cluster(&data_dir) {
            if matching != bin_dir {
                debug!(
                    "using {} to match the cluster's major version",
                    matching.display()
                );
                bin_dir = matching;
            }
        }
        let pg = PgCtl {
            bin_dir,
            log_file: data_dir.join("server.log"),
            data_dir,
            run_as,
        };

        if !pg.data_dir.join("PG_VERSION").is_file() {
            pg.initdb().await?;
        }

        let (port, owned) = match pg.running_port().await? {
            Some(port) => {
                if opts.port.is_some_and(|p| p != port) {
                    warn!(
                        "PostgreSQL is already running on {} with port {port}, not the port asked for; using it",
                        pg.data_dir.display()
                    );
                }
                (port, false)
            }
            None => pg.start_server(opts.port).await?,
        };

        let this = EmbeddedPostgres {
            pg,
            port,
            database: opts.database,
            owned,
        };
        // On error `this` is dropped here, which stops a server we started.
        this.ensure_database().await?;
        info!(
            "embedded PostgreSQL at {}, data in {}, log in {}{}",
            this.url(),
            this.pg.data_dir.display(),
            this.pg.log_file.display(),
            if owned {
                ""
            } else {
                " (already running; left running on exit)"
            }
        );
        Ok(this)
    }

    /// `postgres://syncbridge@127.0.0.1:PORT/DATABASE`: the superuser, trusted
    /// on 127.0.0.1, so no password is needed.
    pub fn url(&self) -> String {
        make_url(self.port, &self.database)
    }

    /// The data directory in use (after any root fallback), absolute.
    pub fn data_dir(&self) -> &Path {
        &self.pg.data_dir
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with `pg_ctl stop -m fast` and waits for it to exit.
    /// Does nothing if this handle reused a server someone else started.
    ///
    /// # Errors
    ///
    /// [`EmbeddedError::Spawn`] if `pg_ctl` cannot be run, and
    /// [`EmbeddedError::Stop`] if it fails while the server still runs.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        if !self.owned {
            debug!(
                "not stopping PostgreSQL on {}: another process started it",
                self.pg.data_dir.display()
            );
            return Ok(());
        }
        // Whatever happens below, Drop must not try again.
        self.owned = false;
        let out = run(self.pg.stop_command().into()).await?;
        if out.status.success() {
            info!(
                "stopped embedded PostgreSQL (data in {})",
                self.pg.data_dir.display()
            );
            return Ok(());
        }
        if !self.pg.status_running().await.unwrap_or(true) {
            debug!("embedded PostgreSQL was already stopped");
            return Ok(());
        }
        Err(EmbeddedError::Stop {
            data_dir: self.pg.data_dir.clone(),
            output: combined_output(&out),
        })
    }
}

impl Drop for EmbeddedPostgres {
    /// Best-effort, synchronous `pg_ctl stop -m fast` for a server this handle
    /// started and [`EmbeddedPostgres::stop`] did not stop.
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        match self.pg.stop_command().output() {
            Ok(out) if out.status.success() => {
                info!(
                    "stopped embedded PostgreSQL (data in {})",
                    self.pg.data_dir.display()
                );
            }
            Ok(out) => warn!(
                "could not stop embedded PostgreSQL (data in {}): {}",
                self.pg.data_dir.display(),
                combined_output(&out)
            ),
            Err(e) => warn!("could not run pg_ctl to stop embedded PostgreSQL: {e}"),
        }
    }
}

impl EmbeddedPostgres {
    /// Creates the database if absent, via the `postgres` maintenance database.
    async fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let client = self.connect_maintenance().await?;
        let create_err = |source| EmbeddedError::CreateDatabase {
            database: self.database.clone(),
            source,
        };
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&self.database],
            )
            .await
            .map_err(create_err)?
            .is_some();
        if exists {
            return Ok(());
        }
        let sql = format!("CREATE DATABASE {}", escape_identifier(&self.database));
        match client.batch_execute(&sql).await {
            Ok(()) => {
                info!(
                    "created database {:?} in embedded PostgreSQL",
                    self.database
                );
                Ok(())
            }
            // Someone created it between our check and our CREATE.
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(create_err(e)),
        }
    }

    /// Connects to the `postgres` database, retrying briefly while the server
    /// finishes starting up.
    async fn connect_maintenance(&self) -> Result<Client, EmbeddedError> {
        let url = make_url(self.port, "postgres");
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match tokio_postgres::connect(&url, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            debug!("embedded PostgreSQL maintenance connection ended: {e}");
                        }
                    });
                    return Ok(client);
                }
                Err(e) if Instant::now() < deadline => {
                    debug!("embedded PostgreSQL not accepting connections yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(source) => {
                    return Err(EmbeddedError::Connect {
                        url,
                        log_file: self.pg.log_file.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `pg_config
/// --bindir` if `pg_config` is on `PATH` and that directory has all three;
/// else the highest version under `/usr/lib/postgresql/*/bin`; else the
/// directory of the `initdb` found on `PATH`, symlinks resolved; else
/// [`EmbeddedError::NoBinaries`].
///
/// # Errors
///
/// [`EmbeddedError::NoBinaries`], listing where it looked.
pub fn find_pg_bin_dir() -> Result<PathBuf, EmbeddedError> {
    let mut looked = Vec::new();

    match StdCommand::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_server_bin_dir(&dir) {
                return Ok(dir);
            }
            looked.push(format!("{} (pg_config --bindir)", dir.display()));
        }
        _ => looked.push("pg_config --bindir (no pg_config on PATH)".to_owned()),
    }

    let versions_root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    if let Some((_, dir)) = versions.into_iter().find(|(_, dir)| is_server_bin_dir(dir)) {
        return Ok(dir);
    }
    looked.push(format!("{}/*/bin", versions_root.display()));

    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let initdb = dir.join("initdb");
        if !is_executable(&initdb) {
            continue;
        }
        if let Some(parent) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if is_server_bin_dir(&parent) {
                return Ok(parent);
            }
        }
    }
    looked.push("initdb on PATH".to_owned());

    Err(EmbeddedError::NoBinaries {
        looked_in: looked.join(", "),
    })
}

/// For an already initialised cluster, Debian's binaries of its own major
/// version (from `PG_VERSION`), if installed: after a new major version is
/// installed alongside, the newest binaries could not open the old cluster.
fn bin_dir_for_existing_cluster(data_dir: &Path) -> Option<PathBuf> {
    let version = fs::read_to_string(data_dir.join("PG_VERSION")).ok()?;
    let version = version.trim();
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let dir = Path::new("/usr/lib/postgresql").join(version).join("bin");
    is_server_bin_dir(&dir).then_some(dir)
}

fn is_server_bin_dir(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The unprivileged account PostgreSQL runs as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    gid: u32,
    name: String,
}

/// Runs the PostgreSQL programs for one data directory.
#[derive(Debug)]
struct PgCtl {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// `None`: run as the current user.
    run_as: Option<RunAs>,
}

impl PgCtl {
    /// A command for `program` from the bin dir, as the right user, from `/`
    /// (the current directory may not be readable by that user), with output
    /// captured and English messages.
    fn command(&self, program: &str) -> StdCommand {
        let mut cmd = StdCommand::new(self.bin_dir.join(program));
        cmd.current_dir("/")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = &self.run_as {
            // std drops root's supplementary groups too when it sets the uid.
            cmd.gid(user.gid).uid(user.uid);
        }
        cmd
    }

    async fn initdb(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        let started = Instant::now();
        let out = run(cmd.into()).await?;
        if !out.status.success() {
            return Err(EmbeddedError::InitDb {
                data_dir: self.data_dir.clone(),
                status: out.status.to_string(),
                output: combined_output(&out),
            });
        }
        info!(
            "initialised a new PostgreSQL cluster in {} in {:.1?}",
            self.data_dir.display(),
            started.elapsed()
        );
        Ok(())
    }

    /// Whether `pg_ctl status` says a server runs on the data directory.
    async fn status_running(&self) -> Result<bool, EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        // 0: running; 3: not running; 4: no accessible data directory.
        Ok(run(cmd.into()).await?.status.success())
    }

    /// The port of a server already running on the data directory, if any.
    async fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        if !pid_file.exists() {
            return Ok(None);
        }
        if !self.status_running().await? {
            debug!("ignoring stale {}", pid_file.display());
            return Ok(None);
        }
        let text =
            tokio::fs::read_to_string(&pid_file)
                .await
                .map_err(|e| EmbeddedError::PidFile {
                    path: pid_file.clone(),
                    reason: e.to_string(),
                })?;
        parse_pid_file_port(&text)
            .map(Some)
            .ok_or_else(|| EmbeddedError::PidFile {
                path: pid_file,
                reason: "its 4th line is not a port number".to_owned(),
            })
    }

    /// Starts the server; returns its port and whether we own it (false when a
    /// concurrent start by another process won the race and we reuse it).
    async fn start_server(&self, port: Option<u16>) -> Result<(u16, bool), EmbeddedError> {
        self.rotate_log();
        let attempts = if port.is_some() { 1 } else { START_ATTEMPTS };
        let mut detail = String::new();
        let mut tried = 0;
        while tried < attempts {
            tried += 1;
            let port = match port {
                Some(port) => port,
                None => free_port()?,
            };
            let log_offset = fs::metadata(&self.log_file).map_or(0, |m| m.len());
            let mut cmd = self.command("pg_ctl");
            cmd.arg("start")
                .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .arg("-o")
                .arg(server_options(port, socket_dir(&self.data_dir)));
            let out = run(cmd.into()).await?;
            if out.status.success() {
                return Ok((port, true));
            }
            detail = combined_output(&out);
            let new_log = read_from(&self.log_file, log_offset).await;
            if new_log.contains("lock file \"postmaster.pid\" already exists") {
                if let Some(running) = self.running_port().await? {
                    warn!(
                        "another process started PostgreSQL on {} at the same time; using it",
                        self.data_dir.display()
                    );
                    return Ok((running, false));
                }
            }
            if tried < attempts && port_was_taken(&new_log) {
                warn!("port {port} was taken before PostgreSQL could bind it; trying another");
                continue;
            }
            break;
        }
        Err(EmbeddedError::Start {
            data_dir: self.data_dir.clone(),
            log_file: self.log_file.clone(),
            attempts: tried,
            detail,
            log_tail: log_tail(&self.log_file, LOG_TAIL_LINES).await,
        })
    }

    fn stop_command(&self) -> StdCommand {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .args(["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-D"])
            .arg(&self.data_dir);
        cmd
    }

    /// Keeps `server.log` from growing without bound across restarts.
    fn rotate_log(&self) {
        if fs::metadata(&self.log_file).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            if let Err(e) = fs::rename(&self.log_file, self.log_file.with_extension("log.1")) {
                warn!("could not rotate {}: {e}", self.log_file.display());
            }
        }
    }
}

/// Runs a command to completion, capturing its output.
async fn run(mut cmd: Command) -> Result<Output, EmbeddedError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    debug!("running {:?}", cmd.as_std());
    cmd.output()
        .await
        .map_err(|source| EmbeddedError::Spawn { program, source })
}

fn combined_output(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim());
    }
    text
}

/// The options `pg_ctl` hands to `postgres` through `/bin/sh`, hence quoted.
/// An empty `-k` means no Unix socket.
fn server_options(port: u16, socket_dir: Option<&str>) -> String {
    format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB",
        shell_quote(socket_dir.unwrap_or(""))
    )
}

/// The data directory as the Unix socket directory, if PostgreSQL can use it:
/// short enough for `sun_path`, and free of the characters its comma-separated
/// list syntax or our quoting would trip over.
fn socket_dir(data_dir: &Path) -> Option<&str> {
    let dir = data_dir.to_str()?;
    let socket_path_len = dir.len() + "/.s.PGSQL.65535".len();
    let plain = !dir
        .contains(|c: char| c == ',' || c == '"' || c == '\'' || c == '\\' || c.is_whitespace());
    (plain && socket_path_len <= MAX_SOCKET_PATH).then_some(dir)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Port from the 4th line of `postmaster.pid`.
fn parse_pid_file_port(text: &str) -> Option<u16> {
    text.lines().nth(3)?.trim().parse().ok()
}

fn port_was_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

/// A port free on 127.0.0.1 right now (it may be taken again before use).
fn free_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| EmbeddedError::Io {
            action: "find a free port on",
            path: PathBuf::from("127.0.0.1"),
            source,
        })
}

/// What was appended to a file since `offset` (empty if unreadable).
async fn read_from(path: &Path, offset: u64) -> String {
    let bytes = tokio::fs::read(path).await.unwrap_or_default();
    let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `n` lines of a log file, or a note saying it could not be read.
async fn log_tail(path: &Path, n: usize) -> String {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

fn make_url(port: u16, database: &str) -> String {
    let mut db = String::with_capacity(database.len());
    for byte in database.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            db.push(char::from(byte));
        } else {
            let _ = write!(db, "%{byte:02X}");
        }
    }
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{db}")
}

fn check_database_name(name: &str) -> Result<(), EmbeddedError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 63 {
        "PostgreSQL names are at most 63 bytes"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(EmbeddedError::InvalidDatabase {
        name: name.to_owned(),
        reason,
    })
}

fn effective_uid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { geteuid() }
}

/// Creates and checks the data directory; as root also picks the user to run
/// PostgreSQL as, falls back to `/var/tmp` when that user could not reach the
/// requested directory, and hands the directory to that user.
fn prepare_data_dir(requested: &Path) -> Result<(PathBuf, Option<RunAs>), EmbeddedError> {
    // pg_ctl puts the data directory and log path in double quotes for /bin/sh.
    if requested
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| b"\"\\$`\n".contains(b))
    {
        return Err(EmbeddedError::DataDir {
            path: requested.to_path_buf(),
            reason: "pg_ctl cannot handle paths containing \" \\ $ ` or newlines; choose another \
                     SYNCBRIDGE_DATA_DIR"
                .to_owned(),
        });
    }
    if effective_uid() != 0 {
        make_private_dir(requested, None)?;
        return Ok((requested.to_path_buf(), None));
    }

    let mut user = run_as_for(requested)?;
    let mut data_dir = requested.to_path_buf();
    if !parent_reachable_by(requested, &user)? {
        let fallback = root_fallback_dir()?;
        warn!(
            "running as root: PostgreSQL runs as {} (uid {}), who cannot reach {}; using {} instead \
             (set SYNCBRIDGE_DATA_DIR to choose another place)",
            user.name,
            user.uid,
            requested.display(),
            fallback.display()
        );
        user = run_as_for(&fallback)?;
        if !parent_reachable_by(&fallback, &user)? {
            return Err(EmbeddedError::DataDir {
                path: fallback,
                reason: format!(
                    "user {} cannot traverse its parent directories; set SYNCBRIDGE_DATA_DIR to a \
                     directory under /var/tmp or /tmp",
                    user.name
                ),
            });
        }
        data_dir = fallback;
    }
    make_private_dir(&data_dir, Some(&user))?;
    Ok((data_dir, Some(user)))
}

/// The user to run PostgreSQL as, as root: the owner of an existing data
/// directory not owned by root, else `postgres`, else `nobody`.
fn run_as_for(data_dir: &Path) -> Result<RunAs, EmbeddedError> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if let Ok(meta) = fs::metadata(data_dir) {
        if meta.uid() != 0 {
            let name = passwd_entries(&passwd)
                .find(|u| u.uid == meta.uid())
                .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
            return Ok(RunAs {
                uid: meta.uid(),
                gid: meta.gid(),
                name,
            });
        }
    }
    ["postgres", "nobody"]
        .iter()
        .find_map(|wanted| passwd_entries(&passwd).find(|u| u.name == *wanted && u.uid != 0))
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = RunAs> + '_ {
    passwd.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?.to_owned();
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs { uid, gid, name })
    })
}

/// Whether `user` can traverse every ancestor of `dir`, creating the missing
/// ones (as root) when the existing ones are fine.
fn parent_reachable_by(dir: &Path, user: &RunAs) -> Result<bool, EmbeddedError> {
    let Some(parent) = dir.parent() else {
        return Ok(true);
    };
    // Judge what exists before creating anything, so a fallback leaves no litter.
    let existing = parent
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !traversable_by(existing, user.uid, user.gid) {
        return Ok(false);
    }
    fs::create_dir_all(parent).map_err(|source| EmbeddedError::Io {
        action: "create directory",
        path: parent.to_path_buf(),
        source,
    })?;
    // Again, in case the umask made the new directories private.
    Ok(traversable_by(parent, user.uid, user.gid))
}

/// Whether `uid`/`gid` may search every directory from `/` down to `path`
/// (symlinks resolved). Supplementary groups are not considered, so this may
/// say no where the kernel would say yes, never the reverse.
fn traversable_by(path: &Path, uid: u32, gid: u32) -> bool {
    let Ok(real) = fs::canonicalize(path) else {
        return false;
    };
    real.ancestors().all(|dir| {
        fs::metadata(dir).is_ok_and(|m| {
            let mode = m.mode();
            if m.uid() == uid {
                mode & 0o100 != 0
            } else if m.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        })
    })
}

/// `/var/tmp/syncbridge-<uid>/postgres`, `<uid>` being `$SUDO_UID` or 0; makes
/// sure its parent is a real directory owned and writable by root only.
fn root_fallback_dir() -> Result<PathBuf, EmbeddedError> {
    let owner = std::env::var("SUDO_UID")
        .ok()
        .and_then(|uid| uid.parse::<u32>().ok())
        .unwrap_or(0);
    let base = PathBuf::from(format!("/var/tmp/syncbridge-{owner}"));
    let io_err = |action, source| EmbeddedError::Io {
        action,
        path: base.clone(),
        source,
    };
    match DirBuilder::new().mode(0o755).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create directory", e)),
    }
    let meta = fs::symlink_metadata(&base).map_err(|e| io_err("inspect", e))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(EmbeddedError::DataDir {
            path: base,
            reason: "it is not a directory owned by root and writable only by root; remove it, or \
                     set SYNCBRIDGE_DATA_DIR"
                .to_owned(),
        });
    }
    if meta.mode() & 0o755 != 0o755 {
        fs::set_permissions(&base, Permissions::from_mode(0o755))
            .map_err(|e| io_err("chmod", e))?;
    }
    Ok(base.join("postgres"))
}

/// Creates `dir` (mode 0700) if missing, makes sure it is a directory
/// PostgreSQL accepts (owned by the server's user, no group write or other
/// access), and as root hands it, and `server.log`, to `owner`.
fn make_private_dir(dir: &Path, owner: Option<&RunAs>) -> Result<(), EmbeddedError> {
    let io_err = |action, path: &Path, source| EmbeddedError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| io_err("create directory", parent, e))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create directory", dir, e)),
    }
    let meta = fs::metadata(dir).map_err(|e| io_err("inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(EmbeddedError::DataDir {
            path: dir.to_path_buf(),
            reason: "it is not a directory; remove it or set SYNCBRIDGE_DATA_DIR".to_owned(),
        });
    }
    if let Some(user) = owner {
        if meta.uid() != user.uid {
            let empty = fs::read_dir(dir)
                .map_err(|e| io_err("read directory", dir, e))?
                .next()
                .is_none();
            if !empty {
                return Err(EmbeddedError::DataDir {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "it is owned by uid {} and not empty, and PostgreSQL will run as {}; \
                         remove it, or `chown -R {}:{} {}`",
                        meta.uid(),
                        user.name,
                        user.uid,
                        user.gid,
                        dir.display()
                    ),
                });
            }
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(|e| io_err("chown", dir, e))?;
        }
        let log = dir.join("server.log");
        if fs::metadata(&log).is_ok_and(|m| m.uid() != user.uid) {
            std::os::unix::fs::chown(&log, Some(user.uid), Some(user.gid))
                .map_err(|e| io_err("chown", &log, e))?;
        }
    }
    // PostgreSQL accepts 0700 or 0750 only.
    if meta.mode() & 0o027 != 0 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique_temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!(
            "syncbridge-embedded-{tag}-{}-{nanos}",
            std::process::id()
        ))
    }

    async fn connect(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect to url()");
        tokio::spawn(connection);
        client
    }

    #[tokio::test]
    async fn start_stop_restart_keeps_data() {
        let dir = unique_temp_dir("lifecycle");
        let opts = || EmbeddedOptions {
            data_dir: dir.clone(),
            port: None,
            database: "syncbridge_test".to_owned(),
        };

        let t = Instant::now();
        let pg = EmbeddedPostgres::start(opts()).await.expect("first start");
        let first = t.elapsed();
        assert_eq!(pg.data_dir(), dir);
        assert!(pg.url().starts_with("postgres://syncbridge@127.0.0.1:"));
        assert!(pg
            .url()
            .ends_with(&format!(":{}/syncbridge_test", pg.port())));
        let client = connect(&pg.url()).await;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        client
            .batch_execute("CREATE TABLE marker (id int); INSERT INTO marker VALUES (42)")
            .await
            .unwrap();
        drop(client);
        pg.stop().await.expect("first stop");
        assert!(
            !dir.join("postmaster.pid").exists(),
            "server still running after stop()"
        );

        let t = Instant::now();
        let pg = EmbeddedPostgres::start(opts()).await.expect("second start");
        let second = t.elapsed();
        let client = connect(&pg.url()).await;
        let id: i32 = client
            .query_one("SELECT id FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(id, 42, "data from the first run is gone");

        // A second handle on the running cluster reuses it and leaves it running.
        let t = Instant::now();
        let other = EmbeddedPostgres::start(opts())
            .await
            .expect("start while running");
        let reuse = t.elapsed();
        assert_eq!(other.port(), pg.port());
        drop(other);
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "dropping a reusing handle stopped the server");
        drop(client);

        pg.stop().await.expect("second stop");
        assert!(!dir.join("postmaster.pid").exists());
        println!(
            "start(): first {first:.2?}, second {second:.2?}, reusing a running server {reuse:.2?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_bin_dir_with_server_programs() {
        let dir = find_pg_bin_dir().expect("find_pg_bin_dir");
        for program in ["initdb", "pg_ctl", "postgres"] {
            assert!(
                is_executable(&dir.join(program)),
                "{program} missing in {}",
                dir.display()
            );
        }
    }

    #[test]
    fn default_data_dir_precedence() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(*v))
            }
        }
        let all = [
            ("SYNCBRIDGE_DATA_DIR", "/srv/sb"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(default_data_dir_from(env(&all)), PathBuf::from("/srv/sb"));
        assert_eq!(
            default_data_dir_from(env(&[("SYNCBRIDGE_DATA_DIR", ""), ("XDG_DATA_HOME", "/x")])),
            PathBuf::from("/x/syncbridge/postgres")
        );
        assert_eq!(
            default_data_dir_from(env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/home/u")])),
            PathBuf::from("/home/u/.local/share/syncbridge/postgres")
        );
        assert_eq!(
            default_data_dir_from(env(&[])),
            PathBuf::from(".syncbridge/postgres")
        );
    }

    #[test]
    fn private_ancestor_is_not_traversable_by_others() {
        let dir = unique_temp_dir("traverse");
        let inner = dir.join("inner");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        let me = fs::metadata(&dir).unwrap();
        let (other_uid, other_gid) = (me.uid().wrapping_add(12345), me.gid().wrapping_add(12345));
        assert!(traversable_by(&inner, me.uid(), me.gid()));
        assert!(!traversable_by(&inner, other_uid, other_gid));
        fs::set_permissions(&dir, Permissions::from_mode(0o701)).unwrap();
        assert!(traversable_by(&inner, other_uid, other_gid));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn helpers() {
        assert_eq!(
            parse_pid_file_port("123\n/d\n1700000000\n5433\n/d\n127.0.0.1\n"),
            Some(5433)
        );
        assert_eq!(parse_pid_file_port("123\n/d\n"), None);
        assert_eq!(
            make_url(5, "a b/c"),
            "postgres://syncbridge@127.0.0.1:5/a%20b%2Fc"
        );
        assert_eq!(
            server_options(5432, Some("/d")),
            "-p 5432 -k '/d' -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB"
        );
        assert!(server_options(1, None).contains("-k ''"));
        assert_eq!(socket_dir(Path::new("/var/tmp/x")), Some("/var/tmp/x"));
        assert_eq!(socket_dir(Path::new("/has space")), None);
        assert_eq!(socket_dir(&Path::new("/").join("a".repeat(100))), None);
        assert!(check_database_name("").is_err());
        assert!(check_database_name("syncbridge").is_ok());
    }
}

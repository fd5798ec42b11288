//! Configuration: one struct, loaded once at start from the environment
//! (and optionally a TOML file with the same keys; the environment wins),
//! validated before anything runs. Secrets are wrapped so that `Debug`
//! never prints them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::providers::signature::HmacKey;
use crate::worker::RetryPolicy;

/// A secret string: compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        // Hash both sides so the comparison is constant-time in the length
        // of the presented value too.
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The router's batches and how it retries an event that failed to apply.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Attempts before an event is `failed` (`SYNCBRIDGE_MAX_ATTEMPTS`, 8);
    /// the first retry after `SYNCBRIDGE_RETRY_BASE_MS` (1000), doubling,
    /// with jitter, capped at an hour.
    pub retry: RetryPolicy,
    /// Events claimed per transaction (`SYNCBRIDGE_ROUTER_BATCH`, 256).
    pub batch_size: i64,
    /// Body bytes claimed per transaction at most
    /// (`SYNCBRIDGE_ROUTER_BATCH_BYTES`, 4 MiB): a batch of large events
    /// stops short of `batch_size` (it always takes at least one event).
    pub batch_bytes: usize,
    /// Batches applied side by side, each in its own transaction
    /// (`SYNCBRIDGE_ROUTER_WORKERS`, 3). A worker spends about a quarter
    /// of a batch in the service itself (normalise, decide), so one more
    /// worker than the database has cores keeps it busy: on 2 cores, 3
    /// workers apply ~15 % more than 2.
    pub workers: usize,
    /// Sweep interval for anything a wake-up missed.
    pub poll_interval: Duration,
    /// Debounce window of fetch hints (`SYNCBRIDGE_FETCH_DEBOUNCE_MS`).
    pub fetch_debounce: Duration,
}

/// The dispatcher's rounds and how it retries a failed push.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Attempts before a change is `failed` (`SYNCBRIDGE_PUSH_MAX_ATTEMPTS`,
    /// 8), backing off from `SYNCBRIDGE_RETRY_BASE_MS`; a 429's
    /// `Retry-After` when later.
    pub retry: RetryPolicy,
    /// Records listed per round, at least (they are pushed in groups of
    /// `dispatcher::GROUP`, two groups at a time).
    pub batch_size: i64,
    /// The sweep that covers a doorbell rung between a re-arm and a drain
    /// (see migrations/0005_capture.up.sql).
    pub poll_interval: Duration,
}

/// The fetcher (hint-then-fetch) and how it retries a failed fetch.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// Backoff of a failed fetch (from `SYNCBRIDGE_RETRY_BASE_MS`).
    pub retry: RetryPolicy,
    /// Hints for one object within this window make one fetch
    /// (`SYNCBRIDGE_FETCH_DEBOUNCE_MS`, 5000).
    pub debounce: Duration,
    pub poll_interval: Duration,
}

/// What the HTTP front lets one client hold: a request that takes longer,
/// a connection over the cap, bodies past the byte budget wait or are
/// dropped, so no client can hold the service's workers or memory.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a connection may take to send a request's headers, counted
    /// from when it opened or its previous answer was sent — so also how
    /// long an idle keep-alive connection stays open
    /// (`SYNCBRIDGE_HEADER_TIMEOUT_S`, 10).
    pub header_timeout: Duration,
    /// Time from a request's headers to its answer, body included
    /// (`SYNCBRIDGE_REQUEST_TIMEOUT_S`, 30): a slower one gets 408 and its
    /// connection is closed.
    pub request_timeout: Duration,
    /// Connections served at once (`SYNCBRIDGE_MAX_CONNECTIONS`, 1024);
    /// past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Bytes of request bodies held in memory at once, from before a body
    /// is read until its answer (`SYNCBRIDGE_MAX_INFLIGHT_BYTES`, 32 MiB);
    /// past it, requests wait for room.
    pub max_inflight_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`; `None` starts the embedded cluster.
    pub database_url: Option<Secret>,
    pub listen: SocketAddr,
    /// The URL providers reach this service at (`SYNCBRIDGE_PUBLIC_URL`):
    /// with it, syncbridge keeps its own Keap REST-hook subscriptions.
    pub public_url: Option<String>,
    pub admin_token: Option<Secret>,
    /// The raw settings each provider parses its own section from
    /// (`providers::<name>::config`); every section is validated when the
    /// configuration is built.
    pub settings: Settings,
    /// `None` when `SYNCBRIDGE_SIGNATURE_TOLERANCE_S=0` (check disabled).
    pub signature_tolerance: Option<Duration>,
    pub max_body_bytes: usize,
    /// The HTTP server's limits (see [`HttpLimits`]).
    pub http: HttpLimits,
    pub log_format: LogFormat,
    /// Data directory of the embedded cluster (`SYNCBRIDGE_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    pub router: RouterConfig,
    /// Concurrent inbox transactions (`SYNCBRIDGE_INBOX_WRITERS`, 1). One
    /// writer makes the largest groups, which is fastest while CPU is the
    /// bound; more help when commits wait on a slow disk.
    pub inbox_writers: usize,
    /// Timeout of every outbound API call (`SYNCBRIDGE_PUSH_TIMEOUT_MS`,
    /// 10000).
    pub push_timeout: Duration,
    pub dispatcher: DispatcherConfig,
    pub fetcher: FetcherConfig,
    /// How often integrity runs with its safe repairs
    /// (`SYNCBRIDGE_INTEGRITY_INTERVAL_S`, 3600; 0: only on demand).
    pub integrity_every: Option<Duration>,
    /// A queue item (inbox, outbox, fetch) still waiting this long past its
    /// due time is reported stuck by `check` (`SYNCBRIDGE_STUCK_AFTER_S`,
    /// 900).
    pub stuck_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Raw key → value settings, before validation. `Debug` shows the keys
/// only: values may be secrets.
#[derive(Default, Clone)]
pub struct Settings(HashMap<String, String>);

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_struct("Settings").field("keys", &keys).finish()
    }
}

impl Settings {
    /// The process environment.
    pub fn from_env() -> Settings {
        Settings(std::env::vars().collect())
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Settings
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Settings(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A TOML file with the same keys as the environment (`DATABASE_URL =
    /// "..."`; lower-case keys are accepted too), under `self`, which wins.
    pub fn with_file(mut self, path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
        for (k, v) in table {
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    return Err(ConfigError::Toml {
                        path: path.to_owned(),
                        message: format!("{k}: only strings, numbers and booleans are allowed"),
                    })
                }
            };
            self.0.entry(k.to_ascii_uppercase()).or_insert(value);
        }
        Ok(self)
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_owned(), value.into());
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    pub(crate) fn secret(&self, key: &str) -> Option<Secret> {
        self.get(key).map(Secret::new)
    }

    pub(crate) fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_owned)
    }

    pub(crate) fn url(&self, key: &'static str, default: &str) -> Result<String, ConfigError> {
        let raw = self.get(key).unwrap_or(default);
        let parsed = reqwest::Url::parse(raw)
            .map_err(|e| invalid(key, format!("not a URL ({e}): expected e.g. {default}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(key, "must be an http:// or https:// URL"));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    pub(crate) fn number<T: std::str::FromStr>(
        &self,
        key: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| invalid(key, format!("{s:?} is not a whole number"))),
        }
    }
}

impl Config {
    /// The environment, plus `file` if given.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut settings = Settings::from_env();
        if let Some(path) = file {
            settings = settings.with_file(path)?;
        }
        Config::from_settings(&settings)
    }

    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        let listen_raw = s.get("SYNCBRIDGE_LISTEN").unwrap_or("127.0.0.1:8080");
        let listen = listen_raw.parse().map_err(|_| {
            invalid(
                "SYNCBRIDGE_LISTEN",
                format!("{listen_raw:?} is not host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080"),
            )
        })?;

        let tolerance_s: u64 = s.number("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", 300)?;
        let max_body_bytes: usize = s.number("SYNCBRIDGE_MAX_BODY_BYTES", 1_048_576)?;
        if max_body_bytes < 1024 {
            return Err(invalid(
                "SYNCBRIDGE_MAX_BODY_BYTES",
                "must be at least 1024; providers batch up to 1000 objects per delivery",
            ));
        }
        let max_inflight_bytes: usize = s.number("SYNCBRIDGE_MAX_INFLIGHT_BYTES", 32 << 20)?;
        if max_inflight_bytes < max_body_bytes {
            return Err(invalid(
                "SYNCBRIDGE_MAX_INFLIGHT_BYTES",
                "must be at least SYNCBRIDGE_MAX_BODY_BYTES, or no body of the largest size fits",
            ));
        }
        let seconds = |key: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match s.number(key, default)? {
                0 => Err(invalid(key, "must be at least 1 second")),
                n => Ok(Duration::from_secs(n)),
            }
        };
        let http = HttpLimits {
            header_timeout: seconds("SYNCBRIDGE_HEADER_TIMEOUT_S", 10)?,
            request_timeout: seconds("SYNCBRIDGE_REQUEST_TIMEOUT_S", 30)?,
            max_connections: match s.number("SYNCBRIDGE_MAX_CONNECTIONS", 1024usize)? {
                0 => return Err(invalid("SYNCBRIDGE_MAX_CONNECTIONS", "must be at least 1")),
                n => n,
            },
            max_inflight_bytes,
        };
        let batch_bytes: usize = s.number("SYNCBRIDGE_ROUTER_BATCH_BYTES", 4 << 20)?;
        if batch_bytes < 1024 {
            return Err(invalid(
                "SYNCBRIDGE_ROUTER_BATCH_BYTES",
                "must be at least 1024",
            ));
        }
        let log_format = match s.get("SYNCBRIDGE_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "SYNCBRIDGE_LOG_FORMAT",
                    format!("{other:?}: use text or json"),
                ))
            }
        };
        let max_attempts: i32 = s.number("SYNCBRIDGE_MAX_ATTEMPTS", 8)?;
        let fetch_debounce = Duration::from_millis(s.number("SYNCBRIDGE_FETCH_DEBOUNCE_MS", 5000)?);
        if max_attempts < 1 {
            return Err(invalid("SYNCBRIDGE_MAX_ATTEMPTS", "must be at least 1"));
        }
        let retry_base = Duration::from_millis(s.number("SYNCBRIDGE_RETRY_BASE_MS", 1000)?);

        crate::providers::check_settings(s)?;
        Ok(Config {
            database_url: s.secret("DATABASE_URL"),
            listen,
            public_url: match s.get("SYNCBRIDGE_PUBLIC_URL") {
                Some(_) => Some(
                    s.url("SYNCBRIDGE_PUBLIC_URL", "https://sync.example.com")?
                        .trim_end_matches('/')
                        .to_owned(),
                ),
                None => None,
            },
            admin_token: s.secret("SYNCBRIDGE_ADMIN_TOKEN"),
            settings: s.clone(),
            signature_tolerance: (tolerance_s > 0).then(|| Duration::from_secs(tolerance_s)),
            max_body_bytes,
            http,
            log_format,
            data_dir: s.get("SYNCBRIDGE_DATA_DIR").map(PathBuf::from),
            inbox_writers: match s.number("SYNCBRIDGE_INBOX_WRITERS", 1usize)? {
                0 => return Err(invalid("SYNCBRIDGE_INBOX_WRITERS", "must be at least 1")),
                n => n,
            },
            push_timeout: Duration::from_millis(s.number("SYNCBRIDGE_PUSH_TIMEOUT_MS", 10_000)?),
            integrity_every: match s.number("SYNCBRIDGE_INTEGRITY_INTERVAL_S", 3600u64)? {
                0 => None,
                n => Some(Duration::from_secs(n)),
            },
            stuck_after: Duration::from_secs(s.number("SYNCBRIDGE_STUCK_AFTER_S", 900u64)?),
            dispatcher: DispatcherConfig {
                retry: RetryPolicy {
                    max_attempts: s.number("SYNCBRIDGE_PUSH_MAX_ATTEMPTS", 8)?,
                    base: retry_base,
                },
                batch_size: 64,
                poll_interval: Duration::from_millis(500),
            },
            fetcher: FetcherConfig {
                retry: RetryPolicy {
                    max_attempts,
                    base: retry_base,
                },
                debounce: fetch_debounce,
                poll_interval: Duration::from_millis(500),
            },
            router: RouterConfig {
                retry: RetryPolicy {
                    max_attempts,
                    base: retry_base,
                },
                batch_size: s.number("SYNCBRIDGE_ROUTER_BATCH", 256)?,
                batch_bytes,
                workers: match s.number("SYNCBRIDGE_ROUTER_WORKERS", 3usize)? {
                    0 => return Err(invalid("SYNCBRIDGE_ROUTER_WORKERS", "must be at least 1")),
                    n => n,
                },
                poll_interval: Duration::from_millis(500),
                fetch_debounce,
            },
        })
    }
}

pub(crate) fn whsec(s: &Settings, key: &'static str) -> Result<Option<HmacKey>, ConfigError> {
    s.get(key)
        .map(|raw| {
            HmacKey::from_whsec(raw).ok_or_else(|| {
                invalid(
                    key,
                    "expected a Standard Webhooks secret: whsec_ followed by base64, \
                     exactly as the provider shows it",
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.signature_tolerance, Some(Duration::from_secs(300)));
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert!(c.database_url.is_none());
    }

    #[test]
    fn errors_name_the_variable_and_never_echo_secrets() {
        let s = Settings::from_pairs([("OPENPHONE_WEBHOOK_KEY", "s3cr3t!!not-base64")]);
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("OPENPHONE_WEBHOOK_KEY"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");

        let s = Settings::from_pairs([("RESMAN_WEBHOOK_SECRET", "abc")]);
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("whsec_"), "{e}");

        let s = Settings::from_pairs([("SYNCBRIDGE_LISTEN", "nowhere")]);
        assert!(Config::from_settings(&s).is_err());
        let s = Settings::from_pairs([("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "-1")]);
        assert!(Config::from_settings(&s).is_err());
        let s = Settings::from_pairs([("OPENPHONE_API_URL", "ftp://x")]);
        assert!(Config::from_settings(&s).is_err());
    }

    #[test]
    fn zero_tolerance_disables_and_debug_redacts() {
        let s = Settings::from_pairs([
            ("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "0"),
            ("SYNCBRIDGE_ADMIN_TOKEN", "tok-123"),
            ("DATABASE_URL", "postgres://u:pw@h/db"),
        ]);
        let c = Config::from_settings(&s).unwrap();
        assert_eq!(c.signature_tolerance, None);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("tok-123") && !dbg.contains("pw@"), "{dbg}");
        assert!(c.admin_token.unwrap().matches("tok-123"));
    }

    #[test]
    fn toml_file_under_env() {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "syncbridge_listen = \"0.0.0.0:9000\"\nSYNCBRIDGE_MAX_BODY_BYTES = 4096\n",
        )
        .unwrap();
        let s = Settings::from_pairs([("SYNCBRIDGE_MAX_BODY_BYTES", "8192")])
            .with_file(&path)
            .unwrap();
        let c = Config::from_settings(&s).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.max_body_bytes, 8192);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

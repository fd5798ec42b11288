//! The D1 replica's section of the configuration: the Cloudflare API, the
//! database, and how fast it may be called.

use std::time::Duration;

use crate::config::{invalid, ConfigError, Secret, Settings};
use crate::worker::RetryPolicy;

#[derive(Debug, Clone)]
pub struct D1Config {
    pub api_url: String,
    pub account_id: Option<String>,
    pub database_id: Option<String>,
    pub api_token: Option<Secret>,
    /// Requests per minute to the D1 API (`D1_API_RATE_PER_MIN`, 200:
    /// 1,000 per 5 minutes, under Cloudflare's 1,200 per token).
    pub rate_per_min: u32,
    /// How a failed request (5xx, timeout, 429) is retried before the job
    /// records the error (`D1_MAX_ATTEMPTS`, 5; `D1_RETRY_BASE_MS`, 500).
    pub retry: RetryPolicy,
    /// How often e-mails are pulled from D1
    /// (`SYNCBRIDGE_D1_PULL_INTERVAL_S`, 300; 0: only on demand).
    pub pull_every: Option<Duration>,
    /// How often the reconciliation walks the pushed tables
    /// (`SYNCBRIDGE_D1_PUSH_INTERVAL_S`, 600; 0: only on demand).
    pub push_every: Option<Duration>,
    /// Counts of a table in Postgres and D1 this far apart are not a
    /// finding by themselves (`SYNCBRIDGE_D1_COUNT_TOLERANCE`, 50).
    pub count_tolerance: u64,
}

impl D1Config {
    pub fn from_settings(s: &Settings) -> Result<D1Config, ConfigError> {
        let id = |key: &'static str| -> Result<Option<String>, ConfigError> {
            match s.string(key) {
                Some(v) if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => Err(
                    invalid(key, "must be a Cloudflare id (letters, digits and dashes)"),
                ),
                other => Ok(other),
            }
        };
        Ok(D1Config {
            api_url: s.url("D1_API_URL", "https://api.cloudflare.com/client/v4")?,
            account_id: id("D1_ACCOUNT_ID")?,
            database_id: id("D1_DATABASE_ID")?,
            api_token: s.secret("D1_API_TOKEN"),
            rate_per_min: match s.number("D1_API_RATE_PER_MIN", 200u32)? {
                n @ 1..=240 => n,
                _ => {
                    return Err(invalid(
                        "D1_API_RATE_PER_MIN",
                        "must be between 1 and 240 (Cloudflare allows 1,200 per 5 minutes)",
                    ))
                }
            },
            retry: RetryPolicy {
                max_attempts: match s.number("D1_MAX_ATTEMPTS", 5i32)? {
                    n @ 1..=20 => n,
                    _ => return Err(invalid("D1_MAX_ATTEMPTS", "must be between 1 and 20")),
                },
                base: Duration::from_millis(s.number("D1_RETRY_BASE_MS", 500u64)?),
            },
            pull_every: match s.number("SYNCBRIDGE_D1_PULL_INTERVAL_S", 300u64)? {
                0 => None,
                n => Some(Duration::from_secs(n)),
            },
            push_every: match s.number("SYNCBRIDGE_D1_PUSH_INTERVAL_S", 600u64)? {
                0 => None,
                n => Some(Duration::from_secs(n)),
            },
            count_tolerance: s.number("SYNCBRIDGE_D1_COUNT_TOLERANCE", 50u64)?,
        })
    }

    /// Why the replica cannot run, if it cannot.
    pub fn missing(&self) -> Option<&'static str> {
        match (&self.account_id, &self.database_id, &self.api_token) {
            (Some(_), Some(_), Some(_)) => None,
            _ => Some(
                "the D1 replica is disabled: set D1_ACCOUNT_ID, D1_DATABASE_ID and D1_API_TOKEN",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_limits_are_checked() {
        for (k, v) in [
            ("D1_ACCOUNT_ID", "../x"),
            ("D1_DATABASE_ID", "a b"),
            ("D1_API_RATE_PER_MIN", "241"),
            ("D1_API_URL", "ftp://x"),
        ] {
            let e = D1Config::from_settings(&Settings::from_pairs([(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(k), "{e}");
        }
        let c = D1Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(c.rate_per_min, 200);
        assert!(c.missing().is_some());
    }
}

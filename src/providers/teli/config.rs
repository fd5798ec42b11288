//! Teli's section of the configuration: the API, the organisation whose
//! calls are pulled, and how fast.

use std::time::Duration;

use crate::config::{invalid, ConfigError, Secret, Settings};
use crate::worker::RetryPolicy;

#[derive(Debug, Clone)]
pub struct TeliConfig {
    pub api_key: Option<Secret>,
    pub api_url: String,
    pub organization_id: Option<String>,
    /// Sent as `user_id` when set (Teli asks it of non-admin users).
    pub user_id: Option<String>,
    /// Requests per second to the Teli API (`TELI_API_RATE`, 5).
    pub api_rate: u32,
    /// Calls per list page (`TELI_PAGE_SIZE`, 100: Teli's maximum).
    pub page_size: u32,
    /// The list's "after" and "before" date filters
    /// (`TELI_AFTER_PARAM`, `TELI_BEFORE_PARAM`: `start_date`, `end_date`;
    /// Teli documents what they do but not their names).
    pub after_param: String,
    pub before_param: String,
    /// How a failed request (5xx, timeout, 429) is retried before the run
    /// records the error (`TELI_MAX_ATTEMPTS`, 5; `TELI_RETRY_BASE_MS`, 500).
    pub retry: RetryPolicy,
}

impl TeliConfig {
    pub fn from_settings(s: &Settings) -> Result<TeliConfig, ConfigError> {
        let param = |key: &'static str, default: &str| -> Result<String, ConfigError> {
            let v = s.get(key).unwrap_or(default);
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            {
                return Err(invalid(
                    key,
                    "must be a query parameter name ([A-Za-z0-9_.-])",
                ));
            }
            Ok(v.to_owned())
        };
        Ok(TeliConfig {
            api_key: s.secret("TELI_API_KEY"),
            api_url: s.url("TELI_API_URL", "https://api.teli.ai")?,
            organization_id: s.string("TELI_ORGANIZATION_ID"),
            user_id: s.string("TELI_USER_ID"),
            api_rate: match s.number("TELI_API_RATE", 5u32)? {
                0 => return Err(invalid("TELI_API_RATE", "must be at least 1")),
                n => n,
            },
            page_size: match s.number("TELI_PAGE_SIZE", 100u32)? {
                n @ 1..=100 => n,
                _ => return Err(invalid("TELI_PAGE_SIZE", "must be between 1 and 100")),
            },
            after_param: param("TELI_AFTER_PARAM", "start_date")?,
            before_param: param("TELI_BEFORE_PARAM", "end_date")?,
            retry: RetryPolicy {
                max_attempts: match s.number("TELI_MAX_ATTEMPTS", 5i32)? {
                    n @ 1..=20 => n,
                    _ => return Err(invalid("TELI_MAX_ATTEMPTS", "must be between 1 and 20")),
                },
                base: Duration::from_millis(s.number("TELI_RETRY_BASE_MS", 500u64)?),
            },
        })
    }

    /// Why the pull cannot run, if it cannot.
    pub fn missing(&self) -> Option<&'static str> {
        match (&self.api_key, &self.organization_id) {
            (Some(_), Some(_)) => None,
            _ => Some("the Teli pull is disabled: set TELI_API_KEY and TELI_ORGANIZATION_ID"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        for (k, v) in [
            ("TELI_PAGE_SIZE", "101"),
            ("TELI_API_RATE", "0"),
            ("TELI_AFTER_PARAM", "a&b"),
            ("TELI_API_URL", "ftp://x"),
        ] {
            let s = Settings::from_pairs([(k, v)]);
            let e = TeliConfig::from_settings(&s).unwrap_err().to_string();
            assert!(e.starts_with(k), "{e}");
        }
        let c = TeliConfig::from_settings(&Settings::default()).unwrap();
        assert_eq!((c.page_size, c.api_rate), (100, 5));
        assert_eq!(
            (c.after_param.as_str(), c.before_param.as_str()),
            ("start_date", "end_date")
        );
        assert!(c.missing().is_some());
    }
}

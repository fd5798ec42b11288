//! ResMan's section of the configuration: the relay's notification secret
//! and the API credentials, parsed from the settings and validated at
//! start. (Per-property settings live in `resman_integration`.)

use std::time::Duration;

use crate::config::{invalid, whsec, ConfigError, Secret, Settings};
use crate::providers::signature::HmacKey;
use crate::worker::RetryPolicy;

#[derive(Debug, Clone)]
pub struct ResManConfig {
    pub webhook_secret: Option<HmacKey>,
    pub api_url: String,
    pub legacy_api_url: String,
    pub integration_partner_id: Option<String>,
    pub api_key: Option<Secret>,
    /// The account a property's integration uses unless its
    /// `api_credentials` name another (`account_id`).
    pub account_id: Option<String>,
    /// Requests per second to ResMan (`RESMAN_API_RATE`, 2; ResMan
    /// publishes no limit).
    pub api_rate: u32,
    /// How a failed read (5xx, timeout, 429) is retried in line
    /// (`RESMAN_MAX_ATTEMPTS`, 4; `RESMAN_RETRY_BASE_MS`, 500). A lead
    /// POST is never retried in line: the dispatcher retries it, after a
    /// search for what the first attempt may have created.
    pub retry: RetryPolicy,
    /// How often a `realtime` property is polled
    /// (`SYNCBRIDGE_RESMAN_POLL_INTERVAL_S`, 60; `hourly` and `daily` are
    /// what they say).
    pub poll_every: Duration,
    /// How far back each poll reaches past its cursor
    /// (`SYNCBRIDGE_RESMAN_POLL_OVERLAP_S`, 300).
    pub poll_overlap: Duration,
    /// Consecutive failures after which a property's integration shows
    /// `error` (`SYNCBRIDGE_RESMAN_ERROR_THRESHOLD`, 5).
    pub error_threshold: i32,
}

impl ResManConfig {
    pub fn from_settings(s: &Settings) -> Result<ResManConfig, ConfigError> {
        Ok(ResManConfig {
            webhook_secret: whsec(s, "RESMAN_WEBHOOK_SECRET")?,
            api_url: s.url("RESMAN_API_URL", "https://partners-api.myresman.com")?,
            legacy_api_url: s.url("RESMAN_LEGACY_API_URL", "https://api.myresman.com")?,
            integration_partner_id: s.string("RESMAN_INTEGRATION_PARTNER_ID"),
            api_key: s.secret("RESMAN_API_KEY"),
            account_id: s.string("RESMAN_ACCOUNT_ID"),
            api_rate: match s.number("RESMAN_API_RATE", 2u32)? {
                0 => return Err(invalid("RESMAN_API_RATE", "must be at least 1")),
                n => n,
            },
            retry: RetryPolicy {
                max_attempts: match s.number("RESMAN_MAX_ATTEMPTS", 4i32)? {
                    n @ 1..=20 => n,
                    _ => return Err(invalid("RESMAN_MAX_ATTEMPTS", "must be between 1 and 20")),
                },
                base: Duration::from_millis(s.number("RESMAN_RETRY_BASE_MS", 500u64)?),
            },
            poll_every: match s.number("SYNCBRIDGE_RESMAN_POLL_INTERVAL_S", 60u64)? {
                0 => {
                    return Err(invalid(
                        "SYNCBRIDGE_RESMAN_POLL_INTERVAL_S",
                        "must be at least 1 (pause a property's integration to stop its polls)",
                    ))
                }
                n => Duration::from_secs(n),
            },
            poll_overlap: Duration::from_secs(
                s.number("SYNCBRIDGE_RESMAN_POLL_OVERLAP_S", 300u64)?,
            ),
            error_threshold: match s.number("SYNCBRIDGE_RESMAN_ERROR_THRESHOLD", 5i32)? {
                n @ 1.. => n,
                _ => {
                    return Err(invalid(
                        "SYNCBRIDGE_RESMAN_ERROR_THRESHOLD",
                        "must be at least 1",
                    ))
                }
            },
        })
    }

    /// Why the API side (pushes and polls) cannot run, if it cannot.
    pub fn api_missing(&self) -> Option<&'static str> {
        match (&self.integration_partner_id, &self.api_key) {
            (Some(_), Some(_)) => None,
            _ => Some("ResMan's API is not configured: set RESMAN_INTEGRATION_PARTNER_ID and RESMAN_API_KEY"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_must_be_a_standard_webhooks_one() {
        let s = Settings::from_pairs([("RESMAN_WEBHOOK_SECRET", "abc")]);
        let e = ResManConfig::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("whsec_"), "{e}");
    }
}

//! Keap's section of the configuration: the hook URL token and the API,
//! parsed from the settings and validated at start.

use std::time::Duration;

use crate::config::{invalid, ConfigError, Secret, Settings};

#[derive(Debug, Clone)]
pub struct KeapConfig {
    pub webhook_token: Option<Secret>,
    pub api_key: Option<Secret>,
    pub api_url: String,
    /// Requests per minute to the Keap API (`KEAP_API_RATE_PER_MIN`, 240:
    /// one every 250 ms, which also keeps under the 5/s spike limit).
    pub api_rate_per_min: u32,
    /// How long hints for one object are collected before it is fetched
    /// once (`SYNCBRIDGE_FETCH_DEBOUNCE_MS`, 5000).
    pub fetch_debounce: Duration,
}

impl KeapConfig {
    pub fn from_settings(s: &Settings) -> Result<KeapConfig, ConfigError> {
        Ok(KeapConfig {
            webhook_token: s.secret("KEAP_WEBHOOK_TOKEN"),
            api_key: s.secret("KEAP_API_KEY"),
            api_url: s.url("KEAP_API_URL", "https://api.infusionsoft.com/crm/rest/v1")?,
            api_rate_per_min: match s.number("KEAP_API_RATE_PER_MIN", 240u32)? {
                0 => return Err(invalid("KEAP_API_RATE_PER_MIN", "must be at least 1")),
                n => n,
            },
            fetch_debounce: Duration::from_millis(s.number("SYNCBRIDGE_FETCH_DEBOUNCE_MS", 5000)?),
        })
    }
}

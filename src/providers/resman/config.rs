//! ResMan's section of the configuration: the relay's notification secret
//! and the API credentials, parsed from the settings and validated at
//! start. (Per-property settings live in `resman_integration`.)

use crate::config::{whsec, ConfigError, Secret, Settings};
use crate::providers::signature::HmacKey;

#[derive(Debug, Clone)]
pub struct ResManConfig {
    pub webhook_secret: Option<HmacKey>,
    pub api_url: String,
    pub legacy_api_url: String,
    pub integration_partner_id: Option<String>,
    pub api_key: Option<Secret>,
    pub account_id: Option<String>,
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
        })
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

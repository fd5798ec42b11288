//! OpenPhone's section of the configuration: its webhook keys (legacy and
//! beta) and its API, parsed from the settings and validated at start.

use crate::config::{invalid, whsec, ConfigError, Secret, Settings};
use crate::providers::signature::HmacKey;

#[derive(Debug, Clone)]
pub struct OpenPhoneConfig {
    pub webhook_key: Option<HmacKey>,
    pub webhook_secret: Option<HmacKey>,
    pub api_key: Option<Secret>,
    pub api_url: String,
    /// Requests per second to the API (`OPENPHONE_API_RATE`, 10: OpenPhone's
    /// documented limit per key; raise it only with a higher quota).
    pub api_rate: u32,
}

impl OpenPhoneConfig {
    pub fn from_settings(s: &Settings) -> Result<OpenPhoneConfig, ConfigError> {
        let webhook_key = s
            .get("OPENPHONE_WEBHOOK_KEY")
            .map(|raw| {
                HmacKey::from_base64(raw).ok_or_else(|| {
                    invalid(
                        "OPENPHONE_WEBHOOK_KEY",
                        "not base64: copy the signing secret exactly as OpenPhone shows it \
                         (Settings → Webhooks → the webhook → Reveal signing secret)",
                    )
                })
            })
            .transpose()?;
        Ok(OpenPhoneConfig {
            webhook_key,
            webhook_secret: whsec(s, "OPENPHONE_WEBHOOK_SECRET")?,
            api_key: s.secret("OPENPHONE_API_KEY"),
            api_url: s.url("OPENPHONE_API_URL", "https://api.openphone.com")?,
            api_rate: match s.number("OPENPHONE_API_RATE", 10u32)? {
                0 => return Err(invalid("OPENPHONE_API_RATE", "must be at least 1")),
                n => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable_without_the_secret() {
        let c = OpenPhoneConfig::from_settings(&Settings::default()).unwrap();
        assert_eq!(c.api_url, "https://api.openphone.com");
        assert_eq!(c.api_rate, 10);
        let s = Settings::from_pairs([("OPENPHONE_WEBHOOK_KEY", "s3cr3t!!not-base64")]);
        let e = OpenPhoneConfig::from_settings(&s).unwrap_err().to_string();
        assert!(e.starts_with("OPENPHONE_WEBHOOK_KEY"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let s = Settings::from_pairs([("OPENPHONE_API_URL", "ftp://x")]);
        assert!(OpenPhoneConfig::from_settings(&s).is_err());
    }
}

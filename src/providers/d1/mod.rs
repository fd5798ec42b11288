//! The Cloudflare D1 edge replica (seed 002, SPEC §4.5). This part: the D1
//! API client (`api`), its wire format and the statement chunking that
//! keeps within D1's limits (`wire`), and the configuration. The jobs
//! (prospects, campaigns and mailboxes out; e-mails in; integrity) build on
//! them.

pub mod api;
pub mod config;
pub mod wire;

use super::{Provider, Reject, Verified, WebhookRequest};
use crate::config::Config;
use crate::domain::ProviderName;

pub struct D1 {
    pub api: Option<api::D1Api>,
}

impl D1 {
    pub fn from_config(c: &Config) -> Result<D1, &'static str> {
        // Validated when the configuration was built (check_settings).
        let config = config::D1Config::from_settings(&c.settings)
            .map_err(|_| "the D1 configuration is invalid")?;
        if let Some(why) = config.missing() {
            return Err(why);
        }
        Ok(D1 {
            api: api::D1Api::new(&config, c.push_timeout),
        })
    }
}

impl Provider for D1 {
    fn name(&self) -> ProviderName {
        ProviderName::D1
    }

    /// D1 sends no webhooks.
    fn verify(&self, _req: &WebhookRequest<'_>) -> Result<Verified, Reject> {
        Err(Reject::Unauthorized("D1 sends no webhooks".into()))
    }
}

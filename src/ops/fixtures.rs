//! Recorded webhook deliveries (SPEC §6): one JSON file each,
//! `{"provider","method","path","headers","body","received_at"}`, plus the
//! optional `description` and `expect` the shipped fixtures carry. Bodies
//! that are not UTF-8 are written as `body_base64` instead of `body`.
//! Export and replay round-trip the body bytes and headers exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{parse_provider_time, ProviderName};

/// The literal placeholder Keap fixture paths carry instead of the secret
/// token; replay substitutes the configured `KEAP_WEBHOOK_TOKEN`.
pub use crate::providers::TOKEN_PLACEHOLDER;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fixture {
    pub provider: String,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// What replaying a fixture as recorded must answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub outcome: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a fixture: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Fixture {
    /// The raw body bytes as they were sent.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.body, &self.body_base64) {
            (Some(b), None) => Ok(b.as_bytes().to_vec()),
            (None, Some(b)) => STANDARD
                .decode(b)
                .map_err(|e| format!("body_base64 is not base64: {e}")),
            (None, None) => Ok(Vec::new()),
            (Some(_), Some(_)) => Err("has both body and body_base64".into()),
        }
    }

    pub fn provider(&self) -> Option<ProviderName> {
        ProviderName::parse(&self.provider)
    }

    pub fn received_at(&self) -> Option<DateTime<Utc>> {
        parse_provider_time(&self.received_at)
    }

    /// A fixture for a stored delivery.
    pub fn from_stored(
        provider: ProviderName,
        event_type: Option<&str>,
        headers: BTreeMap<String, String>,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Fixture {
        let (body, body_base64) = match std::str::from_utf8(body) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (None, Some(STANDARD.encode(body))),
        };
        Fixture {
            provider: provider.as_str().to_owned(),
            method: "POST".into(),
            path: crate::providers::plugin(provider)
                .and_then(|p| p.replay_path(event_type))
                .unwrap_or_else(|| webhook_path(provider)),
            headers,
            body,
            body_base64,
            received_at: received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            description: None,
            expect: None,
        }
    }

    /// The file form: pretty JSON with a trailing newline.
    pub fn to_file_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The route a provider's webhooks arrive on (its registry line).
pub fn webhook_path(provider: ProviderName) -> String {
    crate::providers::plugin(provider)
        .and_then(|p| p.webhook_path())
        .unwrap_or_else(|| format!("/webhooks/{provider}"))
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_owned(),
        source,
    };
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io)? {
            collect(&entry.map_err(io)?.path(), out)?;
        }
    } else if path.extension().is_some_and(|e| e == "json") || path.is_file() {
        // A folder's golden final state is not a delivery.
        let golden = path.file_name().is_some_and(|n| n == super::state::FILE);
        if path.extension().is_some_and(|e| e == "json") && !golden {
            out.push(path.to_owned());
        }
    } else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or folder",
        )));
    }
    Ok(())
}

/// Loads fixture files and folders (recursively, `*.json`), in the order
/// they were received (`received_at`, then file name): replaying a folder
/// reproduces duplicates and out-of-order arrivals as they happened.
pub fn load(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Fixture)>, FixtureError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| FixtureError::Io {
            path: path.clone(),
            source,
        })?;
        let f: Fixture = serde_json::from_str(&text).map_err(|e| FixtureError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if f.provider().is_none() {
            return Err(FixtureError::Invalid {
                path,
                message: format!("unknown provider {:?}", f.provider),
            });
        }
        if let Err(message) = f.body_bytes() {
            return Err(FixtureError::Invalid { path, message });
        }
        out.push((path, f));
    }
    out.sort_by(|(pa, a), (pb, b)| (a.received_at(), pa).cmp(&(b.received_at(), pb)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_round_trip_keeps_bytes_and_falls_back_to_base64() {
        let at = Utc::now();
        let h = BTreeMap::from([("openphone-signature".to_owned(), "hmac;1;1;x".to_owned())]);
        let f = Fixture::from_stored(ProviderName::OpenPhone, None, h.clone(), b"{\"a\":1}", at);
        let back: Fixture = serde_json::from_str(&f.to_file_text()).unwrap();
        assert_eq!(back.body_bytes().unwrap(), b"{\"a\":1}");
        assert_eq!(back.headers, h);
        let bin = Fixture::from_stored(ProviderName::Keap, None, h, &[0xff, 0x00, 0x7b], at);
        assert!(bin.body.is_none());
        assert_eq!(bin.body_bytes().unwrap(), vec![0xff, 0x00, 0x7b]);
        assert_eq!(bin.path, "/webhooks/keap/{token}");
        // A delivery its pull stored replays to the pulled route, a
        // notification to the webhook.
        let polled = Fixture::from_stored(
            ProviderName::ResMan,
            Some("prospect"),
            BTreeMap::new(),
            b"{}",
            at,
        );
        assert_eq!(polled.path, "/api/resman/deliveries");
        let note = Fixture::from_stored(
            ProviderName::ResMan,
            Some("prospect.updated"),
            BTreeMap::new(),
            b"{}",
            at,
        );
        assert_eq!(note.path, "/webhooks/resman");
    }

    #[test]
    fn shipped_fixtures_load_in_arrival_order() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
        let all = load(&[dir]).unwrap();
        assert!(all.len() >= 20, "{}", all.len());
        let pos = |name: &str| all.iter().position(|(p, _)| p.ends_with(name)).unwrap();
        assert!(
            pos("openphone/message-received.json")
                < pos("openphone/message-received-duplicate.json")
        );
        assert!(
            pos("openphone/contact-updated.json") < pos("openphone/contact-updated-older.json")
        );
        for (p, f) in &all {
            assert!(f.expect.is_some(), "{} has no expect", p.display());
        }
    }
}

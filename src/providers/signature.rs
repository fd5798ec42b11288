//! The HMAC signature schemes providers sign webhooks with. Everything here
//! works on the raw body bytes, before any parsing, and compares digests in
//! constant time through `hmac::Mac::verify_slice`, never with `==`.
//!
//! - OpenPhone legacy: `openphone-signature: hmac;1;<ts>;<base64 sig>`, the
//!   HMAC-SHA256 of `<ts>.<body>` under the base64-decoded signing key; a
//!   header may carry several comma-separated signatures.
//! - Standard Webhooks (Quo beta webhooks, ResMan relay): `webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<b64> v1,<b64> …`, the
//!   HMAC-SHA256 of `<id>.<ts>.<body>` under the `whsec_` secret.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The messages are safe to return to the
/// sender: they never contain the key or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header {0}")]
    Missing(&'static str),
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("signature timestamp is outside the {0}s tolerance")]
    Expired(u64),
    #[error("signature does not match")]
    Mismatch,
}

/// An HMAC key: raw bytes, never printed.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([redacted])")
    }
}

impl HmacKey {
    /// OpenPhone's signing key as the app shows it: standard base64.
    pub fn from_base64(raw: &str) -> Option<HmacKey> {
        let bytes = STANDARD.decode(raw.trim()).ok()?;
        (!bytes.is_empty()).then_some(HmacKey(bytes))
    }

    /// A Standard Webhooks secret: `whsec_` followed by standard base64.
    pub fn from_whsec(raw: &str) -> Option<HmacKey> {
        let b64 = raw.trim().strip_prefix("whsec_")?;
        HmacKey::from_base64(b64)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

fn within_tolerance(
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    let Some(tol) = tolerance else { return Ok(()) };
    let skew = (now - signed_at).num_milliseconds().unsigned_abs();
    if u128::from(skew) > tol.as_millis() {
        return Err(SignatureError::Expired(tol.as_secs()));
    }
    Ok(())
}

/// An OpenPhone legacy timestamp: 13 or more digits are milliseconds,
/// fewer are seconds (PROVIDERS.md Part A).
fn parse_openphone_ts(ts: &str) -> Option<DateTime<Utc>> {
    if ts.is_empty() || ts.len() > 16 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = ts.parse().ok()?;
    if ts.len() >= 13 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

/// Verifies an `openphone-signature` header. Accepts when any of its
/// comma-separated signatures matches and is within the tolerance
/// (`None` disables the time check).
pub fn verify_openphone_legacy(
    key: &HmacKey,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    let mut last = SignatureError::Malformed("expected hmac;1;<timestamp>;<signature>");
    for part in header.split(',') {
        let fields: Vec<&str> = part.trim().split(';').collect();
        let [scheme, version, ts, sig] = fields[..] else {
            continue;
        };
        if scheme != "hmac" || version != "1" {
            continue;
        }
        let Some(signed_at) = parse_openphone_ts(ts) else {
            last = SignatureError::Malformed("timestamp is not a number");
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            last = SignatureError::Malformed("signature is not base64");
            continue;
        };
        let mut mac = key.mac();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_err() {
            last = SignatureError::Mismatch;
            continue;
        }
        return within_tolerance(signed_at, now, tolerance);
    }
    Err(last)
}

/// The `openphone-signature` value for `body` signed at `ts_millis`.
pub fn sign_openphone_legacy(key: &HmacKey, ts_millis: i64, body: &[u8]) -> String {
    let ts = ts_millis.to_string();
    let mut mac = key.mac();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    format!("hmac;1;{ts};{sig}")
}

/// The three Standard Webhooks headers of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct StandardHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Verifies a Standard Webhooks delivery: any `v1,` entry of the
/// space-separated signature list may match; other versions (`v1a,`) are
/// skipped. The id and timestamp must not contain `.`.
pub fn verify_standard(
    key: &HmacKey,
    h: StandardHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    if h.id.is_empty() || h.id.contains('.') || h.id.len() > 256 {
        return Err(SignatureError::Malformed("webhook-id"));
    }
    let signed_at = (!h.timestamp.is_empty() && h.timestamp.len() <= 12)
        .then(|| h.timestamp.parse::<i64>().ok())
        .flatten()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or(SignatureError::Malformed("webhook-timestamp"))?;
    within_tolerance(signed_at, now, tolerance)?;

    let mut found_v1 = false;
    for entry in h.signature.split(' ').filter(|s| !s.is_empty()) {
        let Some(("v1", sig)) = entry.split_once(',') else {
            continue;
        };
        found_v1 = true;
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        let mut mac = key.mac();
        mac.update(h.id.as_bytes());
        mac.update(b".");
        mac.update(h.timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    if found_v1 {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::Malformed(
            "no v1 signature in webhook-signature",
        ))
    }
}

/// The `webhook-signature` value (`v1,<b64>`) for one delivery.
pub fn sign_standard(key: &HmacKey, id: &str, ts_secs: i64, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // PROVIDERS.md §1.7, self-computed legacy vector.
    const OP_KEY: &str = "bG9jYWwtdGVzdC1vcGVucGhvbmUtc2lnbmluZy1rZXktMzJiIQ==";
    const OP_BODY: &str = r#"{"id":"EVtest0001","object":"event","apiVersion":"v3","createdAt":"2024-05-29T16:26:40.000Z","type":"message.received","data":{"object":{"id":"ACtest0001","object":"message","from":"+15555550100","to":"+15555550101","direction":"incoming","text":"hi","status":"received","createdAt":"2024-05-29T16:26:39.500Z","userId":"UStest0001","phoneNumberId":"PNtest0001","conversationId":"CNtest0001"}}}"#;
    const OP_HEADER: &str = "hmac;1;1717000000000;YaXRDExVC78GrFrPLs3micLkrTzOB9NbsHWXahWdEoE=";

    fn at_millis(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn openphone_legacy_vector() {
        let key = HmacKey::from_base64(OP_KEY).unwrap();
        assert_eq!(
            sign_openphone_legacy(&key, 1_717_000_000_000, OP_BODY.as_bytes()),
            OP_HEADER
        );
        let now = at_millis(1_717_000_000_000 + 1_000);
        let tol = Some(Duration::from_secs(300));
        assert_eq!(
            verify_openphone_legacy(&key, OP_HEADER, OP_BODY.as_bytes(), now, tol),
            Ok(())
        );
    }

    #[test]
    fn openphone_legacy_rejections() {
        let key = HmacKey::from_base64(OP_KEY).unwrap();
        let tol = Some(Duration::from_secs(300));
        let now = at_millis(1_717_000_000_000);
        let tampered = OP_BODY.replace("\"hi\"", "\"ho\"");
        assert_eq!(
            verify_openphone_legacy(&key, OP_HEADER, tampered.as_bytes(), now, tol),
            Err(SignatureError::Mismatch)
        );
        let later = at_millis(1_717_000_000_000 + 301_000);
        assert_eq!(
            verify_openphone_legacy(&key, OP_HEADER, OP_BODY.as_bytes(), later, tol),
            Err(SignatureError::Expired(300))
        );
        // Tolerance disabled: an old signature still verifies.
        assert_eq!(
            verify_openphone_legacy(&key, OP_HEADER, OP_BODY.as_bytes(), later, None),
            Ok(())
        );
        let other = HmacKey::from_base64("d3Jvbmcta2V5").unwrap();
        assert_eq!(
            verify_openphone_legacy(&other, OP_HEADER, OP_BODY.as_bytes(), now, tol),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "hmac;1;abc;xyz",
            "sha1;1;1717000000000;AAAA",
            "hmac;1;1717000000000",
        ] {
            assert!(
                verify_openphone_legacy(&key, bad, OP_BODY.as_bytes(), now, tol).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn openphone_legacy_multiple_and_seconds() {
        let key = HmacKey::from_base64(OP_KEY).unwrap();
        let now = at_millis(1_717_000_000_000);
        let tol = Some(Duration::from_secs(300));
        let header = format!(
            "hmac;1;1717000000000;AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,{OP_HEADER}"
        );
        assert_eq!(
            verify_openphone_legacy(&key, &header, OP_BODY.as_bytes(), now, tol),
            Ok(())
        );
        // A 10-digit timestamp is seconds.
        let secs = {
            let mut mac = key.mac();
            mac.update(b"1717000000.");
            mac.update(OP_BODY.as_bytes());
            format!(
                "hmac;1;1717000000;{}",
                STANDARD.encode(mac.finalize().into_bytes())
            )
        };
        assert_eq!(
            verify_openphone_legacy(&key, &secs, OP_BODY.as_bytes(), now, tol),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        // PROVIDERS.md §6.1: the reference library's own test vector.
        let key = HmacKey::from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = sign_standard(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body);
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let h = StandardHeaders {
            id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            timestamp: "1649367553",
            signature: &sig,
        };
        let now = DateTime::from_timestamp(1_649_367_553 + 10, 0).unwrap();
        assert_eq!(
            verify_standard(&key, h, body, now, Some(Duration::from_secs(300))),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_quo_beta_vector() {
        // PROVIDERS.md §1.7, the self-computed beta vector.
        let key = HmacKey::from_whsec("whsec_bG9jYWwtcXVvLWJldGEtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFi")
            .unwrap();
        let body = br#"{"id":"EVlocal0001","apiVersion":"2026-03-30","createdAt":"2026-01-01T00:00:00.000Z","type":"message.received","data":{"resource":{"id":"ACmsglocal0001","text":"hello"},"context":{},"links":{"quo":null}}}"#;
        assert_eq!(
            sign_standard(&key, "msg_local_0001", 1_767_225_600, body),
            "v1,mu8d6tZaB9ka2urCnJpwTEBRBMtXz/F527EUJ524Wpo="
        );
    }

    #[test]
    fn standard_webhooks_rotation_and_rejections() {
        let key = HmacKey::from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let old = HmacKey::from_whsec("whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LTEyMzQ=").unwrap();
        let body = b"{}";
        let good = sign_standard(&key, "msg_1", 1_700_000_000, body);
        let stale = sign_standard(&old, "msg_1", 1_700_000_000, body);
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let tol = Some(Duration::from_secs(300));
        let list = format!("v1a,AAAA {stale} {good}");
        let h = |signature: &str| StandardHeaders {
            id: "msg_1",
            timestamp: "1700000000",
            signature: unsafe_static(signature),
        };
        assert_eq!(verify_standard(&key, h(&list), body, now, tol), Ok(()));
        assert_eq!(
            verify_standard(&key, h(&stale), body, now, tol),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_standard(&key, h("v1a,AAAA"), body, now, tol),
            Err(SignatureError::Malformed(_))
        ));
        let future = DateTime::from_timestamp(1_700_000_000 - 301, 0).unwrap();
        assert_eq!(
            verify_standard(&key, h(&good), body, future, tol),
            Err(SignatureError::Expired(300))
        );
        assert_eq!(
            verify_standard(&key, h(&good), b"{ }", now, tol),
            Err(SignatureError::Mismatch)
        );
    }

    // Test-only helper to build headers from owned strings in a closure.
    fn unsafe_static(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }

    #[test]
    fn keys_parse_and_redact() {
        assert!(HmacKey::from_whsec("C2FVsBQIhrscChlQIMV").is_none());
        assert!(HmacKey::from_base64("not base64!").is_none());
        let k = HmacKey::from_base64(OP_KEY).unwrap();
        assert_eq!(format!("{k:?}"), "HmacKey([redacted])");
    }
}

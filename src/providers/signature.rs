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

use axum::http::HeaderMap;
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

/// Signatures considered per delivery at most. Key rotation needs two or
/// three; more is refused before any HMAC is computed.
pub const MAX_SIGNATURES: usize = 8;
/// Bytes of one signature header (all its lines together) at most.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;

/// Every line of a signature header joined by `sep`, refused past
/// [`MAX_SIGNATURE_HEADER_BYTES`] before anything is copied. A header sent
/// twice is one list, as RFC 9110 §5.3 reads repeated field lines.
pub fn joined_header(
    values: &[&str],
    sep: &str,
    name: &'static str,
) -> Result<String, SignatureError> {
    let len: usize =
        values.iter().map(|v| v.len()).sum::<usize>() + sep.len() * values.len().saturating_sub(1);
    if len > MAX_SIGNATURE_HEADER_BYTES {
        return Err(SignatureError::Malformed(oversized(name)));
    }
    Ok(values.join(sep))
}

fn oversized(name: &'static str) -> &'static str {
    if name == "openphone-signature" {
        "openphone-signature is longer than 1024 bytes"
    } else {
        "webhook-signature is longer than 1024 bytes"
    }
}

/// The HMAC of one signed message, computed once and compared against as
/// many candidate signatures as the header carries (each comparison is a
/// clone of the finished state plus `verify_slice`, constant time: the
/// body is hashed once, not once per candidate).
struct SignedMessage(HmacSha256);

impl SignedMessage {
    fn new(key: &HmacKey, parts: &[&[u8]]) -> SignedMessage {
        metrics::counter!("syncbridge_signature_hmacs_total").increment(1);
        let mut mac = key.mac();
        for p in parts {
            mac.update(p);
        }
        SignedMessage(mac)
    }

    fn matches(&self, sig: &[u8]) -> bool {
        self.0.clone().verify_slice(sig).is_ok()
    }
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

/// Verifies an `openphone-signature` header (its lines joined by `,`).
/// Accepts when any of its comma-separated signatures matches and is
/// within the tolerance (`None` disables the time check).
///
/// Bounded work: at most [`MAX_SIGNATURES`] entries of a header of at most
/// [`MAX_SIGNATURE_HEADER_BYTES`]; every entry is parsed and its timestamp
/// checked before any HMAC, and the body is hashed once per distinct
/// timestamp (the signed message is `<ts>.<body>`), never per entry.
pub fn verify_openphone_legacy(
    key: &HmacKey,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    if header.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(SignatureError::Malformed(oversized("openphone-signature")));
    }
    let mut last = SignatureError::Malformed("expected hmac;1;<timestamp>;<signature>");
    let mut candidates: Vec<(&str, Vec<u8>)> = Vec::new();
    for (n, part) in header.split(',').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(SignatureError::Malformed(
                "more than 8 signatures in openphone-signature",
            ));
        }
        let mut fields = part.trim().split(';');
        let (Some(scheme), Some(version), Some(ts), Some(sig), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if scheme != "hmac" || version != "1" {
            continue;
        }
        let Some(signed_at) = parse_openphone_ts(ts) else {
            last = SignatureError::Malformed("timestamp is not a number");
            continue;
        };
        let Some(sig) = decode_digest(sig) else {
            last = SignatureError::Malformed("signature is not a base64 SHA-256 digest");
            continue;
        };
        if let Err(e) = within_tolerance(signed_at, now, tolerance) {
            last = e;
            continue;
        }
        candidates.push((ts, sig));
    }
    // One HMAC per distinct timestamp, in the order they came.
    let mut macs: Vec<(&str, SignedMessage)> = Vec::new();
    for (ts, sig) in &candidates {
        let i = match macs.iter().position(|(t, _)| t == ts) {
            Some(i) => i,
            None => {
                macs.push((ts, SignedMessage::new(key, &[ts.as_bytes(), b".", body])));
                macs.len() - 1
            }
        };
        if macs[i].1.matches(sig) {
            return Ok(());
        }
        last = SignatureError::Mismatch;
    }
    Err(last)
}

/// A base64 HMAC-SHA256 digest: 44 characters decoding to 32 bytes.
fn decode_digest(b64: &str) -> Option<Vec<u8>> {
    if b64.len() > 88 {
        return None;
    }
    let bytes = STANDARD.decode(b64).ok()?;
    (bytes.len() == 32).then_some(bytes)
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
    /// The signature list (several header lines joined by a space).
    pub signature: &'a str,
}

/// Verifies a Standard Webhooks delivery: any `v1,` entry of the
/// space-separated signature list may match; other versions (`v1a,`) are
/// skipped. The id and timestamp must not contain `.`.
///
/// Bounded work: the timestamp is checked before anything is hashed, the
/// list holds at most [`MAX_SIGNATURES`] entries in at most
/// [`MAX_SIGNATURE_HEADER_BYTES`], and the signed message
/// (`<id>.<ts>.<body>`) is hashed once whatever the number of entries.
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
    let signed_at = (!h.timestamp.is_empty()
        && h.timestamp.len() <= 12
        && h.timestamp.bytes().all(|b| b.is_ascii_digit()))
    .then(|| h.timestamp.parse::<i64>().ok())
    .flatten()
    .and_then(|s| DateTime::from_timestamp(s, 0))
    .ok_or(SignatureError::Malformed("webhook-timestamp"))?;
    within_tolerance(signed_at, now, tolerance)?;
    if h.signature.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(SignatureError::Malformed(oversized("webhook-signature")));
    }

    let mut candidates = Vec::new();
    let mut found_v1 = false;
    for (n, entry) in h.signature.split(' ').filter(|s| !s.is_empty()).enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(SignatureError::Malformed(
                "more than 8 signatures in webhook-signature",
            ));
        }
        let Some(("v1", sig)) = entry.split_once(',') else {
            continue;
        };
        found_v1 = true;
        if let Some(sig) = decode_digest(sig) {
            candidates.push(sig);
        }
    }
    if !found_v1 {
        return Err(SignatureError::Malformed(
            "no v1 signature in webhook-signature",
        ));
    }
    if candidates.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let signed = SignedMessage::new(
        key,
        &[h.id.as_bytes(), b".", h.timestamp.as_bytes(), b".", body],
    );
    if candidates.iter().any(|sig| signed.matches(sig)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A header that must appear once (or repeat one value), or why not.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(SignatureError::Missing(name))?;
    let first = first
        .to_str()
        .map_err(|_| SignatureError::Malformed(name))?;
    if values.any(|v| v.as_bytes() != first.as_bytes()) {
        return Err(SignatureError::Malformed(name));
    }
    Ok(first)
}

/// Every line of a header that may repeat, as text.
fn all<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Vec<&'h str>, SignatureError> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().map_err(|_| SignatureError::Malformed(name)))
        .collect::<Result<_, _>>()?;
    if values.is_empty() {
        return Err(SignatureError::Missing(name));
    }
    Ok(values)
}

/// [`verify_openphone_legacy`] on a request's headers: every
/// `openphone-signature` line is considered.
pub fn verify_openphone_headers(
    key: &HmacKey,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    let lines = all(headers, "openphone-signature")?;
    let header = joined_header(&lines, ",", "openphone-signature")?;
    verify_openphone_legacy(key, &header, body, now, tolerance)
}

/// [`verify_standard`] on a request's headers: `webhook-id` and
/// `webhook-timestamp` once, every `webhook-signature` line considered.
pub fn verify_standard_headers(
    key: &HmacKey,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Option<Duration>,
) -> Result<(), SignatureError> {
    let id = single(headers, "webhook-id")?;
    let timestamp = single(headers, "webhook-timestamp")?;
    let lines = all(headers, "webhook-signature")?;
    let signature = joined_header(&lines, " ", "webhook-signature")?;
    verify_standard(
        key,
        StandardHeaders {
            id,
            timestamp,
            signature: &signature,
        },
        body,
        now,
        tolerance,
    )
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
    fn signature_lists_are_bounded_before_any_hmac() {
        let key = HmacKey::from_base64(OP_KEY).unwrap();
        let now = at_millis(1_717_000_000_000);
        let tol = Some(Duration::from_secs(300));
        let body = OP_BODY.as_bytes();
        let entry = "hmac;1;1717000000000;AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let flood = vec![entry; 10_000].join(",");
        assert!(matches!(
            verify_openphone_legacy(&key, &flood, body, now, tol),
            Err(SignatureError::Malformed(m)) if m.contains("1024")
        ));
        let nine = ["hmac;1;1;A"; 9].join(",");
        assert!(matches!(
            verify_openphone_legacy(&key, &nine, body, now, tol),
            Err(SignatureError::Malformed(m)) if m.contains("more than 8")
        ));
        // Eight entries, the real one last: still found.
        let eight = format!("{},{OP_HEADER}", [entry; 7].join(","));
        assert_eq!(
            verify_openphone_legacy(&key, &eight, body, now, tol),
            Ok(())
        );

        let skey = HmacKey::from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let good = sign_standard(&skey, "msg_1", 1_700_000_000, b"{}");
        let snow = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let h = |sig: &str| StandardHeaders {
            id: "msg_1",
            timestamp: "1700000000",
            signature: unsafe_static(sig),
        };
        let flood = vec![good.as_str(); 10_000].join(" ");
        assert!(matches!(
            verify_standard(&skey, h(&flood), b"{}", snow, tol),
            Err(SignatureError::Malformed(_))
        ));
        let nine = ["v1,AA"; 9].join(" ");
        assert!(matches!(
            verify_standard(&skey, h(&nine), b"{}", snow, tol),
            Err(SignatureError::Malformed(m)) if m.contains("more than 8")
        ));
        // An expired timestamp is refused whatever the list holds.
        let later = DateTime::from_timestamp(1_700_000_000 + 301, 0).unwrap();
        assert_eq!(
            verify_standard(&skey, h(&good), b"{}", later, tol),
            Err(SignatureError::Expired(300))
        );
    }

    #[test]
    fn repeated_header_lines_are_one_list() {
        let key = HmacKey::from_base64(OP_KEY).unwrap();
        let now = at_millis(1_717_000_000_000);
        let tol = Some(Duration::from_secs(300));
        let mut h = HeaderMap::new();
        h.append(
            "openphone-signature",
            "hmac;1;1717000000000;AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                .parse()
                .unwrap(),
        );
        h.append("openphone-signature", OP_HEADER.parse().unwrap());
        assert_eq!(
            verify_openphone_headers(&key, &h, OP_BODY.as_bytes(), now, tol),
            Ok(())
        );

        let skey = HmacKey::from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let good = sign_standard(&skey, "msg_1", 1_700_000_000, b"{}");
        let snow = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", "1700000000".parse().unwrap());
        h.append("webhook-signature", "v1,AAAA".parse().unwrap());
        h.append("webhook-signature", good.parse().unwrap());
        assert_eq!(verify_standard_headers(&skey, &h, b"{}", snow, tol), Ok(()));
        // Two different ids: which message was signed is ambiguous.
        h.append("webhook-id", "msg_2".parse().unwrap());
        assert_eq!(
            verify_standard_headers(&skey, &h, b"{}", snow, tol),
            Err(SignatureError::Malformed("webhook-id"))
        );
    }

    #[test]
    fn keys_parse_and_redact() {
        assert!(HmacKey::from_whsec("C2FVsBQIhrscChlQIMV").is_none());
        assert!(HmacKey::from_base64("not base64!").is_none());
        let k = HmacKey::from_base64(OP_KEY).unwrap();
        assert_eq!(format!("{k:?}"), "HmacKey([redacted])");
    }
}

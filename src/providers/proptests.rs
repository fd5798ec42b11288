//! Property tests for every verifier and normaliser: random and mutated
//! inputs — the shipped fixtures with bytes flipped, inserted, cut,
//! re-signed so they get past the signature, and headers of every shape —
//! never panic, and whatever a verifier accepts its normaliser survives.
//!
//! `PROPTEST_CASES` sets the cases per target (2,000 by default, which CI
//! runs); raise it locally for a longer hunt.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use super::edge;
use super::signature::{self, HmacKey, StandardHeaders};
use super::{Registry, StoredEvent, Verified, WebhookRequest};
use crate::config::{Config, Settings};
use crate::domain::{parse_provider_time, DedupKey, E164Phone, ProviderName};

const OPENPHONE_KEY: &str = "bG9jYWwtdGVzdC1vcGVucGhvbmUtc2lnbmluZy1rZXktMzJiIQ==";
const OPENPHONE_SECRET: &str = "whsec_bG9jYWwtcXVvLWJldGEtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFi";
const KEAP_TOKEN: &str = "test-keap-token-3f0c8e1a9b7d4c2e5a6b";
const RESMAN_SECRET: &str = "whsec_bG9jYWwtcmVzbWFuLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk=";

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn registry() -> Registry {
    let config = Config::from_settings(&Settings::from_pairs([
        ("OPENPHONE_WEBHOOK_KEY", OPENPHONE_KEY),
        ("OPENPHONE_WEBHOOK_SECRET", OPENPHONE_SECRET),
        ("KEAP_WEBHOOK_TOKEN", KEAP_TOKEN),
        ("RESMAN_WEBHOOK_SECRET", RESMAN_SECRET),
        ("SYNCBRIDGE_SIGNATURE_TOLERANCE_S", "0"),
    ]))
    .expect("test configuration");
    Registry::from_config(&config)
}

/// The bodies of the shipped fixtures of `provider`.
fn fixture_bodies(provider: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(provider);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures folder") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let body = v["body"].as_str().unwrap_or_default().as_bytes().to_vec();
        if !body.is_empty() {
            out.push(body);
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize, usize),
    Splice(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    const SPLICES: &[&str] = &[
        "\\u0000",
        "\\ud800",
        "null",
        "[[[[[[[[",
        "}",
        "\"",
        "1e999",
        "-0",
        "\u{2014}",
        "{\"a\":",
        "\\",
        "true",
        "\"\"",
        "99999999999999999999",
        ",",
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Cut(i, n)),
        (any::<usize>(), proptest::sample::select(SPLICES))
            .prop_map(|(i, s)| Mutation::Splice(i, s)),
    ]
}

fn mutate(mut body: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, b) if !body.is_empty() => {
                let i = i % body.len();
                body[i] = *b;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, bytes) => {
                let i = at(*i, body.len());
                body.splice(i..i, bytes.iter().copied());
            }
            Mutation::Cut(i, n) => {
                let i = at(*i, body.len());
                let end = (i + n).min(body.len());
                body.drain(i..end);
            }
            Mutation::Splice(i, s) => {
                let i = at(*i, body.len());
                body.splice(i..i, s.bytes());
            }
        }
    }
    body
}

/// A body from a fixture of `provider`, mutated or not, or random bytes.
fn body(provider: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let bodies = fixture_bodies(provider);
    prop_oneof![
        3 => (proptest::sample::select(bodies), proptest::collection::vec(mutation(), 0..4))
            .prop_map(|(b, ms)| mutate(b, &ms)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Header text of the shapes signature parsers meet.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,120}",
        "(hmac|sha1|v1)?;?[0-9]{0,16};[A-Za-z0-9+/=]{0,50}(,[ -~]{0,40}){0,3}",
        "(v1|v1a|v2),[A-Za-z0-9+/=]{0,50}( v1,[A-Za-z0-9+/=]{0,50}){0,3}",
        "[0-9]{0,14}",
    ]
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_741_968_301, 0).unwrap()
}

/// Verify, the edge checks, then (when accepted) normalise: nothing may
/// panic, whatever the input. True when the delivery was accepted.
fn run_pipeline(
    registry: &Registry,
    name: ProviderName,
    token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> bool {
    let provider = registry.get(name).expect("provider enabled");
    let body = bytes::Bytes::copy_from_slice(body);
    let req = WebhookRequest {
        token,
        headers,
        body: &body,
        now: now(),
        pulled: false,
    };
    let Ok(Verified::Delivery(d)) = provider.verify(&req) else {
        return false;
    };
    if d.validate().is_err() {
        return false;
    }
    let stored = StoredEvent {
        id: 1,
        provider: name,
        event_type: d.event_type.as_deref(),
        occurred_at: d.occurred_at,
        body: &d.body,
    };
    let _ = provider.normalise(&stored);
    true
}

fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(HeaderName::from_static(k), v);
        }
    }
    h
}

#[test]
fn openphone_legacy_signed_mutations_never_panic() {
    let registry = registry();
    let key = HmacKey::from_base64(OPENPHONE_KEY).unwrap();
    let accepted = std::cell::Cell::new(0);
    runner()
        .run(&(body("openphone"), any::<bool>()), |(body, sign)| {
            let sig = if sign {
                signature::sign_openphone_legacy(&key, now().timestamp_millis(), &body)
            } else {
                "hmac;1;1741968301049;AAAA".into()
            };
            let h = header_map(&[("openphone-signature", sig)]);
            if run_pipeline(&registry, ProviderName::OpenPhone, None, &h, &body) {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // Unmutated, signed fixtures get through: the normaliser was reached.
    assert!(accepted.get() > 0, "no generated delivery was accepted");
}

#[test]
fn openphone_beta_and_resman_signed_mutations_never_panic() {
    let registry = registry();
    let op = HmacKey::from_whsec(OPENPHONE_SECRET).unwrap();
    let rm = HmacKey::from_whsec(RESMAN_SECRET).unwrap();
    let accepted = std::cell::Cell::new(0);
    let strategy = (body("openphone"), body("resman"), "[a-zA-Z0-9_.]{0,40}");
    runner()
        .run(&strategy, |(op_body, rm_body, id)| {
            let ts = now().timestamp();
            for (name, key, body) in [
                (ProviderName::OpenPhone, &op, &op_body),
                (ProviderName::ResMan, &rm, &rm_body),
            ] {
                let h = header_map(&[
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", ts.to_string()),
                    (
                        "webhook-signature",
                        signature::sign_standard(key, &id, ts, body),
                    ),
                ]);
                if run_pipeline(&registry, name, None, &h, body) {
                    accepted.set(accepted.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(accepted.get() > 0, "no generated delivery was accepted");
}

#[test]
fn keap_mutations_never_panic() {
    let registry = registry();
    let strategy = (
        body("keap"),
        any::<bool>(),
        proptest::option::of(header_text()),
    );
    let accepted = std::cell::Cell::new(0);
    runner()
        .run(&strategy, |(body, right_token, secret)| {
            let token = if right_token { KEAP_TOKEN } else { "nope" };
            let h = match secret {
                Some(s) => header_map(&[("x-hook-secret", s)]),
                None => HeaderMap::new(),
            };
            if run_pipeline(&registry, ProviderName::Keap, Some(token), &h, &body) {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert!(accepted.get() > 0, "no generated delivery was accepted");
}

#[test]
fn signature_headers_of_any_shape_never_panic_or_verify_by_accident() {
    let key = HmacKey::from_base64(OPENPHONE_KEY).unwrap();
    let strategy = (
        header_text(),
        header_text(),
        header_text(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner()
        .run(&strategy, |(a, b, c, body)| {
            let tol = Some(std::time::Duration::from_secs(300));
            prop_assert!(signature::verify_openphone_legacy(&key, &a, &body, now(), tol).is_err());
            let h = StandardHeaders {
                id: &a,
                timestamp: &b,
                signature: &c,
            };
            prop_assert!(signature::verify_standard(&key, h, &body, now(), tol).is_err());
            let _ = HmacKey::from_base64(&a);
            let _ = HmacKey::from_whsec(&c);
            Ok(())
        })
        .unwrap();
}

#[test]
fn edge_checks_and_domain_parsers_never_panic() {
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,40}",
        "[0-9+()\\-. ]{0,24}",
    );
    runner()
        .run(&strategy, |(bytes, text, phone)| {
            let _ = edge::check_json(&bytes);
            let _ = edge::check_text("t", &text, 16);
            let _ = parse_provider_time(&text);
            let _ = DedupKey::new(&text);
            if let Some(p) = E164Phone::parse(&phone) {
                prop_assert!(p.as_str().starts_with('+'));
                prop_assert_eq!(E164Phone::parse(p.as_str()), Some(p.clone()));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn normalisers_never_panic_on_any_stored_body() {
    let registry = registry();
    let strategy = (body("openphone"), body("keap"));
    runner()
        .run(&strategy, |(op, keap)| {
            for (name, body) in [(ProviderName::OpenPhone, &op), (ProviderName::Keap, &keap)] {
                let p = registry.get(name).unwrap();
                let _ = p.normalise(&StoredEvent {
                    id: 1,
                    provider: name,
                    event_type: None,
                    occurred_at: None,
                    body,
                });
            }
            Ok(())
        })
        .unwrap();
}

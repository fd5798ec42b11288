//! Parse-don't-validate types that travel through the pipeline: once a value
//! is one of these, it is known to be well formed, so nothing downstream
//! re-checks it.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The providers syncbridge speaks. The string form is what the database,
/// metrics and fixtures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    OpenPhone,
    Keap,
    ResMan,
    Teli,
    D1,
}

impl ProviderName {
    pub const ALL: [ProviderName; 5] = [
        ProviderName::OpenPhone,
        ProviderName::Keap,
        ProviderName::ResMan,
        ProviderName::Teli,
        ProviderName::D1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::OpenPhone => "openphone",
            ProviderName::Keap => "keap",
            ProviderName::ResMan => "resman",
            ProviderName::Teli => "teli",
            ProviderName::D1 => "d1",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderName> {
        ProviderName::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phone number in E.164 form (`+14155550142`). North American numbers
/// written without a country code (`(415) 555-0142`) get `+1`. The SQL
/// function `syncbridge_e164` applies exactly the same rules to stored
/// numbers, so a number matches whichever side normalised it.
///
/// ```
/// use syncbridge::domain::E164Phone;
/// assert_eq!(E164Phone::parse("(555) 000-1111").unwrap().as_str(), "+15550001111");
/// assert_eq!(E164Phone::parse("+44 20 7946 0958").unwrap().as_str(), "+442079460958");
/// assert!(E164Phone::parse("555-0142").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct E164Phone(String);

impl E164Phone {
    pub fn parse(raw: &str) -> Option<E164Phone> {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        let explicit_plus = raw.trim_start().starts_with('+');
        let first = digits.chars().next()?;
        if explicit_plus {
            if (8..=15).contains(&digits.len()) && first != '0' {
                return Some(E164Phone(format!("+{digits}")));
            }
            return None;
        }
        match digits.len() {
            10 if first != '0' && first != '1' => Some(E164Phone(format!("+1{digits}"))),
            11 if first == '1' && !matches!(digits.as_bytes()[1], b'0' | b'1') => {
                Some(E164Phone(format!("+{digits}")))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The inbox deduplication key: at most 512 characters, never empty.
/// Longer provider ids are hashed so the unique index stays small.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(String);

impl DedupKey {
    pub fn new(raw: &str) -> Option<DedupKey> {
        if raw.is_empty() {
            return None;
        }
        if raw.len() > 512 {
            return Some(DedupKey::of_bytes(raw.as_bytes()));
        }
        Some(DedupKey(raw.to_owned()))
    }

    /// `sha256:<hex>` of the bytes: the key for deliveries without an id.
    pub fn of_bytes(bytes: &[u8]) -> DedupKey {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(bytes);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        DedupKey(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses the timestamps providers send: RFC 3339 (`…Z`, `…+00:00`), Keap's
/// offset without a colon (`2022-09-29T00:32:12.000+0000`), and naive ISO
/// strings (Teli), which are taken as UTC.
pub fn parse_provider_time(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&t));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_normalises_common_forms() {
        for (raw, want) in [
            ("(555) 000-1111", Some("+15550001111")),
            ("+1 (415) 555-0142", Some("+14155550142")),
            ("415.555.0142", Some("+14155550142")),
            ("1-415-555-0142", Some("+14155550142")),
            ("+44 20 7946 0958", Some("+442079460958")),
            ("555-0142", None),
            ("", None),
            ("+0123456789", None),
            ("0123456789", None),
            ("12345678901234567", None),
        ] {
            assert_eq!(
                E164Phone::parse(raw).as_ref().map(E164Phone::as_str),
                want,
                "{raw}"
            );
        }
    }

    #[test]
    fn dedup_key_hashes_long_and_rejects_empty() {
        assert!(DedupKey::new("").is_none());
        assert_eq!(DedupKey::new("EV1").unwrap().as_str(), "EV1");
        let long = "x".repeat(600);
        let k = DedupKey::new(&long).unwrap();
        assert!(k.as_str().starts_with("sha256:"));
        assert_eq!(k.as_str().len(), 7 + 64);
    }

    #[test]
    fn provider_times_parse() {
        let want = Utc.with_ymd_and_hms(2022, 9, 29, 0, 32, 12).unwrap();
        assert_eq!(
            parse_provider_time("2022-09-29T00:32:12.000+0000"),
            Some(want)
        );
        assert_eq!(parse_provider_time("2022-09-29T00:32:12Z"), Some(want));
        assert_eq!(parse_provider_time("2022-09-29T02:32:12+02:00"), Some(want));
        assert_eq!(
            parse_provider_time("2022-09-29T00:32:12.000000"),
            Some(want)
        );
        assert_eq!(parse_provider_time("yesterday"), None);
    }
}

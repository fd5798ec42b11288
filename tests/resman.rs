//! ResMan's API client (issue 14) against the fake ResMan: lead pushes
//! answered by the MITS envelope, searches that halve their window on a
//! buffer overflow, the Partners API's prospects, credentials and faults.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::fake_resman::{self, FakeResMan, Fault};
use syncbridge::config::Settings;
use syncbridge::providers::resman::api::{CallError, ResManApi, Search, Target};
use syncbridge::providers::resman::config::ResManConfig;
use syncbridge::providers::resman::wire::{EventType, Lead, Prospect};
use syncbridge::providers::PushError;

const PROPERTY: &str = "07413576-f764-44c6-be35-df4139deec01";

fn api(fake: &FakeResMan, key: &str) -> ResManApi {
    let config = ResManConfig::from_settings(&Settings::from_pairs([
        ("RESMAN_API_URL", fake.url.as_str()),
        ("RESMAN_LEGACY_API_URL", fake.url.as_str()),
        ("RESMAN_INTEGRATION_PARTNER_ID", fake_resman::PARTNER_ID),
        ("RESMAN_API_KEY", key),
        ("RESMAN_API_RATE", "1000"),
        ("RESMAN_RETRY_BASE_MS", "10"),
    ]))
    .unwrap();
    ResManApi::new(&config, Duration::from_millis(500)).unwrap()
}

fn target() -> Target {
    Target {
        account_id: fake_resman::ACCOUNT.into(),
        property_id: PROPERTY.into(),
    }
}

fn lead(prospect_id: Option<&str>) -> Lead {
    Lead {
        prospect_id: prospect_id.map(str::to_owned),
        first_name: Some("Dana".into()),
        last_name: Some("O'Neil & Sons".into()),
        email: Some("dana@ortiz.example".into()),
        phone: Some("+1 (415) 555-0142".into()),
        event: EventType::Email,
        event_date: Utc::now(),
        comments: Some("Wants a 2BR <in May>".into()),
    }
}

#[tokio::test]
async fn a_lead_is_created_then_updated_in_place() {
    let fake = FakeResMan::start().await;
    let r = api(&fake, fake_resman::API_KEY);
    let created = r.post_lead(&target(), &lead(None)).await.unwrap();
    let id = created.prospects[0].prospect_id.clone().unwrap();
    assert!(created.prospects[0].person_id.is_some());
    let mut update = lead(Some(&id));
    update.event = EventType::Appointment;
    update.first_name = Some("Dana M.".into());
    let updated = r.post_lead(&target(), &update).await.unwrap();
    assert_eq!(
        updated.prospects[0].prospect_id.as_deref(),
        Some(id.as_str())
    );
    let all = fake.prospects();
    assert_eq!(all.len(), 1, "an update never makes a second prospect");
    assert_eq!(all[0].first_name.as_deref(), Some("Dana M."));
    assert_eq!(
        all[0].last_name.as_deref(),
        Some("O'Neil & Sons"),
        "escaped and read back"
    );
    assert_eq!(
        all[0].events.last().unwrap(),
        &(
            "Appointment".to_string(),
            Some("Wants a 2BR <in May>".to_string())
        )
    );
    // The search finds it by e-mail and by phone, however written.
    let by_email = r
        .search(
            &target(),
            &Search {
                email: Some("DANA@ortiz.example".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_email[0].prospect_id.as_deref(), Some(id.as_str()));
    let by_phone = r
        .search(
            &target(),
            &Search {
                phone: Some("4155550142".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_phone.len(), 1);
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_the_key_never_recorded() {
    let fake = FakeResMan::start().await;
    let r = api(&fake, "wrong-key");
    let e = r.post_lead(&target(), &lead(None)).await.unwrap_err();
    assert!(
        matches!(e.clone().into_push(), PushError::Permanent(_)),
        "{e}"
    );
    assert!(e.to_string().contains("Invalid ApiKey"), "{e}");
    let e = r.prospects(&target(), Utc::now()).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert!(fake
        .requests()
        .iter()
        .all(|q| q.fields.get("ApiKey").is_none_or(|k| k == "***")));
}

#[tokio::test]
async fn a_search_halves_its_window_on_a_buffer_overflow() {
    let fake = FakeResMan::start().await;
    // Six prospects modified five minutes apart.
    let from = Utc::now() - chrono::Duration::hours(1);
    for i in 0..6 {
        let id = fake.add(
            PROPERTY,
            &format!("P{i}"),
            &format!("p{i}@x.example"),
            "Prospect",
        );
        fake.modified_at(&id, from + chrono::Duration::minutes(5 * i));
    }
    fake.overflow_above(2);
    let r = api(&fake, fake_resman::API_KEY);
    let found = r
        .search(
            &target(),
            &Search {
                modified_from: Some(from - chrono::Duration::minutes(10)),
                modified_to: Some(from + chrono::Duration::minutes(40)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut ids: Vec<String> = found.into_iter().filter_map(|p| p.prospect_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every prospect found across the halves");
    let overflows = fake.requests().iter().filter(|q| q.status == 502).count();
    assert!(overflows >= 1);
    // A window that cannot be halved any more is an error, not a loop.
    fake.overflow_above(0);
    let e = r
        .search(
            &target(),
            &Search {
                modified_from: Some(from - chrono::Duration::seconds(10)),
                modified_to: Some(from + chrono::Duration::seconds(20)),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(e, Err(CallError::Overflow)) || e.as_ref().is_ok_and(|v| v.is_empty()),
        "{e:?}"
    );
}

#[tokio::test]
async fn prospects_are_read_since_a_time_with_faults_retried() {
    let fake = FakeResMan::start().await;
    let old = fake.add(PROPERTY, "Old", "old@x.example", "Prospect");
    fake.add("another-property", "Elsewhere", "e@x.example", "Prospect");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    fake.edit(&old, |p| {
        p.status = "Lost".into();
        p.lost_reason = Some("Rented elsewhere".into());
    });
    let r = api(&fake, fake_resman::API_KEY);
    fake.fail_next([Fault::Status(503), Fault::RateLimited(0)]);
    let got = r.prospects(&target(), since).await.unwrap();
    assert_eq!(got.len(), 1);
    let p: Prospect = serde_json::from_value(got[0].clone()).unwrap();
    assert_eq!(p.prospect_id, old);
    assert_eq!(p.status.as_deref(), Some("Lost"));
    assert_eq!(p.lost_reason.as_deref(), Some("Rented elsewhere"));
    assert_eq!(
        p.main_person().unwrap().email.as_deref(),
        Some("old@x.example")
    );
    assert!(p.modified_at().unwrap() >= since);
    let statuses: Vec<u16> = fake.requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, [503, 429, 200]);
    // A lead POST is sent once: its retry is the dispatcher's.
    fake.fail_next([Fault::Status(500)]);
    let e = r.post_lead(&target(), &lead(None)).await.unwrap_err();
    assert!(matches!(e.into_push(), PushError::Transient(_)));
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|q| q.method == "MITS/PostLeadManagement4_0")
            .count(),
        1
    );
}

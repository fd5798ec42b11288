//! The conflict engine (SPEC §2.4): given the local record, the remote
//! record and the last-synced snapshot (the remote's state as syncbridge
//! last knew it, kept per link), decide field by field what both sides end
//! up holding. Pure functions: the router loads the rules and the rows, calls
//! [`resolve`], and writes what it returns.
//!
//! The model, field by field over the fields the provider reports:
//! - equal on both sides → nothing to do;
//! - differs from the snapshot on one side only → that side changed it;
//! - differs from the snapshot on both sides (or there is no snapshot) →
//!   both changed it.
//!
//! If only the remote changed fields, they are taken (fast-forward); if only
//! the local side did, nothing comes in and the local changes go out. If
//! both sides changed the record, it is a conflict, decided by the entity's
//! strategy:
//! - `merge`: each one-sided field is taken from the side that changed it; a
//!   field changed on both sides follows its own field rule, or last write
//!   wins when it has none;
//! - `last_write_wins`, `prefer_local`, `prefer_remote`: every differing
//!   field follows its field rule or, without one, the entity's strategy;
//! - `manual` (as the entity's strategy or a differing field's rule): nothing
//!   is applied; the conflict is recorded for review.
//!
//! A field the provider does not report (missing) is not synced by this
//! event; `null` is a value ("cleared"). Values compare as JSON, except that
//! numbers compare by value (`1` equals `1.0`); a type change (`"1"` → `1`)
//! is a change.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// How a conflicting field (or record) is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    LastWriteWins,
    PreferLocal,
    PreferRemote,
    Merge,
    Manual,
}

impl Strategy {
    /// Parses a strategy name; the seeds' provider-named priorities map onto
    /// `prefer_local` / `prefer_remote`, ResMan's `merged` and
    /// `manual_review` onto `merge` and `manual`.
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "last_write_wins" => Strategy::LastWriteWins,
            "prefer_local" | "supabase_wins" | "domiq_wins" | "local_wins" => Strategy::PreferLocal,
            "prefer_remote" | "keap_wins" | "resman_wins" | "remote_wins" => Strategy::PreferRemote,
            "merge" | "merged" => Strategy::Merge,
            "manual" | "manual_review" => Strategy::Manual,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LastWriteWins => "last_write_wins",
            Strategy::PreferLocal => "prefer_local",
            Strategy::PreferRemote => "prefer_remote",
            Strategy::Merge => "merge",
            Strategy::Manual => "manual",
        }
    }
}

/// Wildcard for "every entity" / "the entity's default".
pub const ANY: &str = "*";

/// The rule table (`sync_conflict_rules`): strategies by (entity, field).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: HashMap<(String, String), Strategy>,
}

impl Rules {
    pub fn new(rows: impl IntoIterator<Item = (String, String, Strategy)>) -> Rules {
        Rules {
            rules: rows.into_iter().map(|(e, f, s)| ((e, f), s)).collect(),
        }
    }

    fn get(&self, entity: &str, field: &str) -> Option<Strategy> {
        self.rules
            .get(&(entity.to_owned(), field.to_owned()))
            .copied()
    }

    /// The entity's strategy: `(entity, *)`, then `(*, *)`, then last write
    /// wins.
    pub fn entity(&self, entity: &str) -> Strategy {
        self.get(entity, ANY)
            .or_else(|| self.get(ANY, ANY))
            .unwrap_or(Strategy::LastWriteWins)
    }

    /// A rule set for this very field: `(entity, field)`, then `(*, field)`.
    pub fn field(&self, entity: &str, field: &str) -> Option<Strategy> {
        self.get(entity, field).or_else(|| self.get(ANY, field))
    }
}

/// Which side a field's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Local,
    Remote,
    /// Left for review (`manual`).
    Undecided,
}

/// Which side changed a field since the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Changed {
    Local,
    Remote,
    Both,
}

/// How one differing field was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDecision {
    pub changed: Changed,
    /// The strategy that decided it (`None`: one side changed it and there
    /// was no conflict on the record).
    pub strategy: Option<Strategy>,
    pub winner: Winner,
}

/// What kind of outcome the record had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both sides already hold the same values.
    InSync,
    /// The remote reports nothing new (an echo of what was synced); local
    /// changes, if any, are on their way out.
    NoRemoteChange,
    /// Only the remote changed: its values are taken.
    FastForward,
    /// Both sides changed the record; decided by the rules.
    Resolved(Strategy),
    /// Both changed it and a `manual` rule holds: nothing is applied.
    Manual,
}

impl Outcome {
    /// The audit log's `decision` for this outcome.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::InSync => "in_sync",
            Outcome::NoRemoteChange => "echo",
            Outcome::FastForward => "fast_forward",
            Outcome::Resolved(s) => s.as_str(),
            Outcome::Manual => "manual",
        }
    }
}

/// One side of a record: its fields and when it last changed.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub fields: &'a Map<String, Value>,
    pub changed_at: DateTime<Utc>,
}

/// The decision for one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    pub outcome: Outcome,
    /// The values both sides should hold, for every reported field.
    pub merged: Map<String, Value>,
    /// Fields whose local value must change to `merged`.
    pub to_local: Vec<String>,
    /// Fields whose remote value must change to `merged` (a push).
    pub to_remote: Vec<String>,
    /// Fields left for review (`Outcome::Manual`).
    pub manual: Vec<String>,
    /// Every differing field and how it was decided.
    pub fields: BTreeMap<String, FieldDecision>,
}

/// JSON equality where numbers compare by value.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Decides one record. `base` is the last-synced snapshot (`None` when the
/// record was never synced: every difference then counts as changed on both
/// sides). Only the fields present in `remote` are considered; a field
/// missing from `local` reads as `null`.
pub fn resolve(
    rules: &Rules,
    entity: &str,
    base: Option<&Map<String, Value>>,
    local: Side<'_>,
    remote: Side<'_>,
) -> Resolution {
    let null = Value::Null;
    let mut diffs: Vec<(&String, Changed)> = Vec::new();
    for (field, r) in remote.fields {
        let l = local.fields.get(field).unwrap_or(&null);
        if same(l, r) {
            continue;
        }
        let b = base.and_then(|b| b.get(field));
        let changed = match b {
            Some(b) if same(l, b) => Changed::Remote,
            Some(b) if same(r, b) => Changed::Local,
            _ => Changed::Both,
        };
        diffs.push((field, changed));
    }

    let remote_changed = diffs.iter().any(|(_, c)| *c != Changed::Local);
    let local_changed = diffs.iter().any(|(_, c)| *c != Changed::Remote);
    let outcome = if diffs.is_empty() {
        Outcome::InSync
    } else if !remote_changed {
        Outcome::NoRemoteChange
    } else if !local_changed {
        Outcome::FastForward
    } else {
        Outcome::Resolved(rules.entity(entity))
    };

    let later = if remote.changed_at >= local.changed_at {
        Winner::Remote
    } else {
        Winner::Local
    };
    let decide = |s: Strategy| match s {
        Strategy::PreferLocal => Winner::Local,
        Strategy::PreferRemote => Winner::Remote,
        Strategy::Manual => Winner::Undecided,
        Strategy::LastWriteWins | Strategy::Merge => later,
    };
    let side_of = |c: Changed| match c {
        Changed::Local => Winner::Local,
        _ => Winner::Remote,
    };

    let conflict = match outcome {
        Outcome::Resolved(s) => Some(s),
        _ => None,
    };
    let mut fields = BTreeMap::new();
    for (field, changed) in diffs {
        let (strategy, winner) = match conflict {
            // No conflict on the record: the side that changed it wins.
            None => (None, side_of(changed)),
            Some(Strategy::Merge) if changed != Changed::Both => {
                (Some(Strategy::Merge), side_of(changed))
            }
            Some(Strategy::Merge) => {
                let s = rules
                    .field(entity, field)
                    .filter(|s| *s != Strategy::Merge)
                    .unwrap_or(Strategy::LastWriteWins);
                (Some(s), decide(s))
            }
            Some(entity_strategy) => match rules.field(entity, field).unwrap_or(entity_strategy) {
                Strategy::Merge if changed != Changed::Both => {
                    (Some(Strategy::Merge), side_of(changed))
                }
                Strategy::Merge => (
                    Some(Strategy::LastWriteWins),
                    decide(Strategy::LastWriteWins),
                ),
                s => (Some(s), decide(s)),
            },
        };
        if let (Changed::Both, Some(s)) = (changed, strategy) {
            // A real conflict (both sides changed the field), by the
            // strategy that decided it.
            metrics::counter!("syncbridge_conflicts_total", "entity" => entity.to_owned(),
                              "strategy" => s.as_str())
            .increment(1);
        }
        fields.insert(
            field.clone(),
            FieldDecision {
                changed,
                strategy,
                winner,
            },
        );
    }

    let manual: Vec<String> = fields
        .iter()
        .filter(|(_, d)| d.winner == Winner::Undecided)
        .map(|(f, _)| f.clone())
        .collect();
    let outcome = if manual.is_empty() {
        outcome
    } else {
        Outcome::Manual
    };

    let mut merged = Map::new();
    let mut to_local = Vec::new();
    let mut to_remote = Vec::new();
    for (field, r) in remote.fields {
        let l = local.fields.get(field).unwrap_or(&null);
        let winner = match fields.get(field) {
            None => Winner::Local, // equal on both sides
            Some(_) if outcome == Outcome::Manual => Winner::Local,
            Some(d) => d.winner,
        };
        match winner {
            Winner::Remote => {
                merged.insert(field.clone(), r.clone());
                to_local.push(field.clone());
            }
            _ => {
                merged.insert(field.clone(), l.clone());
                if !same(l, r) && outcome != Outcome::Manual {
                    to_remote.push(field.clone());
                }
            }
        }
    }

    Resolution {
        outcome,
        merged,
        to_local,
        to_remote,
        manual,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn rules(rows: &[(&str, &str, Strategy)]) -> Rules {
        Rules::new(
            rows.iter()
                .map(|(e, f, s)| ((*e).to_owned(), (*f).to_owned(), *s)),
        )
    }

    struct Case {
        base: Option<Value>,
        local: Value,
        local_at: i64,
        remote: Value,
        remote_at: i64,
    }

    fn run(r: &Rules, c: Case) -> Resolution {
        let base = c.base.map(map);
        let local = map(c.local);
        let remote = map(c.remote);
        resolve(
            r,
            "contacts",
            base.as_ref(),
            Side {
                fields: &local,
                changed_at: t(c.local_at),
            },
            Side {
                fields: &remote,
                changed_at: t(c.remote_at),
            },
        )
    }

    fn both_changed(local_at: i64, remote_at: i64) -> Case {
        Case {
            base: Some(json!({"name": "Dana", "email": "d@x", "phone": "1"})),
            local: json!({"name": "Dana L", "email": "d@x", "phone": "2"}),
            local_at,
            remote: json!({"name": "Dana R", "email": "r@x", "phone": "1"}),
            remote_at,
        }
    }

    #[test]
    fn strategy_names_and_seed_aliases() {
        for s in [
            Strategy::LastWriteWins,
            Strategy::PreferLocal,
            Strategy::PreferRemote,
            Strategy::Merge,
            Strategy::Manual,
        ] {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            Strategy::parse("supabase_wins"),
            Some(Strategy::PreferLocal)
        );
        assert_eq!(Strategy::parse("keap_wins"), Some(Strategy::PreferRemote));
        assert_eq!(Strategy::parse("domiq_wins"), Some(Strategy::PreferLocal));
        assert_eq!(Strategy::parse("resman_wins"), Some(Strategy::PreferRemote));
        assert_eq!(Strategy::parse("merged"), Some(Strategy::Merge));
        assert_eq!(Strategy::parse("manual_review"), Some(Strategy::Manual));
        assert_eq!(Strategy::parse("resman_wins"), Some(Strategy::PreferRemote));
        assert_eq!(Strategy::parse("newest"), None);
    }

    #[test]
    fn rule_lookup_order() {
        let r = rules(&[
            ("*", "*", Strategy::PreferRemote),
            ("contacts", "*", Strategy::Merge),
            ("*", "email", Strategy::Manual),
            ("contacts", "email", Strategy::PreferLocal),
        ]);
        assert_eq!(r.entity("contacts"), Strategy::Merge);
        assert_eq!(r.entity("orders"), Strategy::PreferRemote);
        assert_eq!(r.field("contacts", "email"), Some(Strategy::PreferLocal));
        assert_eq!(r.field("orders", "email"), Some(Strategy::Manual));
        assert_eq!(r.field("orders", "name"), None);
        assert_eq!(Rules::default().entity("x"), Strategy::LastWriteWins);
    }

    #[test]
    fn both_sides_equal_is_in_sync_whatever_the_snapshot() {
        let res = run(
            &Rules::default(),
            Case {
                base: Some(json!({"name": "old"})),
                local: json!({"name": "new", "n": 1}),
                local_at: 5,
                remote: json!({"name": "new", "n": 1.0}),
                remote_at: 1,
            },
        );
        assert_eq!(res.outcome, Outcome::InSync);
        assert!(res.to_local.is_empty() && res.to_remote.is_empty());
        assert_eq!(res.merged, map(json!({"name": "new", "n": 1})));
    }

    #[test]
    fn echo_of_the_snapshot_changes_nothing_locally() {
        let res = run(
            &Rules::default(),
            Case {
                base: Some(json!({"name": "Dana", "email": "d@x"})),
                local: json!({"name": "Dana L", "email": "d@x"}),
                local_at: 9,
                remote: json!({"name": "Dana", "email": "d@x"}),
                remote_at: 10,
            },
        );
        assert_eq!(res.outcome, Outcome::NoRemoteChange);
        assert!(res.to_local.is_empty());
        assert_eq!(res.to_remote, vec!["name"]);
        assert_eq!(res.merged["name"], json!("Dana L"));
    }

    #[test]
    fn remote_only_change_fast_forwards_even_when_local_is_newer() {
        let res = run(
            &rules(&[("*", "*", Strategy::PreferLocal)]),
            Case {
                base: Some(json!({"name": "Dana", "email": "d@x"})),
                local: json!({"name": "Dana", "email": "d@x"}),
                local_at: 100,
                remote: json!({"name": "Dana R", "email": "d@x"}),
                remote_at: 1,
            },
        );
        assert_eq!(res.outcome, Outcome::FastForward);
        assert_eq!(res.to_local, vec!["name"]);
        assert!(res.to_remote.is_empty());
    }

    #[test]
    fn last_write_wins_takes_every_differing_field_from_the_later_side() {
        let res = run(&Rules::default(), both_changed(5, 10));
        assert_eq!(res.outcome, Outcome::Resolved(Strategy::LastWriteWins));
        assert_eq!(
            res.merged,
            map(json!({"name": "Dana R", "email": "r@x", "phone": "1"}))
        );
        assert_eq!(res.to_local, vec!["email", "name", "phone"]);
        assert!(res.to_remote.is_empty());

        let res = run(&Rules::default(), both_changed(10, 5));
        assert_eq!(
            res.merged,
            map(json!({"name": "Dana L", "email": "d@x", "phone": "2"}))
        );
        assert!(res.to_local.is_empty());
        assert_eq!(res.to_remote, vec!["email", "name", "phone"]);
    }

    #[test]
    fn last_write_wins_tie_goes_to_the_remote() {
        let res = run(&Rules::default(), both_changed(7, 7));
        assert_eq!(res.merged["name"], json!("Dana R"));
    }

    #[test]
    fn prefer_local_and_prefer_remote_ignore_time() {
        let res = run(
            &rules(&[("contacts", "*", Strategy::PreferLocal)]),
            both_changed(1, 100),
        );
        assert_eq!(res.outcome, Outcome::Resolved(Strategy::PreferLocal));
        assert_eq!(res.merged["name"], json!("Dana L"));
        assert_eq!(res.merged["email"], json!("d@x"));
        assert!(res.to_local.is_empty());

        let res = run(
            &rules(&[("contacts", "*", Strategy::PreferRemote)]),
            both_changed(100, 1),
        );
        assert_eq!(res.merged["name"], json!("Dana R"));
        assert_eq!(res.merged["phone"], json!("1"));
        assert!(res.to_remote.is_empty());
    }

    #[test]
    fn merge_takes_one_sided_fields_from_their_side() {
        let res = run(
            &rules(&[("contacts", "*", Strategy::Merge)]),
            both_changed(100, 1),
        );
        assert_eq!(res.outcome, Outcome::Resolved(Strategy::Merge));
        // email: remote only; phone: local only; name: both, newer (local).
        assert_eq!(
            res.merged,
            map(json!({"name": "Dana L", "email": "r@x", "phone": "2"}))
        );
        assert_eq!(res.to_local, vec!["email"]);
        assert_eq!(res.to_remote, vec!["name", "phone"]);
        assert_eq!(res.fields["name"].changed, Changed::Both);
        assert_eq!(res.fields["name"].strategy, Some(Strategy::LastWriteWins));
        assert_eq!(res.fields["email"].strategy, Some(Strategy::Merge));
    }

    #[test]
    fn merge_falls_back_to_the_fields_own_rule() {
        let r = rules(&[
            ("contacts", "*", Strategy::Merge),
            ("contacts", "name", Strategy::PreferRemote),
        ]);
        let res = run(&r, both_changed(100, 1));
        assert_eq!(res.merged["name"], json!("Dana R"));
        assert_eq!(res.fields["name"].strategy, Some(Strategy::PreferRemote));
        // The field rule only decides a field changed on both sides.
        assert_eq!(res.merged["phone"], json!("2"));
    }

    #[test]
    fn manual_field_in_a_merge_leaves_the_record_untouched() {
        let r = rules(&[
            ("contacts", "*", Strategy::Merge),
            ("contacts", "name", Strategy::Manual),
        ]);
        let res = run(&r, both_changed(100, 1));
        assert_eq!(res.outcome, Outcome::Manual);
        assert_eq!(res.manual, vec!["name"]);
        assert!(res.to_local.is_empty() && res.to_remote.is_empty());
        assert_eq!(res.merged["email"], json!("d@x"), "local kept as it is");
    }

    #[test]
    fn manual_entity_rule_records_every_differing_field() {
        let res = run(
            &rules(&[("contacts", "*", Strategy::Manual)]),
            both_changed(1, 2),
        );
        assert_eq!(res.outcome, Outcome::Manual);
        assert_eq!(res.manual, vec!["email", "name", "phone"]);
    }

    #[test]
    fn manual_only_applies_to_real_conflicts() {
        let r = rules(&[("*", "*", Strategy::Manual)]);
        let res = run(
            &r,
            Case {
                base: Some(json!({"name": "a"})),
                local: json!({"name": "a"}),
                local_at: 1,
                remote: json!({"name": "b"}),
                remote_at: 2,
            },
        );
        assert_eq!(res.outcome, Outcome::FastForward);
    }

    #[test]
    fn field_rules_under_a_non_merge_entity_strategy() {
        let r = rules(&[
            ("contacts", "*", Strategy::PreferRemote),
            ("contacts", "phone", Strategy::PreferLocal),
            ("contacts", "email", Strategy::Merge),
        ]);
        let res = run(&r, both_changed(1, 2));
        assert_eq!(res.merged["name"], json!("Dana R"));
        assert_eq!(res.merged["phone"], json!("2"), "field rule prefers local");
        assert_eq!(res.merged["email"], json!("r@x"), "merge: remote-only");
    }

    #[test]
    fn no_snapshot_means_every_difference_is_a_conflict() {
        let res = run(
            &rules(&[("contacts", "*", Strategy::Merge)]),
            Case {
                base: None,
                local: json!({"name": "L", "email": "same"}),
                local_at: 1,
                remote: json!({"name": "R", "email": "same"}),
                remote_at: 2,
            },
        );
        assert_eq!(res.outcome, Outcome::Resolved(Strategy::Merge));
        assert_eq!(res.fields["name"].changed, Changed::Both);
        assert_eq!(res.merged["name"], json!("R"));
    }

    #[test]
    fn field_missing_from_the_snapshot_counts_as_changed_on_both() {
        let res = run(
            &rules(&[("contacts", "*", Strategy::Merge)]),
            Case {
                base: Some(json!({"name": "a"})),
                local: json!({"name": "a", "company": "L"}),
                local_at: 5,
                remote: json!({"name": "b", "company": "R"}),
                remote_at: 1,
            },
        );
        assert_eq!(res.fields["company"].changed, Changed::Both);
        assert_eq!(res.merged["company"], json!("L"));
        assert_eq!(res.merged["name"], json!("b"));
    }

    #[test]
    fn null_is_a_value_and_missing_is_not_reported() {
        // The remote cleared the company (null) and did not report email.
        let res = run(
            &Rules::default(),
            Case {
                base: Some(json!({"company": "Acme", "email": "d@x"})),
                local: json!({"company": "Acme", "email": "new@x"}),
                local_at: 1,
                remote: json!({"company": null}),
                remote_at: 2,
            },
        );
        assert_eq!(res.outcome, Outcome::FastForward);
        assert_eq!(res.merged, map(json!({"company": null})));
        assert_eq!(res.to_local, vec!["company"]);
        assert!(!res.merged.contains_key("email"));
    }

    #[test]
    fn field_deleted_on_one_side_while_changed_on_the_other() {
        let base = json!({"company": "Acme"});
        let res = run(
            &rules(&[("contacts", "*", Strategy::Merge)]),
            Case {
                base: Some(base),
                local: json!({"company": null}),
                local_at: 1,
                remote: json!({"company": "Acme Inc"}),
                remote_at: 2,
            },
        );
        assert_eq!(res.fields["company"].changed, Changed::Both);
        assert_eq!(res.merged["company"], json!("Acme Inc"), "later wins");
    }

    #[test]
    fn missing_local_field_reads_as_null() {
        let res = run(
            &Rules::default(),
            Case {
                base: Some(json!({"x": null})),
                local: json!({}),
                local_at: 1,
                remote: json!({"x": 5}),
                remote_at: 2,
            },
        );
        assert_eq!(res.outcome, Outcome::FastForward);
        assert_eq!(res.to_local, vec!["x"]);
    }

    #[test]
    fn type_changes_are_changes_and_numbers_compare_by_value() {
        assert!(same(&json!(1), &json!(1.0)));
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!("1"), &json!(1)));
        assert!(!same(&json!([1, 2]), &json!([2, 1])));
        let res = run(
            &Rules::default(),
            Case {
                base: Some(json!({"score": 1})),
                local: json!({"score": 1.0}),
                local_at: 1,
                remote: json!({"score": "1"}),
                remote_at: 2,
            },
        );
        assert_eq!(res.outcome, Outcome::FastForward);
        assert_eq!(res.merged["score"], json!("1"));
    }

    #[test]
    fn decisions_name_their_outcome() {
        assert_eq!(Outcome::NoRemoteChange.decision(), "echo");
        assert_eq!(Outcome::Resolved(Strategy::Merge).decision(), "merge");
        assert_eq!(Outcome::Manual.decision(), "manual");
    }
}

//! The local table OpenPhone syncs, and which of its columns a remote
//! contact may write.

use crate::apply::engine::{Entity, LinkColumn};
use crate::domain::ProviderName;

pub const CLIENTS: Entity = Entity {
    table: "clients",
    columns: &[
        "first_name",
        "last_name",
        "company",
        "email",
        "phone",
        "alt_phone_1",
        "alt_phone_2",
    ],
    phone_columns: &["phone", "alt_phone_1", "alt_phone_2"],
    time_columns: &[],
    key_column: None,
    natural_key: None,
    insert_extra: &[],
    link_columns: &[
        link("primary", "openphone_contact_id"),
        link("alt_1", "openphone_alt_contact_1_id"),
        link("alt_2", "openphone_alt_contact_2_id"),
    ],
};

const fn link(slot: &'static str, column: &'static str) -> LinkColumn {
    LinkColumn {
        provider: ProviderName::OpenPhone,
        slot,
        column,
    }
}

/// Every table OpenPhone syncs.
pub const ENTITIES: &[&Entity] = &[&CLIENTS];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn local_fields_project_the_whitelist_and_normalise_phones() {
        let row = json!({"id": "x", "first_name": "Dana", "phone": "(415) 555-0142",
                         "alt_phone_1": "not a phone", "updated_at": "t"});
        let f = CLIENTS.local_fields(&row);
        assert_eq!(f["phone"], "+14155550142");
        assert_eq!(f["alt_phone_1"], "not a phone");
        assert_eq!(f["email"], Value::Null);
        assert!(!f.contains_key("updated_at") && !f.contains_key("id"));
    }

    #[test]
    fn restrict_drops_columns_outside_the_whitelist() {
        let m = json!({"first_name": "A", "sync_status": "synced", "id": "x"});
        let r = CLIENTS.restrict(m.as_object().unwrap());
        assert_eq!(r.len(), 1);
        assert!(r.contains_key("first_name"));
    }

    #[test]
    fn update_statement_names_only_whitelisted_columns() {
        let sql = CLIENTS.update_sql();
        for c in CLIENTS.columns {
            assert!(sql.contains(&format!("{c} = CASE WHEN $2::jsonb ? '{c}'")));
        }
        assert!(crate::providers::entity("clients").is_some());
        assert!(crate::providers::entity("nope").is_none());
    }
}

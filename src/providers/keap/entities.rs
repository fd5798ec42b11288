//! The local tables mirroring Keap (migrations/0007_keap_schema.up.sql),
//! and which of their columns a remote object may write.

use crate::apply::engine::{Entity, LinkColumn};
use crate::domain::ProviderName;

/// Every mirror table keeps its Keap id in `keap_id`.
const KEAP_ID: LinkColumn = LinkColumn {
    provider: ProviderName::Keap,
    slot: "primary",
    column: "keap_id",
};

pub const SYNC_CONTACTS: Entity = Entity {
    table: "sync_contacts",
    columns: &[
        "email",
        "first_name",
        "last_name",
        "phone",
        "company",
        "tags",
        "custom_fields",
    ],
    phone_columns: &["phone"],
    time_columns: &[],
    key_column: Some("keap_id"),
    natural_key: Some("email"),
    insert_extra: &[("source_system", "'keap'")],
    link_columns: &[KEAP_ID],
};

pub const SYNC_ORDERS: Entity = Entity {
    table: "sync_orders",
    columns: &[
        "keap_contact_id",
        "order_number",
        "order_date",
        "total_amount",
        "currency",
        "status",
        "line_items",
        "shipping_address",
        "billing_address",
    ],
    phone_columns: &[],
    time_columns: &["order_date"],
    key_column: Some("keap_id"),
    natural_key: None,
    insert_extra: &[],
    link_columns: &[KEAP_ID],
};

pub const SYNC_TAGS: Entity = Entity {
    table: "sync_tags",
    columns: &["name", "category", "description"],
    phone_columns: &[],
    time_columns: &[],
    key_column: Some("keap_id"),
    natural_key: None,
    insert_extra: &[],
    link_columns: &[KEAP_ID],
};

pub const SYNC_SUBSCRIPTIONS: Entity = Entity {
    table: "sync_subscriptions",
    columns: &[
        "keap_contact_id",
        "keap_product_id",
        "keap_plan_id",
        "status",
        "start_date",
        "end_date",
        "billing_cycle",
        "billing_frequency",
        "amount",
        "next_bill_date",
    ],
    phone_columns: &[],
    time_columns: &["start_date", "end_date", "next_bill_date"],
    key_column: Some("keap_id"),
    natural_key: None,
    insert_extra: &[],
    link_columns: &[KEAP_ID],
};

/// Every table Keap syncs.
pub const ENTITIES: &[&Entity] = &[
    &SYNC_CONTACTS,
    &SYNC_ORDERS,
    &SYNC_TAGS,
    &SYNC_SUBSCRIPTIONS,
];

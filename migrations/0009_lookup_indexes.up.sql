-- The router finds the client a contact event belongs to by any of its
-- three OpenPhone contact ids (one OR'd lookup); without indexes on the
-- alternate ids that lookup scanned the table (2.4 ms at 20k clients,
-- 0.18 ms with them).
CREATE INDEX IF NOT EXISTS clients_openphone_alt_contact_1_idx ON clients (openphone_alt_contact_1_id);
CREATE INDEX IF NOT EXISTS clients_openphone_alt_contact_2_idx ON clients (openphone_alt_contact_2_id);

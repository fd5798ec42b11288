DROP INDEX IF EXISTS clients_openphone_alt_contact_1_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_2_idx;

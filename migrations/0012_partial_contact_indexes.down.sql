-- Back to the full indexes of 0003 and 0009.
DROP INDEX IF EXISTS clients_openphone_contact_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_1_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_2_idx;
DROP INDEX IF EXISTS clients_phone_e164_idx;
DROP INDEX IF EXISTS clients_alt_phone_1_e164_idx;
DROP INDEX IF EXISTS clients_alt_phone_2_e164_idx;
CREATE INDEX clients_openphone_contact_idx ON clients (openphone_contact_id);
CREATE INDEX clients_openphone_alt_contact_1_idx ON clients (openphone_alt_contact_1_id);
CREATE INDEX clients_openphone_alt_contact_2_idx ON clients (openphone_alt_contact_2_id);
CREATE INDEX clients_phone_e164_idx ON clients (syncbridge_e164(phone));
CREATE INDEX clients_alt_phone_1_e164_idx ON clients (syncbridge_e164(alt_phone_1));
CREATE INDEX clients_alt_phone_2_e164_idx ON clients (syncbridge_e164(alt_phone_2));

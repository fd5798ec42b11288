-- The clients lookups by OpenPhone contact id and by E.164 number, as
-- partial indexes over the rows that have the value. Every lookup compares
-- the column (or syncbridge_e164 of it, a strict function) with a value, so
-- it implies IS NOT NULL and the planner uses them as before; a client
-- without alternate contacts or alternate numbers (most of them) no longer
-- costs four index insertions on every non-HOT update: the router's apply
-- rewrites clients rows, and the seed's index on last_synced_at makes
-- those updates non-HOT.
DROP INDEX IF EXISTS clients_openphone_contact_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_1_idx;
DROP INDEX IF EXISTS clients_openphone_alt_contact_2_idx;
DROP INDEX IF EXISTS clients_phone_e164_idx;
DROP INDEX IF EXISTS clients_alt_phone_1_e164_idx;
DROP INDEX IF EXISTS clients_alt_phone_2_e164_idx;
CREATE INDEX clients_openphone_contact_idx ON clients (openphone_contact_id)
    WHERE openphone_contact_id IS NOT NULL;
CREATE INDEX clients_openphone_alt_contact_1_idx ON clients (openphone_alt_contact_1_id)
    WHERE openphone_alt_contact_1_id IS NOT NULL;
CREATE INDEX clients_openphone_alt_contact_2_idx ON clients (openphone_alt_contact_2_id)
    WHERE openphone_alt_contact_2_id IS NOT NULL;
CREATE INDEX clients_phone_e164_idx ON clients (syncbridge_e164(phone))
    WHERE phone IS NOT NULL;
CREATE INDEX clients_alt_phone_1_e164_idx ON clients (syncbridge_e164(alt_phone_1))
    WHERE alt_phone_1 IS NOT NULL;
CREATE INDEX clients_alt_phone_2_e164_idx ON clients (syncbridge_e164(alt_phone_2))
    WHERE alt_phone_2 IS NOT NULL;

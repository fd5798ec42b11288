-- OpenPhone seed (000-openphone-sync-schema): clients and communications with
-- their linkage and sync-status columns. Both tables may already belong to
-- the application: create them when absent, add the columns when present,
-- and remember which so the down script removes only what we added.

-- Phone numbers to E.164, the same rules as domain::E164Phone (North
-- American default country): '(415) 555-0142' -> '+14155550142'.
CREATE FUNCTION syncbridge_e164(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT CASE
        WHEN ltrim(p) LIKE '+%' THEN
            CASE WHEN length(d) BETWEEN 8 AND 15 AND left(d, 1) <> '0' THEN '+' || d END
        WHEN length(d) = 10 AND left(d, 1) NOT IN ('0', '1') THEN '+1' || d
        WHEN length(d) = 11 AND left(d, 1) = '1' AND substr(d, 2, 1) NOT IN ('0', '1') THEN '+' || d
    END
    FROM (SELECT regexp_replace(p, '[^0-9]', '', 'g') AS d) digits
$$;

-- updated_at kept current on every UPDATE.
CREATE FUNCTION syncbridge_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DO $$
BEGIN
    IF to_regclass('public.clients') IS NULL THEN
        CREATE TABLE clients (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'clients');
    END IF;
    IF to_regclass('public.communications') IS NULL THEN
        CREATE TABLE communications (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'communications');
    END IF;
END
$$;

-- Base columns (SPEC §3), added when the application's table lacks them.
ALTER TABLE clients
    ADD COLUMN IF NOT EXISTS first_name  text,
    ADD COLUMN IF NOT EXISTS last_name   text,
    ADD COLUMN IF NOT EXISTS email       text,
    ADD COLUMN IF NOT EXISTS phone       text,
    ADD COLUMN IF NOT EXISTS alt_phone_1 text,
    ADD COLUMN IF NOT EXISTS alt_phone_2 text,
    ADD COLUMN IF NOT EXISTS company     text,
    ADD COLUMN IF NOT EXISTS created_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at  timestamptz NOT NULL DEFAULT now();

-- The seed's linkage and status columns.
ALTER TABLE clients
    ADD COLUMN IF NOT EXISTS openphone_contact_id       text,
    ADD COLUMN IF NOT EXISTS openphone_alt_contact_1_id text,
    ADD COLUMN IF NOT EXISTS openphone_alt_contact_2_id text,
    ADD COLUMN IF NOT EXISTS last_synced_at             timestamptz,
    ADD COLUMN IF NOT EXISTS sync_status                text DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS sync_error                 text;

-- Backfill (seed step 2): every existing row starts pending.
UPDATE clients SET sync_status = 'pending' WHERE sync_status IS NULL;

ALTER TABLE clients DROP CONSTRAINT IF EXISTS clients_sync_status_check;
ALTER TABLE clients ADD CONSTRAINT clients_sync_status_check
    CHECK (sync_status IN ('pending', 'synced', 'failed', 'skipped', 'conflict'));

CREATE INDEX IF NOT EXISTS clients_last_synced_idx ON clients (last_synced_at DESC);
CREATE INDEX IF NOT EXISTS clients_sync_status_idx ON clients (sync_status) WHERE sync_status <> 'synced';
-- Linking communications to clients by any of their numbers.
CREATE INDEX IF NOT EXISTS clients_phone_e164_idx ON clients (syncbridge_e164(phone));
CREATE INDEX IF NOT EXISTS clients_alt_phone_1_e164_idx ON clients (syncbridge_e164(alt_phone_1));
CREATE INDEX IF NOT EXISTS clients_alt_phone_2_e164_idx ON clients (syncbridge_e164(alt_phone_2));
CREATE INDEX IF NOT EXISTS clients_openphone_contact_idx ON clients (openphone_contact_id);

CREATE TRIGGER syncbridge_clients_touch_updated_at
    BEFORE UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();

ALTER TABLE communications
    ADD COLUMN IF NOT EXISTS client_id    uuid REFERENCES clients (id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS channel      text,
    ADD COLUMN IF NOT EXISTS direction    text,
    ADD COLUMN IF NOT EXISTS from_number  text,
    ADD COLUMN IF NOT EXISTS to_number    text,
    ADD COLUMN IF NOT EXISTS body         text,
    ADD COLUMN IF NOT EXISTS status       text,
    ADD COLUMN IF NOT EXISTS occurred_at  timestamptz,
    ADD COLUMN IF NOT EXISTS created_at   timestamptz NOT NULL DEFAULT now();

ALTER TABLE communications DROP CONSTRAINT IF EXISTS communications_channel_check;
ALTER TABLE communications ADD CONSTRAINT communications_channel_check
    CHECK (channel IN ('call', 'message'));

-- The seed's OpenPhone columns. Seed correction: the seed declares
-- openphone_conversation_id UNIQUE, but every message and call of one
-- conversation shares that id, so the constraint would keep one message per
-- conversation. Calls dedupe on openphone_call_id (unique, as the seed says);
-- messages dedupe on openphone_message_id (unique); the conversation id is
-- kept, indexed, for threading.
ALTER TABLE communications
    ADD COLUMN IF NOT EXISTS source                    text NOT NULL DEFAULT 'chatbot',
    ADD COLUMN IF NOT EXISTS openphone_call_id         text,
    ADD COLUMN IF NOT EXISTS openphone_conversation_id text,
    ADD COLUMN IF NOT EXISTS openphone_event_timestamp timestamptz,
    ADD COLUMN IF NOT EXISTS openphone_message_id      text,
    ADD COLUMN IF NOT EXISTS openphone_phone_number_id text,
    ADD COLUMN IF NOT EXISTS openphone_user_id         text,
    ADD COLUMN IF NOT EXISTS answered_at               timestamptz,
    ADD COLUMN IF NOT EXISTS completed_at              timestamptz,
    ADD COLUMN IF NOT EXISTS duration_seconds          integer,
    ADD COLUMN IF NOT EXISTS recording_url             text,
    ADD COLUMN IF NOT EXISTS voicemail_url             text,
    ADD COLUMN IF NOT EXISTS summary                   text,
    ADD COLUMN IF NOT EXISTS transcript                jsonb,
    ADD COLUMN IF NOT EXISTS updated_at                timestamptz NOT NULL DEFAULT now();

ALTER TABLE communications DROP CONSTRAINT IF EXISTS communications_openphone_call_id_key;
ALTER TABLE communications ADD CONSTRAINT communications_openphone_call_id_key UNIQUE (openphone_call_id);
ALTER TABLE communications DROP CONSTRAINT IF EXISTS communications_openphone_message_id_key;
ALTER TABLE communications ADD CONSTRAINT communications_openphone_message_id_key UNIQUE (openphone_message_id);
CREATE INDEX IF NOT EXISTS idx_communications_openphone_conversation_id
    ON communications (openphone_conversation_id);
CREATE INDEX IF NOT EXISTS idx_communications_client_id ON communications (client_id, occurred_at DESC);

CREATE TRIGGER syncbridge_communications_touch_updated_at
    BEFORE UPDATE ON communications
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();

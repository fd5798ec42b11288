DROP TRIGGER IF EXISTS syncbridge_communications_touch_updated_at ON communications;
DROP TRIGGER IF EXISTS syncbridge_clients_touch_updated_at ON clients;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'table' AND name = 'communications') THEN
        DROP TABLE communications;
        DELETE FROM syncbridge_owned_objects WHERE kind = 'table' AND name = 'communications';
    ELSE
        ALTER TABLE communications
            DROP CONSTRAINT IF EXISTS communications_channel_check,
            DROP COLUMN IF EXISTS openphone_call_id,
            DROP COLUMN IF EXISTS openphone_conversation_id,
            DROP COLUMN IF EXISTS openphone_event_timestamp,
            DROP COLUMN IF EXISTS openphone_message_id,
            DROP COLUMN IF EXISTS openphone_phone_number_id,
            DROP COLUMN IF EXISTS openphone_user_id,
            DROP COLUMN IF EXISTS answered_at,
            DROP COLUMN IF EXISTS completed_at,
            DROP COLUMN IF EXISTS duration_seconds,
            DROP COLUMN IF EXISTS recording_url,
            DROP COLUMN IF EXISTS voicemail_url,
            DROP COLUMN IF EXISTS summary,
            DROP COLUMN IF EXISTS transcript;
        DROP INDEX IF EXISTS idx_communications_client_id;
    END IF;

    IF EXISTS (SELECT 1 FROM syncbridge_owned_objects WHERE kind = 'table' AND name = 'clients') THEN
        DROP TABLE clients;
        DELETE FROM syncbridge_owned_objects WHERE kind = 'table' AND name = 'clients';
    ELSE
        DROP INDEX IF EXISTS clients_last_synced_idx;
        DROP INDEX IF EXISTS clients_sync_status_idx;
        DROP INDEX IF EXISTS clients_phone_e164_idx;
        DROP INDEX IF EXISTS clients_alt_phone_1_e164_idx;
        DROP INDEX IF EXISTS clients_alt_phone_2_e164_idx;
        DROP INDEX IF EXISTS clients_openphone_contact_idx;
        ALTER TABLE clients
            DROP CONSTRAINT IF EXISTS clients_sync_status_check,
            DROP COLUMN IF EXISTS openphone_contact_id,
            DROP COLUMN IF EXISTS openphone_alt_contact_1_id,
            DROP COLUMN IF EXISTS openphone_alt_contact_2_id,
            DROP COLUMN IF EXISTS last_synced_at,
            DROP COLUMN IF EXISTS sync_status,
            DROP COLUMN IF EXISTS sync_error;
    END IF;
END
$$;

DROP FUNCTION IF EXISTS syncbridge_touch_updated_at();
DROP FUNCTION IF EXISTS syncbridge_e164(text);

DROP TRIGGER IF EXISTS syncbridge_mailboxes_touch_updated_at ON mailboxes;
DROP TRIGGER IF EXISTS syncbridge_campaigns_touch_updated_at ON campaigns;
DROP TRIGGER IF EXISTS syncbridge_prospects_touch_updated_at ON prospects;
DROP INDEX IF EXISTS prospects_updated_idx;
DROP INDEX IF EXISTS campaigns_updated_idx;
DROP INDEX IF EXISTS mailboxes_updated_idx;
DROP INDEX IF EXISTS emails_message_id_idx;
DROP INDEX IF EXISTS emails_prospect_id_idx;

-- Tables we created go whole; in the application's own tables, only the
-- columns we added.
SELECT syncbridge_drop_owned('emails');
SELECT syncbridge_drop_owned('mailboxes');
SELECT syncbridge_drop_owned('campaigns');
SELECT syncbridge_drop_owned('prospects');

-- D1 replica seed (002-supabase-d1-crm-sync): prospects, campaigns and
-- mailboxes (Postgres is their source of truth, D1 a read replica) and
-- emails (written at the edge, mirrored here). The tables may already belong
-- to the application: create them when absent, add the seed's columns when
-- absent, and remember which, so the down script removes only those.
--
-- Seed corrections: emails keep D1's own text ids, and their prospect_id and
-- campaign_id as text without a foreign key, so an e-mail whose prospect is
-- not (yet) known here is stored, not dropped, and the integrity check
-- reports it; message_id is indexed but not unique (duplicates are an
-- integrity finding on either side, not a reason to refuse a row).

DO $$
BEGIN
    IF to_regclass('public.prospects') IS NULL THEN
        CREATE TABLE prospects (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'prospects');
    END IF;
    IF to_regclass('public.campaigns') IS NULL THEN
        CREATE TABLE campaigns (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'campaigns');
    END IF;
    IF to_regclass('public.mailboxes') IS NULL THEN
        CREATE TABLE mailboxes (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'mailboxes');
    END IF;
    IF to_regclass('public.emails') IS NULL THEN
        CREATE TABLE emails (id text PRIMARY KEY);
        INSERT INTO syncbridge_owned_objects VALUES ('table', 'emails');
    END IF;
END
$$;

SELECT syncbridge_add_owned_column(tbl, col, def) FROM (VALUES
    ('prospects', 'name',          'text'),
    ('prospects', 'city',          'text'),
    ('prospects', 'country',       'text'),
    ('prospects', 'contact_name',  'text'),
    ('prospects', 'contact_email', 'text'),
    ('prospects', 'contact_title', 'text'),
    ('prospects', 'phone',         'text'),
    ('prospects', 'website',       'text'),
    ('prospects', 'linkedin_url',  'text'),
    ('prospects', 'stage',         'text'),
    ('prospects', 'tier',          'text'),
    ('prospects', 'score',         'integer'),
    ('prospects', 'lead_source',   'text'),
    ('prospects', 'email_bounced', 'boolean NOT NULL DEFAULT false'),
    ('prospects', 'archived',      'boolean NOT NULL DEFAULT false'),
    ('prospects', 'created_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('prospects', 'updated_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('campaigns', 'name',          'text'),
    ('campaigns', 'status',        'text'),
    ('campaigns', 'subject',       'text'),
    ('campaigns', 'mailbox_id',    'uuid'),
    ('campaigns', 'daily_limit',   'integer'),
    ('campaigns', 'created_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('campaigns', 'updated_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('mailboxes', 'email',         'text'),
    ('mailboxes', 'name',          'text'),
    ('mailboxes', 'status',        'text'),
    ('mailboxes', 'daily_limit',   'integer'),
    ('mailboxes', 'created_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('mailboxes', 'updated_at',    'timestamptz NOT NULL DEFAULT now()'),
    ('emails',    'prospect_id',   'text'),
    ('emails',    'campaign_id',   'text'),
    ('emails',    'subject',       'text'),
    ('emails',    'body',          'text'),
    ('emails',    'to_email',      'text'),
    ('emails',    'from_email',    'text'),
    ('emails',    'message_id',    'text'),
    ('emails',    'direction',     'text'),
    ('emails',    'status',        'text'),
    ('emails',    'sent_at',       'timestamptz'),
    ('emails',    'opened_at',     'timestamptz'),
    ('emails',    'clicked_at',    'timestamptz'),
    ('emails',    'replied_at',    'timestamptz'),
    ('emails',    'bounced_at',    'timestamptz'),
    ('emails',    'created_at',    'timestamptz NOT NULL DEFAULT now()')
) AS t(tbl, col, def);

-- The keyset the replica's reconciliation walks, and what integrity reads.
CREATE INDEX IF NOT EXISTS prospects_updated_idx ON prospects (updated_at, id);
CREATE INDEX IF NOT EXISTS campaigns_updated_idx ON campaigns (updated_at, id);
CREATE INDEX IF NOT EXISTS mailboxes_updated_idx ON mailboxes (updated_at, id);
CREATE INDEX IF NOT EXISTS emails_message_id_idx ON emails (message_id);
CREATE INDEX IF NOT EXISTS emails_prospect_id_idx ON emails (prospect_id);

DROP TRIGGER IF EXISTS syncbridge_prospects_touch_updated_at ON prospects;
CREATE TRIGGER syncbridge_prospects_touch_updated_at BEFORE UPDATE ON prospects
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
DROP TRIGGER IF EXISTS syncbridge_campaigns_touch_updated_at ON campaigns;
CREATE TRIGGER syncbridge_campaigns_touch_updated_at BEFORE UPDATE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();
DROP TRIGGER IF EXISTS syncbridge_mailboxes_touch_updated_at ON mailboxes;
CREATE TRIGGER syncbridge_mailboxes_touch_updated_at BEFORE UPDATE ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION syncbridge_touch_updated_at();

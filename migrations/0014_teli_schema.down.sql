DROP TRIGGER IF EXISTS syncbridge_messages_touch_updated_at ON messages;
DROP TRIGGER IF EXISTS syncbridge_customers_touch_updated_at ON customers;
DROP TRIGGER IF EXISTS syncbridge_businesses_touch_updated_at ON businesses;
DROP INDEX IF EXISTS messages_teli_call_id_key;
DROP INDEX IF EXISTS messages_customer_id_idx;
DROP INDEX IF EXISTS customers_business_phone_key;
DROP INDEX IF EXISTS businesses_teli_agent_id_key;

SELECT syncbridge_drop_owned('messages');
SELECT syncbridge_drop_owned('customers');
SELECT syncbridge_drop_owned('businesses');

DROP FUNCTION syncbridge_drop_owned(text);
DROP FUNCTION syncbridge_add_owned_column(text, text, text);

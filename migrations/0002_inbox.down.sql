DROP TABLE IF EXISTS webhook_event_keys;
DROP TABLE IF EXISTS webhook_events;

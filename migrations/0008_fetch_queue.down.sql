DROP TABLE IF EXISTS sync_fetch_queue;

-- Back to 0003's SQL body (same results).
CREATE OR REPLACE FUNCTION syncbridge_e164(p text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT CASE
        WHEN ltrim(p) LIKE '+%' THEN
            CASE WHEN length(d) BETWEEN 8 AND 15 AND left(d, 1) <> '0' THEN '+' || d END
        WHEN length(d) = 10 AND left(d, 1) NOT IN ('0', '1') THEN '+1' || d
        WHEN length(d) = 11 AND left(d, 1) = '1' AND substr(d, 2, 1) NOT IN ('0', '1') THEN '+' || d
    END
    FROM (SELECT regexp_replace(p, '[^0-9]', '', 'g') AS d) digits
$$;

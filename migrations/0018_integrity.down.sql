DROP FUNCTION IF EXISTS syncbridge_fix_orphans(text, text);
DROP FUNCTION IF EXISTS syncbridge_orphans();
-- 0004's version: a month whose rows are in the default partition fails.
CREATE OR REPLACE FUNCTION create_monthly_partition(p_table text, p_month date DEFAULT current_date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_end   date := (date_trunc('month', p_month) + interval '1 month')::date;
    v_name  text := p_table || '_' || to_char(v_start, 'YYYY_MM');
BEGIN
    IF to_regclass(format('%I', v_name)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            v_name, p_table, v_start, v_end);
    END IF;
    RETURN v_name;
END
$$;

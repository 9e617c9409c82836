-- Bedrock usage summed per job and per UTC day, kept in step by a trigger on profile_generations,
-- so `status`, the console's job table, today's spend and the daily cost cap read one row each
-- instead of summing every generation row (docs/decisions.md, "Usage rollups"). Discarded rows
-- (calls that wrote no profile) cost but are no profile. The function carries the migration's
-- search path, so it writes the rollups in the daemon's schema whatever the inserting session's
-- path is.
CREATE TABLE job_usage (
    job_id text PRIMARY KEY,
    profiles bigint NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    cost_usd double precision NOT NULL,
    discarded_calls bigint NOT NULL,
    discarded_cost_usd double precision NOT NULL
);

CREATE TABLE daily_usage (
    day date PRIMARY KEY,
    profiles bigint NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    cost_usd double precision NOT NULL,
    discarded_calls bigint NOT NULL,
    discarded_cost_usd double precision NOT NULL
);

CREATE FUNCTION roll_up_generation() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.job_id IS NOT NULL THEN
        INSERT INTO job_usage AS u
        VALUES (NEW.job_id, CASE WHEN NEW.discarded THEN 0 ELSE 1 END, NEW.calls, NEW.input_tokens,
                NEW.output_tokens, NEW.cache_read_tokens, NEW.cache_write_tokens, NEW.cost_usd,
                CASE WHEN NEW.discarded THEN NEW.calls ELSE 0 END,
                CASE WHEN NEW.discarded THEN NEW.cost_usd ELSE 0 END)
        ON CONFLICT (job_id) DO UPDATE SET
            profiles = u.profiles + EXCLUDED.profiles,
            calls = u.calls + EXCLUDED.calls,
            input_tokens = u.input_tokens + EXCLUDED.input_tokens,
            output_tokens = u.output_tokens + EXCLUDED.output_tokens,
            cache_read_tokens = u.cache_read_tokens + EXCLUDED.cache_read_tokens,
            cache_write_tokens = u.cache_write_tokens + EXCLUDED.cache_write_tokens,
            cost_usd = u.cost_usd + EXCLUDED.cost_usd,
            discarded_calls = u.discarded_calls + EXCLUDED.discarded_calls,
            discarded_cost_usd = u.discarded_cost_usd + EXCLUDED.discarded_cost_usd;
    END IF;
    INSERT INTO daily_usage AS u
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, CASE WHEN NEW.discarded THEN 0 ELSE 1 END,
            NEW.calls, NEW.input_tokens, NEW.output_tokens, NEW.cache_read_tokens,
            NEW.cache_write_tokens, NEW.cost_usd,
            CASE WHEN NEW.discarded THEN NEW.calls ELSE 0 END,
            CASE WHEN NEW.discarded THEN NEW.cost_usd ELSE 0 END)
    ON CONFLICT (day) DO UPDATE SET
        profiles = u.profiles + EXCLUDED.profiles,
        calls = u.calls + EXCLUDED.calls,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        cache_read_tokens = u.cache_read_tokens + EXCLUDED.cache_read_tokens,
        cache_write_tokens = u.cache_write_tokens + EXCLUDED.cache_write_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd,
        discarded_calls = u.discarded_calls + EXCLUDED.discarded_calls,
        discarded_cost_usd = u.discarded_cost_usd + EXCLUDED.discarded_cost_usd;
    RETURN NULL;
END
$$;

CREATE TRIGGER profile_generations_roll_up
    AFTER INSERT ON profile_generations
    FOR EACH ROW EXECUTE FUNCTION roll_up_generation();

-- What existing installs recorded before the rollups.
INSERT INTO job_usage
SELECT job_id, count(*) FILTER (WHERE NOT discarded), sum(calls), sum(input_tokens),
       sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_usd),
       COALESCE(sum(calls) FILTER (WHERE discarded), 0),
       COALESCE(sum(cost_usd) FILTER (WHERE discarded), 0)
FROM profile_generations WHERE job_id IS NOT NULL GROUP BY job_id;

INSERT INTO daily_usage
SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FILTER (WHERE NOT discarded), sum(calls),
       sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
       sum(cost_usd), COALESCE(sum(calls) FILTER (WHERE discarded), 0),
       COALESCE(sum(cost_usd) FILTER (WHERE discarded), 0)
FROM profile_generations GROUP BY 1;

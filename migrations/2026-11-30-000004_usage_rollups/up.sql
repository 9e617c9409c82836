-- Bedrock usage summed per job and per UTC day, kept in step by a trigger on profile_generations,
-- so `status`, the console's job table and today's spend read one row each instead of summing
-- every generation row (docs/decisions.md, "Usage rollups"). The function carries the migration's
-- search path, so it writes the rollups in the daemon's schema whatever the inserting session's
-- path is.
CREATE TABLE job_usage (
    job_id text PRIMARY KEY,
    profiles bigint NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd double precision NOT NULL
);

CREATE TABLE daily_usage (
    day date PRIMARY KEY,
    profiles bigint NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd double precision NOT NULL
);

CREATE FUNCTION roll_up_generation() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.job_id IS NOT NULL THEN
        INSERT INTO job_usage AS u
        VALUES (NEW.job_id, 1, NEW.calls, NEW.input_tokens, NEW.output_tokens, NEW.cost_usd)
        ON CONFLICT (job_id) DO UPDATE SET
            profiles = u.profiles + 1,
            calls = u.calls + EXCLUDED.calls,
            input_tokens = u.input_tokens + EXCLUDED.input_tokens,
            output_tokens = u.output_tokens + EXCLUDED.output_tokens,
            cost_usd = u.cost_usd + EXCLUDED.cost_usd;
    END IF;
    INSERT INTO daily_usage AS u
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, 1, NEW.calls, NEW.input_tokens,
            NEW.output_tokens, NEW.cost_usd)
    ON CONFLICT (day) DO UPDATE SET
        profiles = u.profiles + 1,
        calls = u.calls + EXCLUDED.calls,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd;
    RETURN NULL;
END
$$;

CREATE TRIGGER profile_generations_roll_up
    AFTER INSERT ON profile_generations
    FOR EACH ROW EXECUTE FUNCTION roll_up_generation();

-- What existing installs recorded before the rollups.
INSERT INTO job_usage
SELECT job_id, count(*), sum(calls), sum(input_tokens), sum(output_tokens), sum(cost_usd)
FROM profile_generations WHERE job_id IS NOT NULL GROUP BY job_id;

INSERT INTO daily_usage
SELECT (created_at AT TIME ZONE 'UTC')::date, count(*), sum(calls), sum(input_tokens),
       sum(output_tokens), sum(cost_usd)
FROM profile_generations GROUP BY 1;

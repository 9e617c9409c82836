-- Tables owned by profile-worker (docs/decisions.md, "Progress counted once per (job, entity)" and
-- "Token and cost accounting"). The Python API never reads them.

-- First outcome per (job, entity): a terminal row ('succeeded'/'failed') is written once, and the job
-- counters move only when it is new, so redelivered messages never count twice. 'retry' rows record
-- transient failures still in flight (they keep the stuck-job rescue away from a live job).
CREATE TABLE profile_generation_job_items (
    job_id VARCHAR(36) NOT NULL REFERENCES profile_generation_jobs (id) ON DELETE CASCADE,
    entity_type VARCHAR(20) NOT NULL,
    entity_id INTEGER NOT NULL,
    outcome VARCHAR(20) NOT NULL CHECK (outcome IN ('retry', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, entity_type, entity_id)
);

-- One row per generated profile: Bedrock usage and its estimated cost. job_id is the message's job id
-- as given (not a foreign key: ad-hoc and unknown job ids are allowed).
CREATE TABLE profile_generations (
    id BIGSERIAL PRIMARY KEY,
    entity_type VARCHAR(20) NOT NULL,
    entity_id INTEGER NOT NULL,
    job_id TEXT,
    model_id VARCHAR(200) NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX profile_generations_job_id_idx ON profile_generations (job_id);

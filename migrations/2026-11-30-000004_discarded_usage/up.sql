-- Usage of Bedrock calls that wrote no profile (a failed or retried message, a generation cut
-- short) is recorded too, flagged `discarded`, so the sums over a job or a day are what the
-- account is billed (docs/decisions.md, "Honest cost: every attempt is recorded"). Rows written
-- before this migration were all committed profiles.
ALTER TABLE profile_generations ADD COLUMN discarded BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX profile_generations_created_at_idx ON profile_generations (created_at);

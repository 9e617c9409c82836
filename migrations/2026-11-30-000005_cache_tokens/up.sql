-- Prompt-cache reads and writes, apart from input_tokens (billed at the full rate), because each is
-- priced differently (docs/decisions.md, "Prompt caching"). Older rows had no cache tokens.
ALTER TABLE profile_generations
    ADD COLUMN cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;

-- The daemon's tables live in its own schema (database.schema; the migration runs with it first on
-- the search path, so current_schema() names it). Installs from before this migration have them
-- where the API's tables are (usually public): move them here, rows, indexes and sequences
-- included. Then drop every foreign key from them into another schema, so the API can change its
-- tables freely (docs/decisions.md, "Own schema").
DO $$
DECLARE
    t text;
    found regclass;
    fk record;
BEGIN
    FOREACH t IN ARRAY ARRAY['profile_generation_job_items', 'profile_generations'] LOOP
        IF to_regclass(format('%I.%I', current_schema(), t)) IS NULL THEN
            found := to_regclass(quote_ident(t));
            IF found IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %s SET SCHEMA %I', found, current_schema());
            END IF;
        END IF;
    END LOOP;

    FOR fk IN
        SELECT c.conname, c.conrelid::regclass AS tbl
        FROM pg_constraint c
        JOIN pg_class own ON own.oid = c.conrelid
        JOIN pg_class other ON other.oid = c.confrelid
        WHERE c.contype = 'f'
          AND own.relnamespace = current_schema()::regnamespace
          AND other.relnamespace <> own.relnamespace
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END $$;

-- Domain tables of the original system (docs/compatibility.md, "Shared tables"), owned by the Python API's Alembic.
-- Everything is IF NOT EXISTS so that running this over a database Alembic already built changes
-- nothing; on an empty database it builds the same shape (used by tests, the demo and new setups).
-- There is deliberately no down.sql: reverting must never drop the API's tables.

CREATE TABLE IF NOT EXISTS users (
    id SERIAL PRIMARY KEY,
    cognito_sub VARCHAR(100) NOT NULL UNIQUE,
    email VARCHAR(255),
    role VARCHAR(20) NOT NULL DEFAULT 'viewer',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS authors (
    id SERIAL PRIMARY KEY,
    name VARCHAR(200) NOT NULL CONSTRAINT uq_authors_name UNIQUE,
    birth_year INTEGER,
    death_year INTEGER,
    era VARCHAR(50),
    first_acquired_date DATE,
    priority_score INTEGER NOT NULL DEFAULT 0,
    tier VARCHAR(10),
    preferred BOOLEAN NOT NULL DEFAULT false,
    image_url VARCHAR(500)
);

CREATE TABLE IF NOT EXISTS publishers (
    id SERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL UNIQUE,
    tier VARCHAR(10),
    founded_year INTEGER,
    description TEXT,
    preferred BOOLEAN NOT NULL DEFAULT false,
    image_url VARCHAR(500)
);

CREATE TABLE IF NOT EXISTS binders (
    id SERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL UNIQUE,
    tier VARCHAR(20),
    full_name VARCHAR(200),
    authentication_markers TEXT,
    preferred BOOLEAN NOT NULL DEFAULT false,
    image_url VARCHAR(500),
    founded_year INTEGER,
    closed_year INTEGER
);

CREATE TABLE IF NOT EXISTS books (
    id SERIAL PRIMARY KEY,
    title VARCHAR(500) NOT NULL,
    author_id INTEGER REFERENCES authors (id),
    publisher_id INTEGER REFERENCES publishers (id),
    binder_id INTEGER REFERENCES binders (id),
    status VARCHAR(20) NOT NULL DEFAULT 'ON_HAND',
    year_start INTEGER,
    edition VARCHAR(100),
    condition_grade VARCHAR(20),
    value_mid NUMERIC(10, 2),
    purchase_date DATE,
    is_first_edition BOOLEAN,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS books_status_idx ON books (status);
CREATE INDEX IF NOT EXISTS books_author_id_idx ON books (author_id);
CREATE INDEX IF NOT EXISTS books_publisher_id_idx ON books (publisher_id);
CREATE INDEX IF NOT EXISTS books_binder_id_idx ON books (binder_id);

-- JSON columns are `json`, not `jsonb`, exactly as the original (docs/compatibility.md, "entity_profiles").
CREATE TABLE IF NOT EXISTS entity_profiles (
    id SERIAL PRIMARY KEY,
    entity_type VARCHAR(20) NOT NULL,
    entity_id INTEGER NOT NULL,
    bio_summary TEXT,
    personal_stories JSON,
    connection_narratives JSON,
    relationship_stories JSON,
    ai_connections JSON,
    generated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    model_version VARCHAR(100),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uq_entity_profile UNIQUE (entity_type, entity_id)
);

CREATE TABLE IF NOT EXISTS ai_connections (
    id SERIAL PRIMARY KEY,
    source_type VARCHAR(20) NOT NULL,
    source_id INTEGER NOT NULL,
    target_type VARCHAR(20) NOT NULL,
    target_id INTEGER NOT NULL,
    relationship VARCHAR(20) NOT NULL,
    sub_type VARCHAR(50),
    confidence DOUBLE PRECISION NOT NULL DEFAULT 0.5,
    evidence TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uq_ai_connection UNIQUE (source_type, source_id, target_type, target_id, relationship)
);
CREATE INDEX IF NOT EXISTS ix_ai_connections_source ON ai_connections (source_type, source_id);
CREATE INDEX IF NOT EXISTS ix_ai_connections_target ON ai_connections (target_type, target_id);

CREATE TABLE IF NOT EXISTS profile_generation_jobs (
    id VARCHAR(36) PRIMARY KEY,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    owner_id INTEGER NOT NULL REFERENCES users (id),
    total_entities INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error_log TEXT,
    completed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_profile_generation_jobs_status ON profile_generation_jobs (status);

CREATE TABLE IF NOT EXISTS app_config (
    key VARCHAR(100) PRIMARY KEY,
    value VARCHAR(500) NOT NULL,
    description TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

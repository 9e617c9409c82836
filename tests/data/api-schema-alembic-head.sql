-- The Python API's schema as its Alembic migrations leave it at head, written from the API's table
-- descriptions (only the tables and columns documented for the entity-profile feature, with their
-- types, defaults, constraints and indexes). Used by tests/store_migrations.rs to check that
-- `profile-worker migrate` leaves the API's schema untouched and refuses when it is incomplete.
-- Loaded into an empty database as one script; everything lands in `public`.

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('e9a5101c8557');

CREATE TABLE users (
    id SERIAL NOT NULL,
    cognito_sub VARCHAR(100) NOT NULL,
    email VARCHAR(255),
    role VARCHAR(20) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_cognito_sub_key UNIQUE (cognito_sub)
);

CREATE TABLE authors (
    id SERIAL NOT NULL,
    name VARCHAR(200) NOT NULL,
    birth_year INTEGER,
    death_year INTEGER,
    era VARCHAR(50),
    first_acquired_date DATE,
    priority_score INTEGER DEFAULT 0 NOT NULL,
    tier VARCHAR(10),
    preferred BOOLEAN DEFAULT false NOT NULL,
    image_url VARCHAR(500),
    CONSTRAINT authors_pkey PRIMARY KEY (id),
    CONSTRAINT uq_authors_name UNIQUE (name)
);

CREATE TABLE publishers (
    id SERIAL NOT NULL,
    name VARCHAR(100) NOT NULL,
    tier VARCHAR(10),
    founded_year INTEGER,
    description TEXT,
    preferred BOOLEAN DEFAULT false NOT NULL,
    image_url VARCHAR(500),
    CONSTRAINT publishers_pkey PRIMARY KEY (id),
    CONSTRAINT publishers_name_key UNIQUE (name)
);

CREATE TABLE binders (
    id SERIAL NOT NULL,
    name VARCHAR(100) NOT NULL,
    tier VARCHAR(20),
    full_name VARCHAR(200),
    authentication_markers TEXT,
    preferred BOOLEAN DEFAULT false NOT NULL,
    image_url VARCHAR(500),
    founded_year INTEGER,
    closed_year INTEGER,
    CONSTRAINT binders_pkey PRIMARY KEY (id),
    CONSTRAINT binders_name_key UNIQUE (name)
);

CREATE TABLE books (
    id SERIAL NOT NULL,
    title VARCHAR(500) NOT NULL,
    author_id INTEGER,
    publisher_id INTEGER,
    binder_id INTEGER,
    status VARCHAR(20) NOT NULL,
    year_start INTEGER,
    year_end INTEGER,
    edition VARCHAR(100),
    condition_grade VARCHAR(20),
    value_mid NUMERIC(10, 2),
    purchase_date DATE,
    is_first_edition BOOLEAN,
    inventory_type VARCHAR(20) DEFAULT 'PRIMARY' NOT NULL,
    tracking_last_checked TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT books_pkey PRIMARY KEY (id),
    CONSTRAINT books_author_id_fkey FOREIGN KEY (author_id) REFERENCES authors (id),
    CONSTRAINT books_publisher_id_fkey FOREIGN KEY (publisher_id) REFERENCES publishers (id),
    CONSTRAINT books_binder_id_fkey FOREIGN KEY (binder_id) REFERENCES binders (id)
);
CREATE INDEX books_status_idx ON books (status);
CREATE INDEX books_author_id_idx ON books (author_id);
CREATE INDEX books_publisher_id_idx ON books (publisher_id);
CREATE INDEX books_binder_id_idx ON books (binder_id);
CREATE INDEX ix_books_is_first_edition ON books (is_first_edition);

CREATE TABLE book_images (
    id SERIAL NOT NULL,
    book_id INTEGER NOT NULL,
    s3_key VARCHAR(500) NOT NULL,
    display_order INTEGER DEFAULT 0 NOT NULL,
    is_primary BOOLEAN DEFAULT false NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT book_images_pkey PRIMARY KEY (id),
    CONSTRAINT book_images_book_id_fkey FOREIGN KEY (book_id) REFERENCES books (id) ON DELETE CASCADE
);

CREATE TABLE entity_profiles (
    id SERIAL NOT NULL,
    entity_type VARCHAR(20) NOT NULL,
    entity_id INTEGER NOT NULL,
    bio_summary TEXT,
    personal_stories JSON,
    connection_narratives JSON,
    relationship_stories JSON,
    ai_connections JSON,
    generated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    model_version VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT entity_profiles_pkey PRIMARY KEY (id),
    CONSTRAINT uq_entity_profile UNIQUE (entity_type, entity_id)
);

CREATE TABLE ai_connections (
    id SERIAL NOT NULL,
    source_type VARCHAR(20) NOT NULL,
    source_id INTEGER NOT NULL,
    target_type VARCHAR(20) NOT NULL,
    target_id INTEGER NOT NULL,
    relationship VARCHAR(20) NOT NULL,
    sub_type VARCHAR(50),
    confidence DOUBLE PRECISION DEFAULT 0.5 NOT NULL,
    evidence TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT ai_connections_pkey PRIMARY KEY (id),
    CONSTRAINT uq_ai_connection UNIQUE (source_type, source_id, target_type, target_id, relationship)
);
CREATE INDEX ix_ai_connections_source ON ai_connections (source_type, source_id);
CREATE INDEX ix_ai_connections_target ON ai_connections (target_type, target_id);

CREATE TABLE profile_generation_jobs (
    id VARCHAR(36) NOT NULL,
    status VARCHAR(20) DEFAULT 'pending' NOT NULL,
    owner_id INTEGER NOT NULL,
    total_entities INTEGER DEFAULT 0 NOT NULL,
    succeeded INTEGER DEFAULT 0 NOT NULL,
    failed INTEGER DEFAULT 0 NOT NULL,
    error_log TEXT,
    completed_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT profile_generation_jobs_pkey PRIMARY KEY (id),
    CONSTRAINT profile_generation_jobs_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES users (id)
);
CREATE INDEX ix_profile_generation_jobs_status ON profile_generation_jobs (status);

CREATE TABLE app_config (
    key VARCHAR(100) NOT NULL,
    value VARCHAR(500) NOT NULL,
    description TEXT,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT app_config_pkey PRIMARY KEY (key)
);

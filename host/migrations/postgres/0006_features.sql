-- Features: flags and numeric limits, the plans that grant them, per-tenant
-- overrides and platform-wide kill switches (issue 13). Evaluation happens
-- in memory (host/src/features/); these tables are its source of truth and
-- are read whole into a snapshot on start and after every write.
--
-- Values are JSON text: a flag is `true`/`false`; a limit is a non-negative
-- integer, or `null` for unlimited. That a value matches its feature's kind
-- is checked by the code that writes it (the kind lives on another row).
-- A tenant's plan stays `tenants.plan`; a plan name without a row here
-- grants nothing (the tenant gets the defaults).

CREATE TABLE features (
    key          TEXT    NOT NULL PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 100),
    kind         TEXT    NOT NULL CHECK (kind IN ('flag', 'limit')),
    default_value TEXT   NOT NULL,                          -- JSON
    description  TEXT    NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    builtin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE plans (
    name        TEXT    NOT NULL PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE plan_grants (
    plan         TEXT    NOT NULL REFERENCES plans (name),
    feature_key  TEXT    NOT NULL REFERENCES features (key),
    value        TEXT    NOT NULL,                          -- JSON
    PRIMARY KEY (plan, feature_key)
);

CREATE TABLE feature_overrides (
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id),
    feature_key  TEXT    NOT NULL REFERENCES features (key),
    value        TEXT    NOT NULL,                          -- JSON
    reason       TEXT    NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    actor        TEXT    NOT NULL,
    expires_at   BIGINT,                                    -- NULL: never
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, feature_key)
);

CREATE TABLE kill_switches (
    feature_key  TEXT    NOT NULL PRIMARY KEY REFERENCES features (key),
    reason       TEXT    NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    actor        TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL
);

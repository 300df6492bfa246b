-- Webhooks: the inbox of verified gateway events, the worker's leases and
-- retries, dead letters, their alert outbox, and each gateway's last
-- webhook verdict (see docs/decisions/0012-webhook-inbox.md).

-- One row per (tenant, provider, gateway event id): the UNIQUE key is what
-- makes a redelivered event a no-op. Rows are mutable job state (status,
-- attempts, lease); the money they cause lives in the append-only ledger.
CREATE TABLE webhook_inbox (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant_id       TEXT    NOT NULL REFERENCES tenants(id),
    provider        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    kind            TEXT    NOT NULL,
    gateway_type    TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'applied', 'ignored', 'dead')),
    attempts        INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at INTEGER  NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER  NOT NULL,
    done_at         INTEGER,
    UNIQUE (tenant_id, provider, event_id)
);
CREATE INDEX webhook_inbox_due ON webhook_inbox (status, next_attempt_at);
CREATE INDEX webhook_inbox_listing ON webhook_inbox (created_at, id);

-- An exhausted job, with the standard envelope. Replaying one re-queues its
-- job once (replayed_at set, in the same transaction).
CREATE TABLE dead_letters (
    id               TEXT   NOT NULL PRIMARY KEY,
    job_id           TEXT   NOT NULL,
    job_type         TEXT   NOT NULL,
    tenant_id        TEXT,
    provider         TEXT,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    reason           TEXT   NOT NULL,
    payload          TEXT   NOT NULL,
    failed_at        INTEGER NOT NULL,
    next_retry_at    INTEGER,
    backoff_strategy TEXT   NOT NULL,
    created_at       INTEGER NOT NULL,
    replayed_at      INTEGER
);
CREATE INDEX dead_letters_listing ON dead_letters (created_at, id);
CREATE INDEX dead_letters_job ON dead_letters (job_id);

-- Alerts still to be sent for new dead letters: written in the transaction
-- that creates the dead letter, so a lost alert never loses the letter and
-- a crash never loses the alert.
CREATE TABLE dead_letter_alerts (
    dead_letter_id  TEXT   NOT NULL PRIMARY KEY REFERENCES dead_letters(id),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
);

-- The last webhook verdict per tenant gateway, shown to the tenant in
-- GET /v1/gateways (a wrong secret is a configuration error it must see).
CREATE TABLE webhook_status (
    tenant_id     TEXT   NOT NULL REFERENCES tenants(id),
    provider      TEXT   NOT NULL,
    last_error    TEXT,
    last_error_at INTEGER,
    last_ok_at    INTEGER,
    PRIMARY KEY (tenant_id, provider)
);

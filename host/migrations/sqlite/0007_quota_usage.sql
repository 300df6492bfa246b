-- Quota counters: one row per tenant, metered key and period (a calendar
-- month in UTC, named by its first millisecond). A checkout increments its
-- row in the same transaction that stores its pending order, with a guard
-- (`used < limit`) in the upsert itself, so the count can never pass the
-- limit however many writers race (see host/src/quota/counter.rs).
CREATE TABLE quota_usage (
    tenant_id       TEXT    NOT NULL REFERENCES tenants (id),
    key             TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 100),
    period_start    INTEGER NOT NULL,
    used            INTEGER NOT NULL CHECK (used >= 0),
    -- The highest threshold (0, 80 or 100 percent) already audited in this
    -- period, so each crossing is audited once.
    alerted_percent INTEGER NOT NULL DEFAULT 0 CHECK (alerted_percent IN (0, 80, 100)),
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key, period_start)
);

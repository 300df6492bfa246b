-- payhost schema, SQLite flavour. Keep the logical shape identical to
-- migrations/postgres/0001_init.sql: same tables, columns, constraints and
-- trigger behaviour. Timestamps are INTEGER unix milliseconds everywhere.
--
-- Invariants the database itself enforces (not only the code):
--   * payments and audit_events are append-only (UPDATE/DELETE raise);
--   * refunds of a payment never exceed what was paid, counting in-flight
--     reservations (refund_totals CHECK, maintained by triggers);
--   * a refund references an approved payment of the same tenant and currency;
--   * one gateway event / refund reference is booked at most once per
--     (tenant, provider) — NULL provider (manual rows) counts as ''.

CREATE TABLE tenants (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    plan        TEXT    NOT NULL DEFAULT 'free' CHECK (length(plan) BETWEEN 1 AND 64),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE tenant_domains (
    domain      TEXT    NOT NULL PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX tenant_domains_tenant ON tenant_domains (tenant_id);

CREATE TABLE api_keys (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    prefix      TEXT    NOT NULL,
    key_hash    TEXT    NOT NULL UNIQUE,
    label       TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE gateway_settings (
    tenant_id                  TEXT    NOT NULL REFERENCES tenants (id),
    provider                   TEXT    NOT NULL,
    priority                   INTEGER NOT NULL,
    currencies                 TEXT    NOT NULL,            -- JSON array of ISO-4217 codes
    enabled                    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    credentials_ciphertext     BLOB    NOT NULL,
    webhook_secret_ciphertext  BLOB,
    key_id                     TEXT    NOT NULL,
    masked                     TEXT    NOT NULL,            -- JSON object, display only
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);

-- Orders are mutable workflow state; the ledger below is the money.
CREATE TABLE orders (
    id                 TEXT    NOT NULL PRIMARY KEY,
    tenant_id          TEXT    NOT NULL REFERENCES tenants (id),
    kind               TEXT    NOT NULL CHECK (kind IN ('checkout', 'manual', 'bulk', 'external')),
    status             TEXT    NOT NULL CHECK (status IN ('pending', 'requires_action', 'paid', 'declined',
                                                          'canceled', 'refunded', 'partially_refunded')),
    currency           TEXT    NOT NULL CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    lines              TEXT    NOT NULL,                    -- JSON array of order lines
    provider           TEXT,
    gateway_reference  TEXT,
    customer           TEXT    NOT NULL DEFAULT '{}',
    metadata           TEXT    NOT NULL DEFAULT '{}',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX orders_tenant_created ON orders (tenant_id, created_at, id);
CREATE UNIQUE INDEX orders_gateway_reference_unique
    ON orders (tenant_id, provider, gateway_reference) WHERE gateway_reference IS NOT NULL;

-- The ledger. Every financial event is a new row; rows are never updated or deleted.
CREATE TABLE payments (
    id                 TEXT    NOT NULL PRIMARY KEY,
    tenant_id          TEXT    NOT NULL REFERENCES tenants (id),
    order_id           TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('product', 'shipping', 'refund')),
    status             TEXT    NOT NULL CHECK (status IN ('approved', 'pending', 'refunded')),
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT    NOT NULL CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
    provider           TEXT,
    gateway_reference  TEXT,
    refund_of          TEXT,
    entitlement        TEXT,
    source             TEXT    NOT NULL CHECK (source IN ('api', 'webhook', 'manual', 'janitor')),
    external_ref       TEXT,
    created_at         INTEGER NOT NULL,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id),
    FOREIGN KEY (tenant_id, refund_of) REFERENCES payments (tenant_id, id),
    CONSTRAINT payments_refund_shape
        CHECK ((kind = 'refund') = (refund_of IS NOT NULL) AND (kind = 'refund') = (status = 'refunded')),
    CONSTRAINT payments_entitlement_only_on_products
        CHECK (entitlement IS NULL OR kind = 'product')
);
CREATE INDEX payments_tenant_created ON payments (tenant_id, created_at, id);
CREATE INDEX payments_tenant_order ON payments (tenant_id, order_id, created_at);
CREATE INDEX payments_refund_of ON payments (refund_of) WHERE refund_of IS NOT NULL;
CREATE UNIQUE INDEX payments_external_ref_unique
    ON payments (tenant_id, COALESCE(provider, ''), external_ref) WHERE external_ref IS NOT NULL;

-- Refund guard: one row per approved payment, maintained only by triggers.
-- The CHECK makes "refunds never exceed what was paid" a database invariant:
-- every refund row and every in-flight reservation passes through this row,
-- and SQLite's single writer serialises them.
CREATE TABLE refund_totals (
    payment_id  TEXT    NOT NULL PRIMARY KEY REFERENCES payments (id),
    tenant_id   TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    paid        INTEGER NOT NULL CHECK (paid > 0),
    refunded    INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    reserved    INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    CONSTRAINT refund_totals_within_paid CHECK (refunded + reserved <= paid)
);

-- A refund amount held while the gateway is called; deleted when the refund
-- row is booked (complete) or the gateway call failed (release).
CREATE TABLE refund_reservations (
    id            TEXT    NOT NULL PRIMARY KEY,
    tenant_id     TEXT    NOT NULL,
    payment_id    TEXT    NOT NULL REFERENCES refund_totals (payment_id),
    amount_minor  INTEGER NOT NULL CHECK (amount_minor > 0),
    created_at    INTEGER NOT NULL
);
CREATE INDEX refund_reservations_payment ON refund_reservations (payment_id);

CREATE TABLE idempotency_keys (
    tenant_id        TEXT    NOT NULL REFERENCES tenants (id),
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status  INTEGER,
    response_body    BLOB,
    created_at       INTEGER NOT NULL,
    locked_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key),
    CHECK ((state = 'done') = (response_status IS NOT NULL))
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE audit_events (
    id          TEXT    NOT NULL PRIMARY KEY,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    tenant_id   TEXT,
    details     TEXT    NOT NULL,                           -- JSON, secrets redacted
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_events_created ON audit_events (created_at, id);
CREATE INDEX audit_events_tenant_created ON audit_events (tenant_id, created_at, id);

-- Append-only enforcement. (The store turns on recursive_triggers so that
-- INSERT OR REPLACE, which deletes the old row, also hits the DELETE trigger.)
CREATE TRIGGER payments_no_update BEFORE UPDATE ON payments
BEGIN
    SELECT RAISE(ABORT, 'payhost: payments ledger is append-only');
END;
CREATE TRIGGER payments_no_delete BEFORE DELETE ON payments
BEGIN
    SELECT RAISE(ABORT, 'payhost: payments ledger is append-only');
END;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'payhost: audit log is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'payhost: audit log is append-only');
END;

-- Refund guard maintenance.
CREATE TRIGGER payments_refund_target BEFORE INSERT ON payments WHEN NEW.refund_of IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'payhost: a refund must reference an approved payment of the same tenant and currency')
     WHERE NOT EXISTS (SELECT 1 FROM refund_totals
                        WHERE payment_id = NEW.refund_of
                          AND tenant_id = NEW.tenant_id
                          AND currency = NEW.currency);
END;
CREATE TRIGGER payments_open_refund_totals AFTER INSERT ON payments WHEN NEW.status = 'approved'
BEGIN
    INSERT INTO refund_totals (payment_id, tenant_id, currency, paid, refunded, reserved)
    VALUES (NEW.id, NEW.tenant_id, NEW.currency, NEW.amount_minor, 0, 0);
END;
CREATE TRIGGER payments_count_refund AFTER INSERT ON payments WHEN NEW.refund_of IS NOT NULL
BEGIN
    UPDATE refund_totals SET refunded = refunded + NEW.amount_minor WHERE payment_id = NEW.refund_of;
END;

CREATE TRIGGER refund_reservations_target BEFORE INSERT ON refund_reservations
BEGIN
    SELECT RAISE(ABORT, 'payhost: a refund reservation must reference an approved payment of the same tenant')
     WHERE NOT EXISTS (SELECT 1 FROM refund_totals
                        WHERE payment_id = NEW.payment_id AND tenant_id = NEW.tenant_id);
END;
CREATE TRIGGER refund_reservations_hold AFTER INSERT ON refund_reservations
BEGIN
    UPDATE refund_totals SET reserved = reserved + NEW.amount_minor WHERE payment_id = NEW.payment_id;
END;
CREATE TRIGGER refund_reservations_free AFTER DELETE ON refund_reservations
BEGIN
    UPDATE refund_totals SET reserved = reserved - OLD.amount_minor WHERE payment_id = OLD.payment_id;
END;
CREATE TRIGGER refund_reservations_no_update BEFORE UPDATE ON refund_reservations
BEGIN
    SELECT RAISE(ABORT, 'payhost: refund reservations are never updated');
END;
CREATE TRIGGER refund_totals_fixed BEFORE UPDATE OF payment_id, tenant_id, currency, paid ON refund_totals
BEGIN
    SELECT RAISE(ABORT, 'payhost: refund_totals identity and paid amount are fixed');
END;
CREATE TRIGGER refund_totals_no_delete BEFORE DELETE ON refund_totals
BEGIN
    SELECT RAISE(ABORT, 'payhost: refund_totals rows are never deleted');
END;

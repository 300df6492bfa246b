-- The reconciliation janitor's schedule: one row per checkout order it has
-- looked at (orders left `pending` / `requires_action`). `next_check_at`
-- grows with every check that finds the payment still unsettled (backoff);
-- `lease_owner` / `lease_until` is the claim of the instance calling the
-- gateway for this order right now, so two instances never call it for the
-- same order at once. The row is workflow state, not money: the booking it
-- leads to goes through the ledger's own guarded paths.
CREATE TABLE reconcile_checks (
    order_id       TEXT    NOT NULL PRIMARY KEY REFERENCES orders (id),
    tenant_id      TEXT    NOT NULL,
    attempts       BIGINT  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_check_at  BIGINT  NOT NULL,
    lease_owner    TEXT,
    lease_until    BIGINT,
    last_state     TEXT,
    checked_at     BIGINT
);
CREATE INDEX reconcile_checks_due ON reconcile_checks (next_check_at);
-- The janitor's scan: unsettled checkout orders by age.
CREATE INDEX orders_unsettled ON orders (created_at)
    WHERE status IN ('pending', 'requires_action');
-- The generation of a checkout's gateway idempotency key (how many orders
-- under its client key were canceled before it), stored with the order when
-- it is staged so that every resume derives the key its first call used.
-- NULL: an order stored by an earlier build, whose key is generation 0.
ALTER TABLE orders ADD COLUMN key_generation BIGINT CHECK (key_generation >= 0);

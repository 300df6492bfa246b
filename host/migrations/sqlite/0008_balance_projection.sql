-- Balance projection and daily aggregates: derived state kept by triggers in
-- the transaction that inserts the ledger rows (and the refund holds), so
-- `GET /v1/balance` and the daily reports read a few rows instead of
-- summing the ledger. `payments` stays the source of truth: `payhost ledger
-- verify` recomputes both tables from it. Keep the logical shape identical
-- to migrations/postgres/0008_balance_projection.sql.
--
-- Amounts are stored split, `amount / 1000000` in `*_high` and
-- `amount % 1000000` in `*_low` (the split the row-summing reads used): each
-- part grows by at most 10^6 per row, so a column overflows 64 bits only
-- after ~9 * 10^12 rows; readers recombine them as 128-bit integers.

-- Per (tenant, currency): approved rows (paid), refund rows (refunded) and
-- unfinished refund reservations (held).
CREATE TABLE balance_projection (
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id),
    currency       TEXT    NOT NULL,
    paid_high      INTEGER NOT NULL DEFAULT 0,
    paid_low       INTEGER NOT NULL DEFAULT 0,
    refunded_high  INTEGER NOT NULL DEFAULT 0,
    refunded_low   INTEGER NOT NULL DEFAULT 0,
    held_high      INTEGER NOT NULL DEFAULT 0 CHECK (held_high >= 0),
    held_low       INTEGER NOT NULL DEFAULT 0 CHECK (held_low >= 0),
    PRIMARY KEY (tenant_id, currency)
) WITHOUT ROWID;

-- Per (tenant, UTC day, currency, provider): `day` is created_at / 86400000
-- (days since 1970-01-01 UTC); `provider` is '' for manual, bulk and
-- external rows. `payments` counts approved rows, `refunds` refund rows.
CREATE TABLE ledger_daily (
    tenant_id      TEXT    NOT NULL,
    day            INTEGER NOT NULL,
    currency       TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    paid_high      INTEGER NOT NULL DEFAULT 0,
    paid_low       INTEGER NOT NULL DEFAULT 0,
    refunded_high  INTEGER NOT NULL DEFAULT 0,
    refunded_low   INTEGER NOT NULL DEFAULT 0,
    payments       INTEGER NOT NULL DEFAULT 0,
    refunds        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, currency, provider)
) WITHOUT ROWID;
-- The operator's platform-wide report reads a range of days.
CREATE INDEX ledger_daily_day ON ledger_daily (day);

CREATE TRIGGER payments_sum_projections AFTER INSERT ON payments
WHEN NEW.status IN ('approved', 'refunded')
BEGIN
    INSERT INTO balance_projection (tenant_id, currency, paid_high, paid_low, refunded_high, refunded_low)
    VALUES (NEW.tenant_id, NEW.currency,
            CASE WHEN NEW.status = 'approved' THEN NEW.amount_minor / 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'approved' THEN NEW.amount_minor % 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN NEW.amount_minor / 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN NEW.amount_minor % 1000000 ELSE 0 END)
    ON CONFLICT (tenant_id, currency) DO UPDATE SET
        paid_high = paid_high + excluded.paid_high,
        paid_low = paid_low + excluded.paid_low,
        refunded_high = refunded_high + excluded.refunded_high,
        refunded_low = refunded_low + excluded.refunded_low;
    INSERT INTO ledger_daily (tenant_id, day, currency, provider, paid_high, paid_low,
                              refunded_high, refunded_low, payments, refunds)
    VALUES (NEW.tenant_id, NEW.created_at / 86400000, NEW.currency, COALESCE(NEW.provider, ''),
            CASE WHEN NEW.status = 'approved' THEN NEW.amount_minor / 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'approved' THEN NEW.amount_minor % 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN NEW.amount_minor / 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN NEW.amount_minor % 1000000 ELSE 0 END,
            CASE WHEN NEW.status = 'approved' THEN 1 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN 1 ELSE 0 END)
    ON CONFLICT (tenant_id, day, currency, provider) DO UPDATE SET
        paid_high = paid_high + excluded.paid_high,
        paid_low = paid_low + excluded.paid_low,
        refunded_high = refunded_high + excluded.refunded_high,
        refunded_low = refunded_low + excluded.refunded_low,
        payments = payments + excluded.payments,
        refunds = refunds + excluded.refunds;
END;

-- A hold exists only on an approved payment, whose row opened the balance.
CREATE TRIGGER refund_reservations_sum_held AFTER INSERT ON refund_reservations
BEGIN
    UPDATE balance_projection
       SET held_high = held_high + NEW.amount_minor / 1000000,
           held_low = held_low + NEW.amount_minor % 1000000
     WHERE tenant_id = NEW.tenant_id
       AND currency = (SELECT currency FROM refund_totals WHERE payment_id = NEW.payment_id);
END;
CREATE TRIGGER refund_reservations_unsum_held AFTER DELETE ON refund_reservations
BEGIN
    UPDATE balance_projection
       SET held_high = held_high - OLD.amount_minor / 1000000,
           held_low = held_low - OLD.amount_minor % 1000000
     WHERE tenant_id = OLD.tenant_id
       AND currency = (SELECT currency FROM refund_totals WHERE payment_id = OLD.payment_id);
END;

-- Back-fill from the rows already booked.
INSERT INTO balance_projection (tenant_id, currency, paid_high, paid_low, refunded_high, refunded_low)
SELECT tenant_id, currency,
       SUM(CASE WHEN status = 'approved' THEN amount_minor / 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'approved' THEN amount_minor % 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'refunded' THEN amount_minor / 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'refunded' THEN amount_minor % 1000000 ELSE 0 END)
  FROM payments WHERE status IN ('approved', 'refunded')
 GROUP BY tenant_id, currency;
UPDATE balance_projection
   SET held_high = (SELECT COALESCE(SUM(r.amount_minor / 1000000), 0)
                      FROM refund_reservations r JOIN refund_totals t ON t.payment_id = r.payment_id
                     WHERE r.tenant_id = balance_projection.tenant_id
                       AND t.currency = balance_projection.currency),
       held_low = (SELECT COALESCE(SUM(r.amount_minor % 1000000), 0)
                     FROM refund_reservations r JOIN refund_totals t ON t.payment_id = r.payment_id
                    WHERE r.tenant_id = balance_projection.tenant_id
                      AND t.currency = balance_projection.currency);
INSERT INTO ledger_daily (tenant_id, day, currency, provider, paid_high, paid_low,
                          refunded_high, refunded_low, payments, refunds)
SELECT tenant_id, created_at / 86400000, currency, COALESCE(provider, ''),
       SUM(CASE WHEN status = 'approved' THEN amount_minor / 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'approved' THEN amount_minor % 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'refunded' THEN amount_minor / 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'refunded' THEN amount_minor % 1000000 ELSE 0 END),
       SUM(CASE WHEN status = 'approved' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'refunded' THEN 1 ELSE 0 END)
  FROM payments WHERE status IN ('approved', 'refunded')
 GROUP BY tenant_id, created_at / 86400000, currency, COALESCE(provider, '');

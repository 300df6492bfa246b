-- Balance projection and daily aggregates: derived state kept by triggers in
-- the transaction that inserts the ledger rows (and the refund holds), so
-- `GET /v1/balance` and the daily reports read a few rows instead of
-- summing the ledger. `payments` stays the source of truth: `payhost ledger
-- verify` recomputes both tables from it. Keep the logical shape identical
-- to migrations/sqlite/0008_balance_projection.sql.
--
-- Amounts are stored split, `amount / 1000000` in `*_high` and
-- `amount % 1000000` in `*_low` (the split the row-summing reads used): each
-- part grows by at most 10^6 per row, so a column overflows 64 bits only
-- after ~9 * 10^12 rows (and PostgreSQL raises, never wraps); readers
-- recombine them as 128-bit integers.
--
-- Locking: a booking updates its (tenant, currency) balance row and then its
-- daily row, after the refund guard's refund_totals row (triggers fire in
-- name order: payments_refund_guard < payments_sum_projections), always in
-- that order, so concurrent bookings queue on the balance row, never deadlock.

-- Per (tenant, currency): approved rows (paid), refund rows (refunded) and
-- unfinished refund reservations (held).
CREATE TABLE balance_projection (
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id),
    currency       TEXT    NOT NULL,
    paid_high      BIGINT  NOT NULL DEFAULT 0,
    paid_low       BIGINT  NOT NULL DEFAULT 0,
    refunded_high  BIGINT  NOT NULL DEFAULT 0,
    refunded_low   BIGINT  NOT NULL DEFAULT 0,
    held_high      BIGINT  NOT NULL DEFAULT 0 CHECK (held_high >= 0),
    held_low       BIGINT  NOT NULL DEFAULT 0 CHECK (held_low >= 0),
    PRIMARY KEY (tenant_id, currency)
);

-- Per (tenant, UTC day, currency, provider): `day` is created_at / 86400000
-- (days since 1970-01-01 UTC); `provider` is '' for manual, bulk and
-- external rows. `payments` counts approved rows, `refunds` refund rows.
CREATE TABLE ledger_daily (
    tenant_id      TEXT    NOT NULL,
    day            BIGINT  NOT NULL,
    currency       TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    paid_high      BIGINT  NOT NULL DEFAULT 0,
    paid_low       BIGINT  NOT NULL DEFAULT 0,
    refunded_high  BIGINT  NOT NULL DEFAULT 0,
    refunded_low   BIGINT  NOT NULL DEFAULT 0,
    payments       BIGINT  NOT NULL DEFAULT 0,
    refunds        BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, currency, provider)
);
-- The operator's platform-wide report reads a range of days.
CREATE INDEX ledger_daily_day ON ledger_daily (day);

CREATE FUNCTION payhost_sum_projections() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    paid BIGINT := CASE WHEN NEW.status = 'approved' THEN NEW.amount_minor ELSE 0 END;
    refunded BIGINT := CASE WHEN NEW.status = 'refunded' THEN NEW.amount_minor ELSE 0 END;
BEGIN
    IF NEW.status NOT IN ('approved', 'refunded') THEN
        RETURN NULL;
    END IF;
    INSERT INTO balance_projection AS b (tenant_id, currency, paid_high, paid_low, refunded_high, refunded_low)
    VALUES (NEW.tenant_id, NEW.currency, paid / 1000000, paid % 1000000, refunded / 1000000, refunded % 1000000)
    ON CONFLICT (tenant_id, currency) DO UPDATE SET
        paid_high = b.paid_high + EXCLUDED.paid_high,
        paid_low = b.paid_low + EXCLUDED.paid_low,
        refunded_high = b.refunded_high + EXCLUDED.refunded_high,
        refunded_low = b.refunded_low + EXCLUDED.refunded_low;
    INSERT INTO ledger_daily AS d (tenant_id, day, currency, provider, paid_high, paid_low,
                                   refunded_high, refunded_low, payments, refunds)
    VALUES (NEW.tenant_id, NEW.created_at / 86400000, NEW.currency, COALESCE(NEW.provider, ''),
            paid / 1000000, paid % 1000000, refunded / 1000000, refunded % 1000000,
            CASE WHEN NEW.status = 'approved' THEN 1 ELSE 0 END,
            CASE WHEN NEW.status = 'refunded' THEN 1 ELSE 0 END)
    ON CONFLICT (tenant_id, day, currency, provider) DO UPDATE SET
        paid_high = d.paid_high + EXCLUDED.paid_high,
        paid_low = d.paid_low + EXCLUDED.paid_low,
        refunded_high = d.refunded_high + EXCLUDED.refunded_high,
        refunded_low = d.refunded_low + EXCLUDED.refunded_low,
        payments = d.payments + EXCLUDED.payments,
        refunds = d.refunds + EXCLUDED.refunds;
    RETURN NULL;
END;
$$;
CREATE TRIGGER payments_sum_projections AFTER INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION payhost_sum_projections();

-- A hold exists only on an approved payment, whose row opened the balance.
CREATE FUNCTION payhost_sum_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE balance_projection
           SET held_high = held_high + NEW.amount_minor / 1000000,
               held_low = held_low + NEW.amount_minor % 1000000
         WHERE tenant_id = NEW.tenant_id
           AND currency = (SELECT currency FROM refund_totals WHERE payment_id = NEW.payment_id);
    ELSE
        UPDATE balance_projection
           SET held_high = held_high - OLD.amount_minor / 1000000,
               held_low = held_low - OLD.amount_minor % 1000000
         WHERE tenant_id = OLD.tenant_id
           AND currency = (SELECT currency FROM refund_totals WHERE payment_id = OLD.payment_id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER refund_reservations_sum_held AFTER INSERT OR DELETE ON refund_reservations
    FOR EACH ROW EXECUTE FUNCTION payhost_sum_held();

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

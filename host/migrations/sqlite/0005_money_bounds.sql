-- Money bounds: no ledger row above 10^11 minor units (the per-line maximum,
-- MAX_LINE_MINOR) and no order above 10^12 (MAX_ORDER_MINOR). The host checks
-- both before it writes; the database refuses them too, so no path can book
-- amounts whose sums approach the 64-bit limit. Only inserts are checked:
-- rows stored before this migration stay as they are (append-only) and can
-- still change state; balances sum in 128 bits.
CREATE TRIGGER payments_amount_bound BEFORE INSERT ON payments
WHEN NEW.amount_minor > 100000000000
BEGIN
    SELECT RAISE(ABORT, 'payhost: amount_bound: a ledger row is at most 100000000000 minor units');
END;

CREATE TRIGGER orders_amount_bound BEFORE INSERT ON orders
WHEN NEW.amount_minor > 1000000000000
BEGIN
    SELECT RAISE(ABORT, 'payhost: amount_bound: an order is at most 1000000000000 minor units');
END;

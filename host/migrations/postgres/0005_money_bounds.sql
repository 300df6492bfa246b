-- Money bounds: no ledger row above 10^11 minor units (the per-line maximum,
-- MAX_LINE_MINOR) and no order above 10^12 (MAX_ORDER_MINOR). The host checks
-- both before it writes; the database refuses them too, so no path can book
-- amounts whose sums approach the 64-bit limit. Only inserts are checked (a
-- trigger, not a CHECK, which PostgreSQL would also apply to every later
-- UPDATE): rows stored before this migration stay as they are (append-only)
-- and can still change state; balances sum in 128 bits.
CREATE FUNCTION payhost_amount_bound() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.amount_minor > TG_ARGV[0]::BIGINT THEN
        RAISE EXCEPTION 'payhost: amount_bound: % is at most % minor units', TG_ARGV[1], TG_ARGV[0];
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER payments_amount_bound BEFORE INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION payhost_amount_bound('100000000000', 'a ledger row');
CREATE TRIGGER orders_amount_bound BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION payhost_amount_bound('1000000000000', 'an order');

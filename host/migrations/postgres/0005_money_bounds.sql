-- Money bounds: no ledger row above 10^11 minor units (the per-line maximum,
-- MAX_LINE_MINOR) and no order above 10^12 (MAX_ORDER_MINOR). The host checks
-- both before it writes; the database refuses them too, so no path can book
-- amounts whose sums approach the 64-bit limit. NOT VALID: rows stored before
-- this migration are left as they are (append-only), and balances sum in
-- 128 bits.
ALTER TABLE payments ADD CONSTRAINT payments_amount_bound
    CHECK (amount_minor <= 100000000000) NOT VALID;
ALTER TABLE orders ADD CONSTRAINT orders_amount_bound
    CHECK (amount_minor <= 1000000000000) NOT VALID;

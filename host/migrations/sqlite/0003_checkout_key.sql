-- A checkout made under an Idempotency-Key records the key. A client retry
-- (a 5xx is not kept for replay) finds the first attempt's order through it
-- and resumes that order at the gateway recorded in `provider`, instead of
-- making a second order that could be charged somewhere else.
--
-- At most one live order per key. A canceled or declined order charged
-- nothing, so it leaves the index and the key is free for a new attempt.
ALTER TABLE orders ADD COLUMN checkout_key TEXT;
CREATE UNIQUE INDEX orders_checkout_key_live ON orders (tenant_id, checkout_key)
    WHERE checkout_key IS NOT NULL AND status NOT IN ('canceled', 'declined');

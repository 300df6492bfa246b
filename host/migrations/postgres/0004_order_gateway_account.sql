-- Which gateway account an order went to: the fingerprint of the
-- credentials its call used (a keyed HMAC, see Vault::fingerprint; never the
-- credentials). A retry resumes the order only with the same credentials:
-- credentials of another account would not know the first call's
-- idempotency key, and could charge a second time.
ALTER TABLE orders ADD COLUMN gateway_account TEXT;

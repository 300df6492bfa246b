-- A refund hold the gateway accepted but has not completed (status
-- `pending`) records the gateway's refund reference. Holds without one are
-- calls whose outcome is unknown (the process stopped mid-call). Either way
-- the hold keeps counting against what can be refunded until the gateway's
-- answer completes it (a `refunded` row) or releases it.
ALTER TABLE refund_reservations ADD COLUMN gateway_refund_reference TEXT;

-- Holds stay immutable except for that one transition: no reference -> the
-- gateway's reference, once, with every other column unchanged.
DROP TRIGGER refund_reservations_no_update;
CREATE TRIGGER refund_reservations_no_update BEFORE UPDATE ON refund_reservations
WHEN NOT (OLD.gateway_refund_reference IS NULL
      AND NEW.gateway_refund_reference IS NOT NULL
      AND NEW.id = OLD.id
      AND NEW.tenant_id = OLD.tenant_id
      AND NEW.payment_id = OLD.payment_id
      AND NEW.amount_minor = OLD.amount_minor
      AND NEW.created_at = OLD.created_at)
BEGIN
    SELECT RAISE(ABORT, 'payhost: a refund reservation only gains its gateway refund reference, once');
END;

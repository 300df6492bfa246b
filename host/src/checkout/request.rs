//! What a checkout sends: a cart as order lines (money bounds), the payment
//! request a gateway is sent, the fingerprint of it an order keeps, and the
//! idempotency key each gateway call carries.

use super::{CartItem, CheckoutError, CheckoutRequest};
use crate::ledger::{Order, OrderLine};
use crate::runtime::contract::{CaptureMode, Money as WireMoney, PaymentRequest};
use crate::store::{MAX_LINE_MINOR, Money, TenantId};

/// The idempotency key sent to a gateway for one operation: derived from the
/// client's key when there is one (stable across client retries), else from
/// our own id for the operation. Never longer than 64 characters.
pub fn gateway_key(
    tenant: &TenantId,
    client_key: Option<&str>,
    fallback: &str,
    scope: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let basis = match client_key {
        Some(k) => format!("client:{tenant}:{k}:{scope}"),
        None => format!("own:{tenant}:{fallback}:{scope}"),
    };
    let digest = Sha256::digest(basis.as_bytes());
    format!("payhost-{}", &hex::encode(digest)[..48])
}

/// The scope of a checkout's gateway idempotency key at `provider`. The
/// `generation` is how many orders under the client's key were canceled
/// before this one ([`crate::ledger::canceled_orders_for_checkout_key`]):
/// zero keeps the key every earlier build derived; after a cancel, the new
/// order's key differs, so the gateway does not replay the canceled
/// attempt's payment.
pub(super) fn checkout_scope(provider: &str, generation: i64) -> String {
    if generation == 0 {
        format!("checkout:{provider}")
    } else {
        format!("checkout:{provider}:after-cancel:{generation}")
    }
}

/// The generation of a checkout under `key` (see [`checkout_scope`]).
pub(super) async fn key_generation(
    store: &crate::store::Store,
    tenant: &TenantId,
    key: Option<&str>,
) -> Result<i64, CheckoutError> {
    match key {
        Some(key) => Ok(crate::ledger::canceled_orders_for_checkout_key(store, tenant, key).await?),
        None => Ok(0),
    }
}

pub(super) fn lines_of(
    items: &[CartItem],
    shipping: Option<i64>,
) -> Result<Vec<OrderLine>, CheckoutError> {
    if items.is_empty() {
        return Err(CheckoutError::Invalid(
            "a checkout needs at least one item".into(),
        ));
    }
    let mut lines = Vec::with_capacity(items.len() + 1);
    for (i, item) in items.iter().enumerate() {
        if item.unit_amount <= 0 || item.quantity <= 0 {
            return Err(CheckoutError::Invalid(format!(
                "items[{i}]: amount and quantity must be positive"
            )));
        }
        let amount = item
            .unit_amount
            .checked_mul(item.quantity)
            .filter(|a| *a <= MAX_LINE_MINOR)
            .ok_or_else(|| {
                CheckoutError::Invalid(format!(
                    "items[{i}]: amount × quantity exceeds the maximum of {MAX_LINE_MINOR} minor units per line"
                ))
            })?;
        lines.push(OrderLine::product(amount, item.user_plan.clone()));
    }
    if let Some(cost) = shipping {
        if cost <= 0 || cost > MAX_LINE_MINOR {
            return Err(CheckoutError::Invalid(format!(
                "shipping.amount must be positive and at most {MAX_LINE_MINOR} minor units"
            )));
        }
        lines.push(OrderLine::shipping(cost));
    }
    Ok(lines)
}

/// What a checkout sends a gateway for `order`. A retry that resumes the
/// order must send exactly this again, so it is built in one place.
pub(super) fn payment_request(
    tenant: &TenantId,
    request: &CheckoutRequest,
    order: &Order,
) -> PaymentRequest {
    PaymentRequest {
        amount: to_wire(order.amount),
        order_id: order.id.to_string(),
        description: None,
        payment_method: request.payment_method.clone(),
        capture: request.capture,
        return_url: request.return_url.clone(),
        customer: request.customer.clone(),
        metadata: vec![("tenant_id".into(), tenant.to_string())],
    }
}

/// A checkout order's metadata. Under an `Idempotency-Key` it holds a
/// fingerprint of what the gateway call sends besides the order (payment
/// method, capture, return URL, customer), so a retry under the same key
/// resumes the order only if the gateway would see the same request.
pub(super) fn checkout_metadata(
    request: &CheckoutRequest,
    customer: &serde_json::Value,
) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let mut metadata = request.metadata.clone();
    if request.idempotency_key.is_none() {
        return serde_json::Value::Object(metadata);
    }
    let capture = match request.capture {
        CaptureMode::Automatic => "automatic",
        CaptureMode::Manual => "manual",
    };
    let sent = serde_json::json!({
        "payment_method": request.payment_method,
        "capture": capture,
        "return_url": request.return_url,
        "customer": customer,
    });
    let digest = Sha256::digest(sent.to_string().as_bytes());
    metadata.insert(
        "checkout_fingerprint".into(),
        hex::encode(&digest[..16]).into(),
    );
    serde_json::Value::Object(metadata)
}

pub(super) fn to_wire(m: Money) -> WireMoney {
    WireMoney {
        minor: m.minor.max(0) as u64,
        currency: m.currency.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_keys_follow_the_client_key_and_stay_tenant_scoped() {
        let a = TenantId::parse("ten_a1").unwrap();
        let b = TenantId::parse("ten_b2").unwrap();
        let k1 = gateway_key(&a, Some("order-1"), "ord_x", "checkout:stripe");
        // A retry is a new order, but the same client key: same gateway key.
        assert_eq!(
            k1,
            gateway_key(&a, Some("order-1"), "ord_y", "checkout:stripe")
        );
        assert_ne!(
            k1,
            gateway_key(&b, Some("order-1"), "ord_x", "checkout:stripe")
        );
        assert_ne!(
            k1,
            gateway_key(&a, Some("order-1"), "ord_x", "checkout:paddle")
        );
        // Without a client key, our own id decides.
        assert_ne!(
            gateway_key(&a, None, "ord_x", "checkout:stripe"),
            gateway_key(&a, None, "ord_y", "checkout:stripe")
        );
        assert!(k1.len() <= 64);
    }
}

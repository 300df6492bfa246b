//! Checkout helpers shared by the end-to-end feature tests: a cart, the
//! checkout call with and without an `Idempotency-Key`, and what it left in
//! the database.

use reqwest::Method;
use serde_json::{Value, json};

use crate::TestApp;

/// A cart of one "Pro plan" item of 1000 in `currency`, paid with `method`.
pub fn cart(currency: &str, method: &str) -> Value {
    json!({
        "currency": currency,
        "items": [{"product": "Pro plan", "user_plan": "pro", "amount": 1000, "quantity": 1}],
        "payment_method": method,
        "return_url": "https://shop.example/return",
    })
}

/// `POST /v1/checkouts` with `body`.
pub async fn checkout(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.tenant(key, Method::POST, "/v1/checkouts", Some(body))
        .await
}

/// The id of the first product row in an order's ledger.
pub fn first_product_payment(order: &Value) -> String {
    order["ledger"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["kind"] == "product"))
        .and_then(|r| r["id"].as_str())
        .expect("a product row")
        .to_string()
}

/// A USD checkout paid with `method`, under the client's `Idempotency-Key`.
pub async fn keyed_checkout(
    app: &TestApp,
    key: &str,
    client_key: &str,
    method: &str,
) -> (u16, Value) {
    app.send(
        app.request(Method::POST, "/v1/checkouts", Some(key))
            .header("Idempotency-Key", client_key)
            .json(&cart("USD", method)),
    )
    .await
}

/// How many orders the tenant has.
pub async fn orders_of(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(app.store.pool())
        .await
        .expect("count orders")
}

/// The tenant's orders as (status, provider), oldest first.
pub async fn order_states(app: &TestApp, tenant: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT status, provider FROM orders WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(app.store.pool())
    .await
    .expect("read orders")
}

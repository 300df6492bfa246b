//! Tenant endpoints (`/v1/…`, tenant API key): gateways, checkouts, orders
//! without a gateway, refunds, ledger reads. Every lookup is scoped to the
//! calling tenant, so another tenant's id answers 404.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, response::IntoResponse, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, JsonBody, PathParam, QueryParams, RawBody, TenantCtx};
use crate::checkout::{
    CartItem, CheckoutOutcome, CheckoutRequest, GatewayLessOrder, RefundOutcome,
};
use crate::gateways::GatewayInput;
use crate::ledger::{self, Entitlement, LedgerRow, Order, OrderKind, PaymentFilter};
use crate::runtime::contract::{CaptureMode, Customer};
use crate::store::domain::ClientText;
use crate::store::{Currency, OrderId, PaymentId, ProviderId};

/// The client's `Idempotency-Key`, for deriving gateway keys.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn row_json(r: &LedgerRow) -> Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "kind": r.kind.as_str(),
        "status": r.status.as_str(),
        "amount": r.amount.minor,
        "currency": r.amount.currency.as_str(),
        "provider": r.provider.as_ref().map(|p| p.as_str()),
        "gateway_reference": r.gateway_reference.as_ref().map(|g| g.as_str()),
        "refund_of": r.refund_of,
        "user_plan": r.entitlement.as_ref().map(|e| e.as_str()),
        "source": r.source.as_str(),
        "created_at": r.created_at.as_i64(),
    })
}

fn order_json(o: &Order, rows: &[LedgerRow]) -> Value {
    let granted: Vec<&str> = rows
        .iter()
        .filter(|r| {
            r.kind == ledger::EntryKind::Product && r.status == ledger::EntryStatus::Approved
        })
        .filter_map(|r| r.entitlement.as_ref().map(|e| e.as_str()))
        .collect();
    json!({
        "id": o.id,
        "kind": o.kind.as_str(),
        "status": o.status.as_str(),
        "amount": o.amount.minor,
        "currency": o.amount.currency.as_str(),
        "provider": o.provider.as_ref().map(|p| p.as_str()),
        "gateway_reference": o.gateway_reference.as_ref().map(|g| g.as_str()),
        "customer": o.customer,
        "metadata": o.metadata,
        "granted_user_plans": granted,
        "ledger": rows.iter().map(row_json).collect::<Vec<_>>(),
        "created_at": o.created_at.as_i64(),
    })
}

// ----- gateways -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayBody {
    credentials: BTreeMap<String, String>,
    webhook_secret: Option<String>,
    #[serde(default)]
    priority: i64,
    currencies: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// Most currencies one gateway setting may list.
const MAX_GATEWAY_CURRENCIES: usize = 50;

/// A gateway's currencies: each ISO-4217, duplicates dropped (first
/// occurrence kept, so the order stays the client's), at most
/// [`MAX_GATEWAY_CURRENCIES`].
fn currency_list(raw: &[String]) -> Result<Vec<Currency>, ApiError> {
    let mut out: Vec<Currency> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let c = Currency::parse(c)
            .map_err(|e| ApiError::validation(format!("currencies[{i}]: {}", e.reason)))?;
        if !out.contains(&c) {
            out.push(c);
        }
        if out.len() > MAX_GATEWAY_CURRENCIES {
            return Err(ApiError::validation(format!(
                "currencies: at most {MAX_GATEWAY_CURRENCIES} distinct currencies"
            )));
        }
    }
    Ok(out)
}

/// `PUT /v1/gateways/{provider}`: validated live before it is stored.
pub async fn save_gateway(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(provider): PathParam<String>,
    JsonBody(body): JsonBody<GatewayBody>,
) -> Result<Json<Value>, ApiError> {
    let currencies = currency_list(&body.currencies)?;
    let view = state
        .gateways
        .save(
            &t.actor(),
            &t.tenant,
            &provider,
            GatewayInput {
                credentials: body.credentials,
                webhook_secret: body.webhook_secret,
                priority: body.priority,
                currencies,
                enabled: body.enabled,
            },
        )
        .await?;
    Ok(Json(json!(view)))
}

/// `GET /v1/gateways`: masked, in routing order.
pub async fn list_gateways(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<Value>, ApiError> {
    let items = state.gateways.list(&t.tenant).await?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /v1/gateways/{provider}`
pub async fn delete_gateway(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(provider): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .gateways
        .delete(&t.actor(), &t.tenant, &provider)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "gateway_not_configured",
            format!("no settings for provider `{provider}`"),
        ))
    }
}

// ----- checkouts and orders -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    /// Product name, kept in the order's metadata.
    #[serde(default)]
    product: Option<String>,
    user_plan: Option<String>,
    amount: i64,
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingBody {
    #[serde(default)]
    carrier: Option<String>,
    amount: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    id: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    currency: String,
    items: Vec<ItemBody>,
    shipping: Option<ShippingBody>,
    customer: Option<CustomerBody>,
    payment_method: Option<String>,
    return_url: Option<String>,
    #[serde(default)]
    capture: Option<String>,
}

fn items(items: &[ItemBody]) -> Result<Vec<CartItem>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            Ok(CartItem {
                unit_amount: it.amount,
                quantity: it.quantity,
                user_plan: it
                    .user_plan
                    .as_deref()
                    .map(Entitlement::parse)
                    .transpose()
                    .map_err(|e| ApiError::validation(format!("items[{i}].user_plan: {e}")))?,
            })
        })
        .collect()
}

/// Longest customer id, e-mail and name; product name; carrier; external
/// reference; bulk user id (characters). Documented in the README.
const CUSTOMER_ID_MAX: usize = 255;
const EMAIL_MAX: usize = 254;
const NAME_MAX: usize = 200;
const PRODUCT_MAX: usize = 200;
const CARRIER_MAX: usize = 100;
const EXTERNAL_REFERENCE_MAX: usize = 255;
const BULK_USER_MAX: usize = 255;

/// `raw` as validated client text (see [`ClientText`]); the 422 names `field`.
fn client_text(field: &str, raw: &str, max_chars: usize) -> Result<String, ApiError> {
    ClientText::parse("field", raw, max_chars)
        .map(String::from)
        .map_err(|e| ApiError::validation(format!("{field}: {}", e.reason)))
}

fn opt_text(field: &str, raw: Option<&str>, max_chars: usize) -> Result<Option<String>, ApiError> {
    raw.map(|r| client_text(field, r, max_chars)).transpose()
}

fn customer(c: Option<&CustomerBody>) -> Result<Option<Customer>, ApiError> {
    c.map(|c| {
        Ok(Customer {
            id: opt_text("customer.id", c.id.as_deref(), CUSTOMER_ID_MAX)?,
            email: opt_text("customer.email", c.email.as_deref(), EMAIL_MAX)?,
            name: opt_text("customer.name", c.name.as_deref(), NAME_MAX)?,
        })
    })
    .transpose()
}

/// What the order keeps of the client's descriptive fields:
/// `items[i].product` as `metadata.items[i].product` (present when any item
/// names one), `shipping.carrier` as `metadata.shipping.carrier`.
fn descriptive_metadata(
    items: &[ItemBody],
    shipping: Option<&ShippingBody>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut metadata = serde_json::Map::new();
    let products = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            opt_text(
                &format!("items[{i}].product"),
                it.product.as_deref(),
                PRODUCT_MAX,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    if products.iter().any(Option::is_some) {
        let items: Vec<Value> = products
            .into_iter()
            .map(|p| p.map_or_else(|| json!({}), |p| json!({ "product": p })))
            .collect();
        metadata.insert("items".into(), Value::Array(items));
    }
    if let Some(carrier) = shipping.and_then(|s| s.carrier.as_deref()) {
        let carrier = client_text("shipping.carrier", carrier, CARRIER_MAX)?;
        metadata.insert("shipping".into(), json!({ "carrier": carrier }));
    }
    Ok(metadata)
}

/// `POST /v1/checkouts`: routed by currency and priority; 201 when paid or
/// awaiting action, 402 when declined, 422 when no gateway takes the currency.
pub async fn create_checkout(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<Response, ApiError> {
    let currency = Currency::parse(&body.currency)?;
    let capture = match body.capture.as_deref() {
        None | Some("automatic") => CaptureMode::Automatic,
        Some("manual") => CaptureMode::Manual,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "capture must be automatic or manual, not `{other}`"
            )));
        }
    };
    let metadata = descriptive_metadata(&body.items, body.shipping.as_ref())?;
    let request = CheckoutRequest {
        currency,
        items: items(&body.items)?,
        shipping: body.shipping.as_ref().map(|s| s.amount),
        customer: customer(body.customer.as_ref())?,
        payment_method: body.payment_method,
        return_url: body.return_url,
        capture,
        idempotency_key: idempotency_key(&headers),
        metadata,
    };
    let outcome = state.checkouts.checkout(&t.tenant, request).await?;
    let (status, body) = match &outcome {
        CheckoutOutcome::Paid { order, rows } => (StatusCode::CREATED, order_json(order, rows)),
        CheckoutOutcome::RequiresAction { order, next_action } => {
            let mut body = order_json(order, &[]);
            body["next_action"] = next_action.clone();
            (StatusCode::CREATED, body)
        }
        CheckoutOutcome::Pending { order } => (StatusCode::ACCEPTED, order_json(order, &[])),
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/orders/{id}` and `GET /v1/checkouts/{id}`: the order and its rows.
pub async fn get_order(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let id = OrderId::parse(&id).map_err(|_| not_found())?;
    let order = ledger::get_order(&state.store, &t.tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    let rows = ledger::rows_for_order(&state.store, &t.tenant, &id).await?;
    Ok(Json(order_json(&order, &rows)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    /// `manual` or `external`.
    kind: String,
    currency: String,
    items: Vec<ItemBody>,
    customer: Option<CustomerBody>,
    external_reference: Option<String>,
}

/// `POST /v1/orders`: a manual or external order (no gateway call; access
/// granted at once).
pub async fn create_order(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    JsonBody(body): JsonBody<OrderBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let kind = match body.kind.as_str() {
        "manual" => OrderKind::Manual,
        "external" => OrderKind::External,
        other => {
            return Err(ApiError::validation(format!(
                "kind must be manual or external (use /v1/orders/bulk or /v1/checkouts), not `{other}`"
            )));
        }
    };
    let currency = Currency::parse(&body.currency)?;
    let customer = customer(body.customer.as_ref())?
        .map(|c| json!({"id": c.id, "email": c.email, "name": c.name}))
        .unwrap_or(Value::Null);
    let order = GatewayLessOrder {
        items: items(&body.items)?,
        customer,
        external_ref: opt_text(
            "external_reference",
            body.external_reference.as_deref(),
            EXTERNAL_REFERENCE_MAX,
        )?,
        metadata: descriptive_metadata(&body.items, None)?,
    };
    let (order, rows) = state
        .orders
        .gateway_less_many(&t.tenant, kind, currency, std::slice::from_ref(&order))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("create order", "nothing was booked"))?;
    Ok((StatusCode::CREATED, Json(order_json(&order, &rows))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkUser {
    user: String,
    user_plan: String,
    amount: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    currency: String,
    users: Vec<BulkUser>,
}

/// `POST /v1/orders/bulk`: one gateway-less order per user, all booked in
/// one transaction.
pub async fn create_bulk_orders(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    JsonBody(body): JsonBody<BulkBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let currency = Currency::parse(&body.currency)?;
    if body.users.is_empty() || body.users.len() > 1000 {
        return Err(ApiError::validation("users must list 1 to 1000 users"));
    }
    // Validate every entry before booking any.
    let mut plans = Vec::with_capacity(body.users.len());
    let mut users = Vec::with_capacity(body.users.len());
    for (i, u) in body.users.iter().enumerate() {
        plans.push(
            Entitlement::parse(&u.user_plan)
                .map_err(|e| ApiError::validation(format!("users[{i}].user_plan: {e}")))?,
        );
        if u.amount <= 0 {
            return Err(ApiError::validation(format!(
                "users[{i}].amount must be positive"
            )));
        }
        users.push(client_text(
            &format!("users[{i}].user"),
            &u.user,
            BULK_USER_MAX,
        )?);
    }
    let orders: Vec<GatewayLessOrder> = body
        .users
        .iter()
        .zip(plans)
        .zip(users)
        .map(|((u, plan), user)| GatewayLessOrder {
            items: vec![CartItem {
                unit_amount: u.amount,
                quantity: 1,
                user_plan: Some(plan),
            }],
            customer: json!({ "id": user }),
            external_ref: None,
            metadata: serde_json::Map::new(),
        })
        .collect();
    // One transaction: every user's order is booked, or none is.
    let out: Vec<Value> = state
        .orders
        .gateway_less_many(&t.tenant, OrderKind::Bulk, currency, &orders)
        .await?
        .iter()
        .map(|(order, rows)| order_json(order, rows))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "orders": out }))))
}

// ----- payments, refunds, balance -------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; omitted = what remains.
    amount: Option<i64>,
}

/// `POST /v1/payments/{id}/refunds`: through the provider for gateway
/// payments, recorded manually for gateway-less ones. 201 with the
/// `refunded` row; 202 with the hold when the gateway's refund is pending.
pub async fn refund(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = PaymentId::parse(&id)
        .map_err(|_| ApiError::not_found("payment_not_found", "no such payment"))?;
    // The body is optional: empty means "refund what remains".
    let amount = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        super::json_bytes::<RefundBody>(&body)?.amount
    };
    let outcome = state
        .refunds
        .refund(&t.tenant, &id, amount, idempotency_key(&headers).as_deref())
        .await?;
    let (status, action, body) = match &outcome {
        RefundOutcome::Booked(row) => (StatusCode::CREATED, "payment.refunded", row_json(row)),
        RefundOutcome::Pending { hold } => (
            StatusCode::ACCEPTED,
            "payment.refund_pending",
            json!({
                "id": hold.id,
                "object": "refund_hold",
                "status": "pending",
                "payment_id": hold.payment_id,
                "order_id": hold.order_id,
                "amount": hold.amount.minor,
                "currency": hold.amount.currency.as_str(),
                "provider": hold.provider.as_ref().map(|p| p.as_str()),
                "gateway_refund_reference": hold.gateway_refund_reference.as_ref().map(|r| r.as_str()),
                "created_at": hold.created_at.as_i64(),
            }),
        ),
    };
    // The refund is booked or held: an audit failure must not turn it into
    // an error the client would retry.
    if let Err(e) = crate::audit::record(
        &state.store,
        &t.actor(),
        action,
        Some(&t.tenant),
        json!({"payment_id": id, "refund_id": body["id"], "amount": body["amount"]}),
    )
    .await
    {
        tracing::error!(refund = %body["id"], "refund recorded but not audited: {e}");
    }
    Ok((status, Json(body)))
}

/// `GET /v1/payments/{id}`
pub async fn get_payment(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("payment_not_found", "no such payment");
    let id = PaymentId::parse(&id).map_err(|_| not_found())?;
    let row = ledger::payment(&state.store, &t.tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(row_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentQuery {
    order_id: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    currency: Option<String>,
    provider: Option<String>,
    created_from: Option<i64>,
    created_before: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/payments?…`: ledger rows, newest first, keyset-paginated.
pub async fn list_payments(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    QueryParams(q): QueryParams<PaymentQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = PaymentFilter {
        order_id: q.order_id.as_deref().map(OrderId::parse).transpose()?,
        kind: q
            .kind
            .as_deref()
            .map(ledger::EntryKind::parse)
            .transpose()?,
        status: q
            .status
            .as_deref()
            .map(ledger::EntryStatus::parse)
            .transpose()?,
        currency: q.currency.as_deref().map(Currency::parse).transpose()?,
        provider: q.provider.as_deref().map(ProviderId::parse).transpose()?,
        created_from: q.created_from.map(crate::store::UnixMillis),
        created_before: q.created_before.map(crate::store::UnixMillis),
    };
    let page = ledger::list_payments(
        &state.store,
        &t.tenant,
        &filter,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await?;
    Ok(Json(json!({
        "items": page.items.iter().map(row_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// A sum of minor units as a JSON number. Sums are `i128` so they never
/// overflow; one beyond `i64` (unreachable under the per-line bound short of
/// ~10^8 rows at the maximum) is rendered as a string of its exact digits
/// rather than rounded.
fn sum_json(minor: i128) -> Value {
    match i64::try_from(minor) {
        Ok(fits) => Value::from(fits),
        Err(_) => Value::String(minor.to_string()),
    }
}

/// `GET /v1/balance`: per currency, computed from the ledger rows.
pub async fn balance(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<Value>, ApiError> {
    let balances = ledger::balances(&state.store, &t.tenant).await?;
    let items: Vec<Value> = balances
        .iter()
        .map(|b| {
            json!({
                "currency": b.currency.as_str(),
                "paid": sum_json(b.paid),
                "refunded": sum_json(b.refunded),
                "net": sum_json(b.net),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

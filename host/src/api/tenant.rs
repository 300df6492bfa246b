//! Tenant endpoints (`/v1/…`, tenant API key): gateways, checkouts, orders
//! without a gateway, refunds, ledger reads. Every lookup is scoped to the
//! calling tenant, so another tenant's id answers 404.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, response::IntoResponse, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::types::{
    BalanceItem, BalanceList, BulkOrders, ErrorBody, Gateway, GatewayList, Order as OrderBody,
    OrderSummary, Page, Payment, RefundHold, Sum,
};
use super::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams, RawBody, TenantCtx};
use crate::checkout::{
    CartItem, CheckoutOutcome, CheckoutRequest, GatewayLessOrder, RefundOutcome,
};
use crate::gateways::GatewayInput;
use crate::ledger::{self, Entitlement, OrderFilter, OrderKind, PaymentFilter};
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

// ----- gateways -------------------------------------------------------------

/// `PUT /v1/gateways/{provider}`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayBody {
    /// The provider's credential fields (see `GET /admin/providers`).
    credentials: BTreeMap<String, String>,
    /// The gateway's webhook signing secret.
    webhook_secret: Option<String>,
    /// Routing priority, higher first (default 0).
    #[serde(default)]
    priority: i64,
    /// ISO-4217 codes routed to this gateway; at most 50 distinct.
    currencies: Vec<String>,
    /// Whether it takes checkouts (default true).
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
#[utoipa::path(put, path = "/v1/gateways/{provider}", tag = "tenant",
    params(("provider" = String, Path, description = "provider id"), IdempotencyKey),
    request_body = GatewayBody, security(("api_key" = [])),
    responses((status = 200, description = "saved", body = Gateway),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn save_gateway(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(provider): PathParam<String>,
    JsonBody(body): JsonBody<GatewayBody>,
) -> Result<Json<Gateway>, ApiError> {
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
    Ok(Json(Gateway::from(view)))
}

/// `GET /v1/gateways`: masked, in routing order.
#[utoipa::path(get, path = "/v1/gateways", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, description = "the settings", body = GatewayList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_gateways(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<GatewayList>, ApiError> {
    let items = state.gateways.list(&t.tenant).await?;
    Ok(Json(GatewayList {
        items: items.into_iter().map(Gateway::from).collect(),
    }))
}

/// `DELETE /v1/gateways/{provider}`
#[utoipa::path(delete, path = "/v1/gateways/{provider}", tag = "tenant",
    params(("provider" = String, Path, description = "provider id"), IdempotencyKey),
    security(("api_key" = [])),
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error", body = ErrorBody)))]
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
            ErrorCode::GatewayNotConfigured,
            format!("no settings for provider `{provider}`"),
        ))
    }
}

// ----- checkouts and orders -------------------------------------------------

/// One cart line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    /// Product name, kept in the order's metadata (at most 200 characters).
    #[serde(default)]
    product: Option<String>,
    /// The entitlement the line grants once paid.
    user_plan: Option<String>,
    /// Unit amount, minor units.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    amount: i64,
    /// Quantity (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    quantity: i64,
}

fn one() -> i64 {
    1
}

/// A shipping line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingBody {
    /// Carrier name, kept in the order's metadata (at most 100 characters).
    #[serde(default)]
    carrier: Option<String>,
    /// Minor units.
    amount: i64,
}

/// The customer, as the tenant knows them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBody {
    /// The tenant's customer id (at most 255 characters).
    id: Option<String>,
    /// E-mail (at most 254 characters).
    email: Option<String>,
    /// Name (at most 200 characters).
    name: Option<String>,
}

/// `POST /v1/checkouts`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// ISO-4217; picks the gateway.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
    /// The cart.
    #[schema(min_items = 1)]
    items: Vec<ItemBody>,
    /// Shipping, if any.
    shipping: Option<ShippingBody>,
    /// The customer.
    customer: Option<CustomerBody>,
    /// The gateway's payment method token (`pm_card_visa` in the sandbox).
    payment_method: Option<String>,
    /// Where the customer returns after an action.
    return_url: Option<String>,
    /// `automatic` (default) or `manual`.
    #[serde(default)]
    #[schema(pattern = "^(automatic|manual)$")]
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
#[utoipa::path(post, path = "/v1/checkouts", tag = "tenant", params(IdempotencyKey),
    request_body = CheckoutBody, security(("api_key" = [])),
    responses((status = 201, description = "paid, or awaiting the customer's action", body = OrderBody),
        (status = 202, description = "the outcome is not known yet", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
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
        CheckoutOutcome::Paid { order, rows } => (StatusCode::CREATED, OrderBody::of(order, rows)),
        CheckoutOutcome::RequiresAction { order, next_action } => {
            let mut body = OrderBody::of(order, &[]);
            body.next_action = Some(next_action.clone());
            (StatusCode::CREATED, body)
        }
        CheckoutOutcome::Pending { order } => (StatusCode::ACCEPTED, OrderBody::of(order, &[])),
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/checkouts/{id}`: the checkout's order and its rows, as
/// `GET /v1/orders/{id}` answers them.
#[utoipa::path(get, path = "/v1/checkouts/{id}", tag = "tenant",
    params(("id" = String, Path, description = "order id")), security(("api_key" = [])),
    responses((status = 200, description = "the order", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_checkout(
    state: State<AppState>,
    t: Extension<TenantCtx>,
    id: PathParam<String>,
) -> Result<Json<OrderBody>, ApiError> {
    get_order(state, t, id).await
}

/// `GET /v1/orders/{id}`: the order and its rows.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "tenant",
    params(("id" = String, Path, description = "order id")), security(("api_key" = [])),
    responses((status = 200, description = "the order", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_order(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::OrderNotFound, "no such order");
    let id = OrderId::parse(&id).map_err(|_| not_found())?;
    let order = ledger::get_order(&state.store, &t.tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    let rows = ledger::rows_for_order(&state.store, &t.tenant, &id).await?;
    Ok(Json(OrderBody::of(&order, &rows)))
}

/// `GET /v1/orders`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Only orders with this status.
    #[param(
        pattern = "^(pending|requires_action|paid|declined|canceled|refunded|partially_refunded)$"
    )]
    status: Option<String>,
    /// Only orders of this kind.
    #[param(pattern = "^(checkout|manual|bulk|external)$")]
    kind: Option<String>,
    /// Only orders in this currency (ISO-4217).
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Only orders created at or after this time (Unix ms).
    created_from: Option<i64>,
    /// Only orders created strictly before this time (Unix ms).
    created_before: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/orders?status=&kind=&currency=&created_from=&created_before=&cursor=&limit=`:
/// the tenant's orders, newest first, keyset-paginated, without their rows.
#[utoipa::path(get, path = "/v1/orders", tag = "tenant", params(OrderQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "a page of orders", body = Page<OrderSummary>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_orders(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    QueryParams(q): QueryParams<OrderQuery>,
) -> Result<Json<Page<OrderSummary>>, ApiError> {
    let filter = OrderFilter {
        status: q
            .status
            .as_deref()
            .map(ledger::OrderStatus::parse)
            .transpose()?,
        kind: q.kind.as_deref().map(OrderKind::parse).transpose()?,
        currency: q.currency.as_deref().map(Currency::parse).transpose()?,
        created_from: q.created_from.map(crate::store::UnixMillis),
        created_before: q.created_before.map(crate::store::UnixMillis),
    };
    let page = ledger::list_orders(
        &state.store,
        &t.tenant,
        &filter,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await?;
    Ok(Json(Page::<OrderSummary>::of(&page)))
}

/// `POST /v1/orders`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    /// `manual` or `external`.
    #[schema(pattern = "^(manual|external)$")]
    kind: String,
    /// ISO-4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
    /// What was sold.
    #[schema(min_items = 1)]
    items: Vec<ItemBody>,
    /// The customer.
    customer: Option<CustomerBody>,
    /// The tenant's reference of an external payment (at most 255 characters).
    external_reference: Option<String>,
}

/// `POST /v1/orders`: a manual or external order (no gateway call; access
/// granted at once).
#[utoipa::path(post, path = "/v1/orders", tag = "tenant", params(IdempotencyKey),
    request_body = NewOrderBody, security(("api_key" = [])),
    responses((status = 201, description = "booked", body = OrderBody),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn create_order(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    JsonBody(body): JsonBody<NewOrderBody>,
) -> Result<(StatusCode, Json<OrderBody>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(OrderBody::of(&order, &rows))))
}

/// One user of a bulk grant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkUser {
    /// The tenant's user id (at most 255 characters).
    user: String,
    /// The entitlement granted.
    user_plan: String,
    /// Minor units, positive.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    amount: i64,
}

/// `POST /v1/orders/bulk`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// ISO-4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
    /// 1 to 1,000 users.
    #[schema(min_items = 1, max_items = 1000)]
    users: Vec<BulkUser>,
}

/// `POST /v1/orders/bulk`: one gateway-less order per user, all booked in
/// one transaction.
#[utoipa::path(post, path = "/v1/orders/bulk", tag = "tenant", params(IdempotencyKey),
    request_body = BulkBody, security(("api_key" = [])),
    responses((status = 201, description = "all booked", body = BulkOrders),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn create_bulk_orders(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    JsonBody(body): JsonBody<BulkBody>,
) -> Result<(StatusCode, Json<BulkOrders>), ApiError> {
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
    let out = state
        .orders
        .gateway_less_many(&t.tenant, OrderKind::Bulk, currency, &orders)
        .await?
        .iter()
        .map(|(order, rows)| OrderBody::of(order, rows))
        .collect();
    Ok((StatusCode::CREATED, Json(BulkOrders { orders: out })))
}

// ----- payments, refunds, balance -------------------------------------------

/// `POST /v1/payments/{id}/refunds`'s body; optional (empty = what remains).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; omitted = what remains.
    amount: Option<i64>,
}

/// `POST /v1/payments/{id}/refunds`: through the provider for gateway
/// payments, recorded manually for gateway-less ones. 201 with the
/// `refunded` row; 202 with the hold when the gateway's refund is pending.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "tenant",
    params(("id" = String, Path, description = "payment id"), IdempotencyKey),
    request_body(content = Option<RefundBody>, description = "optional; empty refunds what remains"),
    security(("api_key" = [])),
    responses((status = 201, description = "the `refunded` row", body = Payment),
        (status = 202, description = "the gateway's refund is pending", body = RefundHold),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn refund(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let id = PaymentId::parse(&id)
        .map_err(|_| ApiError::not_found(ErrorCode::PaymentNotFound, "no such payment"))?;
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
    let (action, refund_id, refund_amount, response) = match &outcome {
        RefundOutcome::Booked(row) => (
            "payment.refunded",
            row.id.as_str().to_owned(),
            row.amount.minor,
            (StatusCode::CREATED, Json(Payment::from(row))).into_response(),
        ),
        RefundOutcome::Pending { hold } => (
            "payment.refund_pending",
            hold.id.as_str().to_owned(),
            hold.amount.minor,
            (
                StatusCode::ACCEPTED,
                Json(RefundHold {
                    id: hold.id.as_str().to_owned(),
                    object: "refund_hold",
                    status: "pending",
                    payment_id: hold.payment_id.as_str().to_owned(),
                    order_id: hold.order_id.as_str().to_owned(),
                    amount: hold.amount.minor,
                    currency: hold.amount.currency.as_str().to_owned(),
                    provider: hold.provider.as_ref().map(|p| p.as_str().to_owned()),
                    gateway_refund_reference: hold
                        .gateway_refund_reference
                        .as_ref()
                        .map(|r| r.as_str().to_owned()),
                    created_at: hold.created_at.as_i64(),
                }),
            )
                .into_response(),
        ),
    };
    // The refund is booked or held: an audit failure must not turn it into
    // an error the client would retry.
    if let Err(e) = crate::audit::record(
        &state.store,
        &t.actor(),
        action,
        Some(&t.tenant),
        json!({"payment_id": id, "refund_id": refund_id, "amount": refund_amount}),
    )
    .await
    {
        tracing::error!(refund = %refund_id, "refund recorded but not audited: {e}");
    }
    Ok(response)
}

/// `GET /v1/payments/{id}`
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "tenant",
    params(("id" = String, Path, description = "payment id")), security(("api_key" = [])),
    responses((status = 200, description = "the ledger row", body = Payment),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn get_payment(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Payment>, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::PaymentNotFound, "no such payment");
    let id = PaymentId::parse(&id).map_err(|_| not_found())?;
    let row = ledger::payment(&state.store, &t.tenant, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(Payment::from(&row)))
}

/// `GET /v1/payments`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    /// Only rows of this order.
    order_id: Option<String>,
    /// Only rows with this status.
    status: Option<String>,
    /// Only rows of this kind (`product`, `shipping`, `refund`).
    kind: Option<String>,
    /// Only rows in this currency (ISO-4217).
    currency: Option<String>,
    /// Only rows booked through this gateway.
    provider: Option<String>,
    /// Only rows created at or after this time (Unix ms).
    created_from: Option<i64>,
    /// Only rows created strictly before this time (Unix ms).
    created_before: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/payments?…`: ledger rows, newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/payments", tag = "tenant", params(PaymentQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "a page of ledger rows", body = Page<Payment>),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn list_payments(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
    QueryParams(q): QueryParams<PaymentQuery>,
) -> Result<Json<Page<Payment>>, ApiError> {
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
    Ok(Json(Page::<Payment>::of(&page)))
}

/// `GET /v1/balance`: per currency, computed from the ledger rows.
#[utoipa::path(get, path = "/v1/balance", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, description = "per currency", body = BalanceList),
        (status = "default", description = "an error", body = ErrorBody)))]
pub async fn balance(
    State(state): State<AppState>,
    Extension(t): Extension<TenantCtx>,
) -> Result<Json<BalanceList>, ApiError> {
    let balances = ledger::balances(&state.store, &t.tenant).await?;
    let items = balances
        .iter()
        .map(|b| BalanceItem {
            currency: b.currency.as_str().to_owned(),
            paid: Sum::from(b.paid),
            refunded: Sum::from(b.refunded),
            net: Sum::from(b.net),
        })
        .collect();
    Ok(Json(BalanceList { items }))
}

/// The optional `Idempotency-Key` header of a mutation (the document's
/// parameter only; `auth::idempotency` reads the header).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1–255 printable characters. The same key and body replay the stored
    /// answer (`Idempotent-Replayed: true`); another body is 422
    /// `idempotency_key_reused`.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

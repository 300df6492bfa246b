//! `/v1/checkouts` and `/v1/orders`: checkouts through a gateway, and
//! manual, external and bulk orders without one.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, response::IntoResponse, response::Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::api::types::{BulkOrders, ErrorBody, Order as OrderBody, OrderSummary, Page};
use crate::api::{ApiError, AppState, ErrorCode, JsonBody, PathParam, QueryParams, TenantCtx};
use crate::checkout::{CartItem, CheckoutOutcome, CheckoutRequest, GatewayLessOrder};
use crate::ledger::{self, Entitlement, OrderFilter, OrderKind};
use crate::runtime::contract::{CaptureMode, Customer};
use crate::store::domain::ClientText;
use crate::store::{Currency, OrderId};

use super::{IdempotencyKey, idempotency_key};

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
        (status = 429, description = "`quota_exceeded`: the month's `checkouts.monthly` is used up, nothing was stored \
            (`Retry-After`: seconds until the month ends); or `tenant_busy`",
            body = ErrorBody, headers(("Retry-After" = u64, description = "seconds to wait before retrying"))),
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
    if kind == OrderKind::Manual {
        crate::api::features::require(&state, &t.tenant, crate::features::keys::ORDERS_MANUAL)?;
    }
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
    crate::api::features::require(&state, &t.tenant, crate::features::keys::ORDERS_BULK)?;
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

//! Orders: what a tenant sells in one checkout (or records by hand), and where
//! that sale is in its workflow.
//!
//! Unlike ledger rows, orders are mutable: status moves
//! pending → requires_action → paid → partially_refunded/refunded, and the
//! routed gateway can change on failover. An order stores its lines so a later
//! webhook or the janitor can book exactly what was sold.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{Entitlement, GatewayRef, LedgerError, NewLedgerRow, Source, text_enum};
use crate::store::{
    Arg, Currency, MAX_LINE_MINOR, MAX_ORDER_MINOR, Money, OrderId, Page, ProviderId, SqlBuf,
    Store, StoreError, TenantId, UnixMillis, Violation, WriteTx, get_i64, get_json, get_opt_parsed,
    get_opt_text, get_parsed, get_time, page_of,
};

text_enum!(
    /// How an order came about.
    OrderKind, "order kind" {
        /// Paid through a gateway.
        Checkout => "checkout",
        /// Recorded by hand; no gateway call, access granted immediately.
        Manual => "manual",
        /// One of many recorded at once; no gateway call.
        Bulk => "bulk",
        /// Paid elsewhere and reported to us; no gateway call.
        External => "external",
    }
);

text_enum!(
    /// Where an order is in its workflow.
    OrderStatus, "order status" {
        /// Created, not yet paid.
        Pending => "pending",
        /// The customer must act (3-D Secure, redirect).
        RequiresAction => "requires_action",
        /// Paid in full.
        Paid => "paid",
        /// The gateway declined.
        Declined => "declined",
        /// Abandoned or cancelled before payment.
        Canceled => "canceled",
        /// Fully refunded.
        Refunded => "refunded",
        /// Partly refunded.
        PartiallyRefunded => "partially_refunded",
    }
);

/// What an order line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// The product (may grant an entitlement).
    Product,
    /// A carrier cost (never grants an entitlement).
    Shipping,
}

/// One line of an order, in the order's currency.
///
/// Invariant: `amount_minor > 0`; a shipping line has no entitlement
/// (use the constructors; stored lines are re-checked when read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    kind: LineKind,
    amount_minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entitlement: Option<Entitlement>,
}

impl OrderLine {
    /// A product line, optionally granting `entitlement`.
    pub fn product(amount_minor: i64, entitlement: Option<Entitlement>) -> Self {
        Self {
            kind: LineKind::Product,
            amount_minor,
            entitlement,
        }
    }

    /// A shipping (carrier cost) line.
    pub fn shipping(amount_minor: i64) -> Self {
        Self {
            kind: LineKind::Shipping,
            amount_minor,
            entitlement: None,
        }
    }

    /// Product or shipping.
    pub fn kind(&self) -> LineKind {
        self.kind
    }

    /// Amount in the order currency's minor units.
    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The entitlement a product line grants.
    pub fn entitlement(&self) -> Option<&Entitlement> {
        self.entitlement.as_ref()
    }

    /// The ledger row that books this line once it is paid.
    pub fn ledger_row(&self, currency: Currency, source: Source) -> NewLedgerRow {
        let amount = Money::new(self.amount_minor, currency);
        match self.kind {
            LineKind::Product => NewLedgerRow::product(amount, self.entitlement.clone(), source),
            LineKind::Shipping => NewLedgerRow::shipping(amount, source),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.amount_minor <= 0 {
            return Err(format!(
                "order line amount must be positive, got {}",
                self.amount_minor
            ));
        }
        if self.kind == LineKind::Shipping && self.entitlement.is_some() {
            return Err("a shipping line cannot grant an entitlement".into());
        }
        Ok(())
    }
}

/// Total of `lines`, validating each line.
fn total(lines: &[OrderLine]) -> Result<i64, String> {
    if lines.is_empty() {
        return Err("an order needs at least one line".into());
    }
    lines.iter().try_fold(0i64, |sum, line| {
        line.validate()?;
        sum.checked_add(line.amount_minor)
            .ok_or_else(|| "order total overflows".to_owned())
    })
}

/// A new order. It starts `pending`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// Checkout, manual, bulk or external.
    pub kind: OrderKind,
    /// Currency of every line and of every ledger row of the order.
    pub currency: Currency,
    /// What is sold; at least one line.
    pub lines: Vec<OrderLine>,
    /// Customer details as the tenant sent them (JSON object).
    pub customer: serde_json::Value,
    /// Free-form tenant metadata (JSON object).
    pub metadata: serde_json::Value,
    /// The gateway the order goes to first (checkouts). Stored with the
    /// order, so the gateway that may hold its charge is durable before any
    /// request reaches it.
    pub provider: Option<ProviderId>,
    /// The client's `Idempotency-Key` for a checkout. At most one live
    /// (neither canceled nor declined) order per key and tenant: storing a
    /// second fails with [`LedgerError::CheckoutKeyTaken`], and
    /// [`live_order_for_checkout_key`] finds the first.
    pub checkout_key: Option<String>,
    /// Which account of `provider` the order goes to: the fingerprint of the
    /// credentials (`OpenGateway::credentials_fingerprint`). A resumed order
    /// goes only to the same account.
    pub gateway_account: Option<String>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// Its id (`ord_…`).
    pub id: OrderId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// How it came about.
    pub kind: OrderKind,
    /// Workflow state.
    pub status: OrderStatus,
    /// Sum of the lines.
    pub amount: Money,
    /// What was sold.
    pub lines: Vec<OrderLine>,
    /// Gateway it is routed to (`None` until routed, and for non-checkout orders).
    pub provider: Option<ProviderId>,
    /// The gateway's payment reference, once created.
    pub gateway_reference: Option<GatewayRef>,
    /// Customer details.
    pub customer: serde_json::Value,
    /// Tenant metadata.
    pub metadata: serde_json::Value,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last status or routing change.
    pub updated_at: UnixMillis,
}

const ORDER_COLUMNS: &str = "id, tenant_id, kind, status, currency, amount_minor, lines, provider, \
     gateway_reference, customer, metadata, created_at, updated_at";

fn decode_order(row: &AnyRow) -> Result<Order, StoreError> {
    let corrupt = |column: &'static str, reason: String| StoreError::Corrupt { column, reason };
    let currency = get_parsed(row, "currency", Currency::parse)?;
    let lines = get_parsed(row, "lines", |raw| {
        serde_json::from_str::<Vec<OrderLine>>(raw)
    })?;
    let sum = total(&lines).map_err(|e| corrupt("lines", e))?;
    let amount_minor = get_i64(row, "amount_minor")?;
    if sum != amount_minor {
        return Err(corrupt(
            "amount_minor",
            format!("{amount_minor} differs from the lines' total {sum}"),
        ));
    }
    Ok(Order {
        id: get_parsed(row, "id", OrderId::parse)?,
        tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
        kind: get_parsed(row, "kind", OrderKind::parse)?,
        status: get_parsed(row, "status", OrderStatus::parse)?,
        amount: Money::new(amount_minor, currency),
        lines,
        provider: get_opt_parsed(row, "provider", ProviderId::parse)?,
        gateway_reference: get_opt_parsed(row, "gateway_reference", GatewayRef::parse)?,
        customer: get_json(row, "customer")?,
        metadata: get_json(row, "metadata")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// Creates a `pending` order for `tenant`. One `INSERT` is atomic on its
/// own, so this runs without an explicit transaction (on the checkout path
/// that saves the `BEGIN` and `COMMIT` round trips); on an SQLite file it is
/// one job on the dedicated writer.
pub async fn create_order(
    store: &Store,
    tenant: &TenantId,
    order: &NewOrder,
) -> Result<Order, LedgerError> {
    let (created, stored) = stage_order(store, tenant, order)?;
    stored.await?;
    Ok(created)
}

/// [`create_order`] in two steps: the order as it will be stored, at once,
/// and a future that stores it (durably, once it resolves to `Ok`). A
/// checkout uses the time the commit takes to prepare its gateway call.
pub fn stage_order(
    store: &Store,
    tenant: &TenantId,
    order: &NewOrder,
) -> Result<
    (
        Order,
        impl Future<Output = Result<(), LedgerError>> + Send + use<>,
    ),
    LedgerError,
> {
    let (created, insert) = order_insert(tenant, order)?;
    let (store, tenant) = (store.clone(), tenant.clone());
    let stored = async move {
        match store.sqlite_writer() {
            Some(writer) => {
                writer
                    .run(move |conn| {
                        insert
                            .execute_sqlite(conn)
                            .map_err(|e| order_insert_error(&tenant, e.into()))
                    })
                    .await?;
            }
            None => {
                insert
                    .query()
                    .execute(store.pool())
                    .await
                    .map_err(|e| order_insert_error(&tenant, e.into()))?;
            }
        }
        Ok(())
    };
    Ok((created, stored))
}

/// [`create_order`] inside the caller's transaction, e.g. a manual order that
/// is created, booked and marked paid atomically.
pub async fn create_order_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    order: &NewOrder,
) -> Result<Order, LedgerError> {
    let (created, insert) = order_insert(tenant, order)?;
    insert
        .query()
        .execute(tx.conn())
        .await
        .map_err(|e| order_insert_error(tenant, e.into()))?;
    Ok(created)
}

/// Refuses an order over the documented money bounds: a line over
/// [`MAX_LINE_MINOR`] or a total over [`MAX_ORDER_MINOR`]. Checked when an
/// order is created, not when one is read, so a stored order never becomes
/// unreadable if the bounds change.
fn within_bounds(lines: &[OrderLine], total: i64) -> Result<(), LedgerError> {
    if let Some((i, line)) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.amount_minor > MAX_LINE_MINOR)
    {
        return Err(LedgerError::Invalid(format!(
            "line {i}: amount {} exceeds the maximum of {MAX_LINE_MINOR} minor units per line",
            line.amount_minor
        )));
    }
    if total > MAX_ORDER_MINOR {
        return Err(LedgerError::Invalid(format!(
            "order total {total} exceeds the maximum of {MAX_ORDER_MINOR} minor units per order"
        )));
    }
    Ok(())
}

/// The order `order` becomes, and the statement that stores it.
fn order_insert(tenant: &TenantId, order: &NewOrder) -> Result<(Order, SqlBuf), LedgerError> {
    let amount_minor = total(&order.lines).map_err(LedgerError::Invalid)?;
    within_bounds(&order.lines, amount_minor)?;
    let lines =
        serde_json::to_string(&order.lines).map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let now = UnixMillis::now();
    let created = Order {
        id: OrderId::generate(),
        tenant_id: tenant.clone(),
        kind: order.kind,
        status: OrderStatus::Pending,
        amount: Money::new(amount_minor, order.currency),
        lines: order.lines.clone(),
        provider: order.provider.clone(),
        gateway_reference: None,
        customer: order.customer.clone(),
        metadata: order.metadata.clone(),
        created_at: now,
        updated_at: now,
    };
    let insert = SqlBuf::bound(
        format!(
            "INSERT INTO orders ({ORDER_COLUMNS}, checkout_key, gateway_account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $11, $12, $13)"
        ),
        vec![
            Arg::Text(created.id.to_string()),
            Arg::Text(tenant.to_string()),
            Arg::Text(created.kind.as_str().to_owned()),
            Arg::Text(created.status.as_str().to_owned()),
            Arg::Text(created.amount.currency.as_str().to_owned()),
            Arg::Int(amount_minor),
            Arg::Text(lines),
            Arg::opt_text(created.provider.as_ref().map(ProviderId::as_str)),
            Arg::Text(created.customer.to_string()),
            Arg::Text(created.metadata.to_string()),
            Arg::Int(now.as_i64()),
            Arg::opt_text(order.checkout_key.as_deref()),
            Arg::opt_text(order.gateway_account.as_deref()),
        ],
    );
    Ok((created, insert))
}

fn order_insert_error(tenant: &TenantId, e: StoreError) -> LedgerError {
    match e.violation() {
        Some(Violation::ForeignKey { .. }) => {
            LedgerError::Invalid(format!("tenant {tenant} does not exist"))
        }
        Some(v @ Violation::Unique { .. }) if v.mentions("checkout_key") => {
            LedgerError::CheckoutKeyTaken
        }
        Some(v @ Violation::Trigger { .. }) if v.mentions("amount_bound") => {
            LedgerError::Invalid(format!(
                "an order is at most {MAX_ORDER_MINOR} minor units, a line at most {MAX_LINE_MINOR}"
            ))
        }
        _ => LedgerError::Store(e),
    }
}

/// The tenant's live (neither canceled nor declined) order stored under a
/// checkout's `Idempotency-Key`, if any, with the gateway account it went to.
pub async fn live_order_for_checkout_key(
    store: &Store,
    tenant: &TenantId,
    key: &str,
) -> Result<Option<(Order, Option<String>)>, LedgerError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS}, gateway_account FROM orders \
          WHERE tenant_id = $1 AND checkout_key = $2 AND status NOT IN ('canceled', 'declined')"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(store.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let account = get_opt_text(&row, "gateway_account")?;
    Ok(Some((decode_order(&row)?, account)))
}

/// Records the gateway (and its account) a pending order goes to next,
/// before any request reaches it (a checkout's fallback). An order that is
/// no longer pending → [`LedgerError::StatusConflict`].
pub async fn route_pending_order(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
    provider: &ProviderId,
    gateway_account: &str,
) -> Result<(), LedgerError> {
    let mut tx = store.begin_write().await?;
    let changed = sqlx::query(
        "UPDATE orders SET provider = $3, gateway_account = $4, updated_at = $5 \
          WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(tenant.as_str())
    .bind(id.as_str())
    .bind(provider.as_str())
    .bind(gateway_account)
    .bind(UnixMillis::now().as_i64())
    .execute(tx.conn())
    .await
    .map_err(|e| routing_error(e.into()))?
    .rows_affected();
    tx.commit().await?;
    if changed == 0 {
        let order = get_order(store, tenant, id).await?;
        return Err(order.map_or(LedgerError::OrderNotFound, |o| {
            LedgerError::StatusConflict { current: o.status }
        }));
    }
    Ok(())
}

/// The order, if it exists and belongs to `tenant` (another tenant's id → `None`).
pub async fn get_order(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<Option<Order>, LedgerError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_order).transpose()?)
}

/// Filters for [`list_orders`]; every `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
    /// Only orders of this kind.
    pub kind: Option<OrderKind>,
    /// Only orders in this currency.
    pub currency: Option<Currency>,
    /// Only orders created at or after this time.
    pub created_from: Option<UnixMillis>,
    /// Only orders created strictly before this time.
    pub created_before: Option<UnixMillis>,
}

/// `tenant`'s orders matching `filter`, newest first, `limit` per page
/// (clamped to 1..=[`MAX_PAGE_SIZE`]). Pass the previous page's
/// `next_cursor` to continue; pages never skip or repeat an order, since
/// the order is the total order (created_at, id). An order's status may
/// change between pages; its place in the listing never does.
pub async fn list_orders(
    store: &Store,
    tenant: &TenantId,
    filter: &OrderFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Order>, LedgerError> {
    let mut q = SqlBuf::new(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = "
    ));
    let p = q.arg(Arg::Text(tenant.as_str().to_owned()));
    q.push(&p);
    let mut eq = |column: &str, value: Option<&str>| {
        if let Some(value) = value {
            let p = q.arg(Arg::Text(value.to_owned()));
            q.push(&format!(" AND {column} = {p}"));
        }
    };
    eq("status", filter.status.as_ref().map(|s| s.as_str()));
    eq("kind", filter.kind.as_ref().map(|k| k.as_str()));
    eq("currency", filter.currency.as_ref().map(|c| c.as_str()));
    if let Some(from) = filter.created_from {
        let p = q.arg(Arg::Int(from.as_i64()));
        q.push(&format!(" AND created_at >= {p}"));
    }
    if let Some(before) = filter.created_before {
        let p = q.arg(Arg::Int(before.as_i64()));
        q.push(&format!(" AND created_at < {p}"));
    }
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| LedgerError::InvalidCursor)?;
    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows
        .iter()
        .map(decode_order)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |o| {
        (o.created_at.as_i64(), o.id.as_str().to_owned())
    }))
}

/// The order a gateway payment reference belongs to (webhooks arrive with
/// the gateway's reference, not ours).
pub async fn find_order_by_gateway_reference(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    reference: &GatewayRef,
) -> Result<Option<Order>, LedgerError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
          WHERE tenant_id = $1 AND provider = $2 AND gateway_reference = $3"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(provider.as_str())
        .bind(reference.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_order).transpose()?)
}

/// Sets the status unconditionally.
pub async fn set_order_status(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
    to: OrderStatus,
) -> Result<Order, LedgerError> {
    let mut tx = store.begin_write().await?;
    let order = set_order_status_in(&mut tx, tenant, id, to).await?;
    tx.commit().await?;
    Ok(order)
}

/// [`set_order_status`] inside the caller's transaction.
pub async fn set_order_status_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
    to: OrderStatus,
) -> Result<Order, LedgerError> {
    let sql = format!(
        "UPDATE orders SET status = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2 \
         RETURNING {ORDER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(to.as_str())
        .bind(UnixMillis::now().as_i64())
        .fetch_optional(tx.conn())
        .await?;
    match row {
        Some(row) => Ok(decode_order(&row)?),
        None => Err(LedgerError::OrderNotFound),
    }
}

/// Compare-and-set: moves the order to `to` only if its status is one of
/// `from`, atomically (an API call and a webhook racing cannot both win).
/// Otherwise [`LedgerError::StatusConflict`] with the actual status.
pub async fn transition_order(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
) -> Result<Order, LedgerError> {
    let mut tx = store.begin_write().await?;
    let order = transition_order_in(&mut tx, tenant, id, from, to).await?;
    tx.commit().await?;
    Ok(order)
}

/// [`transition_order`] inside the caller's transaction.
pub async fn transition_order_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
) -> Result<Order, LedgerError> {
    transition(tx, tenant, id, from, to, None).await
}

/// [`transition_order_in`] that also records the gateway and its payment
/// reference, in the same statement: a paid checkout's routing and status
/// change cost one round trip.
pub async fn transition_routed_order_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
    provider: &ProviderId,
    gateway_reference: &GatewayRef,
) -> Result<Order, LedgerError> {
    transition(
        tx,
        tenant,
        id,
        from,
        to,
        Some((provider, gateway_reference)),
    )
    .await
}

async fn transition(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
    route: Option<(&ProviderId, &GatewayRef)>,
) -> Result<Order, LedgerError> {
    let update = transition_sql(tenant, id, from, to, route, UnixMillis::now(), true)?;
    let row = update
        .query()
        .fetch_optional(tx.conn())
        .await
        .map_err(|e| routing_error(e.into()))?;
    if let Some(row) = row {
        return Ok(decode_order(&row)?);
    }
    let current = sqlx::query("SELECT status FROM orders WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(tx.conn())
        .await?;
    match current {
        Some(row) => Err(LedgerError::StatusConflict {
            current: get_parsed(&row, "status", OrderStatus::parse)?,
        }),
        None => Err(LedgerError::OrderNotFound),
    }
}

/// The statement that moves `id` from one of `from` to `to` at `now`
/// (recording the route if given), optionally returning the whole order.
/// It changes no row when the order is missing or in another status.
pub(super) fn transition_sql(
    tenant: &TenantId,
    id: &OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
    route: Option<(&ProviderId, &GatewayRef)>,
    now: UnixMillis,
    returning: bool,
) -> Result<SqlBuf, LedgerError> {
    if from.is_empty() {
        return Err(LedgerError::Invalid("no source status given".into()));
    }
    let mut args = vec![
        Arg::Text(tenant.to_string()),
        Arg::Text(id.to_string()),
        Arg::Text(to.as_str().to_owned()),
        Arg::Int(now.as_i64()),
    ];
    let set_route = match route {
        Some((provider, reference)) => {
            args.push(Arg::Text(provider.to_string()));
            args.push(Arg::Text(reference.as_str().to_owned()));
            ", provider = $5, gateway_reference = $6"
        }
        None => "",
    };
    let mut placeholders = Vec::with_capacity(from.len());
    for status in from {
        args.push(Arg::Text(status.as_str().to_owned()));
        placeholders.push(format!("${}", args.len()));
    }
    let returning = if returning {
        format!(" RETURNING {ORDER_COLUMNS}")
    } else {
        String::new()
    };
    Ok(SqlBuf::bound(
        format!(
            "UPDATE orders SET status = $3, updated_at = $4{set_route} \
              WHERE tenant_id = $1 AND id = $2 AND status IN ({}){returning}",
            placeholders.join(", ")
        ),
        args,
    ))
}

/// Why [`transition_sql`] changed nothing, read on SQLite's writer connection.
pub(super) fn transition_refused_sqlite(
    conn: &rusqlite::Connection,
    tenant: &TenantId,
    id: &OrderId,
) -> LedgerError {
    use rusqlite::OptionalExtension;
    let current = conn
        .prepare_cached("SELECT status FROM orders WHERE tenant_id = ?1 AND id = ?2")
        .and_then(|mut s| {
            s.query_row([tenant.as_str(), id.as_str()], |row| {
                row.get::<_, String>(0)
            })
            .optional()
        });
    match current {
        Ok(Some(status)) => match OrderStatus::parse(&status) {
            Ok(current) => LedgerError::StatusConflict { current },
            Err(e) => LedgerError::Store(StoreError::Corrupt {
                column: "status",
                reason: e.to_string(),
            }),
        },
        Ok(None) => LedgerError::OrderNotFound,
        Err(e) => LedgerError::Store(e.into()),
    }
}

/// A gateway reference already recorded on another order of the tenant is
/// a duplicate; anything else is a storage error.
pub(super) fn routing_error(e: StoreError) -> LedgerError {
    match e.violation() {
        Some(Violation::Unique { .. }) => LedgerError::Duplicate { existing: None },
        _ => LedgerError::Store(e),
    }
}

/// Records which gateway the order is routed to and the gateway's payment
/// reference (replaced on failover to the next gateway).
pub async fn set_order_gateway(
    store: &Store,
    tenant: &TenantId,
    id: &OrderId,
    provider: &ProviderId,
    gateway_reference: Option<&GatewayRef>,
) -> Result<Order, LedgerError> {
    let mut tx = store.begin_write().await?;
    let order = set_order_gateway_in(&mut tx, tenant, id, provider, gateway_reference).await?;
    tx.commit().await?;
    Ok(order)
}

/// [`set_order_gateway`] inside the caller's transaction (so a checkout
/// records the gateway and books its rows in one commit).
pub async fn set_order_gateway_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
    provider: &ProviderId,
    gateway_reference: Option<&GatewayRef>,
) -> Result<Order, LedgerError> {
    let sql = format!(
        "UPDATE orders SET provider = $3, gateway_reference = $4, updated_at = $5 \
          WHERE tenant_id = $1 AND id = $2 RETURNING {ORDER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(provider.as_str())
        .bind(gateway_reference.map(GatewayRef::as_str))
        .bind(UnixMillis::now().as_i64())
        .fetch_optional(tx.conn())
        .await
        .map_err(|e| routing_error(e.into()))?;
    match row {
        Some(row) => Ok(decode_order(&row)?),
        None => Err(LedgerError::OrderNotFound),
    }
}

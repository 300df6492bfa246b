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
    Arg, CoWrite, Currency, MAX_LINE_MINOR, MAX_ORDER_MINOR, Money, OrderId, Page, ProviderId,
    SqlBuf, Store, StoreError, TenantId, UnixMillis, Violation, WriteTx, get_i64, get_json,
    get_opt_parsed, get_opt_text, get_parsed, get_time, page_of,
};

mod read;
mod workflow;

pub use read::*;
pub use workflow::*;

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
    /// The generation of the checkout's gateway idempotency key (see
    /// `checkout::request::checkout_scope`), stored so a resume derives the
    /// key the first call used instead of recounting it.
    pub key_generation: Option<i64>,
}

impl NewOrder {
    /// A manual order of `lines` in `currency`: no customer, metadata or
    /// gateway (for tools, seeding and tests).
    pub fn manual(currency: Currency, lines: Vec<OrderLine>) -> Self {
        Self {
            kind: OrderKind::Manual,
            currency,
            lines,
            customer: serde_json::json!({}),
            metadata: serde_json::json!({}),
            provider: None,
            checkout_key: None,
            gateway_account: None,
            key_generation: None,
        }
    }
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

/// [`stage_order`] with `also` committed in the same transaction as the
/// order (a quota count): the order is stored only if `also` succeeds, and
/// `also` stays only if the order is stored. The order's `INSERT` runs
/// first, so a key that already holds a live order fails with
/// [`LedgerError::CheckoutKeyTaken`] before `also` is asked. On an SQLite
/// file both are one job of the writer (no extra commit); elsewhere one
/// [`WriteTx`].
pub(crate) fn stage_order_with<W, E>(
    store: &Store,
    tenant: &TenantId,
    order: &NewOrder,
    also: W,
) -> Result<
    (
        Order,
        impl Future<Output = Result<(), E>> + Send + use<W, E>,
    ),
    LedgerError,
>
where
    W: CoWrite,
    E: From<LedgerError> + From<W::Error> + From<StoreError> + Send + 'static,
{
    let (created, insert) = order_insert(tenant, order)?;
    let (store, tenant) = (store.clone(), tenant.clone());
    let stored = async move {
        match store.sqlite_writer() {
            Some(writer) => {
                writer
                    .run(move |conn| {
                        insert
                            .execute_sqlite(conn)
                            .map_err(|e| E::from(order_insert_error(&tenant, e.into())))?;
                        also.run_sqlite(conn).map_err(E::from)
                    })
                    .await
            }
            None => {
                let mut tx = store.begin_write().await?;
                insert
                    .query()
                    .execute(tx.conn())
                    .await
                    .map_err(|e| E::from(order_insert_error(&tenant, e.into())))?;
                also.run(&mut tx).await.map_err(E::from)?;
                tx.commit().await?;
                Ok(())
            }
        }
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
            "INSERT INTO orders ({ORDER_COLUMNS}, checkout_key, gateway_account, key_generation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $11, $12, $13, $14)"
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
            // Orders without a checkout key store 0: they have no gateway key
            // to derive (and a text-typed NULL would not bind to BIGINT).
            Arg::Int(order.key_generation.unwrap_or(0)),
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

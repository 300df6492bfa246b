//! Orders are workflow state: the one live order of a checkout key, the
//! gateway an order is routed to, and its status transitions (each checked
//! against the states it may leave).

use super::*;

/// The tenant's live (neither canceled nor declined) order stored under a
/// checkout's `Idempotency-Key`, if any, with the gateway account it went to
/// and the generation of its gateway key (`None`: stored before it was kept).
pub async fn live_order_for_checkout_key(
    store: &Store,
    tenant: &TenantId,
    key: &str,
) -> Result<Option<(Order, Option<String>, Option<i64>)>, LedgerError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS}, gateway_account, key_generation FROM orders \
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
    let generation = crate::store::get_opt_i64(&row, "key_generation")?;
    Ok(Some((decode_order(&row)?, account, generation)))
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
pub(in crate::ledger) fn transition_sql(
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
pub(in crate::ledger) fn transition_refused_sqlite(
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
pub(in crate::ledger) fn routing_error(e: StoreError) -> LedgerError {
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
          WHERE tenant_id = $1 AND id = $2 \
            AND (gateway_reference IS NULL OR gateway_reference = $4 \
                 OR provider IS NULL OR provider <> $3) \
          RETURNING {ORDER_COLUMNS}"
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
        // The order records another payment at this gateway: a component
        // must not swap it for the one it reports now.
        None if order_exists(tx, tenant, id).await? => Err(LedgerError::Invalid(format!(
            "order {id} already records another payment at {provider}"
        ))),
        None => Err(LedgerError::OrderNotFound),
    }
}

async fn order_exists(
    tx: &mut WriteTx,
    tenant: &TenantId,
    id: &OrderId,
) -> Result<bool, LedgerError> {
    let row = sqlx::query("SELECT 1 FROM orders WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(tx.conn())
        .await
        .map_err(StoreError::from)?;
    Ok(row.is_some())
}

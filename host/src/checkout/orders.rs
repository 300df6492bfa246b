//! Orders without a gateway (manual, external, bulk): no gateway call, the
//! rows booked and the order paid in one transaction, access granted.

use super::request::lines_of;
use super::{CartItem, CheckoutError};
use crate::ledger::{
    self, LedgerError, LedgerRow, NewOrder, Order, OrderKind, OrderStatus, Source,
};
use crate::store::{Currency, Store, TenantId};

/// One order of [`GatewayLessOrders::gateway_less_many`].
#[derive(Debug, Clone)]
pub struct GatewayLessOrder {
    pub items: Vec<CartItem>,
    /// Stored as the order's customer (`{"id": …}` for a bulk user).
    pub customer: serde_json::Value,
    /// The outside system's reference, for external orders.
    pub external_ref: Option<String>,
    /// The client's descriptive fields (product names), kept in the
    /// order's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The gateway-less order service.
#[derive(Clone)]
pub struct GatewayLessOrders {
    store: Store,
}

impl GatewayLessOrders {
    /// A gateway-less order service.
    pub fn new(store: Store) -> GatewayLessOrders {
        GatewayLessOrders { store }
    }

    /// An order without a gateway (manual or external): no gateway call;
    /// rows booked at once; access granted.
    pub async fn gateway_less(
        &self,
        tenant: &TenantId,
        kind: OrderKind,
        currency: Currency,
        items: &[CartItem],
        customer: serde_json::Value,
        external_ref: Option<&str>,
    ) -> Result<(Order, Vec<LedgerRow>), CheckoutError> {
        let order = GatewayLessOrder {
            items: items.to_vec(),
            customer,
            external_ref: external_ref.map(str::to_owned),
            metadata: serde_json::Map::new(),
        };
        let mut booked = self
            .gateway_less_many(tenant, kind, currency, std::slice::from_ref(&order))
            .await?;
        booked
            .pop()
            .ok_or_else(|| CheckoutError::Invalid("nothing was booked".into()))
    }

    /// Several gateway-less orders (a bulk order: one per user) in **one**
    /// transaction: every order is booked and paid, or none is. A failure on
    /// the last entry (or in the commit) leaves nothing behind, so retrying a
    /// failed request cannot book the first users twice. (Retrying one whose
    /// response was lost needs an `Idempotency-Key`, like every mutating
    /// call.) On SQLite the write lock is held for the whole batch: three
    /// statements per user, up to 1,000 users.
    pub async fn gateway_less_many(
        &self,
        tenant: &TenantId,
        kind: OrderKind,
        currency: Currency,
        orders: &[GatewayLessOrder],
    ) -> Result<Vec<(Order, Vec<LedgerRow>)>, CheckoutError> {
        if kind == OrderKind::Checkout {
            return Err(CheckoutError::Invalid(
                "checkout orders go through a gateway".into(),
            ));
        }
        let mut tx = self.store.begin_write().await.map_err(LedgerError::from)?;
        let mut out = Vec::with_capacity(orders.len());
        for (i, entry) in orders.iter().enumerate() {
            // Dropping `tx` on an early return rolls every entry back.
            let lines = lines_of(&entry.items, None).map_err(|e| match e {
                CheckoutError::Invalid(m) if orders.len() > 1 => {
                    CheckoutError::Invalid(format!("orders[{i}]: {m}"))
                }
                other => other,
            })?;
            let mut metadata = entry.metadata.clone();
            if let Some(r) = &entry.external_ref {
                metadata.insert("external_reference".into(), r.as_str().into());
            }
            let metadata = serde_json::Value::Object(metadata);
            let order = ledger::create_order_in(
                &mut tx,
                tenant,
                &NewOrder {
                    kind,
                    currency,
                    lines: lines.clone(),
                    customer: entry.customer.clone(),
                    metadata,
                    provider: None,
                    checkout_key: None,
                    gateway_account: None,
                    key_generation: None,
                },
            )
            .await?;
            let rows: Vec<_> = lines
                .iter()
                .map(|l| l.ledger_row(currency, Source::Manual))
                .collect();
            let booked = ledger::book_order_rows_in(&mut tx, tenant, &order.id, &rows).await?;
            let order = ledger::transition_order_in(
                &mut tx,
                tenant,
                &order.id,
                &[OrderStatus::Pending],
                OrderStatus::Paid,
            )
            .await?;
            out.push((order, booked));
        }
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Entitlement;

    fn checkouts(store: &Store) -> GatewayLessOrders {
        GatewayLessOrders::new(store.clone())
    }

    fn user(n: i64, quantity: i64) -> GatewayLessOrder {
        GatewayLessOrder {
            items: vec![CartItem {
                unit_amount: 100 * n,
                quantity,
                user_plan: Some(Entitlement::parse("pro").expect("plan")),
            }],
            customer: serde_json::json!({ "id": format!("user-{n}") }),
            external_ref: None,
            metadata: serde_json::Map::new(),
        }
    }

    async fn count(store: &Store, table: &str, tenant: &TenantId) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1");
        sqlx::query_scalar(&sql)
            .bind(tenant.as_str())
            .fetch_one(store.pool())
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn a_bulk_order_books_every_user_or_none() {
        crate::store::testing::each_backend(|store| async move {
            let checkouts = checkouts(&store);
            let tenant = crate::store::testing::tenant(&store, "Bulk shop").await;
            let usd = Currency::parse("USD").expect("USD");

            // The third entry is invalid after two were already written.
            let err = checkouts
                .gateway_less_many(
                    &tenant,
                    OrderKind::Bulk,
                    usd,
                    &[user(1, 1), user(2, 1), user(3, 0)],
                )
                .await
                .expect_err("an invalid entry fails the whole bulk order");
            assert!(
                matches!(&err, CheckoutError::Invalid(m) if m.starts_with("orders[2]")),
                "{err:?}"
            );
            assert_eq!(
                count(&store, "orders", &tenant).await,
                0,
                "no order survives"
            );
            assert_eq!(
                count(&store, "payments", &tenant).await,
                0,
                "no row survives"
            );

            let booked = checkouts
                .gateway_less_many(&tenant, OrderKind::Bulk, usd, &[user(1, 1), user(2, 3)])
                .await
                .expect("a valid bulk order");
            assert_eq!(booked.len(), 2);
            assert!(booked.iter().all(|(o, _)| o.status == OrderStatus::Paid));
            assert_eq!(booked[1].1[0].amount.minor, 600);
            assert_eq!(count(&store, "orders", &tenant).await, 2);
            assert_eq!(count(&store, "payments", &tenant).await, 2);
        })
        .await;
    }
}

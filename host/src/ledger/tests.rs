//! Ledger tests: run on SQLite always and on PostgreSQL when
//! `PAYHOST_TEST_POSTGRES_URL` is set.

use std::collections::HashSet;

use sqlx::Row;

use super::*;
use crate::store::testing::{each_backend, tenant};
use crate::store::{Backend, Store, TenantId, UnixMillis, Violation, classify};

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR")
}

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

fn stripe() -> ProviderId {
    ProviderId::parse("stripe").expect("stripe")
}

fn gref(s: &str) -> GatewayRef {
    GatewayRef::parse(s).expect("gateway ref")
}

async fn order(
    store: &Store,
    tenant: &TenantId,
    currency: Currency,
    lines: Vec<OrderLine>,
) -> Order {
    create_order(
        store,
        tenant,
        &NewOrder {
            kind: OrderKind::Checkout,
            currency,
            lines,
            customer: serde_json::json!({"email": "a@example.com"}),
            metadata: serde_json::json!({"cart": "c1"}),
            provider: None,
            checkout_key: None,
            gateway_account: None,
            key_generation: None,
        },
    )
    .await
    .expect("order")
}

/// A tenant with one approved gateway payment of `amount` EUR; returns (tenant, payment).
async fn paid(store: &Store, amount: i64) -> (TenantId, LedgerRow) {
    let t = tenant(store, "Acme").await;
    let o = order(store, &t, eur(), vec![OrderLine::product(amount, None)]).await;
    let row = NewLedgerRow::product(Money::new(amount, eur()), None, Source::Api)
        .via_gateway(stripe(), Some(gref("pi_1")));
    let mut rows = book_order_rows(store, &t, &o.id, &[row])
        .await
        .expect("book");
    (t, rows.remove(0))
}

#[tokio::test]
async fn shipping_order_books_product_and_carrier_rows_atomically() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let pro = Entitlement::parse("pro_monthly").expect("entitlement");
        let o = order(
            &store,
            &t,
            eur(),
            vec![
                OrderLine::product(2500, Some(pro.clone())),
                OrderLine::shipping(490),
            ],
        )
        .await;
        assert_eq!(o.amount, Money::new(2990, eur()));
        let rows: Vec<NewLedgerRow> = o
            .lines
            .iter()
            .map(|l| {
                l.ledger_row(eur(), Source::Api)
                    .via_gateway(stripe(), Some(gref("pi_ship")))
            })
            .collect();
        let booked = book_order_rows(&store, &t, &o.id, &rows)
            .await
            .expect("book");
        assert_eq!(booked.len(), 2);

        let stored = rows_for_order(&store, &t, &o.id).await.expect("rows");
        assert_eq!(stored.len(), 2);
        let product = stored
            .iter()
            .find(|r| r.kind == EntryKind::Product)
            .expect("product row");
        let carrier = stored
            .iter()
            .find(|r| r.kind == EntryKind::Shipping)
            .expect("carrier row");
        assert_eq!(product.amount, Money::new(2500, eur()));
        assert_eq!(product.entitlement, Some(pro));
        assert_eq!(carrier.amount, Money::new(490, eur()));
        assert_eq!(
            carrier.entitlement, None,
            "the carrier row grants no user plan"
        );
        assert!(
            stored
                .iter()
                .all(|r| r.status == EntryStatus::Approved && r.provider == Some(stripe()))
        );

        // Atomic: a batch whose second row is invalid books nothing.
        let o2 = order(&store, &t, eur(), vec![OrderLine::product(100, None)]).await;
        let bad = [
            NewLedgerRow::product(Money::new(100, eur()), None, Source::Api),
            NewLedgerRow::shipping(Money::new(50, usd()), Source::Api),
        ];
        let err = book_order_rows(&store, &t, &o2.id, &bad)
            .await
            .expect_err("mixed currency");
        assert!(
            matches!(err, LedgerError::CurrencyMismatch { .. }),
            "{err:?}"
        );
        assert!(
            rows_for_order(&store, &t, &o2.id)
                .await
                .expect("rows")
                .is_empty()
        );

        // A shipping row can never carry an entitlement, even through raw SQL.
        let raw = sqlx::query(
            "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, \
               entitlement, source, created_at) \
             VALUES ('pay_raw1', $1, $2, 'shipping', 'approved', 10, 'EUR', 'pro', 'api', 0)",
        )
        .bind(t.as_str())
        .bind(o2.id.as_str())
        .execute(store.pool())
        .await
        .expect_err("entitlement on shipping");
        assert!(
            matches!(classify(&raw), Some(Violation::Check { .. })),
            "{raw}"
        );
    })
    .await;
}

#[tokio::test]
async fn payments_rows_cannot_be_updated_or_deleted() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 1000).await;

        let update = sqlx::query("UPDATE payments SET amount_minor = 1")
            .execute(store.pool())
            .await
            .expect_err("UPDATE must be refused");
        match classify(&update) {
            Some(Violation::Trigger { message }) => {
                assert!(message.contains("payments ledger is append-only"), "{message}")
            }
            other => panic!("expected a trigger violation, got {other:?} from {update}"),
        }
        let delete = sqlx::query("DELETE FROM payments")
            .execute(store.pool())
            .await
            .expect_err("DELETE must be refused");
        assert!(matches!(classify(&delete), Some(Violation::Trigger { .. })), "{delete}");

        // Upsert-style bypasses are refused too.
        let replace = match store.backend() {
            Backend::Sqlite => {
                "INSERT OR REPLACE INTO payments (id, tenant_id, order_id, kind, status, amount_minor, \
                   currency, source, created_at) \
                 SELECT id, tenant_id, order_id, kind, status, 1, currency, source, created_at FROM payments"
            }
            Backend::Postgres => {
                "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, \
                   source, created_at) \
                 SELECT id, tenant_id, order_id, kind, status, 1, currency, source, created_at FROM payments \
                 ON CONFLICT (id) DO UPDATE SET amount_minor = 1"
            }
        };
        sqlx::query(replace)
            .execute(store.pool())
            .await
            .expect_err("replace must be refused");
        if store.backend() == Backend::Postgres {
            sqlx::query("TRUNCATE payments CASCADE")
                .execute(store.pool())
                .await
                .expect_err("TRUNCATE must be refused");
        }
        // The guard row's identity and paid amount are fixed as well.
        sqlx::query("UPDATE refund_totals SET paid = paid + 100")
            .execute(store.pool())
            .await
            .expect_err("paid is fixed");

        let after = payment(&store, &t, &row.id).await.expect("read").expect("still there");
        assert_eq!(after, row, "the row is unchanged");
        let summary = refund_summary(&store, &t, &row.id).await.expect("summary").expect("exists");
        assert_eq!(summary.paid, Money::new(1000, eur()));
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_partial_refunds_never_exceed_the_payment() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 1000).await;
        let mut tasks = vec![];
        for _ in 0..50 {
            let (store, t, id) = (store.clone(), t.clone(), row.id.clone());
            tasks.push(tokio::spawn(async move {
                book_refund(&store, &t, &id, Some(30), None, Source::Api).await
            }));
        }
        let (mut ok, mut refused) = (0i64, 0);
        for task in tasks {
            match task.await.expect("join") {
                Ok(r) => {
                    assert_eq!(r.amount, Money::new(30, eur()));
                    ok += 1;
                }
                Err(LedgerError::RefundExceedsPaid { remaining }) => {
                    assert!(remaining.minor < 30, "refused while {remaining} remained");
                    refused += 1;
                }
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!(ok, 33, "exactly floor(1000 / 30) refunds fit");
        assert_eq!(refused, 17);

        let refunds: i64 = rows_for_order(&store, &t, &row.order_id)
            .await
            .expect("rows")
            .iter()
            .filter(|r| r.kind == EntryKind::Refund)
            .map(|r| r.amount.minor)
            .sum();
        assert_eq!(
            refunds,
            33 * 30,
            "the ledger holds exactly the refunds that succeeded"
        );
        let summary = refund_summary(&store, &t, &row.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(summary.refunded.minor, 990);
        assert_eq!(summary.remaining.minor, 10);
        let verified = verify_projections(&store, None).await.expect("verify");
        assert!(verified.is_clean(), "{:?}", verified.differences);
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_mixed_refunds_and_reservations_stay_within_the_payment() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 5000).await;
        let mut tasks = vec![];
        for i in 0..50i64 {
            let (store, t, id) = (store.clone(), t.clone(), row.id.clone());
            let amount = 50 + (i % 7) * 40; // 50..290, uneven
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    book_refund(&store, &t, &id, Some(amount), None, Source::Manual)
                        .await
                        .map(|r| r.amount.minor)
                } else {
                    // API path: hold, "call the gateway", then book (every third releases instead).
                    let hold = reserve_refund(&store, &t, &id, Some(amount)).await?;
                    tokio::task::yield_now().await;
                    if i % 3 == 0 {
                        release_refund(&store, &t, &hold.id).await?;
                        Ok(0)
                    } else {
                        complete_refund(
                            &store,
                            &t,
                            &hold.id,
                            Some(&gref(&format!("re_{i}"))),
                            Source::Api,
                        )
                        .await
                        .map(|r| r.amount.minor)
                    }
                }
            }));
        }
        let mut succeeded = 0i64;
        for task in tasks {
            match task.await.expect("join") {
                Ok(amount) => succeeded += amount,
                Err(LedgerError::RefundExceedsPaid { .. }) => {}
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert!(succeeded <= 5000, "refunded {succeeded} of 5000");
        let summary = refund_summary(&store, &t, &row.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(
            summary.refunded.minor, succeeded,
            "guard equals what succeeded"
        );
        assert_eq!(summary.reserved.minor, 0, "no hold left behind");
        let booked: i64 = rows_for_order(&store, &t, &row.order_id)
            .await
            .expect("rows")
            .iter()
            .filter(|r| r.kind == EntryKind::Refund)
            .map(|r| r.amount.minor)
            .sum();
        assert_eq!(booked, succeeded, "ledger rows equal what succeeded");
        let verified = verify_projections(&store, None).await.expect("verify");
        assert!(verified.is_clean(), "{:?}", verified.differences);
        let held: i128 = balances(&store, &t).await.expect("balance")[0].held;
        assert_eq!(held, 0, "no hold left in the projection");
    })
    .await;
}

#[tokio::test]
async fn refund_rules() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 1000).await;
        let err = book_refund(&store, &t, &row.id, Some(0), None, Source::Api).await.expect_err("zero");
        assert!(matches!(err, LedgerError::Invalid(_)), "{err:?}");
        let err = book_refund(&store, &t, &row.id, Some(1001), None, Source::Api).await.expect_err("too much");
        assert!(
            matches!(err, LedgerError::RefundExceedsPaid { remaining } if remaining == Money::new(1000, eur())),
            "{err:?}"
        );

        let partial = book_refund(&store, &t, &row.id, Some(400), Some(&gref("re_1")), Source::Api)
            .await
            .expect("partial");
        assert_eq!(partial.kind, EntryKind::Refund);
        assert_eq!(partial.status, EntryStatus::Refunded);
        assert_eq!(partial.refund_of, Some(row.id.clone()));
        assert_eq!(partial.provider, Some(stripe()));
        assert_eq!(partial.entitlement, None);

        let err = book_refund(&store, &t, &partial.id, None, None, Source::Api).await.expect_err("refund of refund");
        assert!(matches!(err, LedgerError::NotRefundable { .. }), "{err:?}");

        let rest = book_refund(&store, &t, &row.id, None, None, Source::Manual).await.expect("rest");
        assert_eq!(rest.amount, Money::new(600, eur()), "None refunds what remains");
        let err = book_refund(&store, &t, &row.id, None, None, Source::Manual).await.expect_err("nothing left");
        assert!(
            matches!(err, LedgerError::RefundExceedsPaid { remaining } if remaining.minor == 0),
            "{err:?}"
        );

        // Pending rows are not refundable; unknown ids are not found.
        let o = order(&store, &t, eur(), vec![OrderLine::product(300, None)]).await;
        let pending = book_order_rows(
            &store,
            &t,
            &o.id,
            &[NewLedgerRow::product(Money::new(300, eur()), None, Source::Api).pending()],
        )
        .await
        .expect("pending");
        let err = book_refund(&store, &t, &pending[0].id, None, None, Source::Api).await.expect_err("pending");
        assert!(matches!(err, LedgerError::NotRefundable { .. }), "{err:?}");
        let err = book_refund(&store, &t, &PaymentId::generate(), None, None, Source::Api)
            .await
            .expect_err("unknown");
        assert!(matches!(err, LedgerError::PaymentNotFound), "{err:?}");

        // The database itself refuses an over-refund or a cross-currency refund inserted by hand.
        let fresh = book_order_rows(
            &store,
            &t,
            &o.id,
            &[NewLedgerRow::product(Money::new(300, eur()), None, Source::Api)],
        )
        .await
        .expect("approved")
        .remove(0);
        let insert_refund = |id: &'static str, amount: i64, currency: &'static str| {
            sqlx::query(
                "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, \
                   refund_of, source, created_at) \
                 VALUES ($1, $2, $3, 'refund', 'refunded', $4, $5, $6, 'manual', 0)",
            )
            .bind(id)
            .bind(t.as_str().to_owned())
            .bind(o.id.as_str().to_owned())
            .bind(amount)
            .bind(currency)
            .bind(fresh.id.as_str().to_owned())
        };
        let over = insert_refund("pay_raw2", 301, "EUR").execute(store.pool()).await.expect_err("over");
        assert!(
            matches!(classify(&over), Some(Violation::Check { .. })),
            "over-refund must hit the CHECK: {over}"
        );
        let cross = insert_refund("pay_raw3", 10, "USD").execute(store.pool()).await.expect_err("currency");
        assert!(matches!(classify(&cross), Some(Violation::Trigger { .. })), "{cross}");
        insert_refund("pay_raw4", 300, "EUR").execute(store.pool()).await.expect("exact fit is allowed");
    })
    .await;
}

#[tokio::test]
async fn duplicate_gateway_event_or_refund_reference_is_rejected() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(&store, &t, eur(), vec![OrderLine::product(700, None)]).await;
        let approved = NewLedgerRow::product(Money::new(700, eur()), None, Source::Webhook)
            .via_gateway(stripe(), Some(gref("pi_7")))
            .with_external_ref(gref("evt_7"));
        let first = book_order_rows(&store, &t, &o.id, std::slice::from_ref(&approved))
            .await
            .expect("first");
        let err = book_order_rows(&store, &t, &o.id, std::slice::from_ref(&approved))
            .await
            .expect_err("replay");
        assert!(
            matches!(&err, LedgerError::Duplicate { existing: Some(id) } if *id == first[0].id),
            "{err:?}"
        );

        // The same event id from another provider, or for another tenant, is a different event.
        let paddle = ProviderId::parse("paddle").expect("paddle");
        let other = NewLedgerRow::product(Money::new(700, eur()), None, Source::Webhook)
            .via_gateway(paddle, None)
            .with_external_ref(gref("evt_7"));
        book_order_rows(&store, &t, &o.id, &[other])
            .await
            .expect("other provider");

        // Manual rows (no provider) are deduplicated too.
        let manual = NewLedgerRow::product(Money::new(700, eur()), None, Source::Manual)
            .with_external_ref(gref("import-1"));
        book_order_rows(&store, &t, &o.id, std::slice::from_ref(&manual))
            .await
            .expect("manual");
        let err = book_order_rows(&store, &t, &o.id, &[manual])
            .await
            .expect_err("manual twice");
        assert!(matches!(err, LedgerError::Duplicate { .. }), "{err:?}");

        // The unique index holds even for SQL that skips the repository's check.
        let raw = sqlx::query(
            "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, \
               source, external_ref, created_at) \
             VALUES ('pay_raw9', $1, $2, 'product', 'approved', 1, 'EUR', 'manual', 'import-1', 0)",
        )
        .bind(t.as_str())
        .bind(o.id.as_str())
        .execute(store.pool())
        .await
        .expect_err("duplicate manual external_ref");
        assert!(
            matches!(classify(&raw), Some(Violation::Unique { .. })),
            "{raw}"
        );

        // A refund reference books once: the API refund and its webhook echo.
        let re = gref("re_55");
        let api = book_refund(&store, &t, &first[0].id, Some(100), Some(&re), Source::Api)
            .await
            .expect("api refund");
        let echo = book_refund(
            &store,
            &t,
            &first[0].id,
            Some(100),
            Some(&re),
            Source::Webhook,
        )
        .await
        .expect_err("webhook echo");
        assert!(
            matches!(&echo, LedgerError::Duplicate { existing: Some(id) } if *id == api.id),
            "{echo:?}"
        );
        let summary = refund_summary(&store, &t, &first[0].id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(summary.refunded.minor, 100);
    })
    .await;
}

#[tokio::test]
async fn concurrent_deliveries_of_one_gateway_event_book_once() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(
            &store,
            &t,
            eur(),
            vec![OrderLine::product(900, None), OrderLine::shipping(100)],
        )
        .await;
        let rows = vec![
            NewLedgerRow::product(Money::new(900, eur()), None, Source::Webhook)
                .via_gateway(stripe(), Some(gref("pi_c")))
                .with_external_ref(gref("evt_c")),
            NewLedgerRow::shipping(Money::new(100, eur()), Source::Webhook)
                .via_gateway(stripe(), Some(gref("pi_c"))),
        ];
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, t, id, rows) = (store.clone(), t.clone(), o.id.clone(), rows.clone());
                tokio::spawn(async move { book_order_rows(&store, &t, &id, &rows).await })
            })
            .collect();
        let mut winners = vec![];
        let mut named = vec![];
        for task in tasks {
            match task.await.expect("join") {
                Ok(booked) => winners.push(booked),
                Err(LedgerError::Duplicate { existing }) => named.push(existing),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "one delivery books");
        let product_id = winners[0]
            .iter()
            .find(|r| r.kind == EntryKind::Product)
            .map(|r| r.id.clone());
        assert!(
            named.iter().all(|e| *e == product_id),
            "every duplicate names the booked row"
        );
        assert_eq!(
            rows_for_order(&store, &t, &o.id).await.expect("rows").len(),
            2,
            "both rows, once"
        );

        // Concurrent bookings of one refund reference: one refund row.
        let payment_id = product_id.expect("product");
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (store, t, id) = (store.clone(), t.clone(), payment_id.clone());
                tokio::spawn(async move {
                    book_refund(
                        &store,
                        &t,
                        &id,
                        Some(50),
                        Some(&gref("re_c")),
                        Source::Webhook,
                    )
                    .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.expect("join") {
                Ok(_) => ok += 1,
                Err(LedgerError::Duplicate { existing: Some(_) }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(ok, 1);
        let summary = refund_summary(&store, &t, &payment_id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(summary.refunded.minor, 50);
    })
    .await;
}

#[tokio::test]
async fn reserve_complete_release_flow() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 1000).await;
        let hold = reserve_refund(&store, &t, &row.id, Some(600))
            .await
            .expect("hold");
        assert_eq!(hold.amount, Money::new(600, eur()));
        assert_eq!(hold.provider, Some(stripe()));
        assert_eq!(hold.gateway_reference, Some(gref("pi_1")));

        // While held, a second refund that does not fit never reaches the gateway.
        let err = reserve_refund(&store, &t, &row.id, Some(500))
            .await
            .expect_err("does not fit");
        assert!(
            matches!(err, LedgerError::RefundExceedsPaid { remaining } if remaining.minor == 400),
            "{err:?}"
        );
        let err = book_refund(&store, &t, &row.id, Some(500), None, Source::Manual)
            .await
            .expect_err("manual too");
        assert!(
            matches!(err, LedgerError::RefundExceedsPaid { .. }),
            "{err:?}"
        );

        // Gateway failed: release, and the full amount is available again.
        assert!(release_refund(&store, &t, &hold.id).await.expect("release"));
        assert!(
            !release_refund(&store, &t, &hold.id)
                .await
                .expect("release twice")
        );
        let summary = refund_summary(&store, &t, &row.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!((summary.reserved.minor, summary.remaining.minor), (0, 1000));

        // Gateway succeeded: complete books one row and drops the hold.
        let hold = reserve_refund(&store, &t, &row.id, None)
            .await
            .expect("hold all");
        assert_eq!(hold.amount.minor, 1000);
        let booked = complete_refund(&store, &t, &hold.id, Some(&gref("re_9")), Source::Api)
            .await
            .expect("complete");
        assert_eq!(booked.amount.minor, 1000);
        assert_eq!(booked.refund_of, Some(row.id.clone()));
        // The refund row carries the refund's own reference, not the payment's.
        assert_eq!(booked.gateway_reference, Some(gref("re_9")));
        let stored = payment(&store, &t, &booked.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.gateway_reference, Some(gref("re_9")));
        let err = complete_refund(&store, &t, &hold.id, Some(&gref("re_9")), Source::Api)
            .await
            .expect_err("complete twice");
        assert!(matches!(err, LedgerError::ReservationNotFound), "{err:?}");
        let summary = refund_summary(&store, &t, &row.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(
            (
                summary.refunded.minor,
                summary.reserved.minor,
                summary.remaining.minor
            ),
            (1000, 0, 0)
        );

        // Another tenant cannot complete or release this tenant's holds.
        let (t2, row2) = paid(&store, 100).await;
        let hold2 = reserve_refund(&store, &t2, &row2.id, Some(10))
            .await
            .expect("hold");
        let err = complete_refund(&store, &t, &hold2.id, None, Source::Api)
            .await
            .expect_err("foreign");
        assert!(matches!(err, LedgerError::ReservationNotFound), "{err:?}");
        assert!(
            !release_refund(&store, &t, &hold2.id)
                .await
                .expect("foreign release")
        );

        // A hold older than the cutoff is reported to the janitor, with
        // the gateway's refund reference once the gateway took it as pending.
        let stale = stale_reservations(&store, UnixMillis(hold2.created_at.0 + 1))
            .await
            .expect("stale");
        assert_eq!(
            stale.iter().map(|r| &r.id).collect::<Vec<_>>(),
            vec![&hold2.id]
        );
        assert_eq!(stale[0].gateway_refund_reference, None, "outcome unknown");
        mark_refund_pending(&store, &t2, &hold2.id, &gref("re_pending"))
            .await
            .expect("mark pending");
        let err = mark_refund_pending(&store, &t, &hold2.id, &gref("re_x"))
            .await
            .expect_err("another tenant's hold");
        assert!(matches!(err, LedgerError::ReservationNotFound), "{err:?}");
        let stale = stale_reservations(&store, UnixMillis(hold2.created_at.0 + 1))
            .await
            .expect("stale");
        assert_eq!(stale[0].gateway_refund_reference, Some(gref("re_pending")));
        // That is the only change a hold ever takes, and only once.
        let err = mark_refund_pending(&store, &t2, &hold2.id, &gref("re_again"))
            .await
            .expect_err("a second reference");
        assert!(matches!(err, LedgerError::Store(_)), "{err:?}");
        let shrunk = sqlx::query("UPDATE refund_reservations SET amount_minor = 1 WHERE id = $1")
            .bind(hold2.id.as_str())
            .execute(store.pool())
            .await;
        assert!(shrunk.is_err(), "the held amount is fixed");
        let summary = refund_summary(&store, &t2, &row2.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(summary.reserved.minor, 10, "a pending hold still counts");
        assert!(
            stale_reservations(&store, UnixMillis(0))
                .await
                .expect("none")
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn balances_are_sums_over_rows() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(
            &store,
            &t,
            eur(),
            vec![OrderLine::product(1000, None), OrderLine::shipping(500)],
        )
        .await;
        let rows: Vec<_> = o
            .lines
            .iter()
            .map(|l| l.ledger_row(eur(), Source::Api))
            .collect();
        let booked = book_order_rows(&store, &t, &o.id, &rows)
            .await
            .expect("eur");
        book_refund(&store, &t, &booked[0].id, Some(300), None, Source::Manual)
            .await
            .expect("refund");
        let u = order(&store, &t, usd(), vec![OrderLine::product(2000, None)]).await;
        book_order_rows(
            &store,
            &t,
            &u.id,
            &[NewLedgerRow::product(
                Money::new(2000, usd()),
                None,
                Source::Api,
            )],
        )
        .await
        .expect("usd");
        book_order_rows(
            &store,
            &t,
            &u.id,
            &[NewLedgerRow::product(Money::new(7777, usd()), None, Source::Api).pending()],
        )
        .await
        .expect("pending usd");

        let b = balances(&store, &t).await.expect("balances");
        assert_eq!(
            b,
            vec![
                Balance {
                    currency: eur(),
                    paid: 1500,
                    refunded: 300,
                    held: 0,
                    net: 1200,
                },
                Balance {
                    currency: usd(),
                    paid: 2000,
                    refunded: 0,
                    held: 0,
                    net: 2000,
                },
            ]
        );
        let other = tenant(&store, "Other").await;
        assert!(balances(&store, &other).await.expect("empty").is_empty());
    })
    .await;
}

#[tokio::test]
async fn keyset_pagination_returns_every_row_exactly_once() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let mut expected = HashSet::new();
        for i in 0..8 {
            let currency = if i % 2 == 0 { eur() } else { usd() };
            let o = order(
                &store,
                &t,
                currency,
                vec![OrderLine::product(100, None), OrderLine::shipping(10)],
            )
            .await;
            // Rows of one booking share created_at: the id breaks the tie.
            let rows: Vec<_> = o
                .lines
                .iter()
                .map(|l| l.ledger_row(currency, Source::Api))
                .collect();
            for r in book_order_rows(&store, &t, &o.id, &rows)
                .await
                .expect("book")
            {
                expected.insert(r.id);
            }
            let extra = NewLedgerRow::product(Money::new(5, currency), None, Source::Manual);
            for r in book_order_rows(&store, &t, &o.id, &[extra])
                .await
                .expect("extra")
            {
                expected.insert(r.id);
            }
        }
        assert_eq!(expected.len(), 24);

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = list_payments(&store, &t, &PaymentFilter::default(), cursor.as_deref(), 5)
                .await
                .expect("page");
            assert!(page.items.len() <= 5);
            seen.extend(page.items.iter().map(|r| (r.created_at, r.id.clone())));
            pages += 1;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        let ids: HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(seen.len(), 24, "no row repeated");
        assert_eq!(ids, expected, "no row skipped");
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "strictly newest first"
        );

        // Filters combine with pagination.
        let filter = PaymentFilter {
            currency: Some(usd()),
            kind: Some(EntryKind::Shipping),
            ..PaymentFilter::default()
        };
        let page = list_payments(&store, &t, &filter, None, 100)
            .await
            .expect("filtered");
        assert_eq!(page.items.len(), 4);
        assert!(page.items.iter().all(|r| r.amount == Money::new(10, usd())));
        assert_eq!(page.next_cursor, None);
        let none = PaymentFilter {
            created_before: Some(UnixMillis(0)),
            ..PaymentFilter::default()
        };
        assert!(
            list_payments(&store, &t, &none, None, 10)
                .await
                .expect("range")
                .items
                .is_empty()
        );
        let from_now = PaymentFilter {
            created_from: Some(UnixMillis(UnixMillis::now().0 + 60_000)),
            ..PaymentFilter::default()
        };
        assert!(
            list_payments(&store, &t, &from_now, None, 10)
                .await
                .expect("future")
                .items
                .is_empty()
        );

        let err = list_payments(&store, &t, &PaymentFilter::default(), Some("garbage!"), 5)
            .await
            .expect_err("bad cursor");
        assert!(matches!(err, LedgerError::InvalidCursor), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_ledger() {
    each_backend(|store| async move {
        let (a, row) = paid(&store, 1000).await;
        let b = tenant(&store, "Intruder").await;
        assert_eq!(payment(&store, &b, &row.id).await.expect("read"), None);
        assert_eq!(
            get_order(&store, &b, &row.order_id).await.expect("order"),
            None
        );
        assert!(
            rows_for_order(&store, &b, &row.order_id)
                .await
                .expect("rows")
                .is_empty()
        );
        let listed = list_payments(&store, &b, &PaymentFilter::default(), None, 50)
            .await
            .expect("list");
        assert!(listed.items.is_empty());
        assert_eq!(
            refund_summary(&store, &b, &row.id).await.expect("summary"),
            None
        );

        let err = book_refund(&store, &b, &row.id, Some(1), None, Source::Api)
            .await
            .expect_err("refund");
        assert!(matches!(err, LedgerError::PaymentNotFound), "{err:?}");
        let err = reserve_refund(&store, &b, &row.id, Some(1))
            .await
            .expect_err("reserve");
        assert!(matches!(err, LedgerError::PaymentNotFound), "{err:?}");
        let err = book_order_rows(
            &store,
            &b,
            &row.order_id,
            &[NewLedgerRow::product(
                Money::new(1, eur()),
                None,
                Source::Api,
            )],
        )
        .await
        .expect_err("book into foreign order");
        assert!(matches!(err, LedgerError::OrderNotFound), "{err:?}");
        let err = set_order_status(&store, &b, &row.order_id, OrderStatus::Canceled)
            .await
            .expect_err("status");
        assert!(matches!(err, LedgerError::OrderNotFound), "{err:?}");

        // The owner still sees everything, unchanged.
        assert_eq!(
            payment(&store, &a, &row.id).await.expect("read"),
            Some(row.clone())
        );
        let o = get_order(&store, &a, &row.order_id)
            .await
            .expect("order")
            .expect("exists");
        assert_eq!(o.status, OrderStatus::Pending);
    })
    .await;
}

#[tokio::test]
async fn orders_are_mutable_workflow_state() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(&store, &t, eur(), vec![OrderLine::product(1200, None)]).await;
        assert_eq!(o.status, OrderStatus::Pending);
        assert_eq!(
            get_order(&store, &t, &o.id).await.expect("get"),
            Some(o.clone())
        );

        let routed = set_order_gateway(&store, &t, &o.id, &stripe(), Some(&gref("pi_99")))
            .await
            .expect("route");
        assert_eq!(routed.provider, Some(stripe()));
        let found = find_order_by_gateway_reference(&store, &t, &stripe(), &gref("pi_99"))
            .await
            .expect("find")
            .expect("found");
        assert_eq!(found.id, o.id);

        let moved = transition_order(
            &store,
            &t,
            &o.id,
            &[OrderStatus::Pending],
            OrderStatus::RequiresAction,
        )
        .await
        .expect("to requires_action");
        assert_eq!(moved.status, OrderStatus::RequiresAction);
        let err = transition_order(
            &store,
            &t,
            &o.id,
            &[OrderStatus::Pending],
            OrderStatus::Paid,
        )
        .await
        .expect_err("stale expectation");
        assert!(
            matches!(
                err,
                LedgerError::StatusConflict {
                    current: OrderStatus::RequiresAction
                }
            ),
            "{err:?}"
        );
        let paid_order = set_order_status(&store, &t, &o.id, OrderStatus::Paid)
            .await
            .expect("paid");
        assert_eq!(paid_order.status, OrderStatus::Paid);
        assert!(paid_order.updated_at >= o.updated_at);

        // A manual order: created, booked and marked paid in one transaction.
        let mut tx = store.begin_write().await.expect("tx");
        let manual = create_order_in(
            &mut tx,
            &t,
            &NewOrder {
                kind: OrderKind::Manual,
                currency: eur(),
                lines: vec![OrderLine::product(
                    300,
                    Some(Entitlement::parse("basic").expect("e")),
                )],
                customer: serde_json::json!({}),
                metadata: serde_json::json!({}),
                provider: None,
                checkout_key: None,
                gateway_account: None,
                key_generation: None,
            },
        )
        .await
        .expect("create");
        let rows: Vec<_> = manual
            .lines
            .iter()
            .map(|l| l.ledger_row(eur(), Source::Manual))
            .collect();
        book_order_rows_in(&mut tx, &t, &manual.id, &rows)
            .await
            .expect("book");
        set_order_status_in(&mut tx, &t, &manual.id, OrderStatus::Paid)
            .await
            .expect("paid");
        tx.commit().await.expect("commit");
        let stored = get_order(&store, &t, &manual.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (stored.kind, stored.status),
            (OrderKind::Manual, OrderStatus::Paid)
        );
        let rows = rows_for_order(&store, &t, &manual.id).await.expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].provider, None, "manual rows have no provider");

        // Invalid orders are refused before touching the database.
        let err = create_order(
            &store,
            &t,
            &NewOrder {
                kind: OrderKind::Checkout,
                currency: eur(),
                lines: vec![OrderLine::product(0, None)],
                customer: serde_json::json!({}),
                metadata: serde_json::json!({}),
                provider: None,
                checkout_key: None,
                gateway_account: None,
                key_generation: None,
            },
        )
        .await
        .expect_err("zero amount");
        assert!(matches!(err, LedgerError::Invalid(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn rows_are_readable_after_round_trip_through_sql() {
    each_backend(|store| async move {
        let (t, row) = paid(&store, 1234).await;
        let raw = sqlx::query("SELECT amount_minor, currency FROM payments WHERE id = $1")
            .bind(row.id.as_str())
            .fetch_one(store.pool())
            .await
            .expect("raw");
        assert_eq!(raw.try_get::<i64, _>("amount_minor").expect("amount"), 1234);
        let found = find_by_external_ref(&store, &t, Some(&stripe()), &gref("nope"))
            .await
            .expect("find");
        assert_eq!(found, None);
    })
    .await;
}

#[test]
fn enums_round_trip_their_stored_spelling() {
    for s in [
        OrderStatus::PartiallyRefunded,
        OrderStatus::RequiresAction,
        OrderStatus::Canceled,
    ] {
        assert_eq!(OrderStatus::parse(s.as_str()), Ok(s));
    }
    assert_eq!(
        serde_json::to_string(&OrderStatus::PartiallyRefunded).expect("json"),
        "\"partially_refunded\""
    );
    assert!(EntryStatus::parse("settled").is_err());
    assert!(Entitlement::parse("").is_err());
    assert!(GatewayRef::parse("has space").is_err());
}

/// A refund whose gateway reference is already booked on another row (a
/// refund of another payment) is not that refund's echo: money moved, so
/// nothing is booked and the hold stays for reconciliation. Its own echo
/// still releases the hold as a duplicate.
#[tokio::test]
async fn a_refund_reference_booked_on_another_row_keeps_the_hold() {
    each_backend(|store| async move {
        let (t, first) = paid(&store, 1000).await;
        let o = order(&store, &t, eur(), vec![OrderLine::product(500, None)]).await;
        let second = book_order_rows(
            &store,
            &t,
            &o.id,
            &[
                NewLedgerRow::product(Money::new(500, eur()), None, Source::Api)
                    .via_gateway(stripe(), Some(gref("pi_2"))),
            ],
        )
        .await
        .expect("book")
        .remove(0);
        let hold = reserve_refund(&store, &t, &first.id, Some(100))
            .await
            .expect("hold");
        complete_refund(&store, &t, &hold.id, Some(&gref("re_shared")), Source::Api)
            .await
            .expect("first refund booked");

        let hold = reserve_refund(&store, &t, &second.id, Some(50))
            .await
            .expect("hold");
        let err = complete_refund(&store, &t, &hold.id, Some(&gref("re_shared")), Source::Api)
            .await
            .expect_err("another row's reference");
        assert!(matches!(err, LedgerError::Invalid(_)), "{err:?}");
        let summary = refund_summary(&store, &t, &second.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!(
            (summary.refunded.minor, summary.reserved.minor),
            (0, 50),
            "nothing booked, the hold kept"
        );

        // The echo of the first refund itself is a duplicate and frees its hold.
        let echo = reserve_refund(&store, &t, &first.id, Some(100))
            .await
            .expect("hold");
        let err = complete_refund(
            &store,
            &t,
            &echo.id,
            Some(&gref("re_shared")),
            Source::Webhook,
        )
        .await
        .expect_err("echo");
        assert!(matches!(err, LedgerError::Duplicate { .. }), "{err:?}");
        let summary = refund_summary(&store, &t, &first.id)
            .await
            .expect("summary")
            .expect("exists");
        assert_eq!((summary.refunded.minor, summary.reserved.minor), (100, 0));
    })
    .await;
}

/// Rows stored before the money bounds (or by a path that bypassed them)
/// can be as large as `i64::MAX`: the balance still sums exactly, both
/// halves of the split sum carry, and it never fails. The bound's triggers
/// are dropped in this test's own database to store such rows.
#[tokio::test]
async fn balances_sum_exactly_beyond_i64() {
    each_backend(|store| async move {
        let t = tenant(&store, "Legacy").await;
        let o = order(&store, &t, eur(), vec![OrderLine::product(1, None)]).await;
        let drop_bound = match store.backend() {
            Backend::Sqlite => "DROP TRIGGER payments_amount_bound",
            Backend::Postgres => "DROP TRIGGER payments_amount_bound ON payments",
        };
        sqlx::query(drop_bound)
            .execute(store.pool())
            .await
            .expect("drop the bound in this test database");
        let amounts = [i64::MAX, i64::MAX, 1_234_567];
        for (i, amount) in amounts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO payments (id, tenant_id, order_id, kind, status, amount_minor, currency, source, created_at) \
                 VALUES ($1, $2, $3, 'product', 'approved', $4, 'EUR', 'manual', 0)",
            )
            .bind(format!("pay_legacy_{i}"))
            .bind(t.as_str())
            .bind(o.id.as_str())
            .bind(*amount)
            .execute(store.pool())
            .await
            .expect("legacy row");
        }
        let b = balances(&store, &t).await.expect("balances never fail");
        let expected: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].paid, b[0].refunded, b[0].net), (expected, 0, expected));
        assert_eq!(b[0].paid.to_string(), "18446744073710786181");
    })
    .await;
}

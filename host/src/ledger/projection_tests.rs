//! The balance projection and daily aggregates against the rows: every
//! booking path keeps them equal, `verify_projections` sees a corruption,
//! and the migration's back-fill rebuilds them. Both backends.

use super::*;
use crate::store::testing::{each_backend, tenant};
use crate::store::{Store, TenantId, UnixMillis};

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR")
}

fn stripe() -> ProviderId {
    ProviderId::parse("stripe").expect("stripe")
}

async fn order(store: &Store, tenant: &TenantId, amount: i64) -> Order {
    create_order(
        store,
        tenant,
        &NewOrder::manual(eur(), vec![OrderLine::product(amount, None)]),
    )
    .await
    .expect("order")
}

async fn assert_clean(store: &Store, tenant: Option<&TenantId>) {
    let report = verify_projections(store, tenant).await.expect("verify");
    assert!(report.is_clean(), "{:#?}", report.differences);
}

async fn balance(store: &Store, tenant: &TenantId) -> (i128, i128, i128, i128) {
    let b = balances(store, tenant).await.expect("balances");
    assert_eq!(b.len(), 1, "{b:?}");
    (b[0].paid, b[0].refunded, b[0].held, b[0].net)
}

async fn run_script_for_tests(store: &Store, sql: &str) {
    let mut conn = store.pool().acquire().await.expect("connection");
    crate::store::run_script(&mut conn, sql)
        .await
        .expect("script");
}

#[tokio::test]
async fn every_booking_path_keeps_the_projection_equal_to_the_rows() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(&store, &t, 1500).await;
        let rows = book_order_rows(
            &store,
            &t,
            &o.id,
            &[
                NewLedgerRow::product(Money::new(1000, eur()), None, Source::Api)
                    .via_gateway(stripe(), None),
                NewLedgerRow::shipping(Money::new(500, eur()), Source::Api)
                    .via_gateway(stripe(), None),
            ],
        )
        .await
        .expect("book");
        book_order_rows(
            &store,
            &t,
            &o.id,
            &[NewLedgerRow::product(Money::new(9999, eur()), None, Source::Api).pending()],
        )
        .await
        .expect("pending");
        assert_eq!(balance(&store, &t).await, (1500, 0, 0, 1500));
        assert_clean(&store, None).await;

        book_refund(&store, &t, &rows[0].id, Some(100), None, Source::Manual)
            .await
            .expect("refund");
        let hold = reserve_refund(&store, &t, &rows[0].id, Some(200))
            .await
            .expect("hold");
        assert_eq!(balance(&store, &t).await, (1500, 100, 200, 1400));
        assert_clean(&store, Some(&t)).await;
        complete_refund(&store, &t, &hold.id, None, Source::Api)
            .await
            .expect("complete");
        let hold = reserve_refund(&store, &t, &rows[1].id, Some(50))
            .await
            .expect("hold");
        assert_eq!(balance(&store, &t).await, (1500, 300, 50, 1200));
        assert!(release_refund(&store, &t, &hold.id).await.expect("release"));
        assert_eq!(balance(&store, &t).await, (1500, 300, 0, 1200));
        assert_clean(&store, None).await;

        let today = Day::of_millis(UnixMillis::now().as_i64());
        let report = daily_report(
            &store,
            Some(&t),
            &DailyFilter {
                from: today,
                to: today,
                currency: None,
                provider: None,
            },
        )
        .await
        .expect("report");
        assert_eq!(report.len(), 1, "{report:?}");
        let day = &report[0];
        assert_eq!(day.provider, Some(stripe()));
        assert_eq!(
            (day.paid, day.refunded, day.count, day.refund_count, day.net),
            (1500, 300, 2, 2, 1200)
        );
    })
    .await;
}

#[tokio::test]
async fn verify_reports_each_corrupted_value() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let other = tenant(&store, "Other").await;
        for who in [&t, &other] {
            let o = order(&store, who, 700).await;
            book_order_rows(
                &store,
                who,
                &o.id,
                &[NewLedgerRow::product(
                    Money::new(700, eur()),
                    None,
                    Source::Manual,
                )],
            )
            .await
            .expect("book");
        }
        assert_clean(&store, None).await;
        sqlx::query("UPDATE balance_projection SET paid_low = paid_low + 5 WHERE tenant_id = $1")
            .bind(t.as_str())
            .execute(store.pool())
            .await
            .expect("corrupt the balance");
        sqlx::query("UPDATE ledger_daily SET payments = payments + 1 WHERE tenant_id = $1")
            .bind(t.as_str())
            .execute(store.pool())
            .await
            .expect("corrupt the daily row");
        let report = verify_projections(&store, None).await.expect("verify");
        let found: Vec<_> = report
            .differences
            .iter()
            .map(|d| {
                (
                    d.table,
                    d.field,
                    d.expected,
                    d.stored,
                    d.key.starts_with(t.as_str()),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("balance_projection", "paid", 700, 705, true),
                ("ledger_daily", "payments", 1, 2, true),
            ]
        );
        assert_eq!((report.balances_checked, report.daily_checked), (2, 2));
        assert_clean(&store, Some(&other)).await;
        assert!(
            !verify_projections(&store, Some(&t))
                .await
                .expect("verify")
                .is_clean()
        );

        // An entry missing altogether is a difference too.
        sqlx::query("DELETE FROM balance_projection WHERE tenant_id = $1")
            .bind(other.as_str())
            .execute(store.pool())
            .await
            .expect("drop a balance");
        let report = verify_projections(&store, Some(&other))
            .await
            .expect("verify");
        assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
        assert_eq!(
            (report.differences[0].expected, report.differences[0].stored),
            (700, 0)
        );
    })
    .await;
}

#[tokio::test]
async fn the_migration_back_fill_rebuilds_the_projections_from_existing_rows() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let o = order(&store, &t, 900).await;
        let rows = book_order_rows(
            &store,
            &t,
            &o.id,
            &[NewLedgerRow::product(
                Money::new(900, eur()),
                None,
                Source::Manual,
            )],
        )
        .await
        .expect("book");
        book_refund(&store, &t, &rows[0].id, Some(300), None, Source::Manual)
            .await
            .expect("refund");
        reserve_refund(&store, &t, &rows[0].id, Some(100))
            .await
            .expect("hold");
        // A database from before migration 0008: rows, no projections.
        run_script_for_tests(
            &store,
            "DELETE FROM balance_projection; DELETE FROM ledger_daily",
        )
        .await;
        assert!(
            !verify_projections(&store, None)
                .await
                .expect("verify")
                .is_clean()
        );
        let migration = match store.backend() {
            crate::store::Backend::Sqlite => {
                include_str!("../../migrations/sqlite/0008_balance_projection.sql")
            }
            crate::store::Backend::Postgres => {
                include_str!("../../migrations/postgres/0008_balance_projection.sql")
            }
        };
        let (_, back_fill) = migration
            .split_once("-- Back-fill from the rows already booked.")
            .expect("the migration has a back-fill section");
        run_script_for_tests(&store, back_fill).await;
        assert_clean(&store, None).await;
        assert_eq!(balance(&store, &t).await, (900, 300, 100, 600));
    })
    .await;
}

//! Query plans: every list, report and lookup query of the ledger and its
//! orders reads through an index — no full scan of `payments`, `orders` or
//! the projections — shown by `EXPLAIN QUERY PLAN` on SQLite and `EXPLAIN`
//! (sequential scans disabled, so any usable index is taken) on PostgreSQL.

use sqlx::Row;

use super::orders::{get_order_sql, list_orders_sql, order_by_gateway_reference_sql};
use super::projection::BALANCE_SQL;
use super::read::{FIND_EXTERNAL_SQL, list_payments_sql, payment_sql, rows_for_order_sql};
use super::reports::daily_report_sql;
use super::*;
use crate::store::testing::{each_backend, tenant};
use crate::store::{Arg, Backend, SqlBuf, Store, UnixMillis};

/// Tables no request path may scan in full.
const GUARDED: [&str; 4] = ["payments", "orders", "ledger_daily", "balance_projection"];

/// The plan of `q`, one line per step, read on one connection (the
/// PostgreSQL setting must hold for the `EXPLAIN`).
async fn plan(store: &Store, q: &SqlBuf) -> Vec<String> {
    let mut conn = store.pool().acquire().await.expect("connection");
    match store.backend() {
        Backend::Sqlite => q
            .prefixed("EXPLAIN QUERY PLAN ")
            .query()
            .fetch_all(&mut *conn)
            .await
            .expect("explain")
            .iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect(),
        Backend::Postgres => {
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .expect("set");
            let lines = q
                .prefixed("EXPLAIN ")
                .query()
                .fetch_all(&mut *conn)
                .await
                .expect("explain")
                .iter()
                .map(|r| r.try_get::<String, _>(0).expect("plan line"))
                .collect();
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *conn)
                .await
                .expect("reset");
            lines
        }
    }
}

/// Fails naming `what` if its plan scans a guarded table in full.
async fn assert_indexed(store: &Store, what: &str, q: &SqlBuf) {
    let lines = plan(store, q).await;
    for line in &lines {
        for table in GUARDED {
            let scans = match store.backend() {
                // `SCAN t` and `SCAN t USING (COVERING) INDEX i` both read every entry.
                Backend::Sqlite => {
                    line.starts_with(&format!("SCAN {table}"))
                        && line[5 + table.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| c == ' ')
                }
                Backend::Postgres => line.contains(&format!("Seq Scan on {table} ")),
            };
            assert!(
                !scans,
                "{what} scans {table} in full on {}:\n{}",
                store.backend(),
                lines.join("\n")
            );
        }
    }
}

fn bound(sql: &str, args: Vec<Arg>) -> SqlBuf {
    SqlBuf::bound(sql.to_owned(), args)
}

fn text(s: &str) -> Arg {
    Arg::Text(s.to_owned())
}

#[tokio::test]
async fn every_list_report_and_lookup_query_uses_an_index() {
    each_backend(|store| async move {
        let t = tenant(&store, "Acme").await;
        let eur = Currency::parse("EUR").expect("EUR");
        let stripe = ProviderId::parse("stripe").expect("stripe");
        let o = create_order(
            &store,
            &t,
            &NewOrder::manual(eur, vec![OrderLine::product(300, None)]),
        )
        .await
        .expect("order");
        let rows = book_order_rows(
            &store,
            &t,
            &o.id,
            &[
                NewLedgerRow::product(Money::new(100, eur), None, Source::Api)
                    .via_gateway(stripe.clone(), None),
                NewLedgerRow::product(Money::new(200, eur), None, Source::Api),
            ],
        )
        .await
        .expect("book");
        let payment_cursor = list_payments(&store, &t, &PaymentFilter::default(), None, 1)
            .await
            .expect("page")
            .next_cursor
            .expect("a second page");
        let order_cursor = {
            let second = create_order(
                &store,
                &t,
                &NewOrder::manual(eur, vec![OrderLine::product(1, None)]),
            )
            .await
            .expect("order");
            assert_ne!(second.id, o.id);
            list_orders(&store, &t, &OrderFilter::default(), None, 1)
                .await
                .expect("page")
                .next_cursor
                .expect("a second page")
        };
        let now = UnixMillis::now();

        let payment_filters = [
            ("no filter", PaymentFilter::default()),
            (
                "order",
                PaymentFilter {
                    order_id: Some(o.id.clone()),
                    ..PaymentFilter::default()
                },
            ),
            (
                "kind+status",
                PaymentFilter {
                    kind: Some(EntryKind::Product),
                    status: Some(EntryStatus::Approved),
                    ..PaymentFilter::default()
                },
            ),
            (
                "currency+provider",
                PaymentFilter {
                    currency: Some(eur),
                    provider: Some(stripe.clone()),
                    ..PaymentFilter::default()
                },
            ),
            (
                "time range",
                PaymentFilter {
                    created_from: Some(UnixMillis(now.as_i64() - 86_400_000)),
                    created_before: Some(now),
                    ..PaymentFilter::default()
                },
            ),
        ];
        for (name, filter) in &payment_filters {
            for cursor in [None, Some(payment_cursor.as_str())] {
                let (q, _) = list_payments_sql(&t, filter, cursor, 50).expect("sql");
                assert_indexed(&store, &format!("list_payments ({name}, {cursor:?})"), &q).await;
            }
        }
        let order_filters = [
            ("no filter", OrderFilter::default()),
            (
                "status+kind+currency",
                OrderFilter {
                    status: Some(OrderStatus::Pending),
                    kind: Some(OrderKind::Manual),
                    currency: Some(eur),
                    ..OrderFilter::default()
                },
            ),
            (
                "time range",
                OrderFilter {
                    created_from: Some(UnixMillis(now.as_i64() - 86_400_000)),
                    created_before: Some(now),
                    ..OrderFilter::default()
                },
            ),
        ];
        for (name, filter) in &order_filters {
            for cursor in [None, Some(order_cursor.as_str())] {
                let (q, _) = list_orders_sql(&t, filter, cursor, 50).expect("sql");
                assert_indexed(&store, &format!("list_orders ({name}, {cursor:?})"), &q).await;
            }
        }

        let lookups = [
            (
                "payment by id",
                bound(
                    &payment_sql(),
                    vec![text(t.as_str()), text(rows[0].id.as_str())],
                ),
            ),
            (
                "rows of an order",
                bound(
                    &rows_for_order_sql(),
                    vec![text(t.as_str()), text(o.id.as_str())],
                ),
            ),
            (
                "row by external reference",
                bound(
                    FIND_EXTERNAL_SQL,
                    vec![text(t.as_str()), text("stripe"), text("evt_1")],
                ),
            ),
            (
                "order by id",
                bound(
                    &get_order_sql(),
                    vec![text(t.as_str()), text(o.id.as_str())],
                ),
            ),
            (
                "order by gateway reference",
                bound(
                    &order_by_gateway_reference_sql(),
                    vec![text(t.as_str()), text("stripe"), text("pi_1")],
                ),
            ),
            ("balance", bound(BALANCE_SQL, vec![text(t.as_str())])),
        ];
        for (name, q) in &lookups {
            assert_indexed(&store, name, q).await;
        }

        let today = Day::of_millis(now.as_i64());
        let year = DailyFilter {
            from: Day::parse("2026-01-01").expect("day"),
            to: Day::parse("2026-12-31").expect("day"),
            currency: None,
            provider: None,
        };
        let filtered = DailyFilter {
            from: today,
            to: today,
            currency: Some(eur),
            provider: Some(stripe.clone()),
        };
        for (name, filter) in [("year", &year), ("filtered", &filtered)] {
            let q = daily_report_sql(Some(&t), filter);
            assert_indexed(&store, &format!("tenant report ({name})"), &q).await;
            let q = daily_report_sql(None, filter);
            assert_indexed(&store, &format!("platform report ({name})"), &q).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_check_sees_a_full_scan() {
    // The guard itself must be able to fail: a filter on an unindexed
    // column with no tenant scans the ledger.
    each_backend(|store| async move {
        let q = bound(
            "SELECT id FROM payments WHERE entitlement = $1",
            vec![text("pro")],
        );
        let lines = plan(&store, &q).await;
        let scans = lines
            .iter()
            .any(|l| l.starts_with("SCAN payments") || l.contains("Seq Scan on payments "));
        assert!(scans, "{lines:?}");
    })
    .await;
}

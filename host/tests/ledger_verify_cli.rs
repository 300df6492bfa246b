//! `payhost ledger verify` as the operator runs it: a process against a
//! database file, its output and its exit status.

use std::process::Command;

use payhost::ledger::{self, NewLedgerRow, NewOrder, OrderLine, Source};
use payhost::store::{Currency, Money, Store, TenantId, UnixMillis, sqlite_file_url};

/// Runs `payhost ledger verify <args>` on `url` with a clean environment
/// (config rejects unknown `PAYHOST_*` keys, such as the test suite's).
fn verify(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payhost"))
        .env_clear()
        .env("PAYHOST_DATABASE_URL", url)
        .args(["ledger", "verify"])
        .args(args)
        .output()
        .expect("run payhost");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn verify_is_clean_and_then_reports_a_corrupted_projection() {
    let dir = std::env::temp_dir().join(format!("payhost-verify-{}", TenantId::generate()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = sqlite_file_url(&dir.join("payhost.db"));
    let store = Store::connect_and_migrate(&url).await.expect("store");
    let tenant = TenantId::generate();
    let now = UnixMillis::now().as_i64();
    sqlx::query(
        "INSERT INTO tenants (id, name, status, plan, created_at, updated_at) \
         VALUES ($1, 'Verify', 'active', 'free', $2, $2)",
    )
    .bind(tenant.as_str())
    .bind(now)
    .execute(store.pool())
    .await
    .expect("tenant");
    let eur = Currency::parse("EUR").expect("EUR");
    let order = ledger::create_order(
        &store,
        &tenant,
        &NewOrder::manual(eur, vec![OrderLine::product(1500, None)]),
    )
    .await
    .expect("order");
    let rows = ledger::book_order_rows(
        &store,
        &tenant,
        &order.id,
        &[NewLedgerRow::product(
            Money::new(1500, eur),
            None,
            Source::Manual,
        )],
    )
    .await
    .expect("book");
    ledger::book_refund(
        &store,
        &tenant,
        &rows[0].id,
        Some(400),
        None,
        Source::Manual,
    )
    .await
    .expect("refund");

    let (ok, text) = verify(&url, &[]);
    assert!(ok, "a booked ledger verifies clean: {text}");
    assert!(text.contains("projections match"), "{text}");
    let (ok, text) = verify(&url, &["--tenant", tenant.as_str()]);
    assert!(ok, "{text}");

    // Corrupt the projection behind the host's back.
    sqlx::query(
        "UPDATE balance_projection SET refunded_low = refunded_low + 1 WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .execute(store.pool())
    .await
    .expect("corrupt");
    let (ok, text) = verify(&url, &[]);
    assert!(!ok, "a corrupted projection fails verify: {text}");
    assert!(
        text.contains(&format!(
            "balance_projection {}/EUR refunded: rows give 400, stored 401",
            tenant.as_str()
        )),
        "{text}"
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The list endpoints an operator and a tenant page through:
//! `GET /admin/tenants` and `GET /v1/orders`, keyset-paginated newest
//! first, with filters; one test per backend.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{TestApp, backend_test};

/// Every item of a listing, page by page (`limit` per page), and the page
/// sizes seen. Fails if a page repeats an item.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: u32) -> (Vec<Value>, Vec<usize>) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, page) = app.send(app.request(Method::GET, &url, Some(token))).await;
        assert_eq!(status, 200, "{}: {url}: {page}", app.backend);
        let page_items = page["items"].as_array().expect("items").clone();
        sizes.push(page_items.len());
        items.extend(page_items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
        assert!(sizes.len() < 100, "{}: runaway pagination", app.backend);
    }
    let ids: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        items.len(),
        "{}: a page repeated an item",
        app.backend
    );
    (items, sizes)
}

fn newest_first(items: &[Value]) -> bool {
    items.windows(2).all(|w| {
        let a = (w[0]["created_at"].as_i64(), w[0]["id"].as_str());
        let b = (w[1]["created_at"].as_i64(), w[1]["id"].as_str());
        a > b
    })
}

async fn admin_tenants_page_newest_first_and_filter_by_status(app: &TestApp) {
    let admin = payhost_tests::ADMIN_TOKEN;
    let mut created = Vec::new();
    for i in 0..5 {
        let (id, _key) = app.new_tenant(&format!("shop {i}")).await;
        created.push(id);
    }
    let (items, sizes) = all_pages(app, admin, "/admin/tenants", 2).await;
    assert_eq!(sizes, [2, 2, 1], "{}", app.backend);
    assert!(newest_first(&items), "{}: {items:?}", app.backend);
    let listed: Vec<&str> = items.iter().filter_map(|t| t["id"].as_str()).collect();
    let mut expected: Vec<&str> = created.iter().map(String::as_str).collect();
    expected.reverse();
    // Same-millisecond tenants are ordered by id; compare as sets then.
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        expected.iter().collect::<HashSet<_>>(),
        "{}",
        app.backend
    );
    for t in &items {
        assert_eq!(t["status"], "active", "{t}");
        assert!(
            t["name"].as_str().is_some_and(|n| n.starts_with("shop ")),
            "{t}"
        );
        assert_eq!(t["plan"], "free", "{t}");
    }

    let suspended = payhost::store::TenantId::parse(&created[2]).expect("tenant id");
    payhost::tenancy::set_tenant_status(
        &app.store,
        &suspended,
        payhost::tenancy::TenantStatus::Suspended,
    )
    .await
    .expect("suspend");
    let (status, page) = app
        .admin(Method::GET, "/admin/tenants?status=suspended", None)
        .await;
    assert_eq!(status, 200, "{}: {page}", app.backend);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["id"], created[2].as_str());
    assert!(page["next_cursor"].is_null());
    let (_, active) = all_pages(app, admin, "/admin/tenants?status=active", 10).await;
    assert_eq!(active, [4], "{}", app.backend);

    let (status, body) = app
        .admin(Method::GET, "/admin/tenants?cursor=not-a-cursor", None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_cursor"))
    );
    let (status, body) = app
        .admin(Method::GET, "/admin/tenants?status=gone", None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("validation_failed"))
    );
    let (status, body) = app
        .admin(Method::GET, "/admin/tenants?sort=name", None)
        .await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("bad_query")));
    let (status, body) = app
        .send(app.request(Method::GET, "/admin/tenants", Some("wrong")))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
}

backend_test! {
    async fn admin_tenants_paginate(app) {
        admin_tenants_page_newest_first_and_filter_by_status(&app).await;
        app.finish().await;
    }
}

async fn manual(app: &TestApp, key: &str, kind: &str, currency: &str, amount: i64) -> Value {
    let (status, order) = app
        .tenant(
            key,
            Method::POST,
            "/v1/orders",
            Some(json!({
                "kind": kind,
                "currency": currency,
                "items": [{"user_plan": "pro", "amount": amount}],
            })),
        )
        .await;
    assert_eq!(status, 201, "{}: {order}", app.backend);
    order
}

async fn tenant_orders_page_and_filter(app: &TestApp) {
    let (_a, key) = app.new_tenant("orders a").await;
    let (_b, other) = app.new_tenant("orders b").await;
    let mut ids = HashSet::new();
    for amount in [100, 200, 300] {
        ids.insert(manual(app, &key, "manual", "USD", amount).await["id"].clone());
    }
    ids.insert(manual(app, &key, "external", "EUR", 400).await["id"].clone());
    let (status, bulk) = app
        .tenant(
            &key,
            Method::POST,
            "/v1/orders/bulk",
            Some(json!({"currency": "USD", "users": [
                {"user": "u1", "user_plan": "pro", "amount": 500},
                {"user": "u2", "user_plan": "pro", "amount": 600},
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{bulk}");
    for o in bulk["orders"].as_array().expect("orders") {
        ids.insert(o["id"].clone());
    }
    manual(app, &other, "manual", "USD", 700).await;

    let (items, sizes) = all_pages(app, &key, "/v1/orders", 4).await;
    assert_eq!(sizes, [4, 2], "{}", app.backend);
    assert!(newest_first(&items), "{}: {items:?}", app.backend);
    assert_eq!(
        items
            .iter()
            .map(|o| o["id"].clone())
            .collect::<HashSet<_>>(),
        ids,
        "{}: only the caller's orders",
        app.backend
    );
    for o in &items {
        assert_eq!(o["status"], "paid", "{o}");
        assert!(o.get("ledger").is_none(), "a listed order has no rows: {o}");
    }

    let count = |items: Vec<Value>| items.len();
    let (manual_only, _) = all_pages(app, &key, "/v1/orders?kind=manual", 10).await;
    assert!(manual_only.iter().all(|o| o["kind"] == "manual"));
    assert_eq!(count(manual_only), 3, "{}", app.backend);
    let (bulk_only, _) = all_pages(app, &key, "/v1/orders?kind=bulk", 1).await;
    assert_eq!(count(bulk_only), 2, "{}", app.backend);
    let (eur, _) = all_pages(app, &key, "/v1/orders?currency=EUR", 10).await;
    assert_eq!(eur.len(), 1, "{}", app.backend);
    assert_eq!(eur[0]["kind"], "external");
    assert_eq!(eur[0]["amount"], 400);
    let (paid_usd, _) = all_pages(app, &key, "/v1/orders?status=paid&currency=USD", 10).await;
    assert_eq!(paid_usd.len(), 5, "{}", app.backend);
    let (pending, _) = all_pages(app, &key, "/v1/orders?status=pending", 10).await;
    assert!(pending.is_empty(), "{}: {pending:?}", app.backend);
    let (future, _) = all_pages(app, &key, "/v1/orders?created_from=99999999999999", 10).await;
    assert!(future.is_empty(), "{}", app.backend);
    let (past, _) = all_pages(app, &key, "/v1/orders?created_before=1", 10).await;
    assert!(past.is_empty(), "{}", app.backend);

    for (query, status, code) in [
        ("kind=subscription", 422, "validation_failed"),
        ("status=lost", 422, "validation_failed"),
        ("currency=usd1", 422, "validation_failed"),
        ("cursor=%%%", 400, "invalid_cursor"),
        ("limit=-1", 400, "bad_query"),
        ("order_by=amount", 400, "bad_query"),
    ] {
        let (got, body) = app
            .tenant(&key, Method::GET, &format!("/v1/orders?{query}"), None)
            .await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{}: {query}: {body}",
            app.backend
        );
    }
}

backend_test! {
    async fn tenant_orders_paginate(app) {
        tenant_orders_page_and_filter(&app).await;
        app.finish().await;
    }
}

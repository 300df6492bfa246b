//! Tenants are isolated from each other; unknown keys get 401; a moved
//! domain stops resolving on every instance.

use reqwest::Method;
use serde_json::{Value, json};

use payhost_tests::{
    TestApp, backend_test,
    checkout::{cart, checkout, first_product_payment},
    eventually, rand_u64,
};

backend_test! {
    async fn tenants_cannot_see_each_other_and_bad_keys_get_401(app) {
        let (a_id, a) = app.new_tenant("Tenant A").await;
        let (_, b) = app.new_tenant("Tenant B").await;
        app.save_stripe(&a, 1, &["USD"]).await;
        let (_, order) = checkout(&app, &a, cart("USD", "pm_card_visa")).await;
        let order_id = order["id"].as_str().expect("order id").to_string();
        let payment = first_product_payment(&order);

        // B's key on A's resources: 404 and nothing of A's.
        for (method, path, body) in [
            (Method::GET, format!("/v1/orders/{order_id}"), None),
            (Method::GET, format!("/v1/checkouts/{order_id}"), None),
            (Method::GET, format!("/v1/payments/{payment}"), None),
            (
                Method::POST,
                format!("/v1/payments/{payment}/refunds"),
                Some(json!({"amount": 1})),
            ),
            (Method::DELETE, "/v1/gateways/stripe".to_string(), None),
        ] {
            let (status, body) = app.tenant(&b, method.clone(), &path, body).await;
            assert_eq!(status, 404, "[{}] {method} {path}: {body}", app.backend);
            assert!(!body.to_string().contains(&order_id));
        }
        for path in ["/v1/gateways", "/v1/payments", "/v1/balance"] {
            let (status, body) = app.tenant(&b, Method::GET, path, None).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["items"],
                json!([]),
                "{path} shows B nothing of A: {body}"
            );
        }
        // A's data is intact after B's attempts.
        let (_, gateways) = app.tenant(&a, Method::GET, "/v1/gateways", None).await;
        assert_eq!(gateways["items"].as_array().map(Vec::len), Some(1));
        let (_, p) = app
            .tenant(&a, Method::GET, &format!("/v1/payments/{payment}"), None)
            .await;
        assert_eq!(p["amount"], 1000);

        // No key, a garbage key, and a revoked key: 401 everywhere.
        let (status, issued) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{a_id}/api-keys"),
                Some(json!({"label": "temp"})),
            )
            .await;
        assert_eq!(status, 201);
        let revoked = issued["key"].as_str().expect("key").to_string();
        let (status, _) = app
            .admin(
                Method::DELETE,
                &format!(
                    "/admin/tenants/{a_id}/api-keys/{}",
                    issued["id"].as_str().expect("id")
                ),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let endpoints = [
            (Method::GET, "/v1/gateways".to_string()),
            (Method::PUT, "/v1/gateways/stripe".to_string()),
            (Method::DELETE, "/v1/gateways/stripe".to_string()),
            (Method::POST, "/v1/checkouts".to_string()),
            (Method::GET, format!("/v1/checkouts/{order_id}")),
            (Method::POST, "/v1/orders".to_string()),
            (Method::POST, "/v1/orders/bulk".to_string()),
            (Method::GET, format!("/v1/orders/{order_id}")),
            (Method::GET, "/v1/payments".to_string()),
            (Method::GET, format!("/v1/payments/{payment}")),
            (Method::POST, format!("/v1/payments/{payment}/refunds")),
            (Method::GET, "/v1/balance".to_string()),
        ];
        for (method, path) in &endpoints {
            for token in [None, Some("ph_not_a_real_key"), Some(revoked.as_str())] {
                let (status, body) = app
                    .send(app.request(method.clone(), path, token).json(&json!({})))
                    .await;
                assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
        }
        // The operator API wants the admin token, not a tenant key.
        let (status, _) = app
            .send(
                app.request(Method::POST, "/admin/tenants", Some(&a))
                    .json(&json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, 401);
        app.finish().await;
    }
}

async fn whoami(app: &TestApp, domain: &str) -> (u16, Value) {
    let req = app
        .request(Method::GET, "/public/tenant", None)
        .header("host", domain);
    app.send(req).await
}

backend_test! {
    async fn a_moved_domain_stops_resolving_on_a_second_instance(app) {
        let url = app.database_url().expect("owned database");
        let second = app.sibling(&url).await;
        let (a, _) = app.new_tenant("Domain A").await;
        let (b, _) = app.new_tenant("Domain B").await;
        let domain = format!("shop-{:x}.example.com", rand_u64());
        let (status, body) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{a}/domains"),
                Some(json!({"domain": domain})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // Both instances resolve (and cache) the domain to A.
        assert_eq!(whoami(&app, &domain).await.1["tenant_id"], a.as_str());
        assert_eq!(whoami(&second, &domain).await.1["tenant_id"], a.as_str());

        // Move it: A detaches, B attaches — through the first instance only.
        let (status, _) = app
            .admin(
                Method::DELETE,
                &format!("/admin/tenants/{a}/domains/{domain}"),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{b}/domains"),
                Some(json!({"domain": domain})),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(whoami(&app, &domain).await.1["tenant_id"], b.as_str());

        if app.backend == "postgres" {
            // The second instance hears the invalidation (NOTIFY) and stops
            // serving the old owner: poll for it, bounded.
            eventually("second instance still resolves the old owner", || async {
                let (_, body) = whoami(&second, &domain).await;
                (body["tenant_id"] == b.as_str()).then_some(()).ok_or(body)
            })
            .await;
        }
        second.finish().await;
        app.finish().await;
    }
}

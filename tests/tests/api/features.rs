//! Features over HTTP: evaluation order (default, plan, override, expiry on
//! the controllable clock, kill switch), provider selection by flag (routing
//! moves, refunds of earlier payments do not), and the gates on gateways,
//! manual and bulk orders and refunds (403, nothing stored).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use payhost::features::Clock as _;
use payhost_tests::{
    TestApp, backend_test,
    checkout::{cart, checkout, first_product_payment, orders_of},
    eventually,
};

/// The evaluation of `key` in the tenant's `GET /v1/features`.
async fn feature(app: &TestApp, key: &str, name: &str) -> Value {
    let (status, body) = app.tenant(key, Method::GET, "/v1/features", None).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["key"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {body}"))
}

/// `(value, source)` of an evaluation.
fn vs(e: &Value) -> (Value, String) {
    (
        e["value"].clone(),
        e["source"].as_str().unwrap_or("").to_owned(),
    )
}

async fn admin_ok(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = app.admin(method, path, Some(body)).await;
    assert!(status == 200 || status == 204, "{path}: {status} {answer}");
    answer
}

/// Saves the hostile test provider (a second payment gateway) for USD.
async fn save_hostile(app: &TestApp, key: &str, priority: i64) -> (u16, Value) {
    app.tenant(
        key,
        Method::PUT,
        "/v1/gateways/hostile",
        Some(json!({"credentials": {}, "priority": priority, "currencies": ["USD"]})),
    )
    .await
}

backend_test! {
    async fn evaluation_goes_kill_switch_override_plan_default(app) {
        let (tenant, key) = app.new_tenant("Evaluated shop").await;
        admin_ok(&app, Method::PUT, "/admin/features/reports.export",
            json!({"kind": "limit", "default": 1, "description": "exports per day"})).await;

        // Default.
        let e = feature(&app, &key, "reports.export").await;
        assert_eq!(vs(&e), (json!(1), "default".into()));
        assert_eq!(e["reason"], "DEFAULT");

        // Plan grant.
        admin_ok(&app, Method::PUT, "/admin/plans/pro",
            json!({"grants": {"reports.export": 10}})).await;
        admin_ok(&app, Method::PUT, &format!("/admin/tenants/{tenant}/plan"),
            json!({"plan": "pro"})).await;
        let e = feature(&app, &key, "reports.export").await;
        assert_eq!(vs(&e), (json!(10), "plan".into()));
        assert_eq!(e["variant"], "plan:pro");

        // An override beats the plan, until it expires (controllable clock).
        let expires = app.clock.now().as_i64() + 3_600_000;
        let set = admin_ok(&app, Method::PUT,
            &format!("/admin/tenants/{tenant}/overrides/reports.export"),
            json!({"value": null, "reason": "ticket 42", "expires_at": expires})).await;
        assert_eq!(set["actor"], "operator:admin");
        let e = feature(&app, &key, "reports.export").await;
        assert_eq!(vs(&e), (Value::Null, "override".into()), "{e}");
        assert_eq!(e["detail"], "ticket 42");
        app.clock.advance(Duration::from_secs(3_601));
        let e = feature(&app, &key, "reports.export").await;
        assert_eq!(vs(&e), (json!(10), "plan".into()), "expired override ignored: {e}");

        // A kill switch beats everything (a limit reads 0), also a live override.
        admin_ok(&app, Method::PUT,
            &format!("/admin/tenants/{tenant}/overrides/reports.export"),
            json!({"value": 99, "reason": "ticket 43"})).await;
        admin_ok(&app, Method::PUT, "/admin/kill-switches/reports.export",
            json!({"reason": "export incident"})).await;
        let e = feature(&app, &key, "reports.export").await;
        assert_eq!(vs(&e), (json!(0), "kill_switch".into()));
        assert_eq!(e["reason"], "DISABLED");
        let (status, kills) = app.admin(Method::GET, "/admin/kill-switches", None).await;
        assert_eq!(status, 200);
        assert_eq!(kills["items"][0]["key"], "reports.export");
        let (status, _) = app.admin(Method::DELETE, "/admin/kill-switches/reports.export", None).await;
        assert_eq!(status, 204);
        assert_eq!(vs(&feature(&app, &key, "reports.export").await), (json!(99), "override".into()));
        let (status, _) = app.admin(Method::DELETE,
            &format!("/admin/tenants/{tenant}/overrides/reports.export"), None).await;
        assert_eq!(status, 204);
        assert_eq!(vs(&feature(&app, &key, "reports.export").await), (json!(10), "plan".into()));

        // The operator's view shows the same, with built-ins registered.
        let (status, all) = app.admin(Method::GET, &format!("/admin/tenants/{tenant}/features"), None).await;
        assert_eq!(status, 200, "{all}");
        let keys: Vec<&str> = all["items"].as_array().expect("items").iter()
            .filter_map(|i| i["key"].as_str()).collect();
        for builtin in ["provider.stripe", "provider.hostile", "gateways.max", "checkouts.monthly",
            "orders.manual", "orders.bulk", "refunds", "api.requests_per_minute"] {
            assert!(keys.contains(&builtin), "{builtin} registered: {keys:?}");
        }

        // Every change was audited.
        let (_, audit) = app.admin(Method::GET, "/admin/audit?limit=100", None).await;
        let actions: Vec<&str> = audit["items"].as_array().expect("events").iter()
            .filter_map(|e| e["action"].as_str()).collect();
        for action in ["feature.defined", "plan.saved", "tenant.plan_changed",
            "feature.override_set", "feature.override_removed",
            "feature.kill_switch_pulled", "feature.kill_switch_released"] {
            assert!(actions.contains(&action), "{action} audited: {actions:?}");
        }
        app.finish().await;
    }
}

backend_test! {
    async fn bad_feature_writes_are_clear_client_errors(app) {
        let (tenant, _) = app.new_tenant("Validated shop").await;
        let cases = [
            (Method::PUT, "/admin/features/Bad..Key".to_owned(),
                json!({"kind": "flag", "default": true}), 422, "validation_failed"),
            (Method::PUT, "/admin/features/orders.bulk".to_owned(),
                json!({"kind": "limit", "default": 3}), 409, "feature_kind_conflict"),
            (Method::PUT, "/admin/features/orders.bulk".to_owned(),
                json!({"kind": "flag", "default": 3}), 422, "feature_value_mismatch"),
            (Method::PUT, "/admin/plans/pro".to_owned(),
                json!({"grants": {"gateways.max": true}}), 422, "feature_value_mismatch"),
            (Method::PUT, "/admin/plans/pro".to_owned(),
                json!({"grants": {"no.such": true}}), 404, "feature_not_found"),
            (Method::PUT, format!("/admin/tenants/{tenant}/plan"),
                json!({"plan": "gold"}), 404, "plan_not_found"),
            (Method::PUT, "/admin/tenants/ten_0000000000000000/overrides/refunds".to_owned(),
                json!({"value": false, "reason": "x"}), 404, "tenant_not_found"),
            (Method::PUT, format!("/admin/tenants/{tenant}/overrides/gateways.max"),
                json!({"value": -1, "reason": "x"}), 422, "feature_value_mismatch"),
            (Method::PUT, format!("/admin/tenants/{tenant}/overrides/refunds"),
                json!({"value": false, "reason": ""}), 422, "validation_failed"),
            (Method::PUT, "/admin/kill-switches/no.such".to_owned(),
                json!({"reason": "x"}), 404, "feature_not_found"),
        ];
        for (method, path, body, status, code) in cases {
            let (got, answer) = app.admin(method, &path, Some(body.clone())).await;
            assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)),
                "{path} {body}: {answer}");
        }
        let (status, answer) = app.admin(Method::DELETE, "/admin/kill-switches/refunds", None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("kill_switch_not_found")));
        let (status, answer) = app.admin(Method::GET, "/admin/plans/none", None).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("plan_not_found")));
        let (status, _) = app.admin(Method::GET, "/admin/features?limit=2", None).await;
        assert_eq!(status, 200);
        app.finish().await;
    }
}

backend_test! {
    async fn an_unknown_key_is_off_never_an_error(app) {
        let (_, key) = app.new_tenant("Unknown keys").await;
        let (status, e) = app.tenant(&key, Method::GET, "/v1/features/no.such.feature", None).await;
        assert_eq!(status, 200, "{e}");
        assert_eq!(vs(&e), (json!(false), "default".into()));
        assert_eq!(e["error_code"], "FLAG_NOT_FOUND");
        let (status, e) = app.tenant(&key, Method::GET, "/v1/features/refunds", None).await;
        assert_eq!((status, vs(&e)), (200, (json!(true), "default".into())), "{e}");
        assert_eq!(e["error_code"], Value::Null);
        // A malformed key is the client's error, not an evaluation.
        let (status, e) = app.tenant(&key, Method::GET, "/v1/features/Not%20A%20Key", None).await;
        assert_eq!((status, e["error"]["code"].as_str()), (422, Some("validation_failed")), "{e}");
        app.finish().await;
    }
}

backend_test! {
    async fn a_kill_switch_on_stripe_moves_checkouts_and_keeps_refunds(app) {
        let url = app.database_url().expect("owned database");
        let second = app.sibling(&url).await;
        let (_, key) = app.new_tenant("Two gateways").await;
        app.save_stripe(&key, 1, &["USD"]).await;
        let (status, body) = save_hostile(&app, &key, 2).await;
        assert_eq!(status, 200, "{body}");

        let (status, paid) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!((status, paid["provider"].as_str()), (201, Some("stripe")), "{paid}");
        let stripe_payment = first_product_payment(&paid);
        // The second instance routes (and caches the gateways) too.
        let (status, body) = checkout(&second, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!((status, body["provider"].as_str()), (201, Some("stripe")), "{body}");

        admin_ok(&app, Method::PUT, "/admin/kill-switches/provider.stripe",
            json!({"reason": "stripe incident"})).await;
        let (status, moved) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!((status, moved["provider"].as_str()), (201, Some("hostile")),
            "[{}] the next checkout goes to the next gateway: {moved}", app.backend);
        if app.backend == "postgres" {
            eventually("the second instance stops routing to stripe", || async {
                let (status, body) = checkout(&second, &key, cart("USD", "pm_card_visa")).await;
                if status == 201 && body["provider"] == "hostile" { Ok(()) } else { Err(body) }
            }).await;
        }

        // The refund of the earlier Stripe payment still goes through Stripe.
        let (status, refund) = app.tenant(&key, Method::POST,
            &format!("/v1/payments/{stripe_payment}/refunds"), None).await;
        assert_eq!(status, 201, "{refund}");
        assert_eq!(refund["provider"], "stripe");
        assert!(refund["gateway_reference"].as_str().is_some_and(|r| r.starts_with("re_")),
            "a Stripe refund: {refund}");

        // With no other gateway: 422 naming the reason.
        let (status, _) = app.tenant(&key, Method::DELETE, "/v1/gateways/hostile", None).await;
        assert_eq!(status, 204);
        let (status, none) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 422, "{none}");
        assert_eq!(none["error"]["code"], "no_gateway_for_currency");
        assert_eq!(none["error"]["details"]["disabled"][0],
            json!({"provider": "stripe", "source": "kill_switch"}), "{none}");
        second.finish().await;
        app.finish().await;
    }
}

backend_test! {
    async fn a_provider_off_for_a_tenant_refuses_its_settings(app) {
        let (tenant, key) = app.new_tenant("No hostile").await;
        admin_ok(&app, Method::PUT, &format!("/admin/tenants/{tenant}/overrides/provider.hostile"),
            json!({"value": false, "reason": "not on this contract"})).await;
        let (status, body) = save_hostile(&app, &key, 1).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("provider_not_enabled")), "{body}");
        let (_, gateways) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        assert_eq!(gateways["items"], json!([]), "nothing stored");
        app.finish().await;
    }
}

backend_test! {
    async fn gateways_max_orders_and_refunds_are_gated(app) {
        let (tenant, key) = app.new_tenant("Gated shop").await;
        admin_ok(&app, Method::PUT, "/admin/plans/starter", json!({"grants": {
            "gateways.max": 1, "orders.manual": false, "orders.bulk": false, "refunds": false,
        }})).await;
        admin_ok(&app, Method::PUT, &format!("/admin/tenants/{tenant}/plan"),
            json!({"plan": "starter"})).await;

        app.save_stripe(&key, 1, &["USD"]).await;
        // Saving the existing gateway again is no new gateway.
        app.save_stripe(&key, 2, &["USD"]).await;
        let (status, body) = save_hostile(&app, &key, 3).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("gateway_limit_reached")), "{body}");
        let (_, gateways) = app.tenant(&key, Method::GET, "/v1/gateways", None).await;
        assert_eq!(gateways["items"].as_array().map(Vec::len), Some(1));

        let manual = json!({"kind": "manual", "currency": "USD", "items": [{"amount": 900, "user_plan": "pro"}]});
        let (status, body) = app.tenant(&key, Method::POST, "/v1/orders", Some(manual)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("feature_not_enabled")), "{body}");
        assert_eq!(body["error"]["details"]["feature"], "orders.manual");
        let bulk = json!({"currency": "USD", "users": [{"user": "u1", "user_plan": "pro", "amount": 100}]});
        let (status, body) = app.tenant(&key, Method::POST, "/v1/orders/bulk", Some(bulk)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("feature_not_enabled")), "{body}");
        assert_eq!(body["error"]["details"]["feature"], "orders.bulk");
        assert_eq!(orders_of(&app, &tenant).await, 0, "no order stored");

        let (status, paid) = checkout(&app, &key, cart("USD", "pm_card_visa")).await;
        assert_eq!(status, 201, "{paid}");
        let payment = first_product_payment(&paid);
        let (status, body) = app.tenant(&key, Method::POST,
            &format!("/v1/payments/{payment}/refunds"), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("feature_not_enabled")), "{body}");
        let (_, balance) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(balance["items"][0]["refunded"], 0, "nothing refunded: {balance}");
        app.finish().await;
    }
}

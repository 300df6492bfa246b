//! Operator writes over real HTTP: each write and its audit event commit
//! together, or neither does.

use reqwest::Method;
use serde_json::json;
use sqlx::Row;

use payhost_tests::{TestApp, backend_test};

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind.to_string())
        .fetch_one(app.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", app.backend))
        .get::<i64, _>(0)
}

async fn execute(app: &TestApp, sql: &str) {
    sqlx::query(sql)
        .execute(app.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", app.backend));
}

/// From now on every insert into `audit_events` fails.
async fn break_the_audit_log(app: &TestApp) {
    match app.backend {
        "sqlite" => {
            execute(
                app,
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events \
                 BEGIN SELECT RAISE(ABORT, 'the audit log is down'); END",
            )
            .await
        }
        _ => {
            execute(
                app,
                "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'the audit log is down'; END $$",
            )
            .await;
            execute(
                app,
                "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION audit_down()",
            )
            .await;
        }
    }
}

async fn mend_the_audit_log(app: &TestApp) {
    match app.backend {
        "sqlite" => execute(app, "DROP TRIGGER audit_down").await,
        _ => execute(app, "DROP TRIGGER audit_down ON audit_events").await,
    }
}

backend_test! {
    async fn an_operator_write_whose_audit_insert_fails_leaves_nothing_committed(app) {
        let b = app.backend;
        let (tenant, key) = app.new_tenant("Audited shop").await;
        let (status, body) = app
            .admin(
                Method::POST,
                &format!("/admin/tenants/{tenant}/domains"),
                Some(json!({"domain": "kept.example.com"})),
            )
            .await;
        assert_eq!(status, 201, "{b}: {body}");
        let key_id: String =
            sqlx::query("SELECT id FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
                .bind(tenant.clone())
                .fetch_one(app.store.pool())
                .await
                .expect("the key")
                .get(0);
        let events = count(
            &app,
            "SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1",
            &tenant,
        )
        .await;

        break_the_audit_log(&app).await;

        // (write, its body, what must still be true, the count it must keep)
        let domains = format!("/admin/tenants/{tenant}/domains");
        let keys = format!("/admin/tenants/{tenant}/api-keys");
        let key_path = format!("{keys}/{key_id}");
        let writes = [
            (
                Method::POST,
                "/admin/tenants",
                Some(json!({"name": "Ghost shop"})),
                ("SELECT COUNT(*) FROM tenants WHERE name = $1", "Ghost shop"),
                0,
            ),
            (
                Method::POST,
                domains.as_str(),
                Some(json!({"domain": "ghost.example.com"})),
                (
                    "SELECT COUNT(*) FROM tenant_domains WHERE domain = $1",
                    "ghost.example.com",
                ),
                0,
            ),
            (
                Method::DELETE,
                &format!("{domains}/kept.example.com"),
                None,
                (
                    "SELECT COUNT(*) FROM tenant_domains WHERE domain = $1",
                    "kept.example.com",
                ),
                1,
            ),
            (
                Method::POST,
                keys.as_str(),
                Some(json!({"label": "ghost"})),
                (
                    "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1",
                    tenant.as_str(),
                ),
                1,
            ),
            (
                Method::DELETE,
                key_path.as_str(),
                None,
                (
                    "SELECT COUNT(*) FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
                    key_id.as_str(),
                ),
                1,
            ),
        ];
        for (method, path, body, (sql, bind), kept) in writes {
            let (status, answer) = app.admin(method.clone(), path, body).await;
            assert!(
                status >= 500,
                "{b}: {method} {path} answered {status} {answer}"
            );
            assert_eq!(
                count(&app, sql, bind).await,
                kept,
                "{b}: {method} {path} committed without its audit event"
            );
        }
        let (status, body) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(status, 200, "{b}: the unrevoked key still works: {body}");
        assert_eq!(
            count(
                &app,
                "SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1",
                &tenant
            )
            .await,
            events,
            "{b}: no event was recorded"
        );

        // The failures were the audit log's: mended, the same writes commit.
        mend_the_audit_log(&app).await;
        let (status, body) = app
            .admin(
                Method::DELETE,
                &format!("/admin/tenants/{tenant}/api-keys/{key_id}"),
                None,
            )
            .await;
        assert_eq!(status, 204, "{b}: {body}");
        let (status, body) = app.tenant(&key, Method::GET, "/v1/balance", None).await;
        assert_eq!(
            status, 401,
            "{b}: the revoked key is refused at once: {body}"
        );
        assert_eq!(
            count(
                &app,
                "SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1 AND action = 'api_key.revoked'",
                &tenant
            )
            .await,
            1,
            "{b}: the revocation is audited"
        );
        app.finish().await;
    }
}

//! The served API document: `GET /openapi.json` is an OpenAPI 3.1 document
//! listing every route the router serves, every documented operation is
//! routed, and `/docs` renders from assets compiled into the binary.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use payhost_tests::{TestApp, backend_test};

/// Every (method, path) the service answers, as the README's "API at a
/// glance" lists them. A route added to the router without the document,
/// or to the document without this list, fails
/// [`document_lists_exactly_the_routes`].
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/public/tenant"),
    ("get", "/openapi.json"),
    ("post", "/admin/tenants"),
    ("get", "/admin/tenants"),
    ("get", "/admin/tenants/{id}"),
    ("post", "/admin/tenants/{id}/domains"),
    ("delete", "/admin/tenants/{id}/domains/{domain}"),
    ("post", "/admin/tenants/{id}/api-keys"),
    ("delete", "/admin/tenants/{id}/api-keys/{key_id}"),
    ("get", "/admin/audit"),
    ("get", "/admin/providers"),
    ("get", "/v1/gateways"),
    ("put", "/v1/gateways/{provider}"),
    ("delete", "/v1/gateways/{provider}"),
    ("post", "/v1/checkouts"),
    ("get", "/v1/checkouts/{id}"),
    ("post", "/v1/orders"),
    ("get", "/v1/orders"),
    ("post", "/v1/orders/bulk"),
    ("get", "/v1/orders/{id}"),
    ("get", "/v1/payments"),
    ("get", "/v1/payments/{id}"),
    ("post", "/v1/payments/{id}/refunds"),
    ("get", "/v1/balance"),
    ("put", "/admin/features/{key}"),
    ("get", "/admin/features"),
    ("put", "/admin/plans/{plan}"),
    ("get", "/admin/plans"),
    ("get", "/admin/plans/{plan}"),
    ("put", "/admin/tenants/{id}/plan"),
    ("put", "/admin/tenants/{id}/overrides/{key}"),
    ("delete", "/admin/tenants/{id}/overrides/{key}"),
    ("put", "/admin/kill-switches/{key}"),
    ("delete", "/admin/kill-switches/{key}"),
    ("get", "/admin/kill-switches"),
    ("get", "/admin/tenants/{id}/features"),
    ("get", "/v1/features"),
    ("get", "/v1/features/{key}"),
    ("get", "/admin/tenants/{id}/usage"),
    ("post", "/admin/tenants/{id}/usage/{key}/adjustments"),
    ("get", "/v1/usage"),
    ("get", "/admin/reports/daily"),
    ("get", "/v1/reports/daily"),
    ("get", "/admin/webhooks"),
    ("get", "/admin/webhooks/stats"),
    ("get", "/admin/dead-letters"),
    ("get", "/admin/dead-letters/{id}"),
    ("post", "/admin/dead-letters/{id}/replay"),
    ("post", "/admin/dead-letters/replay"),
    ("post", "/webhooks/{tenant}/{provider}"),
    ("post", "/webhooks/{provider}"),
    ("post", "/admin/orders/{id}/reconcile"),
    ("post", "/v1/checkouts/{id}/cancel"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` in `value`, each of which must name a component.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

async fn document(app: &TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json", None)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    );
    response.json().await.expect("JSON")
}

#[test]
fn document_lists_exactly_the_routes() {
    let doc = serde_json::to_value(payhost::api::openapi()).expect("document");
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected);
}

#[test]
fn every_route_is_registered_with_the_document() {
    // The router and the document are built from one list of `routes!`
    // calls; a plain axum `.route(` would serve a path the document lacks.
    let source = include_str!("../../../host/src/api/mod.rs");
    assert!(
        !source.contains(".route("),
        "host/src/api/mod.rs registers a route outside `routes!`"
    );
    assert!(
        !source.contains(".nest("),
        "a nested router bypasses the document"
    );
}

async fn served_document_is_openapi_3_1(app: &TestApp) {
    let doc = document(app).await;
    assert_eq!(doc["openapi"], "3.1.0", "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "payhost");
    assert!(doc["info"]["version"].as_str().is_some());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a component reference"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} names no schema"
        );
    }

    // Every operation has an answer for errors in the error shape, and
    // every error code the server can send is in the document.
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in payhost::api::ErrorCode::ALL {
        assert!(
            codes
                .as_array()
                .is_some_and(|c| c.contains(&Value::from(code.as_str()))),
            "{code} missing from the document"
        );
    }
    for (method, path) in operations(&doc) {
        if path == "/openapi.json" {
            continue;
        }
        let responses = &doc["paths"][&path][&method]["responses"];
        assert_eq!(
            responses["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{method} {path}"
        );
    }

    // Every documented operation is routed: an unauthenticated call with
    // placeholder path parameters is answered by the endpoint (or its
    // authentication), never as an unknown route or method.
    for (method, path) in operations(&doc) {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, body) = app.send(app.request(method.clone(), &concrete, None)).await;
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(
            code != "route_not_found" && code != "method_not_allowed",
            "{}: {method} {concrete} is documented but answers {status} {body}",
            app.backend
        );
    }
}

backend_test! {
    async fn served_document(app) {
        served_document_is_openapi_3_1(&app).await;
        app.finish().await;
    }
}

#[tokio::test]
async fn docs_page_renders_from_embedded_assets() {
    let db = payhost::store::testing::TestDb::sqlite()
        .await
        .expect("sqlite");
    let app = TestApp::spawn(db).await;
    let get = |path: &'static str| {
        let app = &app;
        async move {
            let r = app
                .request(Method::GET, path, None)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, kind, r.text().await.expect("body"))
        }
    };
    let (status, kind, html) = get("/docs/").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(html.contains("swagger-ui"), "{html}");
    // Every asset the page loads is the server's own: no absolute URL.
    for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(
            !html.contains(attr),
            "the page loads a remote asset: {html}"
        );
    }
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        let (status, _, body) = get(asset).await;
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 10_000, "{asset} is embedded whole");
    }
    let (status, _, init) = get("/docs/swagger-initializer.js").await;
    assert_eq!(status, 200);
    assert!(init.contains("/openapi.json"), "{init}");
    app.finish().await;
}

//! The request rate limit of the tenant API: right after authentication,
//! before a mutation takes a slot ([`super::detach`]), one check of the
//! (tenant, API key) budget in [`Lane::Api`]. Over the rate: 429
//! `rate_limited` with `Retry-After`. Every answer past authentication
//! carries the IETF draft's `RateLimit-Policy` and `RateLimit` headers.
//! The check touches no database (see [`crate::ratelimit`]).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, ErrorCode, TenantCtx};
use crate::ratelimit::{Decision, Lane, LimitKey};

/// `RateLimit-Policy`: the quota and window of the budget.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of the budget and when it is full again.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Spend one request of the caller's budget; 429 `rate_limited` over it.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(ctx) = request.extensions().get::<TenantCtx>() else {
        // Authentication always runs first; without it there is no key.
        return next.run(request).await;
    };
    let key = LimitKey::api_key(&ctx.tenant, &ctx.key_id);
    let decision = state.rate_limiter.check(Lane::Api, &key).await;
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let retry = decision.retry_after_secs().unwrap_or(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("this API key is over its request rate; retry in {retry} s"),
        )
        .with_retry_after(retry)
        .into_response()
    };
    insert_headers(response.headers_mut(), &decision);
    response
}

/// Sets `RateLimit-Policy` and `RateLimit` from `decision` (none when the
/// key is unlimited).
pub fn insert_headers(headers: &mut HeaderMap, decision: &Decision) {
    for (name, value) in [
        (RATELIMIT_POLICY, decision.policy_header()),
        (RATELIMIT, decision.header()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}

/// Documents the limit on every tenant operation (`/v1/…`): a 429
/// response with `Retry-After` and the `RateLimit` headers, and the
/// `RateLimit` headers on every other response.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::Header;
    use utoipa::openapi::{Content, Object, Ref, RefOr, Response, Type};
    let text = |description: &str| {
        let mut h = Header::new(Object::with_type(Type::String));
        h.description = Some(description.to_owned());
        h
    };
    let policy = text(
        "The budget (draft-ietf-httpapi-ratelimit-headers): `\"api\";q=<requests>;w=<window seconds>`.",
    );
    let limit =
        text("What is left of it: `\"api\";r=<remaining requests>;t=<seconds until it is full>`.");
    // A string of digits rather than an integer: header values are text,
    // and a validator need not coerce them.
    let mut retry_after = Header::new(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]+$"))
            .build(),
    );
    retry_after.description = Some("Seconds until a request is admitted again.".to_owned());
    let too_many = Response::builder()
        .description("`rate_limited`: this API key is over its request rate")
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .header("Retry-After", retry_after)
        .header("RateLimit-Policy", policy.clone())
        .header("RateLimit", limit.clone())
        .build();
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    r.headers
                        .entry("RateLimit-Policy".to_owned())
                        .or_insert_with(|| policy.clone());
                    r.headers
                        .entry("RateLimit".to_owned())
                        .or_insert_with(|| limit.clone());
                }
            }
            op.responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| RefOr::T(too_many.clone()));
        }
    }
}

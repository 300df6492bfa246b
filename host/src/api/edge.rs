//! The outermost layer of the API: checks on the request line and headers
//! that no handler should have to repeat, and the guarantee that every error
//! answer, the framework's own included, is the JSON error object.
//!
//! Must never: let a non-JSON error body through, or read a body it is
//! about to refuse.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, ErrorCode};

/// Longest accepted request target (path and query), bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest accepted sum of header names and values, bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers accepted on one request.
pub const MAX_HEADERS: usize = 100;

// Our limits must answer before hyper's own (an empty 431) can.
const _: () = assert!(MAX_URI_BYTES + MAX_HEADER_BYTES < crate::http_server::MAX_HEAD_BUFFER);
const _: () = assert!(MAX_HEADERS < crate::http_server::MAX_PARSED_HEADERS);

/// Headers that must appear at most once: two `Host`s make tenant
/// resolution ambiguous, two `Authorization`s make the caller ambiguous.
const SINGLE_HEADERS: [header::HeaderName; 2] = [header::HOST, header::AUTHORIZATION];

/// Request checks (URI and header size, duplicate or contradictory `Host`,
/// declared body size), then the JSON guarantee on the response.
pub async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Gateway deliveries have a limit of their own (`[webhooks] max_body_kib`).
    let max_body_bytes = if request.uri().path().starts_with("/webhooks/") {
        state.webhooks.max_body_bytes()
    } else {
        state.max_body_bytes
    };
    if let Err(e) = check(&request, max_body_bytes) {
        let mut response = e.into_response();
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The body is not read; closing tells the client not to send it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    }
    as_json_error(next.run(request).await).await
}

fn check(request: &Request, max_body_bytes: usize) -> Result<(), ApiError> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!("the request target is over {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!("at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"),
        ));
    }
    for name in &SINGLE_HEADERS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::DuplicateHeader,
                format!("the {name} header must appear once"),
            ));
        }
    }
    check_absolute_form(request.uri(), headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        return Err(ApiError::body_too_large());
    }
    Ok(())
}

/// An absolute-form target (`GET http://a.example/… HTTP/1.1`) names the
/// host itself; one that contradicts `Host` is refused rather than choosing
/// which of the two picks the tenant.
fn check_absolute_form(uri: &axum::http::Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(authority) = uri.authority() else {
        return Ok(());
    };
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let target = (
        authority.host(),
        authority.port_u16().unwrap_or(default_port),
    );
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().parse::<axum::http::uri::Authority>().ok());
    let same = host.is_some_and(|h| {
        h.host().eq_ignore_ascii_case(target.0) && h.port_u16().unwrap_or(default_port) == target.1
    });
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::HostMismatch,
            "the request target's host differs from the Host header",
        ))
    }
}

/// The stable code for an error status the framework answered itself.
fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::BodyTimeout,
        StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::BadRequest,
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// An error response without a JSON body (axum's rejections and its empty
/// 405) becomes the JSON error object; its status and headers (`Allow`) stay.
async fn as_json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Framework texts are short; a longer one is cut, not buffered whole.
    let text = to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        t if status.is_server_error() => {
            tracing::error!(%status, body = t, "non-JSON server error");
            "internal error; see the server log".to_string()
        }
        t => t.chars().take(512).collect(),
    };
    let error = ApiError::new(status, code_for(status), message);
    let json = serde_json::to_vec(&error.body()).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn absolute_form_must_match_host() {
        let ok = request("http://a.example/v1", &[("host", "a.example")]);
        assert!(check(&ok, 10).is_ok());
        let bad = request("http://b.example/v1", &[("host", "a.example")]);
        assert_eq!(
            check(&bad, 10).map_err(|e| e.code),
            Err(ErrorCode::HostMismatch)
        );
        let default_port = request("http://A.example:80/v1", &[("host", "a.example")]);
        assert!(check(&default_port, 10).is_ok());
        let other_port = request("http://a.example:81/v1", &[("host", "a.example")]);
        assert!(check(&other_port, 10).is_err());
        let no_host = request("http://a.example/v1", &[]);
        assert!(check(&no_host, 10).is_err());
        let origin_form = request("/v1", &[("host", "a.example")]);
        assert!(check(&origin_form, 10).is_ok());
    }

    #[test]
    fn declared_length_over_the_cap_is_refused_unread() {
        let r = request("/v1", &[("content-length", "10000000000")]);
        assert_eq!(
            check(&r, 1024).map_err(|e| e.code),
            Err(ErrorCode::BodyTooLarge)
        );
        let r = request("/v1", &[("content-length", "1024")]);
        assert!(check(&r, 1024).is_ok());
    }
}

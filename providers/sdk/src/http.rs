//! A small synchronous HTTP client over `wasi:http/outgoing-handler`.
//!
//! Components run one call at a time with no async runtime, so this client
//! simply blocks on WASI pollables: it starts the request, streams the body in
//! chunks of at most [`WRITE_CHUNK`] bytes, waits for the response head and
//! reads the body until the stream closes.
//!
//! ```ignore
//! use payhost_provider_sdk::http::Request;
//!
//! let response = Request::post("https://api.stripe.com/v1/refunds")
//!     .bearer_auth(secret_key)
//!     .header("idempotency-key", key)
//!     .form(&form)
//!     .send()?;
//! if response.is_success() {
//!     let refund: serde_json::Value = response.json()?;
//! }
//! ```
//!
//! The host decides which origins a provider may reach; a request to any other
//! origin fails with [`HttpError::Denied`] (or, depending on where the host
//! stops it, a transport error) and the host records the denial itself.
//! Converting an [`HttpError`] into a [`ProviderError`] with `?` gives the
//! host a retriable `unavailable` for network trouble and an `internal` error
//! for a denied request (a configuration problem, not a gateway outage).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProviderError;
use crate::bindings::wasi::http::types::{ErrorCode, Scheme};
use crate::form::Form;

/// Largest chunk written to the request body stream in one
/// `blocking-write-and-flush` (the WASI limit for a single blocking write).
pub const WRITE_CHUNK: usize = 4096;

/// Largest response body the client accepts, so an oversized response becomes
/// an error instead of exhausting the component's memory.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes requested per read of the response body.
const READ_CHUNK: u64 = 64 * 1024;

/// HTTP request methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
}

impl Method {
    fn to_wasi(self) -> crate::bindings::wasi::http::types::Method {
        use crate::bindings::wasi::http::types::Method as M;
        match self {
            Method::Get => M::Get,
            Method::Post => M::Post,
            Method::Put => M::Put,
            Method::Patch => M::Patch,
            Method::Delete => M::Delete,
            Method::Head => M::Head,
            Method::Options => M::Options,
        }
    }

    /// Methods whose requests carry a body (and so a `content-length`) even
    /// when it is empty.
    fn sends_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// An outgoing HTTP request. Build it with [`Request::get`] / [`Request::post`]
/// and the chained setters, then [`Request::send`] it.
///
/// `Debug` output redacts credential-bearing headers (`authorization`,
/// anything naming a key, secret, token or signature) and prints only the
/// body's length, so a request can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order; names are sent lower-case.
    pub headers: Vec<(String, String)>,
    /// The request body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new(Method::Patch, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// Appends a header (names are case-insensitive and sent lower-case).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// Sets `authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Sets the raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets an `application/x-www-form-urlencoded` body.
    pub fn form(self, form: &Form) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(form.encode())
    }

    /// Sets a JSON body.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends the request; shorthand for [`send`].
    pub fn send(self) -> Result<Response, HttpError> {
        send(self)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A received HTTP response, fully buffered.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values (lossy UTF-8), in received order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// True for 2xx statuses.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body deserialized from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host's outbound policy refused the request (origin not allowed).
    Denied,
    /// Connecting, or waiting for the response, took too long.
    Timeout,
    /// Any other network or protocol failure (DNS, TLS, reset, …).
    Transport(String),
    /// The URL is not an absolute `http`/`https` URL the client can send to.
    InvalidUrl(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied => f.write_str("outbound request denied by host policy"),
            HttpError::Timeout => f.write_str("request timed out"),
            HttpError::Transport(m) => write!(f, "transport error: {m}"),
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ProviderError {
    /// A denied request is a configuration problem (the operator's allow-list
    /// does not include the gateway), so it is `internal`, not retriable;
    /// timeouts and transport failures are `unavailable` (retriable).
    fn from(err: HttpError) -> Self {
        match err {
            HttpError::Denied => {
                ProviderError::Internal("outbound request denied by host policy".into())
            }
            HttpError::Timeout => ProviderError::Unavailable("gateway request timed out".into()),
            HttpError::Transport(m) => {
                ProviderError::Unavailable(format!("gateway unreachable: {m}"))
            }
            HttpError::InvalidUrl(m) => {
                ProviderError::Internal(format!("invalid gateway URL: {m}"))
            }
        }
    }
}

/// Maps a `wasi:http` error code onto [`HttpError`].
pub fn map_error_code(code: &ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => HttpError::Timeout,
        ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl("rejected by the host".into()),
        ErrorCode::InternalError(Some(message)) => HttpError::Transport(message.clone()),
        other => {
            let name = format!("{other:?}");
            HttpError::Transport(name.trim_start_matches("ErrorCode::").to_owned())
        }
    }
}

/// Sends `request` and returns the whole response.
///
/// Any status is a response (check [`Response::status`]); `Err` means no
/// response arrived. Inside a component this goes through
/// `wasi:http/outgoing-handler`; natively (unit tests) there is no host and
/// it returns [`HttpError::Transport`].
pub fn send(request: Request) -> Result<Response, HttpError> {
    if cfg!(not(target_arch = "wasm32")) {
        return Err(HttpError::Transport(
            "wasi:http is only available inside a component".into(),
        ));
    }
    wasi::send(request)
}

/// The split form of a request URL, as `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, HttpError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| HttpError::InvalidUrl("not an absolute URL".into()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(HttpError::InvalidUrl(format!(
                    "unsupported scheme `{other}`"
                )));
            }
        };
        // The fragment is never sent.
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(HttpError::InvalidUrl("missing host".into()));
        }
        if authority.contains('@') {
            return Err(HttpError::InvalidUrl(
                "credentials in the URL are not supported".into(),
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(HttpError::InvalidUrl(
                "whitespace or control character in URL".into(),
            ));
        }
        let path_with_query = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        Ok(Target {
            scheme,
            authority: authority.to_owned(),
            path_with_query,
        })
    }
}

/// Debug view of headers that hides credential-bearing values.
struct RedactedHeaders<'a>(&'a [(String, String)]);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (name, value) in self.0 {
            let shown = if is_sensitive_header(name) {
                "<redacted>"
            } else {
                value.as_str()
            };
            list.entry(&(name, shown));
        }
        list.finish()
    }
}

fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["auth", "cookie", "key", "secret", "token", "signature"]
        .iter()
        .any(|needle| name.contains(needle))
}

/// The `wasi:http` transport. Compiled on every target so it is type-checked
/// and linted natively, but only called inside a component.
mod wasi {
    use super::{
        HttpError, MAX_RESPONSE_BYTES, READ_CHUNK, Request, Response, Target, WRITE_CHUNK,
        map_error_code,
    };
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{
        Fields, IncomingBody, IncomingResponse, OutgoingBody, OutgoingRequest,
    };
    use crate::bindings::wasi::http::types::{IoError, http_error_code};
    use crate::bindings::wasi::io::streams::StreamError;

    pub(super) fn send(request: Request) -> Result<Response, HttpError> {
        let target = Target::parse(&request.url)?;

        let mut entries: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        let with_body = !request.body.is_empty() || request.method.sends_body();
        if with_body && !entries.iter().any(|(k, _)| k == "content-length") {
            entries.push((
                "content-length".into(),
                request.body.len().to_string().into_bytes(),
            ));
        }
        // The error names the problem kind only; header values may be secrets.
        let headers = Fields::from_list(&entries)
            .map_err(|e| HttpError::Transport(format!("request headers rejected: {e:?}")))?;

        let outgoing = OutgoingRequest::new(headers);
        outgoing
            .set_method(&request.method.to_wasi())
            .map_err(|()| HttpError::Transport("request method rejected".into()))?;
        outgoing
            .set_scheme(Some(&target.scheme))
            .map_err(|()| HttpError::InvalidUrl("scheme rejected".into()))?;
        outgoing
            .set_authority(Some(&target.authority))
            .map_err(|()| {
                HttpError::InvalidUrl(format!("authority `{}` rejected", target.authority))
            })?;
        outgoing
            .set_path_with_query(Some(&target.path_with_query))
            .map_err(|()| HttpError::InvalidUrl("path rejected".into()))?;

        // The body handle must be taken before `handle` consumes the request.
        // Without one, the host sends an empty body.
        let body = if with_body {
            Some(
                outgoing
                    .body()
                    .map_err(|()| HttpError::Transport("request body unavailable".into()))?,
            )
        } else {
            None
        };

        let future = outgoing_handler::handle(outgoing, None).map_err(|e| map_error_code(&e))?;

        // Stream the body while the host sends the head. A failed write is not
        // reported directly: when the host stops a request (policy denial,
        // connection failure) the body stream just breaks, and the response
        // future below carries the real reason.
        if let Some(body) = body
            && write_body(&body, &request.body).is_ok()
        {
            // `finish` errors (e.g. a content-length mismatch) also surface
            // through the response future.
            let _ = OutgoingBody::finish(body, None);
        }

        let incoming = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(map_error_code(&code)),
                Some(Err(())) => {
                    return Err(HttpError::Transport("response already taken".into()));
                }
                None => future.subscribe().block(),
            }
        };
        read_response(incoming)
    }

    fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
        let stream = body
            .write()
            .map_err(|()| HttpError::Transport("request body stream unavailable".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
        // The stream (a child of the body) is dropped here, before `finish`.
        Ok(())
    }

    fn read_response(incoming: IncomingResponse) -> Result<Response, HttpError> {
        let status = incoming.status();
        let headers = {
            let fields = incoming.headers();
            fields
                .entries()
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect()
        };
        let body = incoming
            .consume()
            .map_err(|()| HttpError::Transport("response body already consumed".into()))?;
        let bytes = read_body(&body)?;
        // Trailers are not used; finishing releases the body.
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }

    fn read_body(body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
        let stream = body
            .stream()
            .map_err(|()| HttpError::Transport("response body stream unavailable".into()))?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(HttpError::Transport(format!(
                            "response body larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => return Ok(out),
                Err(StreamError::LastOperationFailed(err)) => return Err(io_error(&err)),
            }
        }
    }

    fn stream_error(err: StreamError) -> HttpError {
        match err {
            StreamError::Closed => HttpError::Transport("connection closed".into()),
            StreamError::LastOperationFailed(err) => io_error(&err),
        }
    }

    fn io_error(err: &IoError) -> HttpError {
        match http_error_code(err) {
            Some(code) => map_error_code(&code),
            None => HttpError::Transport(err.to_debug_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_into_wasi_parts() {
        assert_eq!(
            Target::parse("https://api.stripe.com/v1/balance?x=1#frag"),
            Ok(Target {
                scheme: Scheme::Https,
                authority: "api.stripe.com".into(),
                path_with_query: "/v1/balance?x=1".into(),
            })
        );
        assert_eq!(
            Target::parse("HTTP://127.0.0.1:8080"),
            Ok(Target {
                scheme: Scheme::Http,
                authority: "127.0.0.1:8080".into(),
                path_with_query: "/".into(),
            })
        );
        assert_eq!(
            Target::parse("http://h?q=1").map(|t| t.path_with_query),
            Ok("/?q=1".into())
        );
    }

    #[test]
    fn rejects_unusable_urls() {
        for url in [
            "api.stripe.com/v1",
            "ftp://x/",
            "https:///v1",
            "https://user:pw@host/",
            "https://host/a b",
        ] {
            assert!(
                matches!(Target::parse(url), Err(HttpError::InvalidUrl(_))),
                "{url} should be rejected"
            );
        }
    }

    #[test]
    fn error_codes_map_to_http_errors() {
        assert_eq!(
            map_error_code(&ErrorCode::HttpRequestDenied),
            HttpError::Denied
        );
        for code in [
            ErrorCode::ConnectionTimeout,
            ErrorCode::HttpResponseTimeout,
            ErrorCode::ConnectionReadTimeout,
        ] {
            assert_eq!(map_error_code(&code), HttpError::Timeout);
        }
        assert_eq!(
            map_error_code(&ErrorCode::InternalError(Some("connection reset".into()))),
            HttpError::Transport("connection reset".into())
        );
        assert_eq!(
            map_error_code(&ErrorCode::ConnectionRefused),
            HttpError::Transport("ConnectionRefused".into())
        );
    }

    #[test]
    fn http_errors_convert_to_provider_errors() {
        assert_eq!(
            ProviderError::from(HttpError::Denied),
            ProviderError::Internal("outbound request denied by host policy".into())
        );
        assert!(matches!(
            ProviderError::from(HttpError::Timeout),
            ProviderError::Unavailable(_)
        ));
        assert_eq!(
            ProviderError::from(HttpError::Transport("reset".into())),
            ProviderError::Unavailable("gateway unreachable: reset".into())
        );
    }

    #[test]
    fn request_builder_and_redacted_debug() {
        let req = Request::post("https://api.stripe.com/v1/refunds")
            .bearer_auth("sk_test_secret")
            .header("Idempotency-Key", "k1")
            .form(&Form::new().field("amount", "100"));
        assert_eq!(req.method, Method::Post);
        assert_eq!(
            req.headers,
            vec![
                ("authorization".into(), "Bearer sk_test_secret".into()),
                ("idempotency-key".into(), "k1".into()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into()
                ),
            ]
        );
        assert_eq!(req.body, b"amount=100");
        let debug = format!("{req:?}");
        assert!(!debug.contains("sk_test_secret"), "{debug}");
        assert!(
            debug.contains("application/x-www-form-urlencoded"),
            "{debug}"
        );
    }

    #[test]
    fn response_helpers() {
        let resp = Response {
            status: 201,
            headers: vec![("retry-after".into(), "3".into())],
            body: br#"{"id":"pi_1"}"#.to_vec(),
        };
        assert!(resp.is_success());
        assert_eq!(resp.header("Retry-After"), Some("3"));
        assert_eq!(resp.header("x"), None);
        let v: serde_json::Value = resp.json().expect("valid json");
        assert_eq!(v["id"], "pi_1");
        assert_eq!(resp.text(), r#"{"id":"pi_1"}"#);
    }

    #[test]
    fn send_outside_a_component_is_a_transport_error() {
        assert!(matches!(
            Request::get("https://example.com/").send(),
            Err(HttpError::Transport(_))
        ));
    }
}

//! Outbound HTTP policy, as plain data with no I/O: the allow-list, the
//! private-address rule, the per-call request budget and the log of what
//! the host stopped.
//!
//! Every `wasi:http/outgoing-handler` request a component makes passes through
//! `OutboundHooks::send_request` (`hooks.rs`), which applies these rules and
//! then sends through the connection pool (`outbound.rs`); this file imports
//! neither. A request is sent only when its origin
//! (`scheme://host:port`) is on the provider's allow-list and, unless the
//! operator allowed private networks for that provider, the host resolves to
//! public addresses only. Everything else is refused *before* any connection is
//! attempted, and the refusal is recorded as a [`PolicyEvent`] that the runtime
//! reports itself, whatever error the guest turns it into.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Something the host stopped a component from doing during one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    /// An outbound request to an origin that is not on the allow-list, or that
    /// resolved to a private address. Carries the origin and why.
    OutboundDenied { origin: String, reason: String },
    /// An outbound response exceeded the response-size cap.
    ResponseTooLarge { origin: String, limit: usize },
    /// Linear memory growth past the per-instance cap.
    MemoryCap { requested: usize, limit: usize },
    /// A request past the call's request budget (`limit` requests).
    RequestBudgetExceeded { limit: u32 },
}

/// Events kept per call. A guest looping on denied requests would
/// otherwise grow the log without bound; the first events say what
/// happened, and a memory-cap event is always kept.
const MAX_EVENTS: usize = 64;

/// Shared, per-call log of policy events (the hooks and the limiter write it,
/// the runtime reads it after the call).
#[derive(Clone, Default)]
pub(crate) struct EventLog(Arc<Mutex<Vec<PolicyEvent>>>);

impl EventLog {
    pub(crate) fn push(&self, event: PolicyEvent) {
        if let Ok(mut events) = self.0.lock()
            && (events.len() < MAX_EVENTS || matches!(event, PolicyEvent::MemoryCap { .. }))
        {
            events.push(event);
        }
    }

    /// Records a request past the budget (the guest gets a denial).
    /// Logged once per call: a guest that keeps trying must not flood the log.
    pub(crate) fn over_budget(&self, origin: &Origin, limit: u32) {
        let first = self.0.lock().is_ok_and(|events| {
            !events
                .iter()
                .any(|e| matches!(e, PolicyEvent::RequestBudgetExceeded { .. }))
        });
        if first {
            tracing::warn!(%origin, limit, "outbound request denied: the call's request budget is used up");
            self.push(PolicyEvent::RequestBudgetExceeded { limit });
        }
    }

    /// Logs and records a request the host stopped (the guest gets a
    /// denial).
    pub(crate) fn deny(&self, origin: String, reason: String) {
        // The origin may come from the guest's URI: keep the log line short.
        let origin =
            super::sanitize::Cleaner::new(&[]).text(&origin, super::sanitize::MAX_URL_BYTES);
        tracing::warn!(%origin, %reason, "outbound request denied");
        self.push(PolicyEvent::OutboundDenied { origin, reason });
    }

    pub(crate) fn take(&self) -> Vec<PolicyEvent> {
        self.0
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

/// A normalized `scheme://host:port` origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// An origin string that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid origin `{input}`: {reason} (expected scheme://host[:port], scheme http or https)")]
pub struct OriginError {
    input: String,
    reason: &'static str,
}

impl Origin {
    /// Parse `scheme://host[:port]` (a trailing `/` or path is rejected; the
    /// port defaults to the scheme's).
    pub fn parse(input: &str) -> Result<Origin, OriginError> {
        let err = |reason| OriginError {
            input: input.to_string(),
            reason,
        };
        let url = url::Url::parse(input).map_err(|_| err("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("unsupported scheme"));
        }
        if !(url.path() == "/" || url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(err("an origin has no path, query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("an origin has no credentials"));
        }
        let host = url.host_str().ok_or_else(|| err("missing host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| err("missing port"))?;
        Ok(Origin {
            scheme: url.scheme().to_string(),
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            port,
        })
    }

    /// The origin a URL points at (`None` unless it is an http(s) URL with a host).
    pub fn of_url(input: &str) -> Option<Origin> {
        let url = url::Url::parse(input).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Origin {
            scheme: url.scheme().to_string(),
            host: url
                .host_str()?
                .trim_matches(['[', ']'])
                .to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    fn of_uri(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.trim_matches(['[', ']']).to_ascii_lowercase();
        let port = uri.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        Some(Origin { scheme, host, port })
    }

    /// The host name or IP literal (IPv6 without brackets), lowercase.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when the URL named none).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether requests to it use TLS.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The host is an IP literal or `localhost`: naming it on the allow-list
    /// is an explicit decision to reach that address.
    pub(crate) fn is_literal_address(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// What one provider may reach, and how patiently.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Origins the component may call. Empty = no network at all.
    pub allowed: Vec<Origin>,
    /// Let allowed *names* resolve to private, loopback or link-local
    /// addresses. Allowed IP literals and `localhost` are always reachable.
    pub allow_private_networks: bool,
    /// Cap on establishing a connection.
    pub connect_timeout: Duration,
    /// Cap on waiting for the first response byte.
    pub first_byte_timeout: Duration,
    /// Cap on a pause between response body chunks.
    pub between_bytes_timeout: Duration,
    /// Largest response body the component may receive.
    pub max_response_bytes: usize,
    /// Only `GET` and `HEAD` may leave: a call that should only look
    /// something up (the webhook diagnosis) cannot change anything at the
    /// gateway with the tenant's credentials.
    pub read_only: bool,
}

impl OutboundPolicy {
    /// A policy that allows nothing (used for `manifest`
    /// style calls that must not touch the network).
    pub fn deny_all() -> OutboundPolicy {
        OutboundPolicy {
            allowed: Vec::new(),
            ..OutboundPolicy::default()
        }
    }
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            allowed: Vec::new(),
            allow_private_networks: false,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(20),
            between_bytes_timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            read_only: false,
        }
    }
}

/// The per-call cap on outbound requests: one call cannot turn its
/// deadline into a flood against its allowed hosts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBudget {
    pub(crate) limit: u32,
    used: u32,
}

impl RequestBudget {
    /// A budget of `limit` requests.
    pub(crate) fn new(limit: u32) -> Self {
        RequestBudget { limit, used: 0 }
    }

    /// Takes one request from the budget; `false` when none is left.
    pub(crate) fn take(&mut self) -> bool {
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Why a request may not leave, decided before any I/O: its method (for a
/// read-only policy), then its origin.
pub(crate) fn check_request<B>(
    policy: &OutboundPolicy,
    request: &http::Request<B>,
) -> Result<Origin, (String, String)> {
    let method = request.method();
    if policy.read_only && method != http::Method::GET && method != http::Method::HEAD {
        let origin = Origin::of_uri(request.uri())
            .map_or_else(|| unparsable(request.uri()), |o| o.to_string());
        return Err((
            origin,
            format!("{method} in a read-only call (only GET and HEAD)"),
        ));
    }
    check_origin(policy, request.uri())
}

/// What a denial records of a request target with no origin: not the
/// target itself, whose path or query may carry a credential the guest put
/// there (the call's secrets cannot be scrubbed from a lower-cased or
/// re-encoded copy).
fn unparsable(uri: &http::Uri) -> String {
    format!(
        "(a target with no scheme://host, {} bytes)",
        uri.to_string().len()
    )
}

/// Why a request to `uri` may not leave, decided before any I/O.
pub(crate) fn check_origin(
    policy: &OutboundPolicy,
    uri: &http::Uri,
) -> Result<Origin, (String, String)> {
    let Some(origin) = Origin::of_uri(uri) else {
        return Err((unparsable(uri), "request has no scheme://host".into()));
    };
    let Some(allowed) = policy.allowed.iter().find(|o| **o == origin) else {
        return Err((origin.to_string(), "origin is not on the allow-list".into()));
    };
    if !policy.allow_private_networks
        && let Ok(ip) = origin.host.parse::<IpAddr>()
        && !is_public(ip)
        && !allowed.is_literal_address()
    {
        return Err((origin.to_string(), "private address".into()));
    }
    Ok(origin)
}

/// Whether an address is routable on the public internet (no loopback,
/// private, link-local, CGNAT, unique-local, documentation or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> OutboundPolicy {
        OutboundPolicy {
            allowed: origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            ..OutboundPolicy::default()
        }
    }

    #[test]
    fn a_read_only_policy_lets_only_get_and_head_leave() {
        let mut p = policy(&["https://api.stripe.com"]);
        let request = |method: http::Method| {
            http::Request::builder()
                .method(method)
                .uri("https://api.stripe.com/v1/events/evt_1")
                .body(())
                .unwrap()
        };
        assert!(
            check_request(&p, &request(http::Method::POST)).is_ok(),
            "not read-only"
        );
        p.read_only = true;
        for allowed in [http::Method::GET, http::Method::HEAD] {
            assert!(check_request(&p, &request(allowed)).is_ok());
        }
        for refused in [
            http::Method::POST,
            http::Method::DELETE,
            http::Method::PATCH,
        ] {
            let (origin, reason) = check_request(&p, &request(refused.clone())).unwrap_err();
            assert_eq!(origin, "https://api.stripe.com:443");
            assert!(reason.contains(refused.as_str()), "{reason}");
        }
    }

    #[test]
    fn a_denied_target_with_no_origin_is_not_recorded_verbatim() {
        let p = policy(&["https://api.stripe.com"]);
        let request = http::Request::builder()
            .uri("/v1/charges?api_key=sk_live_SECRET_in_a_path")
            .body(())
            .unwrap();
        let (origin, reason) = check_request(&p, &request).unwrap_err();
        assert!(!origin.contains("SECRET"), "{origin}");
        assert!(origin.contains("bytes"), "{origin}");
        assert!(reason.contains("scheme://host"), "{reason}");
    }

    #[test]
    fn a_budget_allows_exactly_its_limit() {
        let mut budget = RequestBudget::new(3);
        assert_eq!((0..10).filter(|_| budget.take()).count(), 3);
        assert!(!RequestBudget::new(0).take());
    }

    #[test]
    fn the_event_log_is_bounded_but_keeps_a_memory_cap() {
        let log = EventLog::default();
        for _ in 0..10 * MAX_EVENTS {
            log.deny("http://x.example:80".into(), "not allowed".into());
        }
        log.push(PolicyEvent::MemoryCap {
            requested: 2,
            limit: 1,
        });
        let events = log.take();
        assert_eq!(events.len(), MAX_EVENTS + 1);
        assert!(matches!(events.last(), Some(PolicyEvent::MemoryCap { .. })));
    }

    #[test]
    fn origins_normalize_default_ports_and_case() {
        let a = Origin::parse("https://API.stripe.com").unwrap();
        let b = Origin::parse("https://api.stripe.com:443").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://api.stripe.com:443");
        assert!(Origin::parse("https://api.stripe.com/v1").is_err());
        assert!(Origin::parse("ftp://x.example").is_err());
        assert!(Origin::parse("https://user:pw@x.example").is_err());
    }

    #[test]
    fn only_allowed_origins_pass() {
        let p = policy(&["https://api.stripe.com"]);
        let ok: http::Uri = "https://api.stripe.com/v1/balance".parse().unwrap();
        assert!(check_origin(&p, &ok).is_ok());
        for denied in [
            "http://api.stripe.com/v1/balance",
            "https://api.stripe.com:8443/v1",
            "https://evil.example/v1",
            "https://api.stripe.com.evil.example/",
        ] {
            let uri: http::Uri = denied.parse().unwrap();
            assert!(check_origin(&p, &uri).is_err(), "{denied} should be denied");
        }
    }

    #[test]
    fn explicitly_listed_loopback_is_allowed_but_private_names_are_not() {
        let p = policy(&["http://127.0.0.1:9000"]);
        let uri: http::Uri = "http://127.0.0.1:9000/x".parse().unwrap();
        assert!(check_origin(&p, &uri).is_ok());
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("169.254.169.254".parse().unwrap()));
        assert!(!is_public("100.64.0.1".parse().unwrap()));
        assert!(!is_public("::1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(!is_public("::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_public("34.120.1.1".parse().unwrap()));
    }
}

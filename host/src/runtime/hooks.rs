//! The `wasi:http` hook: every request a component makes, checked against
//! its [`OutboundPolicy`] (`policy.rs`, plain rules) before any I/O, held at
//! the send gate, then sent through the connection pool (`outbound.rs`).
//! Imports flow one way: hooks → outbound → policy.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::gate::SendGate;
use super::outbound::{ConnectionPool, SendError, Timeouts};
use super::policy::{EventLog, OutboundPolicy, PolicyEvent, RequestBudget, check_request};

/// `wasi:http` hooks enforcing an [`OutboundPolicy`] for one call.
pub(crate) struct OutboundHooks {
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) events: EventLog,
    pub(crate) pool: Arc<ConnectionPool>,
    /// When set, requests wait for it before any I/O (see [`SendGate`]).
    pub(crate) gate: Option<SendGate>,
    /// Requests this call may still send (`[limits] max_requests_per_call`).
    /// Counted when a request passes the policy, before any I/O, so a
    /// request that then fails to connect still counts.
    pub(crate) budget: RequestBudget,
}

fn clamp(guest: Option<Duration>, cap: Duration) -> Duration {
    guest.map_or(cap, |g| g.min(cap))
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let policy = self.policy.clone();
        let events = self.events.clone();
        let origin = match check_request(&policy, &request) {
            Ok(origin) => origin,
            Err((origin, reason)) => {
                events.deny(origin, reason);
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        if !self.budget.take() {
            events.over_budget(&origin, self.budget.limit);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let timeouts = Timeouts {
            connect: clamp(
                options.and_then(|o| o.connect_timeout),
                policy.connect_timeout,
            ),
            first_byte: clamp(
                options.and_then(|o| o.first_byte_timeout),
                policy.first_byte_timeout,
            ),
            between_bytes: clamp(
                options.and_then(|o| o.between_bytes_timeout),
                policy.between_bytes_timeout,
            ),
        };
        let pool = self.pool.clone();
        let gate = self.gate.clone();
        Box::new(async move {
            if let Some(mut gate) = gate
                && !gate.wait().await
            {
                events.deny(
                    origin.to_string(),
                    "the host refused this call's requests (what it pays for was not stored)"
                        .into(),
                );
                return Err(HttpError::HttpRequestDenied);
            }
            let limit = policy.max_response_bytes;
            let response = match pool
                .send(&origin, policy.allow_private_networks, request, timeouts)
                .await
            {
                Ok(response) => response,
                Err(SendError::Http(e)) => return Err(e),
                Err(SendError::Denied(reason)) => {
                    events.deny(origin.to_string(), reason);
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > limit as u64) {
                events.push(PolicyEvent::ResponseTooLarge {
                    origin: origin.to_string(),
                    limit,
                });
                return Err(HttpError::HttpResponseBodySize(declared));
            }
            let origin_text = origin.to_string();
            let response = response.map(move |body| {
                http_body_util::Limited::new(body, limit)
                    .map_err(move |e| match e.downcast::<HttpError>() {
                        // The connection's own failure (timeout, reset).
                        Ok(inner) => *inner,
                        Err(_) => {
                            events.push(PolicyEvent::ResponseTooLarge {
                                origin: origin_text.clone(),
                                limit,
                            });
                            HttpError::HttpResponseBodySize(None)
                        }
                    })
                    .boxed_unsync()
            });
            // The connection is driven by its own task (it outlives this
            // response when it goes back to the pool).
            let io = async { Ok(()) };
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }

    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }
}

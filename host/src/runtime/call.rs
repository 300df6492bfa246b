//! One call: a fresh instance under the sandbox limits, and its outcome
//! classified (the host's sandbox verdicts first, then the guest's own
//! result), with everything the guest returned capped and cleaned.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::Store;

use super::bindings::{Provider, ProviderPre};
use super::engine::Runtime;
use super::gate::SendGate;
use super::policy::{OutboundPolicy, PolicyEvent};
use super::sanitize::{Cleaner, MAX_TRAP_BYTES, MAX_URL_BYTES, Untrusted};
use super::state::CallState;

/// Why a call did not produce the component's answer, or the component's
/// own typed error (`Gateway`). Sandbox outcomes take precedence: the host,
/// not the guest, is the authority on what happened in a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The component answered with a contract error.
    #[error("gateway error: {0:?}")]
    Gateway(E),
    /// The call ran past its wall-clock deadline and was stopped.
    #[error("call exceeded its {limit:?} deadline")]
    Deadline { limit: Duration },
    /// The instance tried to grow memory past the cap and was stopped.
    #[error("component exceeded its memory cap of {limit} bytes")]
    MemoryCap { limit: usize },
    /// The component tried to reach an origin its policy does not allow.
    #[error("outbound request to {origin} denied: {reason}")]
    OutboundDenied { origin: String, reason: String },
    /// A gateway response exceeded the response-size cap.
    #[error("response from {origin} exceeded {limit} bytes")]
    ResponseTooLarge { origin: String, limit: usize },
    /// The component tried to send more requests in one call than the
    /// per-call budget (`[limits] max_requests_per_call`) allows; the
    /// requests within the budget went out.
    #[error("component exceeded its budget of {limit} outbound requests per call")]
    RequestBudgetExceeded { limit: u32 },
    /// The component answered with a value the host refuses (an identifier
    /// over its cap or malformed; see `runtime::sanitize`). Whatever the
    /// component did at the gateway happened; only its answer is unusable.
    #[error("component returned an invalid {field}: {reason}")]
    InvalidOutput { field: &'static str, reason: String },
    /// The component trapped (panic, unreachable, bad memory access).
    #[error("component trapped: {0}")]
    Trap(String),
    /// No instance could be created (e.g. every pool slot busy).
    #[error("component could not be instantiated: {0}")]
    Instantiate(String),
}

impl<E> CallError<E> {
    /// Stable machine code for logs and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Gateway(_) => "gateway_error",
            CallError::Deadline { .. } => "provider_deadline_exceeded",
            CallError::MemoryCap { .. } => "provider_memory_exceeded",
            CallError::OutboundDenied { .. } => "provider_outbound_denied",
            CallError::ResponseTooLarge { .. } => "provider_response_too_large",
            CallError::RequestBudgetExceeded { .. } => "provider_request_budget_exceeded",
            CallError::InvalidOutput { .. } => "provider_invalid_output",
            CallError::Trap(_) => "provider_trapped",
            CallError::Instantiate(_) => "provider_unavailable",
        }
    }
}

/// Where a call's requests may go, and whether they wait for a gate.
pub(super) struct Outbound {
    pub(super) policy: Arc<OutboundPolicy>,
    pub(super) gate: Option<SendGate>,
}

impl From<Arc<OutboundPolicy>> for Outbound {
    fn from(policy: Arc<OutboundPolicy>) -> Self {
        Outbound { policy, gate: None }
    }
}

pub(super) type CallFuture<'a, T, E> =
    std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Result<T, E>>> + Send + 'a>>;

/// Run one export on a fresh instance under the sandbox limits and classify
/// the outcome (sandbox verdicts first, then the guest's own result).
pub(super) async fn call<T, E, F>(
    runtime: &Runtime,
    pre: &ProviderPre<CallState>,
    provider: Arc<str>,
    op: &'static str,
    outbound: Outbound,
    secrets: Vec<String>,
    f: F,
) -> Result<T, CallError<E>>
where
    T: Untrusted,
    E: fmt::Debug + Untrusted,
    F: for<'a> FnOnce(&'a Provider, &'a mut Store<CallState>) -> CallFuture<'a, T, E>,
{
    let limit = runtime.inner.limits.call_deadline;
    let started = Instant::now();
    // A pool slot for the whole call; the permit outlives the store (it is
    // declared first, so dropped last), which frees the slot on drop.
    let _slot = match tokio::time::timeout(limit, runtime.inner.slots.clone().acquire_owned()).await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_closed)) => {
            return Err(CallError::Instantiate(
                "the runtime is shutting down".into(),
            ));
        }
        Err(_elapsed) => {
            return Err(CallError::Instantiate(format!(
                "every instance slot stayed busy for {limit:?}"
            )));
        }
    };
    let mut store = runtime.new_store(provider.clone(), outbound.policy, secrets);
    if let Some(gate) = outbound.gate {
        // Before instantiation: even a start function's requests wait.
        store.data_mut().hold_requests_until(gate);
    }
    // What is left of the deadline after waiting for a slot.
    let limit_left = limit.saturating_sub(started.elapsed());
    let span = tracing::info_span!("provider_call", provider = %provider, op);
    let outcome = {
        let store = &mut store;
        let run = async move {
            let instance = match pre.instantiate_async(&mut *store).await {
                Ok(instance) => instance,
                Err(e) => return Err(Err(e)),
            };
            f(&instance, store).await.map_err(Ok)
        };
        tokio::time::timeout(limit_left, run)
            .instrument(span.clone())
            .await
    };
    let events = store.data().events.take();
    let elapsed = started.elapsed();
    let result = classify(outcome, &events, limit, || store.data().stderr_text());
    // The one place guest results enter the host: everything after this
    // sees capped, cleaned values (or the refusal).
    let result = sanitize(result, &Cleaner::new(store.data().secrets()));
    match &result {
        Ok(_) | Err(CallError::Gateway(_)) => {
            tracing::debug!(parent: &span, ?elapsed, "call finished")
        }
        Err(e) => tracing::warn!(parent: &span, ?elapsed, code = e.code(), "call failed: {e}"),
    }
    result
}

/// Caps and cleans what the guest returned (see `runtime::sanitize`),
/// including the text of the host's own verdicts that quote the guest.
fn sanitize<T: Untrusted, E: Untrusted>(
    result: Result<T, CallError<E>>,
    cleaner: &Cleaner<'_>,
) -> Result<T, CallError<E>> {
    let invalid = |e: super::sanitize::InvalidOutput| CallError::InvalidOutput {
        field: e.field,
        reason: e.reason,
    };
    match result {
        Ok(value) => value.sanitize(cleaner).map_err(invalid),
        Err(CallError::Gateway(e)) => match e.sanitize(cleaner) {
            Ok(e) => Err(CallError::Gateway(e)),
            Err(bad) => Err(invalid(bad)),
        },
        Err(CallError::Trap(message)) => {
            Err(CallError::Trap(cleaner.text(&message, MAX_TRAP_BYTES)))
        }
        Err(CallError::Instantiate(message)) => Err(CallError::Instantiate(
            cleaner.text(&message, MAX_TRAP_BYTES),
        )),
        Err(CallError::OutboundDenied { origin, reason }) => Err(CallError::OutboundDenied {
            origin: cleaner.text(&origin, MAX_URL_BYTES),
            reason: cleaner.text(&reason, MAX_URL_BYTES),
        }),
        Err(CallError::ResponseTooLarge { origin, limit }) => Err(CallError::ResponseTooLarge {
            origin: cleaner.text(&origin, MAX_URL_BYTES),
            limit,
        }),
        Err(other) => Err(other),
    }
}

type Outcome<T, E> = Result<
    Result<Result<T, E>, Result<wasmtime::Error, wasmtime::Error>>,
    tokio::time::error::Elapsed,
>;

fn classify<T, E>(
    outcome: Outcome<T, E>,
    events: &[PolicyEvent],
    limit: Duration,
    stderr: impl FnOnce() -> String,
) -> Result<T, CallError<E>> {
    for event in events {
        if let PolicyEvent::MemoryCap { limit, .. } = event {
            return Err(CallError::MemoryCap { limit: *limit });
        }
    }
    let guest = match outcome {
        Err(_elapsed) => return Err(CallError::Deadline { limit }),
        // Instantiation failed.
        Ok(Err(Err(e))) => return Err(CallError::Instantiate(format!("{e:#}"))),
        Ok(Err(Ok(e))) => {
            if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                return Err(CallError::Deadline { limit });
            }
            Err(e)
        }
        Ok(Ok(r)) => Ok(r),
    };
    // A denied or oversized request reported as the cause of a guest
    // failure is the host's verdict; a guest that still succeeded keeps its
    // result (the hook has logged the denial).
    let guest_failed = !matches!(guest, Ok(Ok(_)));
    for event in events.iter().filter(|_| guest_failed) {
        match event {
            PolicyEvent::OutboundDenied { origin, reason } => {
                return Err(CallError::OutboundDenied {
                    origin: origin.clone(),
                    reason: reason.clone(),
                });
            }
            PolicyEvent::ResponseTooLarge { origin, limit } => {
                return Err(CallError::ResponseTooLarge {
                    origin: origin.clone(),
                    limit: *limit,
                });
            }
            PolicyEvent::RequestBudgetExceeded { limit } => {
                return Err(CallError::RequestBudgetExceeded { limit: *limit });
            }
            PolicyEvent::MemoryCap { .. } => {}
        }
    }
    match guest {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Gateway(e)),
        Err(trap) => {
            let detail = stderr();
            let message = if detail.is_empty() {
                format!("{trap:#}")
            } else {
                format!("{trap:#}; guest stderr: {detail}")
            };
            Err(CallError::Trap(message))
        }
    }
}

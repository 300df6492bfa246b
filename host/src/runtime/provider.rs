//! Loading provider components and calling them, one fresh instance per call.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::contract::{
    CallContext, Manifest, Payment, PaymentRequest, ProviderError, Refund, RefundRequest,
    WebhookError, WebhookEvent, WebhookRequest,
};
use super::bindings::{CONTRACT_VERSION, GATEWAY_EXPORT, Provider, ProviderPre};
use super::engine::Runtime;
use super::gate::SendGate;
use super::policy::{Origin, OutboundPolicy, PolicyEvent};
use super::sanitize::{Cleaner, MAX_TRAP_BYTES, MAX_URL_BYTES, Untrusted};
use super::state::CallState;

/// Operator settings for one provider.
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// Base URL passed to the component instead of its default (emulator,
    /// regional endpoint). Its origin is added to the allow-list.
    pub base_url: Option<String>,
    /// Replaces the manifest's default hosts when set.
    pub allowed_origins: Option<Vec<Origin>>,
    /// Let allowed host names resolve to private addresses.
    pub allow_private_networks: bool,
    /// Timeouts and response cap (the allow-list inside is ignored; it is
    /// computed from the fields above).
    pub outbound: Option<OutboundPolicy>,
}

/// Why a component was refused at load time. Every message names the source.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: not a valid WebAssembly component: {reason}")]
    Invalid { source_name: String, reason: String },
    #[error(
        "{source_name}: does not export `payhost:provider/gateway` (it exports: {found}); build it against wit/ of payhost:provider@{CONTRACT_VERSION}"
    )]
    MissingExport { source_name: String, found: String },
    #[error(
        "{source_name}: implements contract version {found}, but this host serves payhost:provider@{CONTRACT_VERSION}"
    )]
    UnsupportedVersion { source_name: String, found: String },
    #[error(
        "{source_name}: imports `{import}`, which payhost does not provide (components get wasi:http, wasi:clocks, wasi:random, wasi:io, wasi:cli stdio and payhost:provider/host only)"
    )]
    ForbiddenImport { source_name: String, import: String },
    #[error("{source_name}: does not match payhost:provider@{CONTRACT_VERSION}: {reason}")]
    Mismatch { source_name: String, reason: String },
    #[error("{source_name}: invalid manifest: {reason}")]
    Manifest { source_name: String, reason: String },
}

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

/// A loaded, validated provider component, ready to be called.
///
/// Holds the compiled component behind an `InstancePre`; every call gets a
/// fresh `Store` and instance, so no guest state survives between calls.
pub struct LoadedProvider {
    id: Arc<str>,
    source: String,
    manifest: Manifest,
    runtime: Runtime,
    pre: ProviderPre<CallState>,
    policy: Arc<OutboundPolicy>,
    /// `policy`, read-only: for `parse-webhook`'s diagnosis call.
    diagnosis_policy: Arc<OutboundPolicy>,
    no_network: Arc<OutboundPolicy>,
    base_url: Option<String>,
}

impl fmt::Debug for LoadedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedProvider")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("version", &self.manifest.version)
            .finish_non_exhaustive()
    }
}

fn is_forbidden_import(name: &str) -> bool {
    ["wasi:filesystem/", "wasi:sockets/"]
        .iter()
        .any(|p| name.starts_with(p))
}

impl Runtime {
    /// Compile a component and check it against the contract: it must
    /// export `payhost:provider/gateway` at the served version, import
    /// nothing the host does not provide, and have matching types.
    pub(crate) fn compile(
        &self,
        source_name: &str,
        bytes: &[u8],
    ) -> Result<ProviderPre<CallState>, LoadError> {
        let src = || source_name.to_string();
        let engine = &self.inner.engine;
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
            source_name: src(),
            reason: format!("{e:#}"),
        })?;
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        if !exports.iter().any(|n| n == GATEWAY_EXPORT) {
            if let Some(other) = exports
                .iter()
                .find(|n| n.starts_with("payhost:provider/gateway"))
            {
                let found = other
                    .split_once('@')
                    .map_or("(unversioned)", |(_, v)| v)
                    .to_string();
                return Err(LoadError::UnsupportedVersion {
                    source_name: src(),
                    found,
                });
            }
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(LoadError::MissingExport {
                source_name: src(),
                found,
            });
        }
        if let Some((import, _)) = ty.imports(engine).find(|(n, _)| is_forbidden_import(n)) {
            return Err(LoadError::ForbiddenImport {
                source_name: src(),
                import: import.to_string(),
            });
        }
        let pre =
            self.inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Mismatch {
                    source_name: src(),
                    reason: format!("{e:#}"),
                })?;
        ProviderPre::new(pre).map_err(|e| LoadError::Mismatch {
            source_name: src(),
            reason: format!("{e:#}"),
        })
    }

    /// Compile, check and describe a component: the full load path used for
    /// bundled providers and operator-supplied `.wasm` files.
    pub async fn load(
        &self,
        source_name: &str,
        bytes: &[u8],
        settings: ProviderSettings,
    ) -> Result<LoadedProvider, LoadError> {
        self.load_with(source_name, bytes, |_| settings).await
    }

    /// Like [`Runtime::load`], choosing the settings once the manifest (and
    /// so the provider id) is known.
    pub async fn load_with(
        &self,
        source_name: &str,
        bytes: &[u8],
        settings: impl FnOnce(&Manifest) -> ProviderSettings,
    ) -> Result<LoadedProvider, LoadError> {
        let pre = self.compile(source_name, bytes)?;
        let no_network = Arc::new(OutboundPolicy::deny_all());
        let manifest = call(
            self,
            &pre,
            Arc::from("(loading)"),
            "manifest",
            no_network.clone().into(),
            Vec::new(),
            |p, s| {
                Box::pin(async move {
                    let m = p.payhost_provider_gateway().call_manifest(s).await?;
                    Ok(Ok::<_, ()>(m))
                })
            },
        )
        .await
        .map_err(|e| LoadError::Manifest {
            source_name: source_name.to_string(),
            reason: format!("manifest call failed: {e}"),
        })?;
        let manifest_err = |reason: String| LoadError::Manifest {
            source_name: source_name.to_string(),
            reason,
        };
        validate_manifest(&manifest).map_err(manifest_err)?;
        let settings = settings(&manifest);

        let mut allowed = match settings.allowed_origins {
            Some(list) => list,
            None => manifest
                .default_hosts
                .iter()
                .map(|h| Origin::parse(h).map_err(|e| manifest_err(e.to_string())))
                .collect::<Result<_, _>>()?,
        };
        if let Some(base) = &settings.base_url {
            let origin = Origin::of_url(base)
                .ok_or_else(|| manifest_err(format!("base URL `{base}` is not an http(s) URL")))?;
            if !allowed.contains(&origin) {
                allowed.push(origin);
            }
        }
        let policy = OutboundPolicy {
            allowed,
            allow_private_networks: settings.allow_private_networks,
            ..settings.outbound.unwrap_or_default()
        };
        Ok(LoadedProvider {
            id: Arc::from(manifest.id.as_str()),
            source: source_name.to_string(),
            manifest,
            runtime: self.clone(),
            pre,
            diagnosis_policy: Arc::new(OutboundPolicy {
                read_only: true,
                ..policy.clone()
            }),
            policy: Arc::new(policy),
            no_network,
            base_url: settings.base_url,
        })
    }
}

fn validate_manifest(m: &Manifest) -> Result<(), String> {
    let id_ok = !m.id.is_empty()
        && m.id.len() <= 32
        && m.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(format!(
            "id `{}` must be 1-32 characters of a-z, 0-9 and -",
            m.id
        ));
    }
    if let Some(bad) = m
        .currencies
        .iter()
        .find(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(format!(
            "currency `{bad}` is not an upper-case ISO-4217 code"
        ));
    }
    Ok(())
}

/// Where a call's requests may go, and whether they wait for a gate.
struct Outbound {
    policy: Arc<OutboundPolicy>,
    gate: Option<SendGate>,
}

impl From<Arc<OutboundPolicy>> for Outbound {
    fn from(policy: Arc<OutboundPolicy>) -> Self {
        Outbound { policy, gate: None }
    }
}

type CallFuture<'a, T, E> =
    std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Result<T, E>>> + Send + 'a>>;

/// Run one export on a fresh instance under the sandbox limits and classify
/// the outcome (sandbox verdicts first, then the guest's own result).
async fn call<T, E, F>(
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
    let mut store = runtime.new_store(provider.clone(), outbound.policy, secrets);
    if let Some(gate) = outbound.gate {
        // Before instantiation: even a start function's requests wait.
        store.data_mut().hold_requests_until(gate);
    }
    let limit = runtime.inner.limits.call_deadline;
    let span = tracing::info_span!("provider_call", provider = %provider, op);
    let started = Instant::now();
    let outcome = {
        let store = &mut store;
        let run = async move {
            let instance = match pre.instantiate_async(&mut *store).await {
                Ok(instance) => instance,
                Err(e) => return Err(Err(e)),
            };
            f(&instance, store).await.map_err(Ok)
        };
        tokio::time::timeout(limit, run)
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

/// The credential values of a call, to scrub from component output.
fn secrets_of(ctx: &CallContext) -> Vec<String> {
    ctx.credentials
        .iter()
        .filter(|c| c.value.len() >= 4)
        .map(|c| c.value.clone())
        .collect()
}

impl LoadedProvider {
    /// The provider's id (`stripe`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the component came from (file path or `bundled:<name>`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The manifest the component reported at load time.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The outbound policy every networked call of this provider runs under.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    fn with_base_url(&self, mut ctx: CallContext) -> CallContext {
        if ctx.base_url.is_none() {
            ctx.base_url.clone_from(&self.base_url);
        }
        ctx
    }

    async fn networked<T, F>(
        &self,
        gate: Option<SendGate>,
        op: &'static str,
        secrets: Vec<String>,
        f: F,
    ) -> Result<T, CallError<ProviderError>>
    where
        T: Untrusted,
        F: for<'a> FnOnce(
            &'a Provider,
            &'a mut Store<CallState>,
        ) -> CallFuture<'a, T, ProviderError>,
    {
        call(
            &self.runtime,
            &self.pre,
            self.id.clone(),
            op,
            Outbound {
                policy: self.policy.clone(),
                gate,
            },
            secrets,
            f,
        )
        .await
    }

    /// Check credentials with a cheap authenticated gateway call.
    pub async fn validate_credentials(
        &self,
        ctx: CallContext,
    ) -> Result<(), CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(
            None,
            "validate-credentials",
            secrets_of(&ctx),
            move |p, s| {
                Box::pin(async move {
                    p.payhost_provider_gateway()
                        .call_validate_credentials(s, &ctx)
                        .await
                })
            },
        )
        .await
    }

    /// Create (and confirm) a payment.
    pub async fn create_payment(
        &self,
        ctx: CallContext,
        request: PaymentRequest,
    ) -> Result<Payment, CallError<ProviderError>> {
        self.create_payment_after(None, ctx, request).await
    }

    /// [`create_payment`](Self::create_payment) whose requests wait for
    /// `gate` (when given) before any I/O. A refused gate denies them (a
    /// component that then fails is reported as
    /// [`CallError::OutboundDenied`]). The component runs up to its first
    /// request in the meantime; the call's deadline includes the wait.
    pub async fn create_payment_after(
        &self,
        gate: Option<SendGate>,
        ctx: CallContext,
        request: PaymentRequest,
    ) -> Result<Payment, CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(gate, "create-payment", secrets_of(&ctx), move |p, s| {
            Box::pin(async move {
                p.payhost_provider_gateway()
                    .call_create_payment(s, &ctx, &request)
                    .await
            })
        })
        .await
    }

    /// Capture an authorized payment (`None` = in full).
    pub async fn capture(
        &self,
        ctx: CallContext,
        reference: String,
        amount: Option<super::bindings::contract::Money>,
    ) -> Result<Payment, CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(None, "capture", secrets_of(&ctx), move |p, s| {
            Box::pin(async move {
                p.payhost_provider_gateway()
                    .call_capture(s, &ctx, &reference, amount.as_ref())
                    .await
            })
        })
        .await
    }

    /// Cancel an uncaptured payment.
    pub async fn cancel(
        &self,
        ctx: CallContext,
        reference: String,
    ) -> Result<Payment, CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(None, "cancel", secrets_of(&ctx), move |p, s| {
            Box::pin(async move {
                p.payhost_provider_gateway()
                    .call_cancel(s, &ctx, &reference)
                    .await
            })
        })
        .await
    }

    /// Read a payment's current state.
    pub async fn get_payment(
        &self,
        ctx: CallContext,
        reference: String,
    ) -> Result<Payment, CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(None, "get-payment", secrets_of(&ctx), move |p, s| {
            Box::pin(async move {
                p.payhost_provider_gateway()
                    .call_get_payment(s, &ctx, &reference)
                    .await
            })
        })
        .await
    }

    /// Refund in full or in part.
    pub async fn refund(
        &self,
        ctx: CallContext,
        request: RefundRequest,
    ) -> Result<Refund, CallError<ProviderError>> {
        let ctx = self.with_base_url(ctx);
        self.networked(None, "refund", secrets_of(&ctx), move |p, s| {
            Box::pin(async move {
                p.payhost_provider_gateway()
                    .call_refund(s, &ctx, &request)
                    .await
            })
        })
        .await
    }

    /// Verify and normalize a webhook, in at most two calls:
    ///
    /// 1. with no credentials and no network: a valid delivery is answered
    ///    here, so verifying one never exposes the tenant's credentials or
    ///    lets the component reach out;
    /// 2. only if that says `signature-mismatch` and `ctx` has credentials: a
    ///    second call with them and the provider's allow-list, read-only
    ///    (`GET`/`HEAD`), in which the component may ask the gateway whether
    ///    the body is genuine (`tampered-body` / `wrong-secret`).
    ///
    /// The second call can only sharpen the rejection. Events it returns
    /// are ignored, as is any other error or failure: the result is then the
    /// first call's `signature-mismatch`.
    pub async fn parse_webhook(
        &self,
        ctx: CallContext,
        request: WebhookRequest,
    ) -> Result<Vec<WebhookEvent>, CallError<WebhookError>> {
        let offline = CallContext {
            credentials: Vec::new(),
            base_url: None,
            idempotency_key: None,
        };
        let first = self
            .parse_webhook_once(offline, request.clone(), self.no_network.clone())
            .await;
        if !matches!(
            first,
            Err(CallError::Gateway(WebhookError::SignatureMismatch))
        ) || ctx.credentials.is_empty()
        {
            return first;
        }
        let ctx = self.with_base_url(ctx);
        match self
            .parse_webhook_once(ctx, request, self.diagnosis_policy.clone())
            .await
        {
            Err(CallError::Gateway(
                sharper @ (WebhookError::TamperedBody | WebhookError::WrongSecret),
            )) => Err(CallError::Gateway(sharper)),
            Err(CallError::Gateway(WebhookError::SignatureMismatch)) => first,
            Ok(_) => {
                tracing::warn!(
                    provider = %self.id,
                    "parse-webhook returned events for a body whose signature it had rejected; ignored"
                );
                first
            }
            Err(other) => {
                tracing::info!(provider = %self.id, "webhook mismatch not diagnosed: {other}");
                first
            }
        }
    }

    async fn parse_webhook_once(
        &self,
        ctx: CallContext,
        request: WebhookRequest,
        policy: Arc<OutboundPolicy>,
    ) -> Result<Vec<WebhookEvent>, CallError<WebhookError>> {
        let mut secrets = secrets_of(&ctx);
        secrets.push(request.secret.clone());
        call(
            &self.runtime,
            &self.pre,
            self.id.clone(),
            "parse-webhook",
            policy.into(),
            secrets,
            move |p, s| {
                Box::pin(async move {
                    p.payhost_provider_gateway()
                        .call_parse_webhook(s, &ctx, &request)
                        .await
                })
            },
        )
        .await
    }

    /// Call `manifest` on a fresh instance (benchmarks, health checks).
    pub async fn call_manifest(&self) -> Result<Manifest, CallError<()>> {
        call(
            &self.runtime,
            &self.pre,
            self.id.clone(),
            "manifest",
            self.no_network.clone().into(),
            Vec::new(),
            |p, s| {
                Box::pin(async move {
                    let m = p.payhost_provider_gateway().call_manifest(s).await?;
                    Ok(Ok(m))
                })
            },
        )
        .await
    }
}

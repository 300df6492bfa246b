//! A loaded provider and its calls, one fresh instance per call. Loading is
//! in [`super::load`]; the call machinery in [`super::call`].

use std::fmt;
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::contract::{
    CallContext, Manifest, Payment, PaymentRequest, ProviderError, Refund, RefundRequest,
    WebhookError, WebhookEvent, WebhookRequest,
};
use super::bindings::{Provider, ProviderPre};
use super::call::{CallError, CallFuture, Outbound, call};
use super::engine::Runtime;
use super::gate::SendGate;
use super::policy::{Origin, OutboundPolicy};
use super::sanitize::Untrusted;
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

/// A loaded, validated provider component, ready to be called.
///
/// Holds the compiled component behind an `InstancePre`; every call gets a
/// fresh `Store` and instance, so no guest state survives between calls.
pub struct LoadedProvider {
    pub(super) id: Arc<str>,
    pub(super) source: String,
    pub(super) manifest: Manifest,
    pub(super) runtime: Runtime,
    pub(super) pre: ProviderPre<CallState>,
    pub(super) policy: Arc<OutboundPolicy>,
    /// `policy`, read-only: for `parse-webhook`'s diagnosis call.
    pub(super) diagnosis_policy: Arc<OutboundPolicy>,
    pub(super) no_network: Arc<OutboundPolicy>,
    pub(super) base_url: Option<String>,
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

/// Shorter values are not scrubbed or refused: they would match by chance.
const MIN_SECRET_BYTES: usize = 4;

impl LoadedProvider {
    /// The values of the call's *secret* credentials (the manifest's
    /// `secret: true` fields): scrubbed from everything the component
    /// returns or logs, and refused inside identifiers. Non-secret fields (a
    /// merchant id, an environment) are shown by the API anyway, and
    /// gateways legitimately put them in references.
    fn secrets_of(&self, ctx: &CallContext) -> Vec<String> {
        ctx.credentials
            .iter()
            .filter(|c| {
                self.manifest
                    .credential_fields
                    .iter()
                    .any(|f| f.secret && f.name == c.name)
            })
            .filter(|c| c.value.len() >= MIN_SECRET_BYTES)
            .map(|c| c.value.clone())
            .collect()
    }

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
            self.secrets_of(&ctx),
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
        self.networked(
            gate,
            "create-payment",
            self.secrets_of(&ctx),
            move |p, s| {
                Box::pin(async move {
                    p.payhost_provider_gateway()
                        .call_create_payment(s, &ctx, &request)
                        .await
                })
            },
        )
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
        self.networked(None, "capture", self.secrets_of(&ctx), move |p, s| {
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
        self.networked(None, "cancel", self.secrets_of(&ctx), move |p, s| {
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
        self.networked(None, "get-payment", self.secrets_of(&ctx), move |p, s| {
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
        self.networked(None, "refund", self.secrets_of(&ctx), move |p, s| {
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
        let mut secrets = self.secrets_of(&ctx);
        if request.secret.len() >= MIN_SECRET_BYTES {
            secrets.push(request.secret.clone());
        }
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

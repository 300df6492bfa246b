//! Ingestion: verify a delivery through its provider component, store its
//! events in the inbox, and only then answer 2xx.
//!
//! The request path makes no gateway call and no ledger write. The one
//! exception is the diagnosis of a signature mismatch (a read-only call
//! with the tenant's credentials), bounded per (tenant, provider) by the
//! [`DiagnosisBudget`](super::DiagnosisBudget). Every rejected signature
//! gets the same answer, whatever the diagnosis; the diagnosis goes to the
//! log, an audit event and the tenant's gateway status.

use super::Webhooks;
use super::inbox::{self, Inserted, StoredEvent};
use crate::gateways::GatewayError;
use crate::runtime::CallError;
use crate::runtime::contract::{
    CallContext, EventKind, WebhookError, WebhookEvent, WebhookRequest,
};
use crate::store::{ProviderId, StoreError, TenantId, UnixMillis};

/// Why a delivery was refused. Nothing is stored in any case.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The provider is not loaded on this host.
    #[error("provider `{0}` is not loaded on this host")]
    UnknownProvider(String),
    /// The tenant has no settings (or no webhook secret) for the provider.
    #[error("no webhook settings for provider `{0}`")]
    NotConfigured(String),
    /// The signature did not verify (missing, malformed, mismatched,
    /// stale). One variant for every reason: the sender learns nothing.
    #[error("the webhook signature did not verify")]
    Signature,
    /// Verified, but not an event the component can read.
    #[error("the webhook payload is not a readable event: {0}")]
    InvalidPayload(String),
    /// The component failed (trap, deadline, bad output): the gateway
    /// should retry.
    #[error("the provider could not verify the webhook: {0}")]
    Component(String),
    /// The settings could not be opened.
    #[error(transparent)]
    Gateway(GatewayError),
    /// The inbox could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a stored delivery holds.
pub type Received = Inserted;

/// Contract kind → stored spelling.
fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::PaymentSucceeded => "payment_succeeded",
        EventKind::PaymentFailed => "payment_failed",
        EventKind::PaymentCanceled => "payment_canceled",
        EventKind::PaymentRequiresAction => "payment_requires_action",
        EventKind::PaymentAuthorized => "payment_authorized",
        EventKind::RefundSucceeded => "refund_succeeded",
        EventKind::RefundPending => "refund_pending",
        EventKind::RefundFailed => "refund_failed",
        EventKind::Other => "other",
    }
}

fn stored(e: WebhookEvent) -> StoredEvent {
    StoredEvent {
        id: e.id,
        kind: kind_name(e.kind).to_owned(),
        gateway_type: e.gateway_type,
        payment_reference: e.payment_reference,
        refund_reference: e.refund_reference,
        amount_minor: e.amount.as_ref().map(|m| m.minor),
        currency: e.amount.map(|m| m.currency),
        order_id: e.order_id,
        refund_id: e.refund_id,
    }
}

/// The name a diagnosis is recorded under.
fn diagnosis(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::MissingSignature => "missing_signature",
        WebhookError::MalformedSignature(_) => "malformed_signature",
        WebhookError::SignatureMismatch => "signature_mismatch",
        WebhookError::TamperedBody => "tampered_body",
        WebhookError::WrongSecret => "wrong_secret",
        WebhookError::TimestampOutOfTolerance(_) => "timestamp_out_of_tolerance",
        WebhookError::InvalidPayload(_) => "invalid_payload",
    }
}

impl Webhooks {
    /// Verifies and stores one delivery for `tenant` (which exists) from
    /// `provider`. Returns once every event is durably in the inbox.
    /// Cancel-safe: dropped at any point, the delivery is stored fully or
    /// not at all.
    pub async fn ingest(
        &self,
        tenant: &TenantId,
        provider: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Received, IngestError> {
        let inner = &self.inner;
        let provider_id = ProviderId::parse(provider)
            .ok()
            .filter(|_| inner.gateways.providers().get(provider).is_some())
            .ok_or_else(|| IngestError::UnknownProvider(provider.chars().take(64).collect()))?;
        let open = match inner.gateways.open(tenant, provider).await {
            Ok(open) => open,
            Err(GatewayError::NotConfigured(p)) => return Err(IngestError::NotConfigured(p)),
            Err(GatewayError::UnknownProvider(p)) => return Err(IngestError::UnknownProvider(p)),
            Err(e) => return Err(IngestError::Gateway(e)),
        };
        let secret = open
            .webhook_secret
            .clone()
            .ok_or_else(|| IngestError::NotConfigured(provider.to_owned()))?;
        let request = WebhookRequest {
            headers,
            body,
            secret,
            // Signature tolerance is about the sender's clock: wall time.
            received_at: UnixMillis::now().as_i64() / 1000,
        };
        let offline = CallContext {
            credentials: Vec::new(),
            base_url: None,
            idempotency_key: None,
        };
        let mut verdict = open.provider.parse_webhook(offline, request.clone()).await;
        let mut diagnosed = false;
        if matches!(
            verdict,
            Err(CallError::Gateway(WebhookError::SignatureMismatch))
        ) && !open.ctx.credentials.is_empty()
        {
            let budget = crate::ratelimit::LimitKey::provider(tenant, provider_id.as_str());
            let lane = crate::ratelimit::Lane::WebhookDiagnosis;
            if inner.limiter.check(lane, &budget).await.allowed {
                diagnosed = true;
                verdict = open.provider.parse_webhook(open.ctx, request).await;
            } else {
                tracing::info!(%tenant, provider, "webhook signature mismatch; diagnosis budget spent, not asking the gateway");
            }
        }
        let events = match verdict {
            Ok(events) => events,
            Err(CallError::Gateway(WebhookError::InvalidPayload(why))) => {
                return Err(IngestError::InvalidPayload(why));
            }
            Err(CallError::Gateway(e)) => {
                self.rejected(tenant, &provider_id, &e, diagnosed).await;
                return Err(IngestError::Signature);
            }
            Err(other) => return Err(IngestError::Component(other.to_string())),
        };
        let events: Vec<StoredEvent> = events.into_iter().map(stored).collect();
        let received = inbox::insert_delivery(
            &inner.store,
            tenant,
            &provider_id,
            &events,
            inner.clock.now(),
        )
        .await?;
        if received.new > 0 {
            self.wake();
        }
        Ok(received)
    }

    /// Records a rejected signature: always in the log; in the tenant's
    /// gateway status and the audit log when the gateway was asked (bounded
    /// by the diagnosis budget, so forged traffic cannot flood either).
    async fn rejected(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        e: &WebhookError,
        diagnosed: bool,
    ) {
        let reason = diagnosis(e);
        tracing::warn!(%tenant, provider = provider.as_str(), reason, "webhook rejected");
        if !diagnosed && !matches!(e, WebhookError::WrongSecret | WebhookError::TamperedBody) {
            return;
        }
        let store = &self.inner.store;
        if let Err(err) =
            inbox::record_rejection(store, tenant, provider, reason, self.inner.clock.now()).await
        {
            tracing::error!(%tenant, "webhook rejection not recorded: {err}");
        }
        crate::audit::record_by_system(
            store,
            "webhooks",
            "webhook.rejected",
            Some(tenant),
            serde_json::json!({"provider": provider.as_str(), "reason": reason}),
        )
        .await;
    }
}

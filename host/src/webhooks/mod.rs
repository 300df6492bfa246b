//! Webhooks: verified ingestion into a durable inbox, the worker that turns
//! inbox events into exactly one ledger effect each, retries with backoff,
//! dead letters with replay, and their alerts.
//!
//! Owns the `webhook_inbox`, `dead_letters`, `dead_letter_alerts` and
//! `webhook_status` tables, and the worker's clock; the diagnosis budget is a lane of the rate
//! limiter.
//!
//! Must never: answer 2xx before a delivery's events are committed; make a
//! gateway call or ledger write on the request path (other than the bounded
//! diagnosis of a signature mismatch); tell a sender why its signature was
//! rejected; book outside the ledger's own functions (so every effect is
//! idempotent under the ledger's unique references); or lose a dead letter
//! because its alert could not be sent.
//!
//! Parts: [`ingest`] (the request path), [`inbox`] (the table), [`apply`]
//! (one event → orders and ledger), `worker` (leases, retries, alerts),
//! [`dead_letters`] (envelope, listing, replay), [`clock`].

pub mod apply;
pub mod clock;
pub mod dead_letters;
pub mod inbox;
pub mod ingest;
mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

pub use crate::clock::ManualClock;
pub use clock::Clock;
pub use dead_letters::{DeadLetter, DeadLetterFilter, Replay};
pub use inbox::{InboxFilter, InboxRow, InboxStats, StoredEvent, WebhookStatus};
pub use ingest::{IngestError, Received};
pub use worker::WorkerHandle;

use crate::config::{JobsConfig, RetryConfig, WebhooksConfig};
use crate::gateways::Gateways;
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};

/// Errors of the operator reads and replays.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The pagination cursor was not produced by this listing.
    #[error("invalid cursor")]
    InvalidCursor,
    /// No such dead letter.
    #[error("dead letter not found")]
    DeadLetterNotFound,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be written.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// The webhook pipeline of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    gateways: Gateways,
    clock: Clock,
    /// Holds the diagnosis budget ([`Lane::WebhookDiagnosis`]).
    ///
    /// [`Lane::WebhookDiagnosis`]: crate::ratelimit::Lane::WebhookDiagnosis
    limiter: RateLimiter,
    config: WebhooksConfig,
    policy: RetryConfig,
    alert_policy: RetryConfig,
    /// Wakes a worker when an event is stored.
    wake: Notify,
    /// Wakes the alert sender when a dead letter is made.
    alert_wake: Notify,
    /// This instance's lease-owner prefix.
    instance: String,
}

impl Webhooks {
    /// The pipeline over `store`, verifying through `gateways`' providers.
    pub fn new(
        store: Store,
        gateways: Gateways,
        config: &WebhooksConfig,
        jobs: &JobsConfig,
        clock: Clock,
        limiter: RateLimiter,
    ) -> Webhooks {
        Webhooks {
            inner: Arc::new(Inner {
                limiter,
                store,
                gateways,
                clock,
                config: config.clone(),
                policy: jobs.webhook.clone(),
                alert_policy: jobs.alert.clone(),
                wake: Notify::new(),
                alert_wake: Notify::new(),
                instance: format!("inst_{}", hex::encode(rand::random::<[u8; 6]>())),
            }),
        }
    }

    /// The same pipeline with another rate limiter (tests drive theirs on a
    /// manual clock). Call before [`Webhooks::start`].
    pub fn with_limiter(&self, limiter: RateLimiter) -> Webhooks {
        let i = &self.inner;
        Webhooks::new(
            i.store.clone(),
            i.gateways.clone(),
            &i.config,
            &JobsConfig {
                webhook: i.policy.clone(),
                alert: i.alert_policy.clone(),
            },
            i.clock.clone(),
            limiter,
        )
    }

    /// The clock the pipeline schedules by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The largest accepted webhook body, bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.config.max_body_kib * 1024
    }

    /// Wakes the workers and the alert sender (after new events, or after
    /// a test moved the clock).
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
        self.inner.alert_wake.notify_one();
    }

    /// Recent deliveries, newest first.
    pub async fn list(
        &self,
        filter: &InboxFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<crate::store::Page<InboxRow>, WebhookError> {
        inbox::list(&self.inner.store, filter, cursor, limit).await
    }

    /// Inbox depth and oldest-pending age.
    pub async fn stats(&self) -> Result<InboxStats, WebhookError> {
        Ok(inbox::stats(&self.inner.store, self.inner.clock.now()).await?)
    }

    /// Re-queues a dead letter's job once (audited), and wakes the workers.
    pub async fn replay(
        &self,
        actor: &crate::audit::Actor,
        id: &crate::store::DeadLetterId,
    ) -> Result<(DeadLetter, Replay), WebhookError> {
        let done =
            dead_letters::replay(&self.inner.store, actor, id, self.inner.clock.now()).await?;
        if done.1 == Replay::Requeued {
            self.wake();
        }
        Ok(done)
    }
}

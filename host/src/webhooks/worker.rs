//! The worker: claims due inbox events under a lease, applies them, and
//! finishes each as applied / ignored, retried with backoff, or a dead
//! letter; and the alert sender for new dead letters.
//!
//! Workers wake when ingestion stores a new event (in process) and poll on
//! a timer (other instances' events, retries coming due). Every decision
//! about time uses the pipeline's [`Clock`](super::Clock).

use std::sync::Arc;
use std::time::Duration;

use super::apply::{Applied, apply};
use super::dead_letters::{self, bury};
use super::inbox::{self, InboxRow};
use super::{Inner, Webhooks};
use crate::store::UnixMillis;

/// Running worker and alert tasks; dropping this stops them.
pub struct WorkerHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn later(now: UnixMillis, by: Duration) -> UnixMillis {
    UnixMillis(now.as_i64() + i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2))
}

impl Webhooks {
    /// Starts `[webhooks] workers` worker tasks and the alert sender on the
    /// current runtime.
    pub fn start(&self) -> WorkerHandle {
        let mut tasks = Vec::new();
        for n in 0..self.inner.config.workers {
            let inner = self.inner.clone();
            let owner = format!("{}/{n}", inner.instance);
            tasks.push(tokio::spawn(async move { work(inner, owner).await }));
        }
        if self.inner.config.alert_url.is_some() {
            let inner = self.inner.clone();
            tasks.push(tokio::spawn(async move { send_alerts(inner).await }));
        }
        WorkerHandle { tasks }
    }

    /// Runs one pass as `owner`: claims and applies what is due now.
    /// Returns how many events it claimed (tests and benchmarks drive it).
    pub async fn run_once(&self, owner: &str) -> usize {
        pass(&self.inner, owner).await
    }
}

async fn work(inner: Arc<Inner>, owner: String) {
    let poll = Duration::from_millis(inner.config.poll_interval_ms);
    loop {
        let claimed = pass(&inner, &owner).await;
        if claimed >= inner.config.batch {
            continue; // more may be due
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

async fn pass(inner: &Inner, owner: &str) -> usize {
    let now = inner.clock.now();
    let lease = later(now, Duration::from_secs(inner.config.lease_secs));
    let rows = match inbox::claim(&inner.store, owner, now, lease, inner.config.batch).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!("webhook worker cannot claim events: {e}");
            return 0;
        }
    };
    let claimed = rows.len();
    for row in rows {
        handle(inner, owner, row).await;
    }
    claimed
}

async fn handle(inner: &Inner, owner: &str, row: InboxRow) {
    let store = &inner.store;
    let outcome = apply(store, &row.tenant_id, &row.provider, &row.event).await;
    let now = inner.clock.now();
    let policy = &inner.policy;
    let result = match outcome {
        Ok(Applied::Effect(what)) => {
            tracing::info!(event = row.event.id, tenant = %row.tenant_id, "webhook applied: {what}");
            inbox::finish(store, &row.id, owner, "applied", Some(&what), now).await
        }
        Ok(Applied::Nothing(why)) => {
            tracing::debug!(event = row.event.id, tenant = %row.tenant_id, "webhook ignored: {why}");
            inbox::finish(store, &row.id, owner, "ignored", Some(&why), now).await
        }
        Err(e) => {
            let reason: String = e.0.chars().take(1000).collect();
            let attempt = u32::try_from(row.attempts).unwrap_or(u32::MAX);
            if attempt >= policy.max_attempts {
                match bury(
                    store,
                    &row,
                    owner,
                    policy.max_attempts,
                    policy.backoff.as_str(),
                    &reason,
                    now,
                )
                .await
                {
                    Ok(Some(id)) => {
                        tracing::warn!(event = row.event.id, tenant = %row.tenant_id, dead_letter = %id, "webhook dead-lettered after {attempt} attempts: {reason}");
                        inner.alert_wake.notify_one();
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            } else {
                let next = later(now, policy.delay_after(attempt));
                tracing::info!(event = row.event.id, tenant = %row.tenant_id, attempt, "webhook failed, retried at {}: {reason}", next.as_i64());
                inbox::retry_at(store, &row.id, owner, next, &reason).await
            }
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            event = row.event.id,
            "webhook lease lost; another worker owns it"
        ),
        Err(e) => tracing::error!(
            event = row.event.id,
            "webhook outcome not stored (the lease runs out and it is retried): {e}"
        ),
    }
}

async fn send_alerts(inner: Arc<Inner>) {
    let Some(url) = inner.config.alert_url.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("dead-letter alerts disabled: {e}");
            return;
        }
    };
    let poll = Duration::from_millis(inner.config.poll_interval_ms);
    let policy = &inner.alert_policy;
    loop {
        let now = inner.clock.now();
        match dead_letters::due_alerts(&inner.store, now, policy.max_attempts).await {
            Ok(due) => {
                for alert in due {
                    let link = format!(
                        "{}/admin/dead-letters/{}",
                        inner.config.alert_link_base.trim_end_matches('/'),
                        alert.dead_letter
                    );
                    let body = serde_json::json!({
                        "text": format!("payhost: new dead letter {} — {link}", alert.dead_letter),
                        "dead_letter_id": alert.dead_letter,
                        "link": link,
                    });
                    let sent = client.post(&url).json(&body).send().await;
                    let now = inner.clock.now();
                    let outcome = match &sent {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("alert receiver answered {}", r.status())),
                        Err(e) => Err(format!("alert not delivered: {e}")),
                    };
                    let attempt = u32::try_from(alert.attempts + 1).unwrap_or(u32::MAX);
                    let next = later(now, policy.delay_after(attempt));
                    let recorded = match &outcome {
                        Ok(()) => {
                            dead_letters::alert_outcome(
                                &inner.store,
                                &alert.dead_letter,
                                Ok(()),
                                now,
                            )
                            .await
                        }
                        Err(e) => {
                            tracing::warn!(dead_letter = %alert.dead_letter, attempt, "{e}");
                            dead_letters::alert_outcome(
                                &inner.store,
                                &alert.dead_letter,
                                Err((e.as_str(), next)),
                                now,
                            )
                            .await
                        }
                    };
                    if let Err(e) = recorded {
                        tracing::error!(dead_letter = %alert.dead_letter, "alert outcome not stored: {e}");
                    }
                }
            }
            Err(e) => tracing::error!("cannot read due alerts: {e}"),
        }
        tokio::select! {
            () = inner.alert_wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

//! The reconciliation janitor: checkout orders left `pending` /
//! `requires_action` (a lost webhook, a process that stopped mid-checkout)
//! are re-read at their gateway with `get-payment` once they are older than
//! a configured age, on a schedule that backs off per order, and whatever
//! the gateway says is booked through the checkout's own settle path
//! (`Checkouts::reconcile`, rows with source `janitor`).
//!
//! Owns the schedule (`reconcile_checks`: next check time, attempts, the
//! per-order lease). Several instances may run it at once: an
//! order is checked only under a lease one instance holds, so two never ask
//! the gateway about one order at once, and booking is idempotent anyway
//! (an order moves to `paid` once; its rows' references are unique).
//!
//! Refund holds: the contract cannot read a refund (`get-payment` returns
//! the payment only), so stale holds are reported (logged with their
//! count), never released or completed here; their gateway events settle
//! them. See `docs/operations.md`.
//!
//! Must never: book by any other path than the checkout's, release a hold,
//! or decide by the wall clock directly (every time comes from the
//! [`Clock`] it is given; tests hand it a `clock::OffsetClock` they advance).

mod schedule;

use std::sync::Arc;
use std::time::Duration;

use crate::checkout::{CheckoutError, Checkouts, Reconciled};
use crate::clock::Clock;
use crate::ledger::{self, LedgerError, Order, Source};
use crate::store::{OrderId, Store, UnixMillis};

use schedule::Due;

/// How the janitor runs (the `[janitor]` config section).
#[derive(Debug, Clone)]
pub struct JanitorOptions {
    /// How often a pass runs (real time).
    pub interval: Duration,
    /// An order is checked once it is older than this.
    pub min_age: Duration,
    /// Delay after the first check that finds the order unsettled; doubled
    /// after each further one.
    pub backoff_base: Duration,
    /// The longest delay between two checks of one order.
    pub backoff_max: Duration,
    /// Orders checked per pass at most.
    pub batch: u32,
}

impl Default for JanitorOptions {
    fn default() -> Self {
        JanitorOptions {
            interval: Duration::from_secs(30),
            min_age: Duration::from_secs(15 * 60),
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(6 * 3600),
            batch: 50,
        }
    }
}

impl JanitorOptions {
    /// The delay before the next check after `attempts` earlier checks
    /// found the order unsettled: `base · 2^attempts`, at most `max`.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.clamp(0, 31) as u32)
            .unwrap_or(u32::MAX);
        self.backoff_base
            .checked_mul(factor)
            .map_or(self.backoff_max, |d| d.min(self.backoff_max))
    }
}

/// How long an instance's claim on an order lasts: longer than any gateway
/// call (the sandbox deadline is seconds), short enough that an instance
/// that died mid-check does not hold the order for long.
pub const LEASE: Duration = Duration::from_secs(300);

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Orders whose gateway was asked.
    pub checked: usize,
    /// Of those, orders that no longer wait (paid, declined, canceled).
    pub settled: usize,
    /// Orders skipped because another instance holds them.
    pub skipped: usize,
    /// Checks that failed (gateway unreachable, …); retried with backoff.
    pub failed: usize,
    /// Refund holds older than the age (reported, not touched).
    pub stale_holds: usize,
}

/// Why a reconciliation of one order did not run.
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// Another instance is checking this order right now.
    #[error("order {0} is being reconciled by another instance")]
    Busy(OrderId),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The janitor (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Janitor {
    store: Store,
    checkouts: Checkouts,
    options: Arc<JanitorOptions>,
    clock: Arc<dyn Clock>,
    /// This instance's lease owner id.
    owner: Arc<str>,
}

impl Janitor {
    /// A janitor for this instance.
    pub fn new(
        store: Store,
        checkouts: Checkouts,
        options: JanitorOptions,
        clock: Arc<dyn Clock>,
    ) -> Janitor {
        let owner = format!("jan_{}", hex::encode(rand::random::<[u8; 8]>()));
        Janitor {
            store,
            checkouts,
            options: Arc::new(options),
            clock,
            owner: owner.into(),
        }
    }

    /// Runs [`Janitor::pass`] every `interval` until the task is aborted.
    /// A failed pass is logged; the next one runs anyway.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.options.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match self.pass().await {
                    Ok(pass) if pass != Pass::default() => {
                        tracing::info!(?pass, "janitor pass");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("janitor pass failed: {e}"),
                }
            }
        })
    }

    /// One pass: every due order (up to the batch) is claimed, checked at
    /// its gateway and rescheduled; stale refund holds are counted.
    pub async fn pass(&self) -> Result<Pass, LedgerError> {
        let now = self.clock.now();
        let older_than = before(now, self.options.min_age);
        let mut pass = Pass::default();
        let due = schedule::due(&self.store, now, older_than, self.options.batch.into()).await?;
        for item in due {
            match self.check(&item, false).await {
                Ok(done) => {
                    pass.checked += usize::from(done.asked_gateway);
                    pass.settled += usize::from(done.settled());
                }
                Err(JanitorError::Busy(_)) => pass.skipped += 1,
                Err(e) => {
                    tracing::warn!(order = %item.order, tenant = %item.tenant, "reconciliation failed: {e}");
                    pass.failed += 1;
                }
            }
        }
        let holds = ledger::stale_reservations(&self.store, older_than).await?;
        if !holds.is_empty() {
            tracing::warn!(
                count = holds.len(),
                "refund holds older than the janitor's age; the contract cannot read a refund, \
                 so they wait for their gateway event"
            );
        }
        pass.stale_holds = holds.len();
        Ok(pass)
    }

    /// Reconciles one order now, whatever its schedule says (the
    /// operator's `POST /admin/orders/{id}/reconcile`), unless another
    /// instance holds it ([`JanitorError::Busy`]).
    pub async fn reconcile_now(&self, order: &Order) -> Result<Reconciled, JanitorError> {
        let due = Due {
            tenant: order.tenant_id.clone(),
            order: order.id.clone(),
        };
        self.check(&due, true).await
    }

    /// Claims, checks and reschedules one order. The schedule is updated
    /// whatever the check found (a failure backs off like an unsettled
    /// order); a claim whose holder stops before that lapses after [`LEASE`].
    async fn check(&self, due: &Due, force: bool) -> Result<Reconciled, JanitorError> {
        let now = self.clock.now();
        let until = after(now, LEASE);
        let Some(attempts) =
            schedule::claim(&self.store, due, &self.owner, now, until, force).await?
        else {
            return Err(JanitorError::Busy(due.order.clone()));
        };
        let result = self
            .checkouts
            .reconcile(&due.tenant, &due.order, Source::Janitor)
            .await;
        let state = match &result {
            Ok(done) => done.order.status.as_str().to_owned(),
            // Provider text in it was already capped and scrubbed by the runtime.
            Err(e) => format!(
                "error: {}",
                e.to_string().chars().take(200).collect::<String>()
            ),
        };
        let ended = self.clock.now();
        let next = after(ended, self.options.backoff(attempts));
        schedule::checked(&self.store, &due.order, &self.owner, ended, next, &state).await?;
        Ok(result?)
    }
}

fn before(t: UnixMillis, d: Duration) -> UnixMillis {
    UnixMillis(t.as_i64().saturating_sub(millis(d)))
}

fn after(t: UnixMillis, d: Duration) -> UnixMillis {
    UnixMillis(t.as_i64().saturating_add(millis(d)))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = JanitorOptions {
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            ..JanitorOptions::default()
        };
        let delays: Vec<u64> = (0..6).map(|a| o.backoff(a).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 600, 600]);
        assert_eq!(o.backoff(10_000).as_secs(), 600);
    }
}

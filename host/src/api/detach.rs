//! Mutations run to completion whatever the client does.
//!
//! When a client hangs up, the HTTP server drops the request's future at
//! whatever `.await` it had reached. For a mutation that can mean a charge
//! made at the gateway and never booked, a refund hold left without its
//! reference, an `Idempotency-Key` stuck "in flight" for its lease, or a cache
//! eviction that never happened after its commit. So every mutating request
//! (`POST`, `PUT`, `PATCH`, `DELETE`) runs — authentication, idempotency,
//! handler and all — in a task of its own that the connection's drop cannot
//! cancel. The request's future only waits for that task's response.
//!
//! Detached work is bounded, and one caller cannot take it all:
//! - the layer runs *after* authentication (read-only, so cancelling it is
//!   harmless): an unauthenticated request never holds a slot;
//! - tenants share [`Mutations`]' tenant slots (`max_mutations_in_progress`),
//!   and one tenant holds at most a quarter of them (429 `tenant_busy`);
//! - the operator has slots of its own ([`OPERATOR_SLOTS`]), so a tenant
//!   flooding the host can still be suspended or have its key revoked;
//! - a slot is taken before the task is spawned and held until it ends. A
//!   request that finds no slot within [`PERMIT_WAIT`] is answered 503
//!   `server_busy` and nothing of it has run; one dropped while it waits has
//!   not started either. Slow request bodies are bounded by the HTTP
//!   server's body timeout.
//!
//! Must never: start a mutation it cannot finish, or hold a slot past the
//! end of its task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState, ErrorCode, TenantCtx};
use crate::store::TenantId;

pub use crate::config::DEFAULT_MAX_MUTATIONS;

/// How long a mutation waits for a slot before it is answered 503.
pub const PERMIT_WAIT: Duration = Duration::from_secs(5);

/// Slots reserved for operator mutations.
pub const OPERATOR_SLOTS: usize = 64;

/// A pool of slots: a semaphore that remembers its size.
#[derive(Debug)]
struct Pool {
    permits: Arc<Semaphore>,
    capacity: u32,
}

impl Pool {
    fn new(capacity: usize) -> Pool {
        let capacity = u32::try_from(capacity.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        Pool {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    fn in_progress(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.permits.available_permits())
    }

    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        match tokio::time::timeout(PERMIT_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

/// The bounds on mutations in progress on one instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mutations {
    tenants: Arc<Pool>,
    per_tenant: usize,
    by_tenant: Arc<Mutex<HashMap<TenantId, usize>>>,
    operator: Arc<Pool>,
}

/// One tenant's share of the tenant slots, released on drop.
struct TenantShare {
    by_tenant: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl Drop for TenantShare {
    fn drop(&mut self) {
        let mut map = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

impl Mutations {
    /// `capacity` tenant slots (at least 1), at most a quarter of them per
    /// tenant, plus [`OPERATOR_SLOTS`] for the operator.
    pub fn new(capacity: usize) -> Mutations {
        Mutations {
            tenants: Arc::new(Pool::new(capacity)),
            per_tenant: (capacity / 4).max(1),
            by_tenant: Arc::default(),
            operator: Arc::new(Pool::new(OPERATOR_SLOTS)),
        }
    }

    /// How many mutations are in progress now.
    pub fn in_progress(&self) -> usize {
        self.tenants.in_progress() + self.operator.in_progress()
    }

    /// Waits until no mutation is in progress (every detached task, also of
    /// a request whose client is gone, has finished), or `limit` passed.
    /// Returns whether it became idle. For graceful shutdown and tests: the
    /// semaphores are fair, so while this waits, new mutations queue behind
    /// it (and get 503 after [`PERMIT_WAIT`]).
    pub async fn idle(&self, limit: Duration) -> bool {
        let all = async {
            let tenants = self
                .tenants
                .permits
                .acquire_many(self.tenants.capacity)
                .await;
            let operator = self
                .operator
                .permits
                .acquire_many(self.operator.capacity)
                .await;
            tenants.is_ok() && operator.is_ok()
        };
        matches!(tokio::time::timeout(limit, all).await, Ok(true))
    }

    /// A share of `tenant`'s quota, or `None` when it holds its maximum.
    fn share(&self, tenant: &TenantId) -> Option<TenantShare> {
        let mut map = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(tenant.clone()).or_insert(0);
        if *n >= self.per_tenant {
            return None;
        }
        *n += 1;
        Some(TenantShare {
            by_tenant: self.by_tenant.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Default for Mutations {
    fn default() -> Self {
        Mutations::new(DEFAULT_MAX_MUTATIONS)
    }
}

fn is_mutation(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    )
}

fn busy() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ServerBusy,
        "too many requests in progress; retry shortly",
    )
    .with_retry_after(1)
    .into_response()
}

/// Runs `request` in a task of its own that holds `slot` until it ends.
async fn run_detached<G: Send + 'static>(request: Request, next: Next, slot: G) -> Response {
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        drop(slot);
        response
    });
    match task.await {
        Ok(response) => response,
        // A panic in a handler: its slot was released by the unwind.
        Err(e) => ApiError::internal("mutation task", e).into_response(),
    }
}

/// Route layer of the tenant API, inside tenant authentication: runs a
/// mutating request in its own task (see the module docs).
pub async fn detach_tenant_mutation(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !is_mutation(request.method()) {
        return next.run(request).await;
    }
    let Some(tenant) = request
        .extensions()
        .get::<TenantCtx>()
        .map(|t| t.tenant.clone())
    else {
        return ApiError::internal("detach", "layer ordered before tenant auth").into_response();
    };
    let mutations = &state.mutations;
    let Some(share) = mutations.share(&tenant) else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TenantBusy,
            "this tenant has too many requests in progress; retry shortly",
        )
        .with_retry_after(1)
        .into_response();
    };
    let Some(permit) = mutations.tenants.acquire().await else {
        return busy();
    };
    run_detached(request, next, (share, permit)).await
}

/// Route layer of the operator API, inside operator authentication: runs a
/// mutating request in its own task on the operator's slots.
pub async fn detach_operator_mutation(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !is_mutation(request.method()) {
        return next.run(request).await;
    }
    let Some(permit) = state.mutations.operator.acquire().await else {
        return busy();
    };
    run_detached(request, next, permit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_permit_and_counts_what_is_in_progress() {
        let mutations = Mutations::new(3);
        assert_eq!(mutations.in_progress(), 0);
        let held = mutations.operator.acquire().await.expect("permit");
        assert_eq!(mutations.in_progress(), 1);
        assert!(!mutations.idle(Duration::from_millis(20)).await);
        drop(held);
        assert!(mutations.idle(Duration::from_secs(5)).await);
        assert_eq!(mutations.in_progress(), 0);
    }

    #[test]
    fn one_tenant_holds_at_most_a_quarter_of_the_slots() {
        let mutations = Mutations::new(8);
        let a = TenantId::generate();
        let b = TenantId::generate();
        let held: Vec<_> = (0..2)
            .map(|_| mutations.share(&a).expect("share"))
            .collect();
        assert!(mutations.share(&a).is_none(), "a third share of 8/4 = 2");
        assert!(
            mutations.share(&b).is_some(),
            "another tenant is not held back"
        );
        drop(held);
        assert!(
            mutations.share(&a).is_some(),
            "shares come back when their tasks end"
        );
    }
}

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
//! Detached work is bounded: a task holds one of [`Mutations`]' permits
//! from before it is spawned until it ends, so a flood of dropped requests
//! cannot pile up tasks. A request that finds no permit within
//! [`PERMIT_WAIT`] is answered 503 `server_busy` and nothing of it has run;
//! a request dropped while it waits for a permit has not started either.
//!
//! Must never: start a mutation it cannot finish, or hold a permit past the
//! end of its task.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::{ApiError, AppState};

/// How long a mutation waits for a permit before it is answered 503.
pub const PERMIT_WAIT: Duration = Duration::from_secs(5);

pub use crate::config::DEFAULT_MAX_MUTATIONS;

/// The bound on mutations in progress, shared by every request of one
/// instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mutations {
    permits: Arc<Semaphore>,
    capacity: u32,
}

impl Mutations {
    /// At most `capacity` mutations in progress at once (at least 1).
    pub fn new(capacity: usize) -> Mutations {
        let capacity = u32::try_from(capacity.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        Mutations {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// How many mutations are in progress now.
    pub fn in_progress(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.permits.available_permits())
    }

    /// Waits until no mutation is in progress (every detached task, also of
    /// a request whose client is gone, has finished), or `limit` passed.
    /// Returns whether it became idle. For graceful shutdown and tests.
    pub async fn idle(&self, limit: Duration) -> bool {
        let all = self.permits.acquire_many(self.capacity);
        matches!(tokio::time::timeout(limit, all).await, Ok(Ok(_)))
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

/// The outermost layer: runs a mutating request in its own task (see the
/// module docs); anything else runs in place.
pub async fn detach_mutations(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !is_mutation(request.method()) {
        return next.run(request).await;
    }
    let permit =
        match tokio::time::timeout(PERMIT_WAIT, state.mutations.permits.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    "too many requests in progress; retry shortly",
                )
                .with_retry_after(1)
                .into_response();
            }
        };
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        drop(permit);
        response
    });
    match task.await {
        Ok(response) => response,
        // A panic in a handler: its permit was released by the unwind.
        Err(e) => ApiError::internal("mutation task", e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_permit_and_counts_what_is_in_progress() {
        let mutations = Mutations::new(3);
        assert_eq!(mutations.in_progress(), 0);
        let held = mutations
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("permit");
        assert_eq!(mutations.in_progress(), 1);
        assert!(!mutations.idle(Duration::from_millis(20)).await);
        drop(held);
        assert!(mutations.idle(Duration::from_secs(5)).await);
        assert_eq!(mutations.in_progress(), 0);
    }
}

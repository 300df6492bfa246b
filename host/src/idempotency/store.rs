//! Idempotency-Key records for mutating tenant endpoints, scoped per tenant:
//! the `idempotency_keys` table.
//!
//! Protocol for a request carrying `Idempotency-Key`:
//! 1. [`begin`] — atomically claims the key (`INSERT … ON CONFLICT DO NOTHING`,
//!    then read). [`Begin::Fresh`]: run the request. [`Begin::Replay`]: return the
//!    stored response. [`Begin::Mismatch`]: the key was used with another request
//!    (`idempotency_key_reused`). [`Begin::InFlight`]: the first request is still
//!    running (409).
//! 2. [`finish`] — store the response the client got (2xx and 4xx alike).
//! 3. [`abandon`] — on a 5xx or crash path, forget the key so a retry runs again.
//!
//! A key left `in_flight` by a crashed process is taken over by the next
//! identical request after [`IN_FLIGHT_LEASE`]. Because the claim is a row in
//! the shared database, this holds across host instances.

use std::time::Duration;

use super::{IdempotencyKey, RequestHash};
use crate::store::{
    Store, StoreError, TenantId, UnixMillis, get_i64, get_opt_bytes, get_opt_i64, get_text,
};

/// How long an `in_flight` claim protects a request before an identical retry
/// may take it over (the first holder is presumed dead).
pub const IN_FLIGHT_LEASE: Duration = Duration::from_secs(300);

/// Outcome of [`begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is now claimed by this request: run it, then [`finish`] or [`abandon`].
    Fresh,
    /// The same request already completed: send this response again.
    Replay {
        /// The stored HTTP status.
        status: u16,
        /// The stored response body.
        body: Vec<u8>,
    },
    /// The key was used for a different request (`idempotency_key_reused`).
    Mismatch,
    /// The same request is still being processed (409).
    InFlight,
}

/// Claims `key` for `tenant` at the current time. See the module docs.
pub async fn begin(
    store: &Store,
    tenant: &TenantId,
    key: &IdempotencyKey,
    request: &RequestHash,
) -> Result<Begin, StoreError> {
    begin_at(store, tenant, key, request, UnixMillis::now()).await
}

/// [`begin`] with an explicit clock, for tests of the in-flight lease.
pub async fn begin_at(
    store: &Store,
    tenant: &TenantId,
    key: &IdempotencyKey,
    request: &RequestHash,
    now: UnixMillis,
) -> Result<Begin, StoreError> {
    let lease = i64::try_from(IN_FLIGHT_LEASE.as_millis()).unwrap_or(i64::MAX);
    // A concurrent `abandon` can delete the row between our insert and read;
    // then the key is free again and we simply retry the claim.
    for _ in 0..3 {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
               (tenant_id, idempotency_key, request_hash, state, created_at, locked_at) \
             VALUES ($1, $2, $3, 'in_flight', $4, $4) \
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(key.as_str())
        .bind(request.as_str())
        .bind(now.as_i64())
        .execute(store.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Begin::Fresh);
        }

        let Some(row) = sqlx::query(
            "SELECT request_hash, state, response_status, response_body, locked_at \
               FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant.as_str())
        .bind(key.as_str())
        .fetch_optional(store.pool())
        .await?
        else {
            continue;
        };

        if get_text(&row, "request_hash")? != request.as_str() {
            return Ok(Begin::Mismatch);
        }
        match get_text(&row, "state")?.as_str() {
            "done" => {
                let status = get_opt_i64(&row, "response_status")?
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        column: "response_status",
                        reason: "missing or out of range on a done key".into(),
                    })?;
                let body = get_opt_bytes(&row, "response_body")?.unwrap_or_default();
                return Ok(Begin::Replay { status, body });
            }
            "in_flight" => {
                let locked_at = get_i64(&row, "locked_at")?;
                if now.as_i64().saturating_sub(locked_at) < lease {
                    return Ok(Begin::InFlight);
                }
                // Stale claim: take it over unless someone else just did.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_at = $4 \
                      WHERE tenant_id = $1 AND idempotency_key = $2 \
                        AND state = 'in_flight' AND locked_at = $3",
                )
                .bind(tenant.as_str())
                .bind(key.as_str())
                .bind(locked_at)
                .bind(now.as_i64())
                .execute(store.pool())
                .await?;
                return Ok(if taken.rows_affected() == 1 {
                    Begin::Fresh
                } else {
                    Begin::InFlight
                });
            }
            other => {
                return Err(StoreError::Corrupt {
                    column: "state",
                    reason: format!("unknown idempotency state `{other}`"),
                });
            }
        }
    }
    Ok(Begin::InFlight)
}

/// Stores the response for a key claimed with [`Begin::Fresh`]. Returns
/// `false` if the key was not in flight (already finished or abandoned).
pub async fn finish(
    store: &Store,
    tenant: &TenantId,
    key: &IdempotencyKey,
    status: u16,
    body: &[u8],
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE idempotency_keys \
            SET state = 'done', response_status = $3, response_body = $4 \
          WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'in_flight'",
    )
    .bind(tenant.as_str())
    .bind(key.as_str())
    .bind(i32::from(status))
    .bind(body.to_vec())
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases an in-flight key so that a retry runs the request again (use after
/// a 5xx). A finished key is never removed by this. Returns whether a claim was released.
pub async fn abandon(
    store: &Store,
    tenant: &TenantId,
    key: &IdempotencyKey,
) -> Result<bool, StoreError> {
    let gone = sqlx::query(
        "DELETE FROM idempotency_keys \
          WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'in_flight'",
    )
    .bind(tenant.as_str())
    .bind(key.as_str())
    .execute(store.pool())
    .await?;
    Ok(gone.rows_affected() == 1)
}

/// Forgets the stored answer of `key` (a finished record), so the key runs
/// its request again: used when the order a checkout answered is canceled.
/// An in-flight claim is left alone (its request still runs; the cancel,
/// being idempotent, frees the key again when repeated). Returns whether a
/// record was forgotten.
pub async fn release(
    store: &Store,
    tenant: &TenantId,
    key: &IdempotencyKey,
) -> Result<bool, StoreError> {
    let gone = sqlx::query(
        "DELETE FROM idempotency_keys \
          WHERE tenant_id = $1 AND idempotency_key = $2 AND state = 'done'",
    )
    .bind(tenant.as_str())
    .bind(key.as_str())
    .execute(store.pool())
    .await?;
    Ok(gone.rows_affected() == 1)
}

/// Deletes records created before `cutoff` (retention), returning how many.
pub async fn purge_created_before(store: &Store, cutoff: UnixMillis) -> Result<u64, StoreError> {
    let gone = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(cutoff.as_i64())
        .execute(store.pool())
        .await?;
    Ok(gone.rows_affected())
}

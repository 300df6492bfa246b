//! Dead letters: jobs that exhausted their retry policy, with the standard
//! envelope, listed and replayed by operators; and the outbox of their
//! alerts, written in the same transaction as the letter.
//!
//! Invariants:
//! - A job becomes a dead letter, its inbox row `dead` and its alert queued
//!   in one transaction, and only by the owner of the row's lease.
//! - A replay re-queues the job and stamps the letter `replayed_at` in one
//!   transaction, audited; a letter already replayed is left as it is, so a
//!   second replay changes nothing.

use serde::Serialize;

use super::WebhookError;
use super::inbox::InboxRow;
use crate::audit::{self, Actor};
use crate::store::{
    Arg, DeadLetterId, InboxEventId, Page, SqlBuf, Store, StoreError, TenantId, UnixMillis,
    get_i64, get_json, get_opt_i64, get_opt_text, get_parsed, get_text, page_of,
};

/// The job type of applying an inbox event.
pub const WEBHOOK_JOB: &str = "webhook";

/// Most letters one bulk replay touches.
pub const MAX_REPLAY_BATCH: u32 = 100;

/// A dead letter with the standard envelope.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its id (`dlq_…`).
    pub id: DeadLetterId,
    /// The job that failed (for `webhook`, the inbox event id).
    pub job_id: String,
    /// The job type (`webhook`).
    pub job_type: String,
    /// The tenant the job was for.
    pub tenant: Option<String>,
    /// The provider the job was for.
    pub provider: Option<String>,
    /// Attempts made.
    pub attempt: i64,
    /// The policy's limit.
    pub max_attempts: i64,
    /// Why the last attempt failed.
    pub reason: String,
    /// The job's input.
    pub payload: serde_json::Value,
    /// When the last attempt failed.
    pub failed_at: i64,
    /// When it would have been retried next (none: exhausted).
    pub next_retry_at: Option<i64>,
    /// The policy's backoff (`exponential`, `fixed`).
    pub backoff_strategy: String,
    /// When an operator replayed it, if they did.
    pub replayed_at: Option<i64>,
    /// When it was created.
    pub created_at: i64,
}

const COLUMNS: &str = "id, job_id, job_type, tenant_id, provider, attempt, max_attempts, reason, \
     payload, failed_at, next_retry_at, backoff_strategy, replayed_at, created_at";

fn decode(row: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        id: get_parsed(row, "id", DeadLetterId::parse)?,
        job_id: get_text(row, "job_id")?,
        job_type: get_text(row, "job_type")?,
        tenant: get_opt_text(row, "tenant_id")?,
        provider: get_opt_text(row, "provider")?,
        attempt: get_i64(row, "attempt")?,
        max_attempts: get_i64(row, "max_attempts")?,
        reason: get_text(row, "reason")?,
        payload: get_json(row, "payload")?,
        failed_at: get_i64(row, "failed_at")?,
        next_retry_at: get_opt_i64(row, "next_retry_at")?,
        backoff_strategy: get_text(row, "backoff_strategy")?,
        replayed_at: get_opt_i64(row, "replayed_at")?,
        created_at: get_i64(row, "created_at")?,
    })
}

/// Makes a claimed inbox row a dead letter and queues its alert, in one
/// transaction. `None` if the lease was lost (nothing written).
pub(super) async fn bury(
    store: &Store,
    row: &InboxRow,
    owner: &str,
    max_attempts: u32,
    backoff: &str,
    reason: &str,
    now: UnixMillis,
) -> Result<Option<DeadLetterId>, StoreError> {
    let mut tx = store.begin_write().await?;
    let moved = sqlx::query(
        "UPDATE webhook_inbox SET status = 'dead', done_at = $3, last_error = $4, \
                lease_owner = NULL, lease_until = NULL \
          WHERE id = $1 AND lease_owner = $2 AND status = 'pending'",
    )
    .bind(row.id.as_str())
    .bind(owner)
    .bind(now.as_i64())
    .bind(reason)
    .execute(tx.conn())
    .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(None);
    }
    let id = DeadLetterId::generate();
    let payload = serde_json::json!({
        "provider": row.provider.as_str(),
        "event": row.event,
        "received_at": row.created_at,
    });
    sqlx::query(
        "INSERT INTO dead_letters (id, job_id, job_type, tenant_id, provider, attempt, \
            max_attempts, reason, payload, failed_at, next_retry_at, backoff_strategy, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $10)",
    )
    .bind(id.as_str())
    .bind(row.id.as_str())
    .bind(WEBHOOK_JOB)
    .bind(row.tenant_id.as_str())
    .bind(row.provider.as_str())
    .bind(row.attempts)
    .bind(i64::from(max_attempts))
    .bind(reason)
    .bind(payload.to_string())
    .bind(now.as_i64())
    .bind(backoff)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO dead_letter_alerts (dead_letter_id, attempts, next_attempt_at) \
         VALUES ($1, 0, $2)",
    )
    .bind(id.as_str())
    .bind(now.as_i64())
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// Filters of [`list`]; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// One job type.
    pub job_type: Option<String>,
    /// One tenant.
    pub tenant: Option<TenantId>,
    /// One provider.
    pub provider: Option<String>,
    /// Failed at or after (unix ms).
    pub failed_from: Option<i64>,
    /// Failed before (unix ms).
    pub failed_before: Option<i64>,
    /// Only letters not replayed yet.
    pub unreplayed: bool,
}

fn filtered(filter: &DeadLetterFilter) -> SqlBuf {
    let mut q = SqlBuf::new(&format!("SELECT {COLUMNS} FROM dead_letters WHERE 1 = 1"));
    for (column, value) in [
        ("job_type", filter.job_type.as_deref()),
        ("tenant_id", filter.tenant.as_ref().map(|t| t.as_str())),
        ("provider", filter.provider.as_deref()),
    ] {
        if let Some(value) = value {
            let p = q.arg(Arg::Text(value.to_owned()));
            q.push(&format!(" AND {column} = {p}"));
        }
    }
    if let Some(from) = filter.failed_from {
        let p = q.arg(Arg::Int(from));
        q.push(&format!(" AND failed_at >= {p}"));
    }
    if let Some(before) = filter.failed_before {
        let p = q.arg(Arg::Int(before));
        q.push(&format!(" AND failed_at < {p}"));
    }
    if filter.unreplayed {
        q.push(" AND replayed_at IS NULL");
    }
    q
}

/// Dead letters, newest first, keyset-paginated.
pub async fn list(
    store: &Store,
    filter: &DeadLetterFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<DeadLetter>, WebhookError> {
    let mut q = filtered(filter);
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| WebhookError::InvalidCursor)?;
    let rows = q
        .query()
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::from)?;
    let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |d| {
        (d.created_at, d.id.as_str().to_owned())
    }))
}

/// One dead letter.
pub async fn get(store: &Store, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(decode).transpose()
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    /// The job is queued again.
    Requeued,
    /// It had been replayed before: nothing changed.
    AlreadyReplayed,
}

/// Re-queues the job of dead letter `id` (due now), once. Audited.
pub async fn replay(
    store: &Store,
    actor: &Actor,
    id: &DeadLetterId,
    now: UnixMillis,
) -> Result<(DeadLetter, Replay), WebhookError> {
    let mut tx = store.begin_write().await?;
    let stamped = sqlx::query(
        "UPDATE dead_letters SET replayed_at = $2 WHERE id = $1 AND replayed_at IS NULL",
    )
    .bind(id.as_str())
    .bind(now.as_i64())
    .execute(tx.conn())
    .await
    .map_err(StoreError::from)?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(tx.conn())
        .await
        .map_err(StoreError::from)?
        .ok_or(WebhookError::DeadLetterNotFound)?;
    let letter = decode(&row)?;
    if stamped.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok((letter, Replay::AlreadyReplayed));
    }
    if letter.job_type == WEBHOOK_JOB {
        let job = InboxEventId::parse(&letter.job_id).map_err(|e| StoreError::Corrupt {
            column: "job_id",
            reason: e.to_string(),
        })?;
        sqlx::query(
            "UPDATE webhook_inbox SET status = 'pending', attempts = 0, next_attempt_at = $2, \
                    lease_owner = NULL, lease_until = NULL, done_at = NULL \
              WHERE id = $1 AND status = 'dead'",
        )
        .bind(job.as_str())
        .bind(now.as_i64())
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    }
    let tenant = letter
        .tenant
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok());
    audit::record_in(
        &mut tx,
        actor,
        "dead_letter.replayed",
        tenant.as_ref(),
        serde_json::json!({"dead_letter_id": letter.id, "job_id": letter.job_id, "job_type": letter.job_type}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        DeadLetter {
            replayed_at: Some(now.as_i64()),
            ..letter
        },
        Replay::Requeued,
    ))
}

/// The letters a bulk replay by filter picks: not replayed yet, oldest
/// first, at most `limit` (≤ [`MAX_REPLAY_BATCH`]).
pub async fn pick_for_replay(
    store: &Store,
    filter: &DeadLetterFilter,
    limit: u32,
) -> Result<Vec<DeadLetterId>, StoreError> {
    let mut q = filtered(&DeadLetterFilter {
        unreplayed: true,
        ..filter.clone()
    });
    let lim = q.arg(Arg::Int(i64::from(limit.clamp(1, MAX_REPLAY_BATCH))));
    q.push(&format!(" ORDER BY created_at, id LIMIT {lim}"));
    let rows = q.query().fetch_all(store.pool()).await?;
    rows.iter()
        .map(|r| get_parsed(r, "id", DeadLetterId::parse))
        .collect()
}

/// An alert still to be sent.
#[derive(Debug, Clone)]
pub(super) struct PendingAlert {
    pub dead_letter: DeadLetterId,
    pub attempts: i64,
}

/// Alerts due at `now`, oldest first.
pub(super) async fn due_alerts(
    store: &Store,
    now: UnixMillis,
    max_attempts: u32,
) -> Result<Vec<PendingAlert>, StoreError> {
    let rows = sqlx::query(
        "SELECT dead_letter_id, attempts FROM dead_letter_alerts \
          WHERE delivered_at IS NULL AND next_attempt_at <= $1 AND attempts < $2 \
          ORDER BY next_attempt_at, dead_letter_id LIMIT 16",
    )
    .bind(now.as_i64())
    .bind(i64::from(max_attempts))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingAlert {
                dead_letter: get_parsed(r, "dead_letter_id", DeadLetterId::parse)?,
                attempts: get_i64(r, "attempts")?,
            })
        })
        .collect()
}

/// Records an alert's outcome: delivered, or failed and due again at `next`.
pub(super) async fn alert_outcome(
    store: &Store,
    id: &DeadLetterId,
    outcome: Result<(), (&str, UnixMillis)>,
    now: UnixMillis,
) -> Result<(), StoreError> {
    match outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE dead_letter_alerts SET delivered_at = $2, attempts = attempts + 1 \
                  WHERE dead_letter_id = $1",
            )
            .bind(id.as_str())
            .bind(now.as_i64())
            .execute(store.pool())
            .await?;
        }
        Err((error, next)) => {
            sqlx::query(
                "UPDATE dead_letter_alerts SET attempts = attempts + 1, next_attempt_at = $2, \
                        last_error = $3 WHERE dead_letter_id = $1",
            )
            .bind(id.as_str())
            .bind(next.as_i64())
            .bind(error)
            .execute(store.pool())
            .await?;
        }
    }
    Ok(())
}

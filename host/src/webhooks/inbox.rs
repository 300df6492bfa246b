//! The inbox table: verified events stored before the 2xx, claimed by
//! workers under a lease, finished as applied / ignored / dead.
//!
//! Invariants:
//! - (tenant, provider, gateway event id) is UNIQUE, and an insert of a
//!   known key does nothing: a redelivery changes no row.
//! - Every event of one delivery is inserted in one transaction (on an
//!   SQLite file, one job of the group-committing writer), so a delivery is
//!   stored fully or not at all, also when its request is dropped.
//! - A claim sets `lease_owner`/`lease_until` and counts the attempt in
//!   one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
//!   instances never claim one row at once; SQLite has one writer). A row
//!   is finished only by the owner of its current lease.
//! - On an SQLite file every write here (insert, claim, finish, retry) is a
//!   job of the group-committing writer: the workers' bookkeeping shares
//!   commits with the deliveries being stored.

use serde::{Deserialize, Serialize};

use super::WebhookError;
use crate::store::{
    Arg, Backend, InboxEventId, Page, ProviderId, SqlBuf, Store, StoreError, TenantId, UnixMillis,
    corrupt, get_i64, get_opt_i64, get_opt_text, get_parsed, get_text, page_of,
};

/// A verified, normalized event as the inbox stores it (`event` column).
/// Everything in it came from a component: the worker validates each
/// field again before acting on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The gateway's event id.
    pub id: String,
    /// The contract's event kind (`payment_succeeded`, …).
    pub kind: String,
    /// The gateway's own type (`payment_intent.succeeded`).
    pub gateway_type: String,
    /// The gateway's payment reference.
    pub payment_reference: Option<String>,
    /// The gateway's refund reference.
    pub refund_reference: Option<String>,
    /// Amount in minor units, if the event carries one.
    pub amount_minor: Option<u64>,
    /// Its currency.
    pub currency: Option<String>,
    /// The host's order id echoed by the gateway.
    pub order_id: Option<String>,
    /// The host's refund hold id echoed by the gateway.
    pub refund_id: Option<String>,
}

/// One inbox row.
#[derive(Debug, Clone, Serialize)]
pub struct InboxRow {
    /// Its id (`whe_…`); the job id of its dead letter, if it gets one.
    pub id: InboxEventId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The provider that verified it.
    pub provider: ProviderId,
    /// The event.
    pub event: StoredEvent,
    /// `pending`, `applied`, `ignored` or `dead`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When it is due (next attempt).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was received.
    pub created_at: i64,
    /// When it was finished.
    pub done_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, provider, event, status, attempts, next_attempt_at, \
     last_error, created_at, done_at";

fn decode(row: &sqlx::any::AnyRow) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        id: get_parsed(row, "id", InboxEventId::parse)?,
        tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
        provider: get_parsed(row, "provider", ProviderId::parse)?,
        event: get_parsed(row, "event", |raw| serde_json::from_str::<StoredEvent>(raw))?,
        status: get_text(row, "status")?,
        attempts: get_i64(row, "attempts")?,
        next_attempt_at: get_i64(row, "next_attempt_at")?,
        last_error: get_opt_text(row, "last_error")?,
        created_at: get_i64(row, "created_at")?,
        done_at: get_opt_i64(row, "done_at")?,
    })
}

/// What an insert of one delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Events stored now.
    pub new: usize,
    /// Events already in the inbox (nothing changed for them).
    pub duplicates: usize,
}

fn insert_sql(tenant: &TenantId, provider: &ProviderId, e: &StoredEvent, now: i64) -> SqlBuf {
    let event = serde_json::to_string(e).unwrap_or_default();
    SqlBuf::bound(
        "INSERT INTO webhook_inbox (id, tenant_id, provider, event_id, kind, gateway_type, event, \
         status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8) \
         ON CONFLICT (tenant_id, provider, event_id) DO NOTHING"
            .into(),
        vec![
            Arg::Text(InboxEventId::generate().as_str().to_owned()),
            Arg::Text(tenant.as_str().to_owned()),
            Arg::Text(provider.as_str().to_owned()),
            Arg::Text(e.id.clone()),
            Arg::Text(e.kind.clone()),
            Arg::Text(e.gateway_type.clone()),
            Arg::Text(event),
            Arg::Int(now),
        ],
    )
}

fn status_ok_sql(tenant: &TenantId, provider: &ProviderId, now: i64) -> SqlBuf {
    SqlBuf::bound(
        "INSERT INTO webhook_status (tenant_id, provider, last_ok_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET last_ok_at = excluded.last_ok_at"
            .into(),
        vec![
            Arg::Text(tenant.as_str().to_owned()),
            Arg::Text(provider.as_str().to_owned()),
            Arg::Int(now),
        ],
    )
}

/// Stores the events of one verified delivery, all or none, and records the
/// gateway's last good delivery. Cancel-safe: dropped before the commit
/// answered, either everything is stored or nothing is.
pub async fn insert_delivery(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    events: &[StoredEvent],
    now: UnixMillis,
) -> Result<Inserted, StoreError> {
    let now = now.as_i64();
    let statements: Vec<SqlBuf> = events
        .iter()
        .map(|e| insert_sql(tenant, provider, e, now))
        .collect();
    let status = status_ok_sql(tenant, provider, now);
    if let Some(writer) = store.sqlite_writer() {
        // One job on the writer: concurrent deliveries share one commit.
        return writer
            .run(move |conn| {
                let mut done = Inserted::default();
                for s in &statements {
                    match s.execute_sqlite(conn)? {
                        0 => done.duplicates += 1,
                        _ => done.new += 1,
                    }
                }
                status.execute_sqlite(conn)?;
                Ok::<_, StoreError>(done)
            })
            .await;
    }
    let mut tx = store.begin_write().await?;
    let mut done = Inserted::default();
    for s in &statements {
        match s.query().execute(tx.conn()).await?.rows_affected() {
            0 => done.duplicates += 1,
            _ => done.new += 1,
        }
    }
    status.query().execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(done)
}

/// Runs `sql` as one write: on an SQLite file a job of the group-committing
/// writer (so the workers' claims and finishes share commits with the
/// deliveries being stored instead of each taking the write lock and an
/// fsync of its own), elsewhere an autocommitted statement. Returns the
/// rows changed.
async fn write(store: &Store, sql: SqlBuf) -> Result<u64, StoreError> {
    if let Some(writer) = store.sqlite_writer() {
        return writer
            .run(move |conn| Ok::<_, StoreError>(sql.execute_sqlite(conn)? as u64))
            .await;
    }
    Ok(sql.query().execute(store.pool()).await?.rows_affected())
}

/// An inbox row as SQLite's writer connection returns it ([`COLUMNS`]).
type RawRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    Option<i64>,
);

fn raw_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

/// [`decode`] for a [`RawRow`].
fn decode_raw(raw: RawRow) -> Result<InboxRow, StoreError> {
    let (
        id,
        tenant,
        provider,
        event,
        status,
        attempts,
        next_attempt_at,
        last_error,
        created_at,
        done_at,
    ) = raw;
    Ok(InboxRow {
        id: InboxEventId::parse(&id).map_err(|e| corrupt("id", e))?,
        tenant_id: TenantId::parse(&tenant).map_err(|e| corrupt("tenant_id", e))?,
        provider: ProviderId::parse(&provider).map_err(|e| corrupt("provider", e))?,
        event: serde_json::from_str(&event).map_err(|e| corrupt("event", e))?,
        status,
        attempts,
        next_attempt_at,
        last_error,
        created_at,
        done_at,
    })
}

/// Claims up to `limit` due events for `owner` until `lease_until`,
/// counting the attempt. Rows leased to another owner whose lease has not
/// run out are skipped.
pub async fn claim(
    store: &Store,
    owner: &str,
    now: UnixMillis,
    lease_until: UnixMillis,
    limit: usize,
) -> Result<Vec<InboxRow>, StoreError> {
    let lock = match store.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = SqlBuf::bound(
        format!(
            "UPDATE webhook_inbox SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
              WHERE id IN (SELECT id FROM webhook_inbox \
                            WHERE status = 'pending' AND next_attempt_at <= $3 \
                              AND (lease_until IS NULL OR lease_until <= $3) \
                            ORDER BY next_attempt_at, id LIMIT $4{lock}) \
              RETURNING {COLUMNS}"
        ),
        vec![
            Arg::Text(owner.to_owned()),
            Arg::Int(lease_until.as_i64()),
            Arg::Int(now.as_i64()),
            Arg::Int(i64::try_from(limit).unwrap_or(1000)),
        ],
    );
    if let Some(writer) = store.sqlite_writer() {
        let rows = writer
            .run(move |conn| Ok::<_, StoreError>(sql.query_rows_sqlite(conn, raw_sqlite)?))
            .await?;
        return rows.into_iter().map(decode_raw).collect();
    }
    let rows = sql.query().fetch_all(store.pool()).await?;
    rows.iter().map(decode).collect()
}

/// Finishes a claimed row as `applied` or `ignored`; `false` if the lease
/// was lost (another worker owns the row now).
pub async fn finish(
    store: &Store,
    id: &InboxEventId,
    owner: &str,
    status: &'static str,
    note: Option<&str>,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let sql = SqlBuf::bound(
        "UPDATE webhook_inbox SET status = $3, done_at = $4, last_error = $5, \
                lease_owner = NULL, lease_until = NULL \
          WHERE id = $1 AND lease_owner = $2 AND status = 'pending'"
            .into(),
        vec![
            Arg::Text(id.as_str().to_owned()),
            Arg::Text(owner.to_owned()),
            Arg::Text(status.to_owned()),
            Arg::Int(now.as_i64()),
            Arg::opt_text(note),
        ],
    );
    Ok(write(store, sql).await? == 1)
}

/// Puts a claimed row back for another attempt at `next`.
pub async fn retry_at(
    store: &Store,
    id: &InboxEventId,
    owner: &str,
    next: UnixMillis,
    error: &str,
) -> Result<bool, StoreError> {
    let sql = SqlBuf::bound(
        "UPDATE webhook_inbox SET next_attempt_at = $3, last_error = $4, \
                lease_owner = NULL, lease_until = NULL \
          WHERE id = $1 AND lease_owner = $2 AND status = 'pending'"
            .into(),
        vec![
            Arg::Text(id.as_str().to_owned()),
            Arg::Text(owner.to_owned()),
            Arg::Int(next.as_i64()),
            Arg::Text(error.to_owned()),
        ],
    );
    Ok(write(store, sql).await? == 1)
}

/// Filters of [`list`]; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    /// One tenant.
    pub tenant: Option<TenantId>,
    /// One provider.
    pub provider: Option<String>,
    /// One status.
    pub status: Option<String>,
}

/// Recent deliveries, newest first, keyset-paginated.
pub async fn list(
    store: &Store,
    filter: &InboxFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<InboxRow>, WebhookError> {
    let mut q = SqlBuf::new(&format!("SELECT {COLUMNS} FROM webhook_inbox WHERE 1 = 1"));
    for (column, value) in [
        ("tenant_id", filter.tenant.as_ref().map(|t| t.as_str())),
        ("provider", filter.provider.as_deref()),
        ("status", filter.status.as_deref()),
    ] {
        if let Some(value) = value {
            let p = q.arg(Arg::Text(value.to_owned()));
            q.push(&format!(" AND {column} = {p}"));
        }
    }
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| WebhookError::InvalidCursor)?;
    let rows = q
        .query()
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::from)?;
    let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |r| {
        (r.created_at, r.id.as_str().to_owned())
    }))
}

/// Inbox depth and age, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InboxStats {
    /// Events not yet applied, ignored or dead.
    pub pending: i64,
    /// Of those, how many have failed at least once.
    pub retrying: i64,
    /// Dead events (each has a dead letter).
    pub dead: i64,
    /// Age of the oldest pending event on the pipeline's clock, ms.
    pub oldest_pending_age_ms: Option<i64>,
}

/// The inbox's depth and the age of its oldest pending event.
pub async fn stats(store: &Store, now: UnixMillis) -> Result<InboxStats, StoreError> {
    let row = sqlx::query(
        "SELECT \
           COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
           COALESCE(SUM(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END), 0) AS retrying, \
           COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead, \
           MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest \
         FROM webhook_inbox",
    )
    .fetch_one(store.pool())
    .await?;
    let oldest = get_opt_i64(&row, "oldest")?;
    Ok(InboxStats {
        pending: get_i64(&row, "pending")?,
        retrying: get_i64(&row, "retrying")?,
        dead: get_i64(&row, "dead")?,
        oldest_pending_age_ms: oldest.map(|o| (now.as_i64() - o).max(0)),
    })
}

/// A tenant gateway's last webhook verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookStatus {
    /// The provider.
    pub provider: String,
    /// The last rejection's reason (`wrong_secret`, `tampered_body`,
    /// `signature_mismatch`).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<i64>,
    /// The last verified delivery.
    pub last_ok_at: Option<i64>,
}

/// Records a rejected delivery's diagnosis for the tenant to see.
pub async fn record_rejection(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_status (tenant_id, provider, last_error, last_error_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, provider) DO UPDATE \
            SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
    )
    .bind(tenant.as_str())
    .bind(provider.as_str())
    .bind(reason)
    .bind(now.as_i64())
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Every webhook verdict of `tenant`'s gateways.
pub async fn statuses(store: &Store, tenant: &TenantId) -> Result<Vec<WebhookStatus>, StoreError> {
    let rows = sqlx::query(
        "SELECT provider, last_error, last_error_at, last_ok_at FROM webhook_status \
          WHERE tenant_id = $1 ORDER BY provider",
    )
    .bind(tenant.as_str())
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(WebhookStatus {
                provider: get_text(row, "provider")?,
                last_error: get_opt_text(row, "last_error")?,
                last_error_at: get_opt_i64(row, "last_error_at")?,
                last_ok_at: get_opt_i64(row, "last_ok_at")?,
            })
        })
        .collect()
}

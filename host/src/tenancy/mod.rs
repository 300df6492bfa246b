//! Tenancy persistence: tenants, their domains and their API keys.
//!
//! Owns who a tenant is (id, name, status, plan), which hosts resolve to it,
//! and which API keys act for it. Resolution functions ([`resolve_api_key`],
//! [`resolve_domain`]) are single indexed queries so a cache layer can sit in
//! front of them; every write returns what a cache must invalidate. The
//! operator's writes go through [`Tenancy::write`] (`service.rs`): the write
//! and its audit event in one transaction, then the cache eviction.
//!
//! Must never: store or log an API key secret (only its SHA-256 and a short
//! display prefix are kept), resolve a revoked key, or let one tenant read or
//! change another tenant's keys or domains; commit an operator write without
//! its audit event; import `api`.

mod api_keys;
pub mod cache;
mod domains;
mod service;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use crate::store::domain::string_newtype;
use crate::store::{
    Arg, Page, ParseError, SqlBuf, Store, StoreError, UnixMillis, Violation, WriteTx, get_parsed,
    get_time, page_of,
};

pub use crate::store::{ApiKeyId, TenantId};
pub use api_keys::{
    ApiKeyHash, ApiKeyInfo, ApiKeySecret, IssuedApiKey, ResolvedApiKey, RevokedApiKey,
    issue_api_key, list_api_keys, resolve_api_key, revoke_api_key,
};
pub(crate) use api_keys::{issue_api_key_in, revoke_api_key_in};
pub use cache::{
    Clock, INVALIDATION_CHANNEL, Invalidation, ResolverError, ResolverOptions, SystemClock,
    TenantResolver,
};
pub use domains::{
    Domain, DomainChange, attach_domain, detach_domain, list_domains, move_domain, resolve_domain,
};
pub(crate) use domains::{attach_domain_in, detach_domain_in, move_domain_in};
pub use service::{OperatorWrite, Tenancy, WriteError, Written};

/// Errors of the tenancy repositories.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// No tenant with this id.
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    /// The domain belongs to another tenant; use [`move_domain`] to reassign it.
    #[error("domain {domain} is already attached to another tenant")]
    DomainTaken {
        /// The contested domain.
        domain: Domain,
        /// Its current owner.
        owner: TenantId,
    },
    /// An input did not have the required shape.
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// A pagination cursor this server did not hand out.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TenancyError {
    fn from(e: sqlx::Error) -> Self {
        TenancyError::Store(StoreError::Database(e))
    }
}

/// Whether a tenant may transact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Normal operation.
    Active,
    /// Blocked by the operator; its API keys still resolve so the API can say why.
    Suspended,
}

impl TenantStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            other => Err(ParseError::new(
                "tenant status",
                format!("`{other}` is not active|suspended"),
            )),
        }
    }
}

string_newtype! {
    /// A tenant's display name: 1–200 characters after trimming, no control characters.
    pub struct TenantName;
}

impl TenantName {
    /// Validates (and trims) a name: the rules of client text
    /// ([`crate::store::domain::ClientText`]), at most 200 characters.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        crate::store::domain::ClientText::parse("tenant name", raw, 200).map(|t| Self(t.into()))
    }
}

string_newtype! {
    /// The plan a tenant is on (features are granted per plan): 1–64 of `[a-z0-9_-]`.
    pub struct PlanName;
}

impl PlanName {
    /// The plan every new tenant starts on.
    pub fn free() -> Self {
        Self("free".to_owned())
    }

    /// Validates a plan name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty()
            || raw.len() > 64
            || !raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ParseError::new(
                "plan name",
                "must be 1-64 characters of [a-z0-9_-]",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its id (`ten_…`).
    pub id: TenantId,
    /// Display name.
    pub name: TenantName,
    /// Active or suspended.
    pub status: TenantStatus,
    /// The plan its features come from.
    pub plan: PlanName,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change of name, status or plan.
    pub updated_at: UnixMillis,
}

const TENANT_COLUMNS: &str = "id, name, status, plan, created_at, updated_at";

fn decode_tenant(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: get_parsed(row, "id", TenantId::parse)?,
        name: get_parsed(row, "name", TenantName::parse)?,
        status: get_parsed(row, "status", TenantStatus::parse)?,
        plan: get_parsed(row, "plan", PlanName::parse)?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// Creates an active tenant on `plan` with a fresh id.
pub async fn create_tenant(
    store: &Store,
    name: &TenantName,
    plan: &PlanName,
) -> Result<Tenant, TenancyError> {
    let mut tx = store.begin_write().await?;
    let tenant = create_tenant_in(&mut tx, name, plan).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// [`create_tenant`] inside the caller's transaction.
pub async fn create_tenant_in(
    tx: &mut WriteTx,
    name: &TenantName,
    plan: &PlanName,
) -> Result<Tenant, TenancyError> {
    let tenant = Tenant {
        id: TenantId::generate(),
        name: name.clone(),
        status: TenantStatus::Active,
        plan: plan.clone(),
        created_at: UnixMillis::now(),
        updated_at: UnixMillis::now(),
    };
    sqlx::query(
        "INSERT INTO tenants (id, name, status, plan, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(tenant.id.as_str())
    .bind(tenant.name.as_str())
    .bind(tenant.status.as_str())
    .bind(tenant.plan.as_str())
    .bind(tenant.created_at.as_i64())
    .execute(tx.conn())
    .await?;
    Ok(Tenant {
        updated_at: tenant.created_at,
        ..tenant
    })
}

/// The tenant with this id, if any.
pub async fn get_tenant(store: &Store, id: &TenantId) -> Result<Option<Tenant>, TenancyError> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row.as_ref().map(decode_tenant).transpose()?)
}

/// Every tenant, oldest first (operator listing).
pub async fn list_tenants(store: &Store) -> Result<Vec<Tenant>, TenancyError> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id");
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await?;
    Ok(rows.iter().map(decode_tenant).collect::<Result<_, _>>()?)
}

/// Tenants, newest first, `limit` per page (clamped to
/// 1..=[`MAX_PAGE_SIZE`]), only those with `status` when given. Pass the
/// previous page's `next_cursor` to continue; pages never skip or repeat a
/// tenant, since the order is the total order (created_at, id).
pub async fn list_tenants_page(
    store: &Store,
    status: Option<TenantStatus>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Tenant>, TenancyError> {
    let mut q = SqlBuf::new(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE 1 = 1"));
    if let Some(status) = status {
        let p = q.arg(Arg::Text(status.as_str().to_owned()));
        q.push(&format!(" AND status = {p}"));
    }
    let limit = q
        .newest_first_page(cursor, limit)
        .map_err(|_| TenancyError::InvalidCursor)?;
    let rows = q.query().fetch_all(store.pool()).await?;
    let items = rows
        .iter()
        .map(decode_tenant)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page_of(items, limit, |t| {
        (t.created_at.as_i64(), t.id.as_str().to_owned())
    }))
}

/// Suspends or re-activates a tenant. Caches of the tenant must be invalidated.
pub async fn set_tenant_status(
    store: &Store,
    id: &TenantId,
    status: TenantStatus,
) -> Result<Tenant, TenancyError> {
    let mut tx = store.begin_write().await?;
    let tenant = set_tenant_status_in(&mut tx, id, status).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// [`set_tenant_status`] inside the caller's transaction.
pub async fn set_tenant_status_in(
    tx: &mut WriteTx,
    id: &TenantId,
    status: TenantStatus,
) -> Result<Tenant, TenancyError> {
    update_tenant(tx.conn(), id, "status", status.as_str()).await
}

/// Moves a tenant to another plan. Caches of the tenant must be invalidated.
pub async fn set_tenant_plan(
    store: &Store,
    id: &TenantId,
    plan: &PlanName,
) -> Result<Tenant, TenancyError> {
    let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
    update_tenant(&mut conn, id, "plan", plan.as_str()).await
}

async fn update_tenant(
    conn: &mut sqlx::AnyConnection,
    id: &TenantId,
    column: &'static str,
    value: &str,
) -> Result<Tenant, TenancyError> {
    let sql = format!(
        "UPDATE tenants SET {column} = $2, updated_at = $3 WHERE id = $1 RETURNING {TENANT_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .bind(value)
        .bind(UnixMillis::now().as_i64())
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => Ok(decode_tenant(&row)?),
        None => Err(TenancyError::TenantNotFound(id.clone())),
    }
}

/// Maps a foreign-key violation on `tenant_id` to [`TenancyError::TenantNotFound`].
fn tenant_fk(err: sqlx::Error, tenant: &TenantId) -> TenancyError {
    match crate::store::classify(&err) {
        Some(Violation::ForeignKey { .. }) => TenancyError::TenantNotFound(tenant.clone()),
        _ => TenancyError::Store(StoreError::Database(err)),
    }
}

#[cfg(test)]
mod tests;

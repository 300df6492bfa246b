//! Custom domains and subdomains that resolve to a tenant.
//!
//! A domain belongs to at most one tenant (it is the primary key). Every write
//! returns a [`DomainChange`] naming everything a resolver cache must drop.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{TenancyError, TenantId, tenant_fk};
use crate::store::{ParseError, Store, StoreError, UnixMillis, WriteTx, get_parsed, per_backend};

/// A host name, lower-cased, without port or trailing dot: 1–253 characters,
/// at least two dot-separated labels of `[a-z0-9-]` (1–63 each, no
/// leading/trailing `-`), whose last label (the TLD) is not all digits (so no
/// IPv4 literal). A bare TLD such as `com`, a single label such as
/// `localhost`, or an address is not a name a tenant can own. (Subdomains of
/// `localhost`, such as `acme.localhost`, stay valid for development.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Validates a domain, folding it to lower case (host names are case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let lower = raw.trim().to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let tld = name.rsplit('.').next().unwrap_or_default();
        let public = name.contains('.') && !tld.bytes().all(|b| b.is_ascii_digit());
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) || !public {
            return Err(ParseError::new(
                "domain",
                format!(
                    "`{}` is not a valid host name (two or more labels, not an IP address)",
                    raw.chars().take(80).collect::<String>()
                ),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The domain named by an HTTP `Host` header (the port, if any, is dropped).
    pub fn from_host_header(host: &str) -> Result<Self, ParseError> {
        let without_port = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        Self::parse(without_port)
    }

    /// The normalised domain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = ParseError;
    fn try_from(raw: String) -> Result<Self, ParseError> {
        Self::parse(&raw)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

/// What a domain write changed, so resolver caches can invalidate every
/// affected key: the domain itself, its previous owner and its new owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainChange {
    /// The domain that was attached, moved or detached.
    pub domain: Domain,
    /// Who owned `domain` before the write (`None`: it was free).
    pub previous_owner: Option<TenantId>,
    /// Who owns it after the write (`None`: detached).
    pub owner: Option<TenantId>,
    /// The domains the acting tenant had before the write (for attach/move the
    /// receiving tenant, for detach the releasing one).
    pub old_domains: Vec<Domain>,
}

async fn domains_of(
    conn: &mut sqlx::AnyConnection,
    tenant: &TenantId,
) -> Result<Vec<Domain>, StoreError> {
    let rows =
        sqlx::query("SELECT domain FROM tenant_domains WHERE tenant_id = $1 ORDER BY domain")
            .bind(tenant.as_str())
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|row| get_parsed(row, "domain", Domain::parse))
        .collect()
}

async fn owner_of(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
    domain: &Domain,
) -> Result<Option<TenantId>, StoreError> {
    // Lock the row on PostgreSQL so the owner we report is the one we replace;
    // SQLite's write transaction already excludes other writers.
    let sql = per_backend(
        store.backend(),
        "SELECT tenant_id FROM tenant_domains WHERE domain = $1",
        "SELECT tenant_id FROM tenant_domains WHERE domain = $1 FOR UPDATE",
    );
    let row = sqlx::query(&sql)
        .bind(domain.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(|r| get_parsed(r, "tenant_id", TenantId::parse))
        .transpose()
}

/// Attaches a free domain to `tenant`. Attaching a domain the tenant already
/// has is a no-op (`previous_owner == owner`); a domain owned by another tenant
/// is refused with [`TenancyError::DomainTaken`].
pub async fn attach_domain(
    store: &Store,
    tenant: &TenantId,
    domain: &Domain,
) -> Result<DomainChange, TenancyError> {
    let mut tx = store.begin_write().await?;
    let change = attach_domain_in(store, &mut tx, tenant, domain).await?;
    tx.commit().await?;
    Ok(change)
}

/// [`attach_domain`] inside the caller's transaction (an error leaves the
/// transaction to be rolled back).
pub async fn attach_domain_in(
    store: &Store,
    tx: &mut WriteTx,
    tenant: &TenantId,
    domain: &Domain,
) -> Result<DomainChange, TenancyError> {
    let old_domains = domains_of(tx.conn(), tenant).await?;
    sqlx::query(
        "INSERT INTO tenant_domains (domain, tenant_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (domain) DO NOTHING",
    )
    .bind(domain.as_str())
    .bind(tenant.as_str())
    .bind(UnixMillis::now().as_i64())
    .execute(tx.conn())
    .await
    .map_err(|e| tenant_fk(e, tenant))?;
    let owner = owner_of(store, tx.conn(), domain).await?;
    match owner {
        Some(owner) if owner != *tenant => Err(TenancyError::DomainTaken {
            domain: domain.clone(),
            owner,
        }),
        _ => {
            let previous_owner = old_domains.contains(domain).then(|| tenant.clone());
            Ok(DomainChange {
                domain: domain.clone(),
                previous_owner,
                owner: Some(tenant.clone()),
                old_domains,
            })
        }
    }
}

/// Attaches `domain` to `to`, taking it from its current owner if there is one
/// (an explicit operator action). The previous owner is reported so its
/// caches can be invalidated.
pub async fn move_domain(
    store: &Store,
    domain: &Domain,
    to: &TenantId,
) -> Result<DomainChange, TenancyError> {
    let mut tx = store.begin_write().await?;
    let change = move_domain_in(store, &mut tx, domain, to).await?;
    tx.commit().await?;
    Ok(change)
}

/// [`move_domain`] inside the caller's transaction.
pub async fn move_domain_in(
    store: &Store,
    tx: &mut WriteTx,
    domain: &Domain,
    to: &TenantId,
) -> Result<DomainChange, TenancyError> {
    let old_domains = domains_of(tx.conn(), to).await?;
    let previous_owner = owner_of(store, tx.conn(), domain).await?;
    sqlx::query(
        "INSERT INTO tenant_domains (domain, tenant_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (domain) DO UPDATE SET tenant_id = excluded.tenant_id, \
                                            created_at = excluded.created_at",
    )
    .bind(domain.as_str())
    .bind(to.as_str())
    .bind(UnixMillis::now().as_i64())
    .execute(tx.conn())
    .await
    .map_err(|e| tenant_fk(e, to))?;
    Ok(DomainChange {
        domain: domain.clone(),
        previous_owner,
        owner: Some(to.clone()),
        old_domains,
    })
}

/// Detaches `domain` from `tenant`. `None` if the tenant did not have it
/// (another tenant's domain is never touched).
pub async fn detach_domain(
    store: &Store,
    tenant: &TenantId,
    domain: &Domain,
) -> Result<Option<DomainChange>, TenancyError> {
    let mut tx = store.begin_write().await?;
    let change = detach_domain_in(&mut tx, tenant, domain).await?;
    tx.commit().await?;
    Ok(change)
}

/// [`detach_domain`] inside the caller's transaction.
pub async fn detach_domain_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    domain: &Domain,
) -> Result<Option<DomainChange>, TenancyError> {
    let old_domains = domains_of(tx.conn(), tenant).await?;
    let gone = sqlx::query("DELETE FROM tenant_domains WHERE domain = $1 AND tenant_id = $2")
        .bind(domain.as_str())
        .bind(tenant.as_str())
        .execute(tx.conn())
        .await?;
    Ok((gone.rows_affected() == 1).then(|| DomainChange {
        domain: domain.clone(),
        previous_owner: Some(tenant.clone()),
        owner: None,
        old_domains,
    }))
}

/// The tenant's domains, sorted.
pub async fn list_domains(store: &Store, tenant: &TenantId) -> Result<Vec<Domain>, TenancyError> {
    let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
    Ok(domains_of(&mut conn, tenant).await?)
}

/// The tenant a `Host` header resolves to. One indexed lookup; an unparsable
/// host resolves to nobody rather than erroring.
pub async fn resolve_domain(store: &Store, host: &str) -> Result<Option<TenantId>, TenancyError> {
    let Ok(domain) = Domain::from_host_header(host) else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT tenant_id FROM tenant_domains WHERE domain = $1")
        .bind(domain.as_str())
        .fetch_optional(store.pool())
        .await?;
    Ok(row
        .as_ref()
        .map(|r| get_parsed(r, "tenant_id", TenantId::parse))
        .transpose()?)
}

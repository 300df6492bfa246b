//! The operator's writes to tenancy: every one goes through
//! [`Tenancy::write`], which commits the write and its audit event in one
//! transaction, then evicts what the write changed from the tenant cache
//! (this instance, Redis, the other instances).
//!
//! Must never: commit a write without its audit event (or an event without
//! its write), or leave a committed change cached: the eviction runs even if
//! the caller's future is dropped after the commit.

use crate::audit::{self, Actor, AuditError};
use crate::store::{ApiKeyId, Store, TenantId, WriteTx};

use super::{
    Domain, DomainChange, Invalidation, IssuedApiKey, PlanName, RevokedApiKey, TenancyError,
    Tenant, TenantName, TenantResolver, TenantStatus,
};

/// One operator write.
#[derive(Debug, Clone)]
pub enum OperatorWrite {
    /// A new active tenant.
    CreateTenant { name: TenantName, plan: PlanName },
    /// Suspend or re-activate a tenant.
    SetStatus {
        tenant: TenantId,
        status: TenantStatus,
    },
    /// Attach a free domain to a tenant.
    AttachDomain { tenant: TenantId, domain: Domain },
    /// Give a domain to `to`, taking it from its owner if it has one.
    MoveDomain { domain: Domain, to: TenantId },
    /// Detach one of a tenant's domains.
    DetachDomain { tenant: TenantId, domain: Domain },
    /// Issue an API key.
    IssueKey { tenant: TenantId, label: String },
    /// Revoke one of a tenant's active keys.
    RevokeKey { tenant: TenantId, key: ApiKeyId },
}

/// What an [`OperatorWrite`] wrote (committed, with its audit event).
#[derive(Debug)]
pub enum Written {
    /// The created or changed tenant.
    Tenant(Tenant),
    /// The domain change; `None` when a detach found no such domain (then
    /// nothing was written, and nothing audited).
    Domain(Option<DomainChange>),
    /// The new key; its secret is here only.
    IssuedKey(IssuedApiKey),
    /// The revoked key; `None` when the tenant had no such active key
    /// (nothing written, nothing audited).
    RevokedKey(Option<RevokedApiKey>),
}

/// Why an operator write failed. Nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The audit event of a write.
struct Event {
    action: &'static str,
    tenant: TenantId,
    details: serde_json::Value,
}

/// The tenancy service: operator writes, audited and evicted.
#[derive(Clone)]
pub struct Tenancy {
    store: Store,
    resolver: TenantResolver,
}

impl Tenancy {
    /// A service over the database and the tenant cache.
    pub fn new(store: Store, resolver: TenantResolver) -> Tenancy {
        Tenancy { store, resolver }
    }

    /// Runs `write` for `actor`: the write and its audit event commit in one
    /// transaction (a failed audit insert rolls the write back), then the
    /// cache entries the write changed are evicted everywhere. The eviction
    /// is taken as a guard before the commit, so it happens even if this
    /// future is dropped during or after the commit; a failed L2 tombstone
    /// or broadcast is logged (other instances expire the entry by TTL).
    pub async fn write(&self, actor: &Actor, write: OperatorWrite) -> Result<Written, WriteError> {
        let mut tx = self.store.begin_write().await.map_err(TenancyError::from)?;
        let (written, event, invalidation) = self.apply(&mut tx, &write).await?;
        // Taken before the audit insert and the commit: from here on, a
        // dropped future still evicts what the write may have changed.
        let evict = EvictWhenDone {
            resolver: self.resolver.clone(),
            invalidation: Some(invalidation),
        };
        if let Some(event) = event {
            audit::record_in(
                &mut tx,
                actor,
                event.action,
                Some(&event.tenant),
                event.details,
            )
            .await?;
        }
        tx.commit().await.map_err(TenancyError::from)?;
        evict.now().await;
        Ok(written)
    }

    /// The write's statements, in `tx`: what it wrote, its audit event
    /// (`None` when nothing was written), and what the cache must drop.
    async fn apply(
        &self,
        tx: &mut WriteTx,
        write: &OperatorWrite,
    ) -> Result<(Written, Option<Event>, Invalidation), TenancyError> {
        Ok(match write {
            OperatorWrite::CreateTenant { name, plan } => {
                let tenant = super::create_tenant_in(tx, name, plan).await?;
                let event = Event {
                    action: "tenant.created",
                    tenant: tenant.id.clone(),
                    details: serde_json::json!({"name": tenant.name.as_str(), "plan": tenant.plan.as_str()}),
                };
                // A new tenant has nothing cached.
                (
                    Written::Tenant(tenant),
                    Some(event),
                    Invalidation::default(),
                )
            }
            OperatorWrite::SetStatus { tenant, status } => {
                let changed = super::set_tenant_status_in(tx, tenant, *status).await?;
                let event = Event {
                    action: "tenant.status_changed",
                    tenant: tenant.clone(),
                    details: serde_json::json!({"status": status.as_str()}),
                };
                (
                    Written::Tenant(changed),
                    Some(event),
                    tenant_entries(tenant),
                )
            }
            OperatorWrite::AttachDomain { tenant, domain } => {
                let change = super::attach_domain_in(&self.store, tx, tenant, domain).await?;
                let event = domain_event("domain.attached", tenant, domain);
                let invalidation = Invalidation::from(&change);
                (Written::Domain(Some(change)), Some(event), invalidation)
            }
            OperatorWrite::MoveDomain { domain, to } => {
                let change = super::move_domain_in(&self.store, tx, domain, to).await?;
                let event = domain_event("domain.moved", to, domain);
                let invalidation = Invalidation::from(&change);
                (Written::Domain(Some(change)), Some(event), invalidation)
            }
            OperatorWrite::DetachDomain { tenant, domain } => {
                let change = super::detach_domain_in(tx, tenant, domain).await?;
                let event = change
                    .is_some()
                    .then(|| domain_event("domain.detached", tenant, domain));
                let invalidation = change.as_ref().map(Invalidation::from).unwrap_or_default();
                (Written::Domain(change), event, invalidation)
            }
            OperatorWrite::IssueKey { tenant, label } => {
                let issued = super::issue_api_key_in(tx, tenant, label).await?;
                let event = Event {
                    action: "api_key.issued",
                    tenant: tenant.clone(),
                    details: serde_json::json!({"key_id": issued.info.id, "prefix": issued.info.prefix, "label": label}),
                };
                // A new key has nothing cached (an unknown key's negative
                // entry is for a hash no one could know before now).
                (
                    Written::IssuedKey(issued),
                    Some(event),
                    Invalidation::default(),
                )
            }
            OperatorWrite::RevokeKey { tenant, key } => {
                let revoked = super::revoke_api_key_in(tx, tenant, key).await?;
                let event = revoked.is_some().then(|| Event {
                    action: "api_key.revoked",
                    tenant: tenant.clone(),
                    details: serde_json::json!({"key_id": key}),
                });
                let invalidation = Invalidation {
                    api_keys: revoked.iter().map(|r| r.hash.clone()).collect(),
                    ..Invalidation::default()
                };
                (Written::RevokedKey(revoked), event, invalidation)
            }
        })
    }
}

fn domain_event(action: &'static str, tenant: &TenantId, domain: &Domain) -> Event {
    Event {
        action,
        tenant: tenant.clone(),
        details: serde_json::json!({"domain": domain.as_str()}),
    }
}

/// Every cached entry of `tenant` (its keys, domains and status).
fn tenant_entries(tenant: &TenantId) -> Invalidation {
    Invalidation {
        tenants: vec![tenant.clone()],
        ..Invalidation::default()
    }
}

/// Evicts an invalidation when [`now`](Self::now) finishes, or, if the
/// future running it is dropped first, on drop: locally at once, and L2
/// plus the broadcast in a spawned task.
struct EvictWhenDone {
    resolver: TenantResolver,
    invalidation: Option<Invalidation>,
}

impl EvictWhenDone {
    async fn now(mut self) {
        if let Some(inv) = &self.invalidation
            && let Err(e) = self.resolver.invalidate(inv).await
        {
            tracing::warn!(
                "tenant cache invalidation incomplete (other instances expire by TTL): {e}"
            );
        }
        self.invalidation = None;
    }
}

impl Drop for EvictWhenDone {
    fn drop(&mut self) {
        let Some(inv) = self.invalidation.take().filter(|inv| !inv.is_empty()) else {
            return;
        };
        self.resolver.evict_local(&inv);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let resolver = self.resolver.clone();
        runtime.spawn(async move {
            if let Err(e) = resolver.invalidate(&inv).await {
                tracing::warn!(
                    "tenant cache invalidation incomplete (other instances expire by TTL): {e}"
                );
            }
        });
    }
}

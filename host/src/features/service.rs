//! The operator's writes to features: each one goes through
//! [`Features::write`], which commits the write and its audit event in one
//! transaction, then reloads this instance's snapshot and tells the others.
//!
//! Must never: commit a write without its audit event, or skip the reload
//! of a committed write (it runs even if the caller's future is dropped).

use std::collections::BTreeMap;

use super::model::{Feature, FeatureKey, FeatureKind, FeatureValue, KillSwitch, Override};
use super::{Features, FeaturesError, store};
use crate::audit::{self, Actor};
use crate::store::domain::ClientText;
use crate::store::{ParseError, TenantId, UnixMillis, WriteTx};
use crate::tenancy::PlanName;

/// The most grants one plan may carry.
pub const MAX_GRANTS: usize = 200;

/// One operator write. Values are the API's JSON, checked here against the
/// feature's kind.
#[derive(Debug, Clone)]
pub enum FeatureWrite {
    /// Define a feature, or change an existing one's default and description.
    PutFeature {
        key: FeatureKey,
        kind: FeatureKind,
        default: serde_json::Value,
        description: String,
    },
    /// Create a plan or replace its grants.
    PutPlan {
        plan: PlanName,
        grants: BTreeMap<String, serde_json::Value>,
    },
    /// Move a tenant to a defined plan.
    SetTenantPlan { tenant: TenantId, plan: PlanName },
    /// Set a tenant's override of a feature.
    PutOverride {
        tenant: TenantId,
        key: FeatureKey,
        value: serde_json::Value,
        reason: String,
        expires_at: Option<UnixMillis>,
    },
    /// Remove a tenant's override.
    DeleteOverride { tenant: TenantId, key: FeatureKey },
    /// Pull a feature's kill switch.
    PutKillSwitch { key: FeatureKey, reason: String },
    /// Release a feature's kill switch.
    DeleteKillSwitch { key: FeatureKey },
}

/// What a [`FeatureWrite`] wrote (committed, audited).
#[derive(Debug, Clone)]
pub enum FeatureWritten {
    /// The feature as stored now.
    Feature(Feature),
    /// The plan and its grants.
    Plan {
        plan: PlanName,
        grants: BTreeMap<FeatureKey, FeatureValue>,
    },
    /// The tenant is on this plan now.
    TenantPlan { tenant: TenantId, plan: PlanName },
    /// The override as stored.
    Override(Override),
    /// The kill switch as stored.
    KillSwitch(KillSwitch),
    /// A delete: `false` when there was nothing to delete (nothing audited).
    Deleted(bool),
}

/// The audit event of a write.
struct Event {
    action: &'static str,
    tenant: Option<TenantId>,
    details: serde_json::Value,
}

fn reason_text(raw: &str) -> Result<String, FeaturesError> {
    Ok(ClientText::parse("reason", raw, 500)?.as_str().to_owned())
}

impl Features {
    /// Runs `write` for `actor`: the write and its audit event commit in one
    /// transaction, then this instance's snapshot is reloaded and the other
    /// instances are told (also if this future is dropped after the commit
    /// started).
    pub async fn write(
        &self,
        actor: &Actor,
        write: FeatureWrite,
    ) -> Result<FeatureWritten, FeaturesError> {
        let Some(store) = &self.inner.store else {
            return Err(FeaturesError::Store(crate::store::StoreError::Corrupt {
                column: "features",
                reason: "a fixed feature snapshot takes no writes".into(),
            }));
        };
        let mut tx = store.begin_write().await?;
        let (written, event) = self.apply(&mut tx, actor, write).await?;
        let reload = ReloadWhenDone(Some(self.clone()));
        if let Some(event) = event {
            audit::record_in(
                &mut tx,
                actor,
                event.action,
                event.tenant.as_ref(),
                event.details,
            )
            .await?;
        }
        tx.commit().await?;
        reload.now().await;
        Ok(written)
    }

    async fn apply(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        write: FeatureWrite,
    ) -> Result<(FeatureWritten, Option<Event>), FeaturesError> {
        Ok(match write {
            FeatureWrite::PutFeature {
                key,
                kind,
                default,
                description,
            } => {
                let default = value_of(&key, kind, &default)?;
                let description = if description.is_empty() {
                    String::new()
                } else {
                    ClientText::parse("description", &description, 500)?
                        .as_str()
                        .to_owned()
                };
                let existing = store::kind_in(tx, &key).await?;
                if let Some(existing) = existing
                    && existing != kind
                {
                    return Err(FeaturesError::KindChange {
                        key: key.to_string(),
                        existing: existing.as_str(),
                    });
                }
                let builtin = self
                    .snapshot()
                    .features
                    .get(key.as_str())
                    .is_some_and(|f| f.builtin);
                let feature = Feature {
                    key,
                    kind,
                    default,
                    description,
                    builtin,
                };
                store::put_feature_in(tx, &feature).await?;
                let event = Event {
                    action: "feature.defined",
                    tenant: None,
                    details: serde_json::json!({
                        "key": feature.key.as_str(), "kind": kind.as_str(),
                        "default": feature.default, "created": existing.is_none(),
                    }),
                };
                (FeatureWritten::Feature(feature), Some(event))
            }
            FeatureWrite::PutPlan { plan, grants } => {
                if grants.len() > MAX_GRANTS {
                    return Err(ParseError::new(
                        "grants",
                        format!("a plan grants at most {MAX_GRANTS} features"),
                    )
                    .into());
                }
                let mut checked = BTreeMap::new();
                for (raw, value) in &grants {
                    let key = FeatureKey::parse(raw)?;
                    let kind = store::kind_in(tx, &key)
                        .await?
                        .ok_or_else(|| FeaturesError::FeatureNotFound(key.to_string()))?;
                    let value = value_of(&key, kind, value)?;
                    checked.insert(key, value);
                }
                store::put_plan_in(tx, plan.as_str(), &checked).await?;
                let event = Event {
                    action: "plan.saved",
                    tenant: None,
                    details: serde_json::json!({"plan": plan.as_str(), "grants": checked
                        .iter().map(|(k, v)| (k.as_str().to_owned(), v.to_json()))
                        .collect::<serde_json::Map<_, _>>()}),
                };
                (
                    FeatureWritten::Plan {
                        plan,
                        grants: checked,
                    },
                    Some(event),
                )
            }
            FeatureWrite::SetTenantPlan { tenant, plan } => {
                if !store::plan_exists_in(tx, plan.as_str()).await? {
                    return Err(FeaturesError::PlanNotFound(plan.as_str().to_owned()));
                }
                if !store::set_tenant_plan_in(tx, &tenant, plan.as_str()).await? {
                    return Err(FeaturesError::TenantNotFound(tenant));
                }
                let event = Event {
                    action: "tenant.plan_changed",
                    tenant: Some(tenant.clone()),
                    details: serde_json::json!({"plan": plan.as_str()}),
                };
                (FeatureWritten::TenantPlan { tenant, plan }, Some(event))
            }
            FeatureWrite::PutOverride {
                tenant,
                key,
                value,
                reason,
                expires_at,
            } => {
                let reason = reason_text(&reason)?;
                let now = self.now();
                if expires_at.is_some_and(|at| at <= now) {
                    return Err(ParseError::new("expires_at", "must be in the future").into());
                }
                if !store::tenant_exists_in(tx, &tenant).await? {
                    return Err(FeaturesError::TenantNotFound(tenant));
                }
                let kind = store::kind_in(tx, &key)
                    .await?
                    .ok_or_else(|| FeaturesError::FeatureNotFound(key.to_string()))?;
                let o = Override {
                    value: value_of(&key, kind, &value)?,
                    reason,
                    actor: actor.as_str().to_owned(),
                    expires_at,
                    created_at: now,
                };
                store::put_override_in(tx, &tenant, &key, &o).await?;
                let event = Event {
                    action: "feature.override_set",
                    tenant: Some(tenant),
                    details: serde_json::json!({
                        "key": key.as_str(), "value": o.value, "reason": o.reason,
                        "expires_at": o.expires_at,
                    }),
                };
                (FeatureWritten::Override(o), Some(event))
            }
            FeatureWrite::DeleteOverride { tenant, key } => {
                if !store::tenant_exists_in(tx, &tenant).await? {
                    return Err(FeaturesError::TenantNotFound(tenant));
                }
                let deleted = store::delete_override_in(tx, &tenant, &key).await?;
                let event = deleted.then(|| Event {
                    action: "feature.override_removed",
                    tenant: Some(tenant),
                    details: serde_json::json!({"key": key.as_str()}),
                });
                (FeatureWritten::Deleted(deleted), event)
            }
            FeatureWrite::PutKillSwitch { key, reason } => {
                let reason = reason_text(&reason)?;
                if store::kind_in(tx, &key).await?.is_none() {
                    return Err(FeaturesError::FeatureNotFound(key.to_string()));
                }
                let kill = KillSwitch {
                    key,
                    reason,
                    actor: actor.as_str().to_owned(),
                    created_at: self.now(),
                };
                store::put_kill_switch_in(tx, &kill).await?;
                let event = Event {
                    action: "feature.kill_switch_pulled",
                    tenant: None,
                    details: serde_json::json!({"key": kill.key.as_str(), "reason": kill.reason}),
                };
                (FeatureWritten::KillSwitch(kill), Some(event))
            }
            FeatureWrite::DeleteKillSwitch { key } => {
                let deleted = store::delete_kill_switch_in(tx, &key).await?;
                let event = deleted.then(|| Event {
                    action: "feature.kill_switch_released",
                    tenant: None,
                    details: serde_json::json!({"key": key.as_str()}),
                });
                (FeatureWritten::Deleted(deleted), event)
            }
        })
    }
}

fn value_of(
    key: &FeatureKey,
    kind: FeatureKind,
    json: &serde_json::Value,
) -> Result<FeatureValue, FeaturesError> {
    FeatureValue::from_json(kind, json).map_err(|source| FeaturesError::KindMismatch {
        key: key.to_string(),
        source,
    })
}

/// Reloads and broadcasts when [`now`](Self::now) runs, or, if the future
/// running it is dropped first, in a spawned task.
struct ReloadWhenDone(Option<Features>);

impl ReloadWhenDone {
    async fn now(mut self) {
        if let Some(features) = self.0.take() {
            features.changed().await;
        }
    }
}

impl Drop for ReloadWhenDone {
    fn drop(&mut self) {
        let Some(features) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { features.changed().await });
        }
    }
}

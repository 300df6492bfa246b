//! The features tables (migration 0006): the whole-snapshot load, built-in
//! registration, and the statements of each operator write (run inside the
//! caller's [`WriteTx`]).

use std::collections::BTreeMap;

use sqlx::any::AnyRow;

use super::FeaturesError;
use super::model::{Feature, FeatureKey, FeatureKind, FeatureValue, KillSwitch, Override};
use super::snapshot::{PlanGrants, Snapshot};
use crate::store::{
    Store, StoreError, TenantId, UnixMillis, WriteTx, get_bool, get_opt_i64, get_parsed, get_text,
    get_time,
};

fn corrupt(column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        reason: reason.to_string(),
    }
}

/// A stored JSON value as a value of `kind`.
fn stored_value(
    row: &AnyRow,
    column: &'static str,
    kind: FeatureKind,
) -> Result<FeatureValue, StoreError> {
    let raw = get_text(row, column)?;
    let json: serde_json::Value = serde_json::from_str(&raw).map_err(|e| corrupt(column, e))?;
    FeatureValue::from_json(kind, &json).map_err(|e| corrupt(column, e))
}

fn value_text(value: FeatureValue) -> String {
    value.to_json().to_string()
}

/// Everything evaluation needs, read in one go. A grant, override or kill
/// switch whose value no longer fits its feature's kind is skipped with a
/// warning rather than failing the load (evaluation must keep working).
pub async fn load(store: &Store) -> Result<Snapshot, StoreError> {
    let pool = store.pool();
    let mut snapshot = Snapshot::default();
    let rows = sqlx::query("SELECT key, kind, default_value, description, builtin FROM features")
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let kind = get_parsed(row, "kind", FeatureKind::parse)?;
        let feature = Feature {
            key: get_parsed(row, "key", FeatureKey::parse)?,
            kind,
            default: stored_value(row, "default_value", kind)?,
            description: get_text(row, "description")?,
            builtin: get_bool(row, "builtin")?,
        };
        snapshot
            .features
            .insert(feature.key.as_str().to_owned(), feature);
    }
    let kind_of = |s: &Snapshot, key: &str| s.kind_of(key);

    let rows = sqlx::query("SELECT name FROM plans")
        .fetch_all(pool)
        .await?;
    for row in &rows {
        snapshot
            .plans
            .insert(get_text(row, "name")?, PlanGrants::default());
    }
    let rows = sqlx::query("SELECT plan, feature_key, value FROM plan_grants")
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let key = get_text(row, "feature_key")?;
        let Some(kind) = kind_of(&snapshot, &key) else {
            continue;
        };
        match stored_value(row, "value", kind) {
            Ok(value) => {
                let plan = get_text(row, "plan")?;
                snapshot
                    .plans
                    .entry(plan)
                    .or_default()
                    .grants
                    .insert(key, value);
            }
            Err(e) => tracing::warn!("features: skipping a plan grant of {key}: {e}"),
        }
    }
    let rows = sqlx::query("SELECT t.id, t.plan FROM tenants t JOIN plans p ON p.name = t.plan")
        .fetch_all(pool)
        .await?;
    for row in &rows {
        snapshot.tenant_plans.insert(
            get_parsed(row, "id", TenantId::parse)?,
            get_text(row, "plan")?,
        );
    }
    let rows = sqlx::query(
        "SELECT tenant_id, feature_key, value, reason, actor, expires_at, created_at \
         FROM feature_overrides",
    )
    .fetch_all(pool)
    .await?;
    for row in &rows {
        let key = get_text(row, "feature_key")?;
        let Some(kind) = kind_of(&snapshot, &key) else {
            continue;
        };
        match decode_override(row, kind) {
            Ok(o) => {
                let tenant = get_parsed(row, "tenant_id", TenantId::parse)?;
                snapshot.overrides.entry(tenant).or_default().insert(key, o);
            }
            Err(e) => tracing::warn!("features: skipping an override of {key}: {e}"),
        }
    }
    let rows = sqlx::query("SELECT feature_key, reason, actor, created_at FROM kill_switches")
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let kill = decode_kill_switch(row)?;
        snapshot
            .kill_switches
            .insert(kill.key.as_str().to_owned(), kill);
    }
    Ok(snapshot)
}

fn decode_override(row: &AnyRow, kind: FeatureKind) -> Result<Override, StoreError> {
    Ok(Override {
        value: stored_value(row, "value", kind)?,
        reason: get_text(row, "reason")?,
        actor: get_text(row, "actor")?,
        expires_at: get_opt_i64(row, "expires_at")?.map(UnixMillis),
        created_at: get_time(row, "created_at")?,
    })
}

fn decode_kill_switch(row: &AnyRow) -> Result<KillSwitch, StoreError> {
    Ok(KillSwitch {
        key: get_parsed(row, "feature_key", FeatureKey::parse)?,
        reason: get_text(row, "reason")?,
        actor: get_text(row, "actor")?,
        created_at: get_time(row, "created_at")?,
    })
}

/// Inserts the built-in features that are not stored yet. An existing row
/// (perhaps with an operator's default) is left as it is.
pub async fn register_builtins(store: &Store, builtins: &[Feature]) -> Result<(), StoreError> {
    let now = UnixMillis::now().as_i64();
    for feature in builtins {
        sqlx::query(
            "INSERT INTO features (key, kind, default_value, description, builtin, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (key) DO NOTHING",
        )
        .bind(feature.key.as_str())
        .bind(feature.kind.as_str())
        .bind(value_text(feature.default))
        .bind(feature.description.as_str())
        .bind(true)
        .bind(now)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

/// The kind of a stored feature, in `tx`.
pub(super) async fn kind_in(
    tx: &mut WriteTx,
    key: &FeatureKey,
) -> Result<Option<FeatureKind>, FeaturesError> {
    let row = sqlx::query("SELECT kind FROM features WHERE key = $1")
        .bind(key.as_str())
        .fetch_optional(tx.conn())
        .await
        .map_err(StoreError::from)?;
    Ok(row
        .as_ref()
        .map(|r| get_parsed(r, "kind", FeatureKind::parse))
        .transpose()?)
}

/// Creates or updates a feature definition (an existing one keeps its kind
/// and its built-in mark).
pub(super) async fn put_feature_in(tx: &mut WriteTx, f: &Feature) -> Result<(), FeaturesError> {
    let now = UnixMillis::now().as_i64();
    sqlx::query(
        "INSERT INTO features (key, kind, default_value, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (key) DO UPDATE SET default_value = excluded.default_value, \
         description = excluded.description, updated_at = excluded.updated_at",
    )
    .bind(f.key.as_str())
    .bind(f.kind.as_str())
    .bind(value_text(f.default))
    .bind(f.description.as_str())
    .bind(now)
    .execute(tx.conn())
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// Replaces a plan's grants (creating the plan if new).
pub(super) async fn put_plan_in(
    tx: &mut WriteTx,
    plan: &str,
    grants: &BTreeMap<FeatureKey, FeatureValue>,
) -> Result<(), FeaturesError> {
    let now = UnixMillis::now().as_i64();
    let exec = |e: sqlx::Error| FeaturesError::Store(StoreError::from(e));
    sqlx::query(
        "INSERT INTO plans (name, created_at, updated_at) VALUES ($1, $2, $2) \
         ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at",
    )
    .bind(plan)
    .bind(now)
    .execute(tx.conn())
    .await
    .map_err(exec)?;
    sqlx::query("DELETE FROM plan_grants WHERE plan = $1")
        .bind(plan)
        .execute(tx.conn())
        .await
        .map_err(exec)?;
    for (key, value) in grants {
        sqlx::query("INSERT INTO plan_grants (plan, feature_key, value) VALUES ($1, $2, $3)")
            .bind(plan)
            .bind(key.as_str())
            .bind(value_text(*value))
            .execute(tx.conn())
            .await
            .map_err(exec)?;
    }
    Ok(())
}

/// Whether a plan is defined, in `tx`.
pub(super) async fn plan_exists_in(tx: &mut WriteTx, plan: &str) -> Result<bool, FeaturesError> {
    exists_in(tx, "SELECT name FROM plans WHERE name = $1", plan).await
}

/// Whether `sql` (one `$1` parameter) finds a row, in `tx`.
async fn exists_in(tx: &mut WriteTx, sql: &str, arg: &str) -> Result<bool, FeaturesError> {
    let row = sqlx::query(sql)
        .bind(arg)
        .fetch_optional(tx.conn())
        .await
        .map_err(StoreError::from)?;
    Ok(row.is_some())
}

/// Moves a tenant to `plan`; `false` when there is no such tenant.
pub(super) async fn set_tenant_plan_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    plan: &str,
) -> Result<bool, FeaturesError> {
    let done = sqlx::query("UPDATE tenants SET plan = $2, updated_at = $3 WHERE id = $1")
        .bind(tenant.as_str())
        .bind(plan)
        .bind(UnixMillis::now().as_i64())
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    Ok(done.rows_affected() == 1)
}

/// Whether a tenant exists, in `tx`.
pub(super) async fn tenant_exists_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
) -> Result<bool, FeaturesError> {
    exists_in(tx, "SELECT id FROM tenants WHERE id = $1", tenant.as_str()).await
}

/// Sets (or replaces) a tenant's override of `key`.
pub(super) async fn put_override_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    key: &FeatureKey,
    o: &Override,
) -> Result<(), FeaturesError> {
    sqlx::query(
        "INSERT INTO feature_overrides (tenant_id, feature_key, value, reason, actor, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, feature_key) DO UPDATE SET value = excluded.value, \
         reason = excluded.reason, actor = excluded.actor, expires_at = excluded.expires_at, \
         created_at = excluded.created_at",
    )
    .bind(tenant.as_str())
    .bind(key.as_str())
    .bind(value_text(o.value))
    .bind(o.reason.as_str())
    .bind(o.actor.as_str())
    .bind(o.expires_at.map(UnixMillis::as_i64))
    .bind(o.created_at.as_i64())
    .execute(tx.conn())
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// Removes a tenant's override of `key`; `false` when there was none.
pub(super) async fn delete_override_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    key: &FeatureKey,
) -> Result<bool, FeaturesError> {
    let done =
        sqlx::query("DELETE FROM feature_overrides WHERE tenant_id = $1 AND feature_key = $2")
            .bind(tenant.as_str())
            .bind(key.as_str())
            .execute(tx.conn())
            .await
            .map_err(StoreError::from)?;
    Ok(done.rows_affected() > 0)
}

/// Pulls (or re-pulls, with a new reason) the kill switch of `key`.
pub(super) async fn put_kill_switch_in(
    tx: &mut WriteTx,
    kill: &KillSwitch,
) -> Result<(), FeaturesError> {
    sqlx::query(
        "INSERT INTO kill_switches (feature_key, reason, actor, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (feature_key) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, \
         created_at = excluded.created_at",
    )
    .bind(kill.key.as_str())
    .bind(kill.reason.as_str())
    .bind(kill.actor.as_str())
    .bind(kill.created_at.as_i64())
    .execute(tx.conn())
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

/// Releases the kill switch of `key`; `false` when none was pulled.
pub(super) async fn delete_kill_switch_in(
    tx: &mut WriteTx,
    key: &FeatureKey,
) -> Result<bool, FeaturesError> {
    let done = sqlx::query("DELETE FROM kill_switches WHERE feature_key = $1")
        .bind(key.as_str())
        .execute(tx.conn())
        .await
        .map_err(StoreError::from)?;
    Ok(done.rows_affected() > 0)
}

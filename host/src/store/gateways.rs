//! Tenant gateway settings, stored as the caller gives them.
//!
//! Plain persistence: credentials and webhook secrets arrive already encrypted
//! ([`Ciphertext`], with the vault's `key_id` for rotation) and leave the same
//! way; `masked` is the display-safe JSON the API may return. This module never
//! sees plaintext secrets and never validates credentials — the `gateways`
//! capability does both before calling [`upsert`].

use std::fmt;

use sqlx::any::AnyRow;

use super::{
    Backend, Currency, ProviderId, Store, StoreError, TenantId, UnixMillis, WriteTx, get_bool,
    get_bytes, get_i64, get_json, get_opt_bytes, get_parsed, get_text, get_time,
};

/// Encrypted bytes. `Debug` shows only the length, so ciphertext never lands in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext(pub Vec<u8>);

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

/// What the caller stores for one (tenant, provider).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettingsWrite {
    /// The provider these settings configure.
    pub provider: ProviderId,
    /// Routing order: lower runs first.
    pub priority: i64,
    /// Currencies this gateway may take for the tenant.
    pub currencies: Vec<Currency>,
    /// Whether routing may use it.
    pub enabled: bool,
    /// Encrypted credentials (JSON before encryption; the vault decides).
    pub credentials: Ciphertext,
    /// Encrypted webhook signing secret, if the provider uses one.
    pub webhook_secret: Option<Ciphertext>,
    /// The vault key that encrypted both ciphertexts.
    pub key_id: String,
    /// Display-safe view of the credentials (e.g. `{"secret_key": "sk_…4242"}`).
    pub masked: serde_json::Value,
}

/// Stored settings for one (tenant, provider).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettingsRecord {
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The settings as last written.
    pub settings: GatewaySettingsWrite,
    /// When the settings were first saved.
    pub created_at: UnixMillis,
    /// When they were last replaced.
    pub updated_at: UnixMillis,
}

const COLUMNS: &str = "tenant_id, provider, priority, currencies, enabled, credentials_ciphertext, \
     webhook_secret_ciphertext, key_id, masked, created_at, updated_at";

fn decode(row: &AnyRow) -> Result<GatewaySettingsRecord, StoreError> {
    let currencies = get_parsed(row, "currencies", |raw| {
        serde_json::from_str::<Vec<Currency>>(raw)
    })?;
    let priority = get_i64(row, "priority")?;
    Ok(GatewaySettingsRecord {
        tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
        settings: GatewaySettingsWrite {
            provider: get_parsed(row, "provider", ProviderId::parse)?,
            priority,
            currencies,
            enabled: get_bool(row, "enabled")?,
            credentials: Ciphertext(get_bytes(row, "credentials_ciphertext")?),
            webhook_secret: get_opt_bytes(row, "webhook_secret_ciphertext")?.map(Ciphertext),
            key_id: get_text(row, "key_id")?,
            masked: get_json(row, "masked")?,
        },
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// Creates or replaces the settings of (`tenant`, `settings.provider`),
/// keeping the original `created_at`.
pub async fn upsert(
    store: &Store,
    tenant: &TenantId,
    settings: &GatewaySettingsWrite,
) -> Result<GatewaySettingsRecord, StoreError> {
    let mut tx = store.begin_write().await?;
    let record = upsert_in(&mut tx, tenant, settings).await?;
    tx.commit().await?;
    Ok(record)
}

/// [`upsert`], refused (`Ok(None)`, nothing written) when it would give
/// `tenant` more than `max` gateways: the others are counted in the write
/// transaction, so concurrent saves of new providers cannot together pass
/// the limit. Replacing a provider already saved never counts against it.
/// On PostgreSQL the tenant's row is locked for the count (saves of one
/// tenant queue; other tenants' do not); SQLite's write lock serialises
/// them anyway.
pub async fn upsert_within(
    store: &Store,
    tenant: &TenantId,
    settings: &GatewaySettingsWrite,
    max: u64,
) -> Result<Option<GatewaySettingsRecord>, StoreError> {
    let mut tx = store.begin_write().await?;
    if tx.backend() == Backend::Postgres {
        sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.as_str())
            .fetch_optional(tx.conn())
            .await?;
    }
    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM gateway_settings WHERE tenant_id = $1 AND provider <> $2",
    )
    .bind(tenant.as_str())
    .bind(settings.provider.as_str())
    .fetch_one(tx.conn())
    .await?;
    if u64::try_from(others).unwrap_or(u64::MAX) >= max {
        tx.rollback().await?;
        return Ok(None);
    }
    let record = upsert_in(&mut tx, tenant, settings).await?;
    tx.commit().await?;
    Ok(Some(record))
}

/// [`upsert`] inside the caller's transaction (e.g. together with an audit event).
pub async fn upsert_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    settings: &GatewaySettingsWrite,
) -> Result<GatewaySettingsRecord, StoreError> {
    let currencies =
        serde_json::to_string(&settings.currencies).map_err(|e| StoreError::Corrupt {
            column: "currencies",
            reason: e.to_string(),
        })?;
    let now = UnixMillis::now().as_i64();
    let sql = format!(
        "INSERT INTO gateway_settings ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET \
            priority = excluded.priority, currencies = excluded.currencies, \
            enabled = excluded.enabled, credentials_ciphertext = excluded.credentials_ciphertext, \
            webhook_secret_ciphertext = excluded.webhook_secret_ciphertext, \
            key_id = excluded.key_id, masked = excluded.masked, updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(settings.provider.as_str())
        .bind(settings.priority)
        .bind(currencies)
        .bind(settings.enabled)
        .bind(settings.credentials.0.clone())
        .bind(settings.webhook_secret.as_ref().map(|c| c.0.clone()))
        .bind(settings.key_id.clone())
        .bind(settings.masked.to_string())
        .bind(now)
        .fetch_one(tx.conn())
        .await?;
    decode(&row)
}

/// The settings of one provider for `tenant`, if saved.
pub async fn get(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
) -> Result<Option<GatewaySettingsRecord>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM gateway_settings WHERE tenant_id = $1 AND provider = $2");
    let row = sqlx::query(&sql)
        .bind(tenant.as_str())
        .bind(provider.as_str())
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(decode).transpose()
}

/// All of `tenant`'s gateways in routing order (priority, then provider id).
pub async fn list(
    store: &Store,
    tenant: &TenantId,
) -> Result<Vec<GatewaySettingsRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM gateway_settings WHERE tenant_id = $1 ORDER BY priority, provider"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant.as_str())
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(decode).collect()
}

/// Removes a provider's settings; returns whether there were any.
pub async fn delete(
    store: &Store,
    tenant: &TenantId,
    provider: &ProviderId,
) -> Result<bool, StoreError> {
    let gone = sqlx::query("DELETE FROM gateway_settings WHERE tenant_id = $1 AND provider = $2")
        .bind(tenant.as_str())
        .bind(provider.as_str())
        .execute(store.pool())
        .await?;
    Ok(gone.rows_affected() == 1)
}

//! Tenant API keys: issued once, stored hashed, revocable.
//!
//! A key is `ph_` followed by 43 base64url characters (32 random bytes). Only
//! its SHA-256 ([`ApiKeyHash`]) and a short display prefix are stored; the
//! secret exists once, in the [`IssuedApiKey`] returned to the operator.

use std::fmt;

use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::{ApiKeyId, TenancyError, TenantId, TenantStatus, tenant_fk};
use crate::store::{
    ParseError, Store, StoreError, UnixMillis, WriteTx, get_opt_i64, get_parsed, get_text, get_time,
};

/// Text before the random part of every key.
const KEY_PREFIX: &str = "ph_";
/// How many leading characters of a key are kept for display (`ph_` + 8).
const DISPLAY_PREFIX_LEN: usize = 11;

/// An API key secret. `Debug` and `Display` are redacted; read it with
/// [`ApiKeySecret::expose`] exactly once, to show it to the operator.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// The full secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash under which this secret is stored.
    pub fn hash(&self) -> ApiKeyHash {
        ApiKeyHash::of(&self.0)
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret([redacted])")
    }
}

/// SHA-256 (lower-case hex) of a presented API key: what is stored and looked up.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    /// Hashes a key as presented in a request (`Authorization: Bearer ph_…`).
    pub fn of(presented: &str) -> Self {
        Self(hex::encode(Sha256::digest(presented.as_bytes())))
    }

    /// Validates a stored hash (64 lower-case hex characters).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() == 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "api key hash",
                "must be 64 lower-case hex characters",
            ))
        }
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but keep logs short.
        let head: String = self.0.chars().take(12).collect();
        write!(f, "ApiKeyHash({head}…)")
    }
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// Public id (`key_…`), used to revoke.
    pub id: ApiKeyId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// First characters of the secret (`ph_` + 8), to recognise it.
    pub prefix: String,
    /// Operator-chosen label.
    pub label: String,
    /// When issued.
    pub created_at: UnixMillis,
    /// When revoked; a revoked key never resolves again.
    pub revoked_at: Option<UnixMillis>,
}

/// A newly issued key: its listing plus the one-time secret.
#[derive(Debug, Clone)]
pub struct IssuedApiKey {
    /// What listings will show.
    pub info: ApiKeyInfo,
    /// The secret; not recoverable after this value is dropped.
    pub secret: ApiKeySecret,
}

/// The result of revoking a key: what a key cache must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedApiKey {
    /// The revoked key.
    pub id: ApiKeyId,
    /// Its hash (the cache key).
    pub hash: ApiKeyHash,
}

/// Who an active API key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedApiKey {
    /// The key's tenant.
    pub tenant_id: TenantId,
    /// The key itself (for audit actors and rate limits).
    pub key_id: ApiKeyId,
    /// The tenant's status, so the caller can refuse suspended tenants without
    /// another query.
    pub tenant_status: TenantStatus,
}

const KEY_COLUMNS: &str = "id, tenant_id, prefix, label, created_at, revoked_at";

fn decode_info(row: &AnyRow) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        id: get_parsed(row, "id", ApiKeyId::parse)?,
        tenant_id: get_parsed(row, "tenant_id", TenantId::parse)?,
        prefix: get_text(row, "prefix")?,
        label: get_text(row, "label")?,
        created_at: get_time(row, "created_at")?,
        revoked_at: get_opt_i64(row, "revoked_at")?.map(UnixMillis),
    })
}

fn validate_label(label: &str) -> Result<String, ParseError> {
    let label = label.trim();
    if label.chars().count() > 100 || label.chars().any(char::is_control) {
        return Err(ParseError::new(
            "api key label",
            "must be at most 100 characters without control characters",
        ));
    }
    Ok(label.to_owned())
}

/// Issues a new key for `tenant`. The secret is in the result only.
pub async fn issue_api_key(
    store: &Store,
    tenant: &TenantId,
    label: &str,
) -> Result<IssuedApiKey, TenancyError> {
    let mut tx = store.begin_write().await?;
    let issued = issue_api_key_in(&mut tx, tenant, label).await?;
    tx.commit().await?;
    Ok(issued)
}

/// [`issue_api_key`] inside the caller's transaction.
pub async fn issue_api_key_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    label: &str,
) -> Result<IssuedApiKey, TenancyError> {
    let label = validate_label(label)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = ApiKeySecret(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ));
    let info = ApiKeyInfo {
        id: ApiKeyId::generate(),
        tenant_id: tenant.clone(),
        prefix: secret.0.chars().take(DISPLAY_PREFIX_LEN).collect(),
        label,
        created_at: UnixMillis::now(),
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, label, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(info.id.as_str())
    .bind(tenant.as_str())
    .bind(info.prefix.clone())
    .bind(secret.hash().0)
    .bind(info.label.clone())
    .bind(info.created_at.as_i64())
    .execute(tx.conn())
    .await
    .map_err(|e| tenant_fk(e, tenant))?;
    Ok(IssuedApiKey { info, secret })
}

/// The tenant's keys (active and revoked), oldest first.
pub async fn list_api_keys(
    store: &Store,
    tenant: &TenantId,
) -> Result<Vec<ApiKeyInfo>, TenancyError> {
    let sql =
        format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id");
    let rows = sqlx::query(&sql)
        .bind(tenant.as_str())
        .fetch_all(store.pool())
        .await?;
    Ok(rows.iter().map(decode_info).collect::<Result<_, _>>()?)
}

/// Revokes one of `tenant`'s active keys. `None` if the tenant has no such
/// active key (unknown, another tenant's, or already revoked).
pub async fn revoke_api_key(
    store: &Store,
    tenant: &TenantId,
    key: &ApiKeyId,
) -> Result<Option<RevokedApiKey>, TenancyError> {
    let mut tx = store.begin_write().await?;
    let revoked = revoke_api_key_in(&mut tx, tenant, key).await?;
    tx.commit().await?;
    Ok(revoked)
}

/// [`revoke_api_key`] inside the caller's transaction.
pub async fn revoke_api_key_in(
    tx: &mut WriteTx,
    tenant: &TenantId,
    key: &ApiKeyId,
) -> Result<Option<RevokedApiKey>, TenancyError> {
    let row = sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 \
          WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL \
         RETURNING key_hash",
    )
    .bind(key.as_str())
    .bind(tenant.as_str())
    .bind(UnixMillis::now().as_i64())
    .fetch_optional(tx.conn())
    .await?;
    match row {
        Some(row) => Ok(Some(RevokedApiKey {
            id: key.clone(),
            hash: get_parsed(&row, "key_hash", ApiKeyHash::parse)?,
        })),
        None => Ok(None),
    }
}

/// The tenant an active key acts for; `None` for unknown or revoked keys.
/// One indexed lookup (unique `key_hash`) joined to the tenant's status.
pub async fn resolve_api_key(
    store: &Store,
    hash: &ApiKeyHash,
) -> Result<Option<ResolvedApiKey>, TenancyError> {
    let row = sqlx::query(
        "SELECT k.id AS key_id, k.tenant_id AS tenant_id, t.status AS status \
           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(hash.as_str())
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(ResolvedApiKey {
        tenant_id: get_parsed(&row, "tenant_id", TenantId::parse)?,
        key_id: get_parsed(&row, "key_id", ApiKeyId::parse)?,
        tenant_status: get_parsed(&row, "status", TenantStatus::parse)?,
    }))
}

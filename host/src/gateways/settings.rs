//! Saving, reading and using a tenant's gateway settings.
//!
//! A save validates the credentials **live** through the provider component
//! before anything is stored; a rejected save leaves the previous settings
//! untouched. Secrets are sealed by the [`Vault`] and only opened into a
//! [`CallContext`] for the duration of a component call.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::cache::{self, Records, SettingsCache};
use super::vault::{Sealed, Vault, VaultError, mask};
use crate::audit::{self, Actor};
use crate::broadcast::{Broadcast, Heard};
use crate::runtime::contract::{CallContext, Credential, ProviderError};
use crate::runtime::{CallError, LoadedProvider, ProviderRegistry};
use crate::store::gateways::{
    self as repo, Ciphertext, GatewaySettingsRecord, GatewaySettingsWrite,
};
use crate::store::{Currency, ProviderId, Store, StoreError, TenantId};

/// Longest credential value (or webhook secret) accepted, bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// Why a credential value is refused before it reaches a component: too
/// long, or holding a control character (a newline or NUL cannot travel in
/// an HTTP header, and would fail every call as a gateway error). The
/// message names the field, never the value.
fn check_credential_value(what: &str, value: &str) -> Result<(), GatewayError> {
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(GatewayError::Invalid(format!(
            "{what} is longer than {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(GatewayError::Invalid(format!(
            "{what} contains control characters (a newline, tab, NUL or the like)"
        )));
    }
    Ok(())
}

/// What a tenant submits for one gateway. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct GatewayInput {
    /// Credential values by field name (as the provider's manifest names them).
    pub credentials: BTreeMap<String, String>,
    /// The webhook signing secret, if the tenant uses webhooks.
    pub webhook_secret: Option<String>,
    /// Routing order, lower first.
    pub priority: i64,
    /// Currencies to route to this gateway; must be a subset of the provider's.
    pub currencies: Vec<Currency>,
    /// Whether routing may use it.
    pub enabled: bool,
    /// At most this many gateways for the tenant (its `gateways.max`),
    /// counted in the save's transaction; `None` = no limit. Replacing a
    /// provider already saved always passes.
    pub max_gateways: Option<u64>,
}

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("provider `{0}` is not loaded on this host")]
    UnknownProvider(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the gateway rejected the credentials: {0}")]
    Rejected(String),
    #[error("the gateway could not be reached to validate the credentials: {0}")]
    Unreachable(String),
    #[error("no settings for provider `{0}`")]
    NotConfigured(String),
    #[error("the tenant may configure at most {0} gateways")]
    LimitReached(u64),
    #[error("stored credentials cannot be opened: {0}")]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// The settings as shown to the tenant: everything but the secrets, which
/// are masked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayView {
    pub provider: String,
    pub priority: i64,
    pub currencies: Vec<String>,
    pub enabled: bool,
    pub credentials: serde_json::Value,
    pub webhook_secret: Option<String>,
    pub updated_at: i64,
}

impl GatewayView {
    fn of(record: &GatewaySettingsRecord) -> GatewayView {
        let s = &record.settings;
        GatewayView {
            provider: s.provider.as_str().to_string(),
            priority: s.priority,
            currencies: s
                .currencies
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            enabled: s.enabled,
            credentials: s
                .masked
                .get("credentials")
                .cloned()
                .unwrap_or_else(|| json!({})),
            webhook_secret: s
                .masked
                .get("webhook_secret")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            updated_at: record.updated_at.as_i64(),
        }
    }
}

fn binding(tenant: &TenantId, provider: &str, what: &str) -> String {
    format!("{tenant}/{provider}/{what}")
}

/// The credentials as fingerprinted: JSON of the name → value map, names
/// sorted, so the same credentials always give the same bytes.
fn canonical_credentials(credentials: &[Credential]) -> Vec<u8> {
    let map: BTreeMap<&str, &str> = credentials
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_str()))
        .collect();
    serde_json::to_vec(&map).unwrap_or_default()
}

/// Gateway settings service: providers + vault + store, with a per-tenant
/// cache of the stored records for routing (see [`super::cache`]).
#[derive(Clone)]
pub struct Gateways {
    store: Store,
    vault: Arc<Vault>,
    providers: Arc<ProviderRegistry>,
    cache: Arc<SettingsCache>,
    /// Tells the other instances' caches of this instance's changes.
    broadcast: Option<Broadcast>,
}

/// The broadcast topic of gateway-settings changes; the payload is the
/// tenant id whose settings changed.
pub const TOPIC: &str = "gateways";

/// See [`Gateways::evict_when_done`].
struct EvictOnDrop {
    cache: Arc<SettingsCache>,
    broadcast: Option<Broadcast>,
    tenant: TenantId,
}

impl Drop for EvictOnDrop {
    fn drop(&mut self) {
        self.cache.evict(std::slice::from_ref(&self.tenant));
        let (Some(broadcast), Ok(runtime)) =
            (self.broadcast.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let tenant = self.tenant.clone();
        runtime.spawn(async move {
            if let Err(e) = broadcast.publish(TOPIC, tenant.as_str()).await {
                tracing::warn!(tenant = %tenant, "gateway settings changed but the broadcast failed: {e}");
            }
        });
    }
}

/// A configured gateway opened for a call: the provider plus its context.
pub struct OpenGateway {
    /// The loaded provider component.
    pub provider: Arc<LoadedProvider>,
    /// Credentials (decrypted) for the call; drop it right after.
    pub ctx: CallContext,
    /// The decrypted webhook secret, if configured.
    pub webhook_secret: Option<String>,
    /// Which credentials these are ([`Vault::fingerprint`], under the key
    /// that sealed them), so an order can tell whether a later call goes to
    /// the same gateway account.
    pub credentials_fingerprint: String,
}

impl Gateways {
    /// A service over these parts.
    pub fn new(store: Store, vault: Arc<Vault>, providers: Arc<ProviderRegistry>) -> Gateways {
        Gateways {
            store,
            vault,
            providers,
            cache: Arc::new(SettingsCache::new(cache::DEFAULT_TTL)),
            broadcast: None,
        }
    }

    /// Keeps the settings cache in step with other host instances: publishes
    /// this instance's saves and deletes on `broadcast` (topic [`TOPIC`]) and
    /// evicts what the others publish, or everything when messages may have
    /// been missed. Without this, only this instance's own changes evict,
    /// which is enough for a single SQLite host.
    pub fn follow(mut self, broadcast: &Broadcast) -> Gateways {
        // Hold the cache weakly: the broadcast may outlive this service.
        let cache = Arc::downgrade(&self.cache);
        broadcast.subscribe(TOPIC, move |heard| {
            let Some(cache) = cache.upgrade() else { return };
            match heard {
                Heard::Message(tenant) => match TenantId::parse(tenant) {
                    Ok(tenant) => cache.evict(std::slice::from_ref(&tenant)),
                    Err(_) => cache.flush(),
                },
                Heard::Missed => cache.flush(),
            }
        });
        self.broadcast = Some(broadcast.clone());
        self
    }

    /// Evicts `tenant` when dropped: here at once, on other instances
    /// through a spawned broadcast. Taken before a write, so the eviction
    /// happens even if the caller's future is dropped (a client hanging up)
    /// after the write committed. A failed broadcast is logged: the change
    /// is stored, and other instances re-read it within the cache's TTL.
    fn evict_when_done(&self, tenant: &TenantId) -> EvictOnDrop {
        EvictOnDrop {
            cache: self.cache.clone(),
            broadcast: self.broadcast.clone(),
            tenant: tenant.clone(),
        }
    }

    /// The loaded providers.
    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    /// Validate `input` live through the provider and, only if the gateway
    /// accepts it, store it sealed (replacing earlier settings) and audit it.
    pub async fn save(
        &self,
        actor: &Actor,
        tenant: &TenantId,
        provider_id: &str,
        input: GatewayInput,
    ) -> Result<GatewayView, GatewayError> {
        let provider = self
            .providers
            .get(provider_id)
            .ok_or_else(|| GatewayError::UnknownProvider(provider_id.to_string()))?;
        let manifest = provider.manifest();
        for field in &manifest.credential_fields {
            if field.required
                && input
                    .credentials
                    .get(&field.name)
                    .is_none_or(|v| v.trim().is_empty())
            {
                return Err(GatewayError::Invalid(format!(
                    "credential `{}` ({}) is required",
                    field.name, field.label
                )));
            }
        }
        if let Some(unknown) = input
            .credentials
            .keys()
            .find(|k| !manifest.credential_fields.iter().any(|f| &f.name == *k))
        {
            return Err(GatewayError::Invalid(format!(
                "`{unknown}` is not a credential of {}; expected one of: {}",
                manifest.id,
                manifest
                    .credential_fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (name, value) in &input.credentials {
            check_credential_value(&format!("credential `{name}`"), value)?;
        }
        if let Some(secret) = &input.webhook_secret {
            check_credential_value("webhook_secret", secret)?;
        }
        if input.currencies.is_empty() {
            return Err(GatewayError::Invalid("currencies must not be empty".into()));
        }
        if let Some(c) = input
            .currencies
            .iter()
            .find(|c| !manifest.currencies.iter().any(|m| m == c.as_str()))
        {
            return Err(GatewayError::Invalid(format!(
                "{} does not support currency {}",
                manifest.id,
                c.as_str()
            )));
        }

        let ctx = CallContext {
            credentials: input
                .credentials
                .iter()
                .map(|(name, value)| Credential {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            base_url: None,
            idempotency_key: None,
        };
        match provider.validate_credentials(ctx).await {
            Ok(()) => {}
            Err(CallError::Gateway(ProviderError::InvalidCredentials(reason))) => {
                return Err(GatewayError::Rejected(reason));
            }
            Err(CallError::Gateway(ProviderError::Unavailable(reason))) => {
                return Err(GatewayError::Unreachable(reason));
            }
            Err(CallError::Gateway(ProviderError::RateLimited(_))) => {
                return Err(GatewayError::Unreachable("rate limited".into()));
            }
            Err(CallError::Gateway(other)) => {
                return Err(GatewayError::Rejected(match other {
                    ProviderError::InvalidRequest(m)
                    | ProviderError::Unsupported(m)
                    | ProviderError::Internal(m) => m,
                    ProviderError::Declined(d) => format!("{}: {}", d.code, d.message),
                    _ => "rejected".into(),
                }));
            }
            // Sandbox outcomes carry component output (stderr): log it,
            // answer only the stable code.
            Err(other) => {
                tracing::warn!(
                    provider = provider_id,
                    "credential validation failed: {other}"
                );
                return Err(GatewayError::Unreachable(other.code().to_string()));
            }
        }

        let secret_fields: Vec<&str> = manifest
            .credential_fields
            .iter()
            .filter(|f| f.secret)
            .map(|f| f.name.as_str())
            .collect();
        let masked_credentials: serde_json::Map<String, serde_json::Value> = input
            .credentials
            .iter()
            .map(|(k, v)| {
                let shown = if secret_fields.contains(&k.as_str()) {
                    mask(v)
                } else {
                    v.clone()
                };
                (k.clone(), json!(shown))
            })
            .collect();
        let masked = json!({
            "credentials": masked_credentials,
            "webhook_secret": input.webhook_secret.as_deref().map(mask),
        });
        let plaintext = serde_json::to_vec(&input.credentials)
            .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let sealed = self
            .vault
            .seal(&binding(tenant, provider_id, "credentials"), &plaintext);
        let webhook = input.webhook_secret.as_ref().map(|s| {
            self.vault.seal(
                &binding(tenant, provider_id, "webhook_secret"),
                s.as_bytes(),
            )
        });
        let provider_id_typed =
            ProviderId::parse(provider_id).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let write = GatewaySettingsWrite {
            provider: provider_id_typed,
            priority: input.priority,
            currencies: input.currencies.clone(),
            enabled: input.enabled,
            credentials: Ciphertext(sealed.bytes),
            webhook_secret: webhook.map(|w| Ciphertext(w.bytes)),
            key_id: sealed.key_id,
            masked: masked.clone(),
        };
        let evict = self.evict_when_done(tenant);
        let record = match input.max_gateways {
            None => repo::upsert(&self.store, tenant, &write).await?,
            Some(max) => repo::upsert_within(&self.store, tenant, &write, max)
                .await?
                .ok_or(GatewayError::LimitReached(max))?,
        };
        drop(evict);
        audit::record(
            &self.store,
            actor,
            "gateway.saved",
            Some(tenant),
            json!({
                "provider": provider_id,
                "priority": input.priority,
                "currencies": input.currencies.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "enabled": input.enabled,
                "masked": masked,
            }),
        )
        .await?;
        Ok(GatewayView::of(&record))
    }

    /// The tenant's gateways, masked, in routing order.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<GatewayView>, GatewayError> {
        Ok(repo::list(&self.store, tenant)
            .await?
            .iter()
            .map(GatewayView::of)
            .collect())
    }

    /// The raw stored records in routing order (routing reads priorities
    /// and currencies), from the cache when it has them.
    pub async fn records(&self, tenant: &TenantId) -> Result<Records, GatewayError> {
        match self.cache.get(tenant) {
            Ok(records) => Ok(records),
            Err(miss) => {
                let records: Records = repo::list(&self.store, tenant).await?.into();
                self.cache.fill(tenant, miss, records.clone());
                Ok(records)
            }
        }
    }

    /// Remove a gateway; `false` if it was not configured.
    pub async fn delete(
        &self,
        actor: &Actor,
        tenant: &TenantId,
        provider_id: &str,
    ) -> Result<bool, GatewayError> {
        let Ok(provider) = ProviderId::parse(provider_id) else {
            return Ok(false);
        };
        let evict = self.evict_when_done(tenant);
        let removed = repo::delete(&self.store, tenant, &provider).await?;
        drop(evict);
        if removed {
            audit::record(
                &self.store,
                actor,
                "gateway.deleted",
                Some(tenant),
                json!({"provider": provider_id}),
            )
            .await?;
        }
        Ok(removed)
    }

    /// Open a configured gateway for a call (decrypting its credentials).
    /// The record comes from the settings cache, as routing's does (fresh
    /// as described in [`super::cache`]); credentials are decrypted per call.
    pub async fn open(
        &self,
        tenant: &TenantId,
        provider_id: &str,
    ) -> Result<OpenGateway, GatewayError> {
        let provider = self
            .providers
            .get(provider_id)
            .ok_or_else(|| GatewayError::UnknownProvider(provider_id.to_string()))?;
        let records = self.records(tenant).await?;
        let record = records
            .iter()
            .find(|r| r.settings.provider.as_str() == provider_id)
            .ok_or_else(|| GatewayError::NotConfigured(provider_id.to_string()))?;
        self.open_record(provider, tenant, record)
    }

    /// Open an already-read record.
    pub fn open_record(
        &self,
        provider: Arc<LoadedProvider>,
        tenant: &TenantId,
        record: &GatewaySettingsRecord,
    ) -> Result<OpenGateway, GatewayError> {
        let s = &record.settings;
        let id = s.provider.as_str();
        let bound = binding(tenant, id, "credentials");
        let plaintext = self.vault.open(
            &bound,
            &Sealed {
                key_id: s.key_id.clone(),
                bytes: s.credentials.0.clone(),
            },
        )?;
        let credentials: BTreeMap<String, String> =
            serde_json::from_slice(&plaintext).map_err(|_| VaultError::Corrupt)?;
        let webhook_secret = match &s.webhook_secret {
            Some(c) => {
                let raw = self.vault.open(
                    &binding(tenant, id, "webhook_secret"),
                    &Sealed {
                        key_id: s.key_id.clone(),
                        bytes: c.0.clone(),
                    },
                )?;
                Some(String::from_utf8(raw).map_err(|_| VaultError::Corrupt)?)
            }
            None => None,
        };
        let credentials: Vec<Credential> = credentials
            .into_iter()
            .map(|(name, value)| Credential { name, value })
            .collect();
        let credentials_fingerprint =
            self.vault
                .fingerprint(&s.key_id, &bound, &canonical_credentials(&credentials))?;
        Ok(OpenGateway {
            provider,
            ctx: CallContext {
                credentials,
                base_url: None,
                idempotency_key: None,
            },
            webhook_secret,
            credentials_fingerprint,
        })
    }

    /// Whether `open` holds the credentials that `fingerprint` (an
    /// [`OpenGateway::credentials_fingerprint`] stored earlier) was taken
    /// of. It is recomputed under the master key it names, so a rotation
    /// in between does not matter while that key is still configured.
    pub fn same_credentials(
        &self,
        tenant: &TenantId,
        provider: &str,
        open: &OpenGateway,
        fingerprint: &str,
    ) -> bool {
        let Some((key_id, _)) = fingerprint.rsplit_once(':') else {
            return false;
        };
        let bound = binding(tenant, provider, "credentials");
        self.vault
            .fingerprint(
                key_id,
                &bound,
                &canonical_credentials(&open.ctx.credentials),
            )
            .is_ok_and(|now| now == fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_with_control_characters_or_too_long_are_refused() {
        check_credential_value("credential `secret-key`", "sk_test_abc").expect("a plain key");
        for bad in [
            "sk_test\nabc",
            "sk_test\rabc",
            "sk\0",
            "sk\u{1b}[0m",
            "sk\tx",
        ] {
            let err = check_credential_value("credential `secret-key`", bad)
                .expect_err("control characters are refused");
            let text = err.to_string();
            assert!(text.contains("secret-key"), "{text}");
            assert!(!text.contains("sk_"), "the value is never echoed: {text}");
        }
        let long = "k".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert!(check_credential_value("webhook_secret", &long).is_err());
    }
}

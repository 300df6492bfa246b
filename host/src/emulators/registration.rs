//! Offline mode's webhook wiring: when a tenant saves its Stripe gateway
//! without a webhook secret, `serve` (emulators on) registers the host's own
//! ingestion URL (`{public base}/webhooks/{tenant}/stripe`) with the Stripe
//! emulator through Stripe's API (`POST /v1/webhook_endpoints`, with the
//! tenant's key), and the `whsec_…` secret it answers becomes the tenant's
//! webhook secret. Registering again first deletes the endpoints already
//! registered for that URL, so saving twice does not deliver twice.
//!
//! Must never: log the tenant's key or the signing secret, or run against a
//! live gateway (it is built only when the emulators run).

use std::time::Duration;

use serde_json::Value;

use crate::store::TenantId;

/// Registers tenants' webhook URLs with the Stripe emulator (see the module doc).
#[derive(Clone)]
pub struct WebhookRegistrar {
    emulator_base: String,
    public_base: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRegistrar")
            .field("emulator_base", &self.emulator_base)
            .field("public_base", &self.public_base)
            .finish_non_exhaustive()
    }
}

/// Why a registration failed (the save goes on without a secret).
#[derive(Debug, thiserror::Error)]
#[error("webhook registration with the Stripe emulator failed: {0}")]
pub struct RegistrationError(String);

impl WebhookRegistrar {
    /// A registrar for the emulator at `emulator_base`, registering URLs
    /// under `public_base` (`http://127.0.0.1:8080`, no trailing slash).
    pub fn new(emulator_base: &str, public_base: &str) -> Result<Self, RegistrationError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RegistrationError(e.to_string()))?;
        Ok(WebhookRegistrar {
            emulator_base: emulator_base.trim_end_matches('/').to_owned(),
            public_base: public_base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The URL the host receives `tenant`'s Stripe webhooks on.
    pub fn webhook_url(&self, tenant: &TenantId) -> String {
        format!("{}/webhooks/{tenant}/stripe", self.public_base)
    }

    /// Registers `tenant`'s webhook URL for every event type of the account
    /// of `api_key`; the endpoint's signing secret.
    pub async fn register(
        &self,
        tenant: &TenantId,
        api_key: &str,
    ) -> Result<String, RegistrationError> {
        let url = self.webhook_url(tenant);
        let endpoints = format!("{}/v1/webhook_endpoints", self.emulator_base);
        let listed: Value = self.call(self.http.get(&endpoints), api_key).await?;
        for old in listed["data"].as_array().into_iter().flatten() {
            if old["url"] == url.as_str()
                && let Some(id) = old["id"].as_str()
            {
                self.call(self.http.delete(format!("{endpoints}/{id}")), api_key)
                    .await?;
            }
        }
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("url", &url)
            .append_pair("enabled_events[]", "*")
            .append_pair("description", "payhost (offline mode)")
            .finish();
        let created: Value = self
            .call(
                self.http
                    .post(&endpoints)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form),
                api_key,
            )
            .await?;
        created["secret"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RegistrationError("the answer carries no secret".into()))
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> Result<Value, RegistrationError> {
        let response = request
            .bearer_auth(api_key)
            .send()
            .await
            .map_err(|e| RegistrationError(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RegistrationError(format!("the emulator answered {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| RegistrationError(e.without_url().to_string()))
    }
}

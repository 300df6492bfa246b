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
        for id in self.registered(&endpoints, &url, api_key).await? {
            self.call(self.http.delete(format!("{endpoints}/{id}")), api_key)
                .await?;
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

    /// The ids of the endpoints registered for `url`, from every page of
    /// the account's list (Stripe pages lists: 10 by default, 100 at most).
    async fn registered(
        &self,
        endpoints: &str,
        url: &str,
        api_key: &str,
    ) -> Result<Vec<String>, RegistrationError> {
        let mut ids = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(last) = &starting_after {
                query.push(("starting_after", last.clone()));
            }
            let page: Value = self
                .call(self.http.get(endpoints).query(&query), api_key)
                .await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            ids.extend(
                data.iter()
                    .filter(|e| e["url"] == url)
                    .filter_map(|e| e["id"].as_str().map(str::to_owned)),
            );
            starting_after = data
                .last()
                .and_then(|e| e["id"].as_str())
                .map(str::to_owned);
            if page["has_more"] != true || starting_after.is_none() {
                return Ok(ids);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulators::StripeEmulator;

    #[tokio::test]
    async fn registering_again_replaces_the_endpoint_beyond_the_first_page() {
        let emulator = StripeEmulator::start(0).await.expect("emulator starts");
        let key = "sk_test_registration_pages";
        let registrar =
            WebhookRegistrar::new(&emulator.base_url(), "http://127.0.0.1:9").expect("registrar");
        let tenant = TenantId::generate();
        let first = registrar.register(&tenant, key).await.expect("registered");
        // More newer endpoints than one page of 100 holds, so the first
        // registration is only on the second page.
        let http = reqwest::Client::new();
        let endpoints = format!("{}/v1/webhook_endpoints", emulator.base_url());
        for n in 0..100 {
            let answer = http
                .post(&endpoints)
                .bearer_auth(key)
                .form(&[
                    ("url", format!("https://shop.example/hooks/{n}")),
                    ("enabled_events[]", "*".to_owned()),
                ])
                .send()
                .await
                .expect("emulator answers");
            assert!(answer.status().is_success());
        }
        let second = registrar.register(&tenant, key).await.expect("registered");
        assert_ne!(first, second, "a new endpoint, with a new secret");
        let ours = registrar
            .registered(&endpoints, &registrar.webhook_url(&tenant), key)
            .await
            .expect("listed");
        assert_eq!(ours.len(), 1, "the old registration was deleted: {ours:?}");
    }
}

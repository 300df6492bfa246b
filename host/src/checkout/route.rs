//! Routing: which of the tenant's gateways may take a cart, in order.

use std::sync::Arc;

use super::{CheckoutError, Checkouts};
use crate::features::FeatureKey;
use crate::gateways::{Records, RouteEntry, eligible};
use crate::runtime::LoadedProvider;
use crate::runtime::contract::{Capabilities, CaptureMode};
use crate::store::gateways::GatewaySettingsRecord;
use crate::store::{Currency, TenantId};

impl Checkouts {
    /// The tenant's gateways that take `currency`, enabled, loaded and
    /// permitted by the tenant's `provider.<id>` feature, in priority order,
    /// each with its provider; none → [`CheckoutError::NoRoute`], or
    /// [`CheckoutError::NoPermittedRoute`] when only features kept them out.
    /// A manual capture goes only to providers whose manifest claims
    /// `capture`; if none of the eligible ones does →
    /// [`CheckoutError::CapabilityNotSupported`].
    pub(super) fn route<'r>(
        &self,
        tenant: &TenantId,
        records: &'r Records,
        currency: Currency,
        capture: CaptureMode,
    ) -> Result<Vec<(&'r GatewaySettingsRecord, Arc<LoadedProvider>)>, CheckoutError> {
        let entries: Vec<RouteEntry> = records
            .iter()
            .map(|r| RouteEntry {
                provider: r.settings.provider.as_str().to_string(),
                priority: r.settings.priority,
                currencies: r
                    .settings
                    .currencies
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                enabled: r.settings.enabled,
            })
            .collect();
        let providers = self.gateways.providers();
        let permitted = |p: &str| self.features.enabled(tenant, &FeatureKey::provider(p));
        let loaded = eligible(&entries, currency.as_str(), |p| providers.get(p).is_some());
        let disabled: Vec<_> = loaded
            .iter()
            .filter(|e| !permitted(&e.provider))
            .map(|e| {
                let key = FeatureKey::provider(&e.provider);
                (
                    e.provider.clone(),
                    self.features.evaluate(tenant, &key).source,
                )
            })
            .collect();
        let route: Vec<_> = loaded
            .into_iter()
            .filter(|e| !disabled.iter().any(|(p, _)| *p == e.provider))
            .filter_map(|entry| {
                let record = records
                    .iter()
                    .find(|r| r.settings.provider.as_str() == entry.provider)?;
                Some((record, providers.get(&entry.provider)?))
            })
            .collect();
        if route.is_empty() && !disabled.is_empty() {
            return Err(CheckoutError::NoPermittedRoute {
                currency: currency.as_str().to_string(),
                disabled,
            });
        }
        if route.is_empty() {
            return Err(CheckoutError::NoRoute(currency.as_str().to_string()));
        }
        if capture == CaptureMode::Manual {
            let first = route[0].1.id().to_owned();
            let capable: Vec<_> = route
                .into_iter()
                .filter(|(_, p)| p.manifest().capabilities.contains(Capabilities::CAPTURE))
                .collect();
            if capable.is_empty() {
                return Err(CheckoutError::CapabilityNotSupported {
                    provider: first,
                    capability: "capture",
                });
            }
            return Ok(capable);
        }
        Ok(route)
    }
}

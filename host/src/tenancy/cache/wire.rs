//! What a tenant-cache invalidation looks like on the cluster broadcast.

use serde::{Deserialize, Serialize};

use super::Invalidation;
use crate::tenancy::{ApiKeyHash, Domain, TenantId};

/// The JSON published on the broadcast topic [`super::TOPIC`]. The
/// broadcast carries who sent it; the sender has already evicted locally.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireMessage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tenants: Vec<TenantId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    domains: Vec<Domain>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    api_keys: Vec<String>,
}

impl WireMessage {
    pub(super) fn new(inv: &Invalidation) -> Self {
        Self {
            tenants: inv.tenants.clone(),
            domains: inv.domains.clone(),
            api_keys: inv.api_keys.iter().map(|h| h.as_str().to_owned()).collect(),
        }
    }

    pub(super) fn encode(&self) -> String {
        // Plain strings and validated ids only: serialising cannot fail, but
        // if it ever did, an unreadable message makes every receiver flush,
        // which is safe.
        serde_json::to_string(self).unwrap_or_else(|_| "unencodable".to_owned())
    }

    pub(super) fn into_invalidation(self) -> Invalidation {
        Invalidation {
            tenants: self.tenants,
            domains: self.domains,
            api_keys: self
                .api_keys
                .iter()
                .filter_map(|raw| ApiKeyHash::parse(raw).ok())
                .collect(),
        }
    }
}

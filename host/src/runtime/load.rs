//! Loading a provider component: compile, check it against the contract
//! (version, exports, forbidden imports, types), read and validate its
//! manifest. A component that does not match fails here, not at the first
//! payment.

use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::contract::Manifest;
use super::bindings::{CONTRACT_VERSION, GATEWAY_EXPORT, ProviderPre};
use super::call::call;
use super::engine::Runtime;
use super::policy::{Origin, OutboundPolicy};
use super::provider::{LoadedProvider, ProviderSettings};
use super::state::CallState;

/// Why a component was refused at load time. Every message names the source.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: not a valid WebAssembly component: {reason}")]
    Invalid { source_name: String, reason: String },
    #[error(
        "{source_name}: does not export `payhost:provider/gateway` (it exports: {found}); build it against wit/ of payhost:provider@{CONTRACT_VERSION}"
    )]
    MissingExport { source_name: String, found: String },
    #[error(
        "{source_name}: implements contract version {found}, but this host serves payhost:provider@{CONTRACT_VERSION}"
    )]
    UnsupportedVersion { source_name: String, found: String },
    #[error(
        "{source_name}: imports `{import}`, which payhost does not provide (components get wasi:http, wasi:clocks, wasi:random, wasi:io, wasi:cli stdio and payhost:provider/host only)"
    )]
    ForbiddenImport { source_name: String, import: String },
    #[error("{source_name}: does not match payhost:provider@{CONTRACT_VERSION}: {reason}")]
    Mismatch { source_name: String, reason: String },
    #[error("{source_name}: invalid manifest: {reason}")]
    Manifest { source_name: String, reason: String },
}

fn is_forbidden_import(name: &str) -> bool {
    ["wasi:filesystem/", "wasi:sockets/"]
        .iter()
        .any(|p| name.starts_with(p))
}

impl Runtime {
    /// Compile a component and check it against the contract: it must
    /// export `payhost:provider/gateway` at the served version, import
    /// nothing the host does not provide, and have matching types.
    pub(crate) fn compile(
        &self,
        source_name: &str,
        bytes: &[u8],
    ) -> Result<ProviderPre<CallState>, LoadError> {
        let src = || source_name.to_string();
        let engine = &self.inner.engine;
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
            source_name: src(),
            reason: format!("{e:#}"),
        })?;
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        if !exports.iter().any(|n| n == GATEWAY_EXPORT) {
            if let Some(other) = exports
                .iter()
                .find(|n| n.starts_with("payhost:provider/gateway"))
            {
                let found = other
                    .split_once('@')
                    .map_or("(unversioned)", |(_, v)| v)
                    .to_string();
                return Err(LoadError::UnsupportedVersion {
                    source_name: src(),
                    found,
                });
            }
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(LoadError::MissingExport {
                source_name: src(),
                found,
            });
        }
        if let Some((import, _)) = ty.imports(engine).find(|(n, _)| is_forbidden_import(n)) {
            return Err(LoadError::ForbiddenImport {
                source_name: src(),
                import: import.to_string(),
            });
        }
        let pre =
            self.inner
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Mismatch {
                    source_name: src(),
                    reason: format!("{e:#}"),
                })?;
        ProviderPre::new(pre).map_err(|e| LoadError::Mismatch {
            source_name: src(),
            reason: format!("{e:#}"),
        })
    }

    /// Compile, check and describe a component: the full load path used for
    /// bundled providers and operator-supplied `.wasm` files.
    pub async fn load(
        &self,
        source_name: &str,
        bytes: &[u8],
        settings: ProviderSettings,
    ) -> Result<LoadedProvider, LoadError> {
        self.load_with(source_name, bytes, |_| settings).await
    }

    /// Like [`Runtime::load`], choosing the settings once the manifest (and
    /// so the provider id) is known.
    pub async fn load_with(
        &self,
        source_name: &str,
        bytes: &[u8],
        settings: impl FnOnce(&Manifest) -> ProviderSettings,
    ) -> Result<LoadedProvider, LoadError> {
        let pre = self.compile(source_name, bytes)?;
        let no_network = Arc::new(OutboundPolicy::deny_all());
        let manifest = call(
            self,
            &pre,
            Arc::from("(loading)"),
            "manifest",
            no_network.clone().into(),
            Vec::new(),
            |p, s| {
                Box::pin(async move {
                    let m = p.payhost_provider_gateway().call_manifest(s).await?;
                    Ok(Ok::<_, ()>(m))
                })
            },
        )
        .await
        .map_err(|e| LoadError::Manifest {
            source_name: source_name.to_string(),
            reason: format!("manifest call failed: {e}"),
        })?;
        let manifest_err = |reason: String| LoadError::Manifest {
            source_name: source_name.to_string(),
            reason,
        };
        validate_manifest(&manifest).map_err(manifest_err)?;
        let settings = settings(&manifest);

        let mut allowed = match settings.allowed_origins {
            Some(list) => list,
            None => manifest
                .default_hosts
                .iter()
                .map(|h| Origin::parse(h).map_err(|e| manifest_err(e.to_string())))
                .collect::<Result<_, _>>()?,
        };
        if let Some(base) = &settings.base_url {
            let origin = Origin::of_url(base)
                .ok_or_else(|| manifest_err(format!("base URL `{base}` is not an http(s) URL")))?;
            if !allowed.contains(&origin) {
                allowed.push(origin);
            }
        }
        let policy = OutboundPolicy {
            allowed,
            allow_private_networks: settings.allow_private_networks,
            ..settings.outbound.unwrap_or_default()
        };
        Ok(LoadedProvider {
            id: Arc::from(manifest.id.as_str()),
            source: source_name.to_string(),
            manifest,
            runtime: self.clone(),
            pre,
            diagnosis_policy: Arc::new(OutboundPolicy {
                read_only: true,
                ..policy.clone()
            }),
            policy: Arc::new(policy),
            no_network,
            base_url: settings.base_url,
        })
    }
}

fn validate_manifest(m: &Manifest) -> Result<(), String> {
    let id_ok = !m.id.is_empty()
        && m.id.len() <= 32
        && m.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(format!(
            "id `{}` must be 1-32 characters of a-z, 0-9 and -",
            m.id
        ));
    }
    if let Some(bad) = m
        .currencies
        .iter()
        .find(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(format!(
            "currency `{bad}` is not an upper-case ISO-4217 code"
        ));
    }
    Ok(())
}

//! The set of loaded providers, by id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bindings::contract::Manifest;
use super::bundled::BUNDLED;
use super::engine::Runtime;
use super::load::LoadError;
use super::provider::{LoadedProvider, ProviderSettings};

/// Why the registry could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot read provider directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("provider id `{id}` is provided by both {first} and {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
}

/// Loaded providers keyed by id. Immutable once built; share it in an `Arc`.
#[derive(Debug, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<String, Arc<LoadedProvider>>,
}

impl ProviderRegistry {
    /// Load the bundled first-party providers (when `bundled`) and every
    /// `*.wasm` in `dir`, in file-name order. Any component that fails to
    /// load fails the whole registry, naming the file: a provider silently
    /// missing is worse than a refused start.
    pub async fn load(
        runtime: &Runtime,
        bundled: bool,
        dir: Option<&Path>,
        settings: impl Fn(&Manifest) -> ProviderSettings,
    ) -> Result<ProviderRegistry, RegistryError> {
        let mut registry = ProviderRegistry::default();
        if bundled {
            for (name, bytes) in BUNDLED {
                let source = format!("bundled:{name}");
                let provider = runtime.load_with(&source, bytes, &settings).await?;
                registry.insert(provider)?;
            }
        }
        if let Some(dir) = dir {
            let io = |source| RegistryError::Io {
                path: dir.to_path_buf(),
                source,
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            files.sort();
            for path in files {
                let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
                    path: path.clone(),
                    source,
                })?;
                let source = path.display().to_string();
                let provider = runtime.load_with(&source, &bytes, &settings).await?;
                registry.insert(provider)?;
            }
        }
        Ok(registry)
    }

    /// Add a provider; refuses a second provider with the same id.
    pub fn insert(&mut self, provider: LoadedProvider) -> Result<(), RegistryError> {
        if let Some(existing) = self.providers.get(provider.id()) {
            return Err(RegistryError::Duplicate {
                id: provider.id().to_string(),
                first: existing.source().to_string(),
                second: provider.source().to_string(),
            });
        }
        self.providers
            .insert(provider.id().to_string(), Arc::new(provider));
        Ok(())
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedProvider>> {
        self.providers.get(id).cloned()
    }

    /// All providers, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedProvider>> {
        self.providers.values()
    }
}

//! The HTTP API: axum routers, extractors and the one error type.
//!
//! Must never: leak a secret in a response, answer a malformed request with a
//! 500, or let one tenant see another's data.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::runtime::ProviderRegistry;

mod error;
pub use error::{ApiError, from_json_rejection};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Loaded provider components.
    pub providers: Arc<ProviderRegistry>,
}

/// The service's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .providers
        .iter()
        .map(|p| json!({"id": p.id(), "version": p.manifest().version}))
        .collect();
    Json(json!({"status": "ok", "providers": providers}))
}

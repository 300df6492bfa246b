//! The PostgreSQL transport: `NOTIFY` through the store's pool, `LISTEN` on
//! a connection of its own (an [`sqlx::AnyPool`] cannot `LISTEN`).

use std::sync::Weak;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{BroadcastError, Inner, LISTEN_CONNECT_TIMEOUT, missed, reconnect};
use crate::store::{Store, StoreError};

pub(super) async fn notify(
    store: &Store,
    channel: &str,
    message: &str,
) -> Result<(), BroadcastError> {
    // `pg_notify` returns `void`, which the Any driver cannot decode; select a constant.
    sqlx::query("SELECT 1 AS sent FROM pg_notify($1, $2)")
        .bind(channel)
        .bind(message)
        .execute(store.pool())
        .await
        .map_err(|e| BroadcastError::Notify(StoreError::Database(e)))?;
    Ok(())
}

pub(super) async fn subscribe(url: &str, channel: &str) -> Result<PgListener, BroadcastError> {
    let subscribe = async {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, subscribe).await {
        Ok(Ok(listener)) => Ok(listener),
        Ok(Err(e)) => Err(BroadcastError::Listen(e)),
        Err(_) => Err(BroadcastError::ListenTimeout),
    }
}

/// Delivers notifications until the broadcast is dropped; reconnects with
/// back-off after a loss, reporting [`super::Heard::Missed`] each time.
pub(super) async fn listen(
    weak: Weak<Inner>,
    url: String,
    channel: String,
    mut listener: PgListener,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.changed() => return,
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => {
                let Some(inner) = weak.upgrade() else { return };
                inner.deliver(notification.payload());
            }
            Ok(None) => {
                // The connection dropped and was re-established (re-listening):
                // notifications in between are lost.
                tracing::warn!("broadcast: LISTEN connection lost; reporting missed messages");
                if !missed(&weak) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "broadcast: LISTEN failed; reconnecting");
                if !missed(&weak) {
                    return;
                }
                let Some(next) =
                    reconnect(&mut shutdown, "re-LISTEN", || subscribe(&url, &channel)).await
                else {
                    return;
                };
                listener = next;
                if !missed(&weak) {
                    return;
                }
            }
        }
    }
}

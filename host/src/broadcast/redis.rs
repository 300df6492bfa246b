//! The Redis transport: `PUBLISH` on a lazily opened multiplexed connection,
//! `SUBSCRIBE` on a pub/sub connection of its own.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{MultiplexedConnection, PubSub};
use tokio::sync::watch;

use super::{BroadcastError, Inner, LISTEN_CONNECT_TIMEOUT, missed, reconnect};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Publishes on one multiplexed connection, opened on first use and again
/// after it failed.
pub(super) struct Publisher {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Publisher {
    pub(super) fn new(url: &str) -> Result<Publisher, BroadcastError> {
        let client = redis::Client::open(url).map_err(|_| BroadcastError::Config {
            option: "redis_url",
            reason: "is not a valid redis:// URL".to_owned(),
        })?;
        Ok(Publisher {
            client,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(super) async fn publish(&self, channel: &str, message: &str) -> Result<(), BroadcastError> {
        let mut slot = self.conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let connected = tokio::time::timeout(
                    CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
                    self.client
                        .get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| BroadcastError::RedisTimeout { action: "connect" })?
                .map_err(|source| BroadcastError::Redis {
                    action: "connect",
                    source,
                })?;
                slot.insert(connected)
            }
        };
        let sent = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async::<i64>(conn)
            .await;
        if let Err(source) = sent {
            // Open a fresh connection next time.
            *slot = None;
            return Err(BroadcastError::Redis {
                action: "publish",
                source,
            });
        }
        Ok(())
    }
}

pub(super) async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<PubSub, BroadcastError> {
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, subscribe).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(source)) => Err(BroadcastError::Redis {
            action: "subscribe",
            source,
        }),
        Err(_) => Err(BroadcastError::RedisTimeout {
            action: "subscribe",
        }),
    }
}

/// Delivers messages until the broadcast is dropped; resubscribes with
/// back-off after a loss, reporting [`super::Heard::Missed`] each time.
pub(super) async fn listen(
    weak: Weak<Inner>,
    client: redis::Client,
    channel: String,
    mut pubsub: PubSub,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.changed() => return,
                    msg = messages.next() => msg,
                };
                let Some(msg) = msg else { break };
                let Some(inner) = weak.upgrade() else { return };
                match msg.get_payload::<String>() {
                    Ok(payload) => inner.deliver(&payload),
                    Err(e) => {
                        tracing::warn!(error = %e, "broadcast: unreadable redis message");
                        inner.missed_all();
                    }
                }
            }
        }
        tracing::warn!("broadcast: redis subscription lost; resubscribing");
        if !missed(&weak) {
            return;
        }
        let Some(next) = reconnect(&mut shutdown, "redis resubscribe", || {
            subscribe(&client, &channel)
        })
        .await
        else {
            return;
        };
        pubsub = next;
        // Messages sent while unsubscribed are lost.
        if !missed(&weak) {
            return;
        }
    }
}

//! Cluster broadcast: what one host instance publishes, every other instance
//! of the deployment hears. Caches use it to evict what another instance
//! changed (the tenant cache, the gateway-settings cache, and later the
//! features cache), each on a topic of its own.
//!
//! Transports, chosen at start-up:
//! - Redis pub/sub when `redis_url` is configured;
//! - else PostgreSQL `NOTIFY`/`LISTEN` when the store is PostgreSQL;
//! - else none: SQLite is one process, and [`Broadcast::publish`] is a no-op.
//!
//! Invariants:
//! - An instance never hears its own messages (each carries the sender's
//!   random origin), so a publisher evicts locally *before* it publishes.
//! - A subscriber hears [`Heard::Missed`] whenever messages may have been
//!   lost: the subscription dropped and was re-established, a message could
//!   not be read, or one was too large for `NOTIFY` and was replaced by a
//!   "missed" marker. It must then drop everything it caches.
//! - Delivery is best effort: a message published while a listener is
//!   reconnecting is lost (and the listener reports [`Heard::Missed`]), so
//!   every cache still bounds staleness with a TTL.
//!
//! Must never: require Redis, block a request on a listener, or deliver a
//! message to a subscriber of another topic.

mod postgres;
mod redis;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{Backend, Store, StoreError};

/// Default channel name (PostgreSQL `NOTIFY` channel / Redis pub/sub channel).
pub const DEFAULT_CHANNEL: &str = "payhost_tenant_invalidate";

/// PostgreSQL's `NOTIFY` payload limit is 8000 bytes; stay under it.
const MAX_NOTIFY_PAYLOAD: usize = 7900;

/// How long subscribing may take before start-up fails.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect back-off after a lost subscription, doubling up to the max.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Errors of the broadcast.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// A [`BroadcastOptions`] value is unusable; raised at start-up.
    #[error("invalid broadcast option `{option}`: {reason}")]
    Config {
        /// The option's field name.
        option: &'static str,
        /// What is wrong with it (never the value: URLs may hold passwords).
        reason: String,
    },
    /// A Redis command failed.
    #[error("redis {action} failed: {source}")]
    Redis {
        /// What was being done (`connect`, `publish`, `subscribe`).
        action: &'static str,
        /// The Redis error.
        #[source]
        source: ::redis::RedisError,
    },
    /// A Redis operation did not complete in time.
    #[error("redis {action} timed out")]
    RedisTimeout {
        /// What was being done.
        action: &'static str,
    },
    /// Publishing with PostgreSQL `NOTIFY` failed.
    #[error("broadcasting over PostgreSQL NOTIFY failed: {0}")]
    Notify(#[source] StoreError),
    /// Subscribing with PostgreSQL `LISTEN` failed.
    #[error("listening on the PostgreSQL broadcast channel failed: {0}")]
    Listen(#[source] sqlx::Error),
    /// Subscribing with PostgreSQL `LISTEN` timed out.
    #[error("listening on the PostgreSQL broadcast channel timed out")]
    ListenTimeout,
}

/// Where a [`Broadcast`] sends and hears messages.
#[derive(Clone, Default)]
pub struct BroadcastOptions {
    /// `redis://…`: use Redis pub/sub.
    pub redis_url: Option<String>,
    /// Plain `postgres://…` URL of the store's database, for the `LISTEN`
    /// connection (an [`sqlx::AnyPool`] cannot `LISTEN`). Required when the
    /// store is PostgreSQL and `redis_url` is not set; refused on SQLite.
    pub postgres_url: Option<String>,
    /// The channel ([`DEFAULT_CHANNEL`] when empty is not allowed: set it).
    /// Every instance of one deployment uses the same; deployments sharing
    /// a database server or a Redis without sharing tenants use different
    /// ones. Lowercase ASCII letters, digits and `_`, at most 63 bytes.
    pub channel: String,
}

impl fmt::Debug for BroadcastOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |url: &Option<String>| url.as_ref().map(|_| "[redacted]");
        f.debug_struct("BroadcastOptions")
            .field("redis_url", &redacted(&self.redis_url))
            .field("postgres_url", &redacted(&self.postgres_url))
            .field("channel", &self.channel)
            .finish()
    }
}

/// What a subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Another instance published this payload on the subscriber's topic.
    Message(&'a str),
    /// Messages may have been lost: drop everything cached.
    Missed,
}

type Handler = Box<dyn Fn(Heard<'_>) + Send + Sync>;

/// The message on the wire: one channel carries every topic.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    origin: String,
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// The payload was too large to send: every listener treats it as missed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    missed: bool,
}

enum Transport {
    /// One process: nobody else to tell.
    Local,
    Postgres {
        store: Store,
        url: String,
    },
    Redis(redis::Publisher),
}

struct Inner {
    transport: Transport,
    channel: String,
    /// Random id of this instance, so it ignores its own messages.
    origin: String,
    subscribers: Mutex<Vec<(&'static str, Handler)>>,
    /// Set by the first [`Broadcast::start`]; later calls start nothing.
    started: std::sync::atomic::AtomicBool,
    /// Dropped with the last clone; the listener stops when it closes.
    shutdown: watch::Sender<()>,
}

/// The cluster broadcast of one instance. Cheap to clone; build it once
/// per process with [`Broadcast::new`], hand clones to every cache, then
/// [`Broadcast::start`] it.
#[derive(Clone)]
pub struct Broadcast {
    inner: Arc<Inner>,
}

impl fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.inner.transport {
            Transport::Local => "local",
            Transport::Postgres { .. } => "postgres",
            Transport::Redis(_) => "redis",
        };
        f.debug_struct("Broadcast")
            .field("transport", &transport)
            .field("channel", &self.inner.channel)
            .finish()
    }
}

impl Broadcast {
    /// Validates `opts` against the store's backend; connects to nothing yet.
    pub fn new(store: &Store, opts: BroadcastOptions) -> Result<Broadcast, BroadcastError> {
        let config = |option, reason: &str| BroadcastError::Config {
            option,
            reason: reason.to_owned(),
        };
        let channel_ok = !opts.channel.is_empty()
            && opts.channel.len() <= 63
            && opts
                .channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !channel_ok {
            return Err(config(
                "channel",
                "must be 1-63 lowercase ASCII letters, digits or `_`",
            ));
        }
        let redis = match &opts.redis_url {
            Some(url) => Some(redis::Publisher::new(url)?),
            None => None,
        };
        let transport = match (opts.postgres_url, store.backend(), redis) {
            (Some(url), Backend::Postgres, redis) => {
                if !matches!(Backend::from_url(&url), Ok(Backend::Postgres)) {
                    return Err(config("postgres_url", "must be a postgres:// URL"));
                }
                match redis {
                    Some(publisher) => Transport::Redis(publisher),
                    None => Transport::Postgres {
                        store: store.clone(),
                        url,
                    },
                }
            }
            (Some(_), Backend::Sqlite, _) => {
                return Err(config(
                    "postgres_url",
                    "is set but the store is SQLite, which needs no LISTEN connection",
                ));
            }
            (None, _, Some(publisher)) => Transport::Redis(publisher),
            (None, Backend::Postgres, None) => {
                return Err(config(
                    "postgres_url",
                    "is required on PostgreSQL without redis_url: other instances' \
                     messages arrive over LISTEN",
                ));
            }
            (None, Backend::Sqlite, None) => Transport::Local,
        };
        Ok(Broadcast::with_transport(transport, opts.channel))
    }

    /// A broadcast for one process: publishing is a no-op.
    pub fn local() -> Broadcast {
        Broadcast::with_transport(Transport::Local, DEFAULT_CHANNEL.to_owned())
    }

    fn with_transport(transport: Transport, channel: String) -> Broadcast {
        let mut origin = [0u8; 8];
        rand::rng().fill_bytes(&mut origin);
        let (shutdown, _) = watch::channel(());
        Broadcast {
            inner: Arc::new(Inner {
                transport,
                channel,
                origin: hex::encode(origin),
                subscribers: Mutex::new(Vec::new()),
                started: std::sync::atomic::AtomicBool::new(false),
                shutdown,
            }),
        }
    }

    /// Whether other instances can exist (a transport is configured).
    pub fn is_shared(&self) -> bool {
        !matches!(self.inner.transport, Transport::Local)
    }

    /// Calls `handler` for every message other instances publish on `topic`,
    /// and with [`Heard::Missed`] when some may have been lost. Handlers run
    /// on the listener task: they must be quick and must not block.
    pub fn subscribe(
        &self,
        topic: &'static str,
        handler: impl Fn(Heard<'_>) + Send + Sync + 'static,
    ) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((topic, Box::new(handler)));
    }

    /// Subscribes to the channel and spawns the task that delivers other
    /// instances' messages. Returns once subscribed, so a message sent after
    /// it returns is heard; `None` for a local broadcast. The first
    /// subscription's failure is returned (a misconfiguration should stop
    /// start-up); later losses are retried in the background with back-off,
    /// each reported to subscribers as [`Heard::Missed`]. The task ends when
    /// every clone of the broadcast is dropped. Only the first call starts a
    /// listener; later ones return `None` (unless the first failed).
    pub async fn start(&self) -> Result<Option<JoinHandle<()>>, BroadcastError> {
        use std::sync::atomic::Ordering;
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let started = self.start_listener().await;
        if started.is_err() {
            self.inner.started.store(false, Ordering::Release);
        }
        started
    }

    async fn start_listener(&self) -> Result<Option<JoinHandle<()>>, BroadcastError> {
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.subscribe();
        let channel = self.inner.channel.clone();
        match &self.inner.transport {
            Transport::Local => Ok(None),
            Transport::Redis(publisher) => {
                let client = publisher.client().clone();
                let pubsub = redis::subscribe(&client, &channel).await?;
                Ok(Some(tokio::spawn(redis::listen(
                    weak, client, channel, pubsub, shutdown,
                ))))
            }
            Transport::Postgres { url, .. } => {
                let listener = postgres::subscribe(url, &channel).await?;
                Ok(Some(tokio::spawn(postgres::listen(
                    weak,
                    url.clone(),
                    channel,
                    listener,
                    shutdown,
                ))))
            }
        }
    }

    /// Sends `payload` on `topic` to every other instance. A payload too
    /// large for the transport is sent as a "missed" marker instead, so
    /// receivers drop everything of that topic. An error means the other
    /// instances did not hear it: they catch up within their caches' TTL.
    pub async fn publish(&self, topic: &str, payload: &str) -> Result<(), BroadcastError> {
        let envelope = |payload: Option<&str>| Envelope {
            origin: self.inner.origin.clone(),
            topic: topic.to_owned(),
            missed: payload.is_none(),
            payload: payload.map(str::to_owned),
        };
        let encode = |e: &Envelope| {
            // Plain strings only: serialising cannot fail, but if it ever
            // did, a marker that makes receivers drop everything is safe.
            serde_json::to_string(e)
                .unwrap_or_else(|_| format!(r#"{{"origin":"","topic":"{topic}","missed":true}}"#))
        };
        match &self.inner.transport {
            Transport::Local => Ok(()),
            Transport::Redis(publisher) => {
                publisher
                    .publish(&self.inner.channel, &encode(&envelope(Some(payload))))
                    .await
            }
            Transport::Postgres { store, .. } => {
                let mut message = encode(&envelope(Some(payload)));
                if message.len() > MAX_NOTIFY_PAYLOAD {
                    message = encode(&envelope(None));
                }
                postgres::notify(store, &self.inner.channel, &message).await
            }
        }
    }

    /// Delivers one raw message from the channel to its topic's subscribers.
    #[cfg(test)]
    pub(crate) fn deliver_raw(&self, raw: &str) {
        self.inner.deliver(raw);
    }

    /// A message as it travels on the channel: from this instance or from
    /// another one; `payload: None` is a "missed" marker.
    #[cfg(test)]
    pub(crate) fn wire_message(
        &self,
        from_self: bool,
        topic: &str,
        payload: Option<&str>,
    ) -> String {
        let origin = if from_self {
            self.inner.origin.clone()
        } else {
            "another-instance".to_owned()
        };
        serde_json::to_string(&Envelope {
            origin,
            topic: topic.to_owned(),
            missed: payload.is_none(),
            payload: payload.map(str::to_owned),
        })
        .unwrap_or_default()
    }
}

impl Inner {
    /// Hands one raw message from the channel to its topic's subscribers:
    /// ignored when this instance sent it; [`Heard::Missed`] to everyone
    /// when it cannot be read (nobody can tell what it named).
    fn deliver(&self, raw: &str) {
        let subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        match serde_json::from_str::<Envelope>(raw) {
            Ok(envelope) if envelope.origin == self.origin => {}
            Ok(envelope) => {
                let heard = match (&envelope.payload, envelope.missed) {
                    (Some(payload), false) => Heard::Message(payload),
                    _ => Heard::Missed,
                };
                for (topic, handler) in subscribers.iter() {
                    if *topic == envelope.topic {
                        handler(heard);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "broadcast: unreadable message; every subscriber drops its cache");
                for (_, handler) in subscribers.iter() {
                    handler(Heard::Missed);
                }
            }
        }
    }

    /// Tells every subscriber that messages may have been lost.
    fn missed_all(&self) {
        let subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, handler) in subscribers.iter() {
            handler(Heard::Missed);
        }
    }
}

/// [`Inner::missed_all`] on the broadcast behind `weak`; `false` if it is gone.
fn missed(weak: &Weak<Inner>) -> bool {
    match weak.upgrade() {
        Some(inner) => {
            inner.missed_all();
            true
        }
        None => false,
    }
}

/// Calls `connect` after each back-off step until it succeeds, or `None`
/// once the broadcast shuts down.
async fn reconnect<T, E, Fut>(
    shutdown: &mut watch::Receiver<()>,
    what: &str,
    mut connect: impl FnMut() -> Fut,
) -> Option<T>
where
    E: fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        let wait = backoff;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        tokio::select! {
            _ = shutdown.changed() => return None,
            () = tokio::time::sleep(wait) => {}
        }
        match connect().await {
            Ok(connected) => return Some(connected),
            Err(e) => tracing::warn!(error = %e, "broadcast: {what} failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(b: &Broadcast, topic: &'static str) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        b.subscribe(topic, move |heard| {
            sink.lock().expect("seen").push(match heard {
                Heard::Message(m) => m.to_owned(),
                Heard::Missed => "<missed>".to_owned(),
            })
        });
        seen
    }

    #[test]
    fn messages_reach_only_their_topic_and_never_their_sender() {
        let b = Broadcast::local();
        let tenants = recorder(&b, "tenancy");
        let gateways = recorder(&b, "gateways");
        b.deliver_raw(&b.wire_message(true, "tenancy", Some("mine")));
        b.deliver_raw(&b.wire_message(false, "tenancy", Some("t1")));
        b.deliver_raw(&b.wire_message(false, "gateways", Some("g1")));
        b.deliver_raw(&b.wire_message(false, "features", Some("f1")));
        b.deliver_raw(&b.wire_message(false, "gateways", None));
        assert_eq!(*tenants.lock().expect("t"), vec!["t1"]);
        assert_eq!(*gateways.lock().expect("g"), vec!["g1", "<missed>"]);
        b.deliver_raw("{not json");
        assert_eq!(*tenants.lock().expect("t"), vec!["t1", "<missed>"]);
        assert_eq!(
            *gateways.lock().expect("g"),
            vec!["g1", "<missed>", "<missed>"]
        );
    }
}

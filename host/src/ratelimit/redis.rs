//! The shared limiter: one TAT per key in Redis, read and moved by one
//! atomic Lua script (`EVALSHA`, one round trip per request) on Redis's own
//! clock, so every instance shares the budget whatever their clocks say.
//!
//! Fails fast: a request never waits on a reconnect another request is
//! making, and after a failure Redis is skipped for [`RETRY_AFTER`]; the
//! caller then falls back to the in-process limiter.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::gcra::Quota;

/// The GCRA step of [`super::gcra::step`] in Lua, in microseconds.
/// `KEYS[1]`: the key's TAT; `ARGV[1]`: interval; `ARGV[2]`: tolerance.
/// Answers `{admitted (0|1), TAT - now before this request}`; an admitted
/// request stores the new TAT with an expiry of its reset time (an expired
/// key is a full budget). Times are microseconds since the epoch, exact in
/// a Lua double; `%d` keeps all their digits (Lua's default `%.14g` would not).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
if ahead + interval > tolerance then
  return {0, ahead}
end
redis.call('SET', KEYS[1], string.format('%d', tat + interval), 'PX', math.floor((ahead + interval) / 1000) + 1)
return {1, ahead}
";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Every request waits on this at most: a slow Redis costs the budget's
/// sharing, not the API's latency.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, requests use the in-process limiter this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why Redis did not answer (the caller logs it and falls back).
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    /// Skipping Redis after a recent failure, or another request is connecting.
    #[error("redis is unavailable (recent failure or reconnect in progress)")]
    Unavailable,
    /// A Redis command or the connection failed.
    #[error("redis {action} failed: {source}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// Connecting did not finish in time.
    #[error("connecting to redis timed out")]
    Timeout,
    /// The script answered something else than two integers.
    #[error("the rate limit script answered an unexpected value")]
    BadReply,
}

#[derive(Default)]
struct State {
    /// The live connection and the script's SHA1 loaded on it.
    conn: Option<(MultiplexedConnection, String)>,
    retry_at: Option<Instant>,
}

/// The Redis side of the limiter.
pub(super) struct RedisLimiter {
    client: redis::Client,
    prefix: String,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
}

impl RedisLimiter {
    /// Validates `url`; connects on first use.
    pub(super) fn new(url: &str, prefix: String) -> Result<RedisLimiter, redis::RedisError> {
        Ok(RedisLimiter {
            client: redis::Client::open(url)?,
            prefix,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether Redis is being skipped after a failure.
    pub(super) fn skipping(&self) -> bool {
        let state = self.lock();
        state.conn.is_none() && state.retry_at.is_some_and(|at| at > Instant::now())
    }

    fn failed(&self) {
        let mut state = self.lock();
        state.conn = None;
        state.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    async fn conn(&self) -> Result<(MultiplexedConnection, String), RedisLimitError> {
        if let Some(c) = self.lock().conn.clone() {
            return Ok(c);
        }
        if self.skipping() {
            return Err(RedisLimitError::Unavailable);
        }
        let _connecting = self
            .connecting
            .try_lock()
            .map_err(|_| RedisLimitError::Unavailable)?;
        if let Some(c) = self.lock().conn.clone() {
            return Ok(c);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let connected = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|source| RedisLimitError::Redis {
                    action: "connect",
                    source,
                })?;
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(&mut conn)
                .await
                .map_err(|source| RedisLimitError::Redis {
                    action: "script load",
                    source,
                })?;
            Ok::<_, RedisLimitError>((conn, sha))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, connected).await {
            Ok(Ok(c)) => {
                let mut state = self.lock();
                state.conn = Some(c.clone());
                state.retry_at = None;
                Ok(c)
            }
            Ok(Err(e)) => {
                self.failed();
                Err(e)
            }
            Err(_) => {
                self.failed();
                Err(RedisLimitError::Timeout)
            }
        }
    }

    /// One request of `key` (already namespaced by lane and tenant) under
    /// `quota`: whether it is admitted and how far the key's TAT was ahead
    /// of Redis's clock before it.
    pub(super) async fn check(
        &self,
        key: &str,
        quota: Quota,
    ) -> Result<(bool, u64), RedisLimitError> {
        let (mut conn, sha) = self.conn().await?;
        let full_key = format!("{}{key}", self.prefix);
        let run = |cmd: &str, script: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(script)
                .arg(1)
                .arg(&full_key)
                .arg(quota.interval())
                .arg(quota.tolerance());
            c
        };
        let mut reply = run("EVALSHA", &sha)
            .query_async::<Vec<i64>>(&mut conn)
            .await;
        if let Err(e) = &reply
            && e.kind() == redis::ErrorKind::NoScriptError
        {
            // Redis lost its script cache (restart, SCRIPT FLUSH): EVAL
            // loads it again under the same SHA.
            reply = run("EVAL", SCRIPT).query_async::<Vec<i64>>(&mut conn).await;
        }
        match reply {
            Ok(values) => match values.as_slice() {
                [admitted, ahead] if *ahead >= 0 => Ok((*admitted == 1, *ahead as u64)),
                _ => Err(RedisLimitError::BadReply),
            },
            Err(source) => {
                if !matches!(
                    source.kind(),
                    redis::ErrorKind::TypeError | redis::ErrorKind::ResponseError
                ) {
                    self.failed();
                }
                Err(RedisLimitError::Redis {
                    action: "evalsha",
                    source,
                })
            }
        }
    }
}

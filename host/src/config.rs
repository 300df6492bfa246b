//! Configuration: one typed struct, layered defaults → file (TOML) → `PAYHOST_*`
//! environment, unknown keys rejected, validated at start-up with messages
//! that name the offending key. Secrets are wrapped so they never print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runtime::{Origin, OutboundPolicy, ProviderSettings, SandboxLimits};

/// Default cap on mutations in progress (connected or not) per instance
/// (`max_mutations_in_progress`).
pub const DEFAULT_MAX_MUTATIONS: usize = 1024;

/// A configuration value that must never be printed or logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value; call only where the secret is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything `payhost serve` needs. Its `Debug` hides secrets and the
/// passwords of the database and Redis URLs.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Start the gateway emulators on loopback and point the first-party
    /// providers at them (the offline default). Set `false` for live gateways.
    pub emulators: bool,
    /// Load the first-party providers embedded in the binary.
    pub bundled_providers: bool,
    /// Directory of extra provider components (`*.wasm`).
    pub providers_dir: Option<PathBuf>,
    /// Per-call sandbox limits.
    pub limits: LimitsConfig,
    /// Per-provider operator settings, by provider id.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Where the embedded defaults keep their files (SQLite database,
    /// generated admin token and master key).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `<data_dir>/payhost.db`.
    pub database_url: Option<String>,
    /// Operator API token. When unset, one is generated into
    /// `<data_dir>/admin-token` (mode 0600) on first start.
    pub admin_token: Option<Secret>,
    /// Base64 32-byte key sealing gateway secrets. When unset, one is
    /// generated into `<data_dir>/master.key` (mode 0600) on first start.
    pub master_key: Option<Secret>,
    /// Id stored with every ciphertext sealed by `master_key`.
    pub master_key_id: String,
    /// Earlier master keys by id, kept to open older ciphertexts (rotation).
    pub retired_master_keys: BTreeMap<String, Secret>,
    /// Optional Redis for the shared tenant cache and invalidation.
    pub redis_url: Option<String>,
    /// Largest accepted request body, KiB.
    pub max_body_kib: usize,
    /// Mutations in progress at once on this instance. Each runs to
    /// completion in its own task even if its client hangs up; beyond this
    /// a mutation waits briefly for a slot, then gets 503 `server_busy`.
    pub max_mutations_in_progress: usize,
    /// `[http]`: connection timeouts and cap.
    pub http: HttpConfig,
    /// `[rate_limit]`: request budgets per (tenant, API key) and per lane.
    pub rate_limit: RateLimitConfig,
    /// `[webhooks]`: ingestion limits, the worker, dead-letter alerts.
    pub webhooks: WebhooksConfig,
    /// `[jobs.<type>]`: retry policy per background job type.
    pub jobs: JobsConfig,
    /// `[janitor]`: reconciliation of orders left pending.
    pub janitor: JanitorConfig,
    /// The URL clients and gateways reach this host at (webhook URLs
    /// registered in offline mode); default `http://<listen>`.
    pub public_base_url: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(redact_url_password);
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("emulators", &self.emulators)
            .field("bundled_providers", &self.bundled_providers)
            .field("providers_dir", &self.providers_dir)
            .field("limits", &self.limits)
            .field("providers", &self.providers)
            .field("data_dir", &self.data_dir)
            .field("database_url", &url(&self.database_url))
            .field("admin_token", &self.admin_token)
            .field("master_key", &self.master_key)
            .field("master_key_id", &self.master_key_id)
            .field("retired_master_keys", &self.retired_master_keys)
            .field("redis_url", &url(&self.redis_url))
            .field("max_body_kib", &self.max_body_kib)
            .field("max_mutations_in_progress", &self.max_mutations_in_progress)
            .field("http", &self.http)
            .field("rate_limit", &self.rate_limit)
            .field("webhooks", &self.webhooks)
            .field("jobs", &self.jobs)
            .field("janitor", &self.janitor)
            .field("public_base_url", &self.public_base_url)
            .finish()
    }
}

/// `scheme://user:password@host/…` with the password replaced by `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// `[limits]`: what every component call runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wall-clock budget of one call, in milliseconds.
    pub call_deadline_ms: u64,
    /// Memory cap of one instance, in MiB.
    pub memory_cap_mib: usize,
    /// Instances alive at once.
    pub max_instances: u32,
    /// Outbound requests one component call may send (the next is denied).
    pub max_requests_per_call: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = SandboxLimits::default();
        LimitsConfig {
            call_deadline_ms: d.call_deadline.as_millis() as u64,
            memory_cap_mib: d.memory_cap_bytes / (1024 * 1024),
            max_instances: d.max_instances,
            max_requests_per_call: d.max_requests_per_call,
        }
    }
}

/// `[http]`: what a client connection may hold. See
/// [`crate::http_server`] for how each limit is enforced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A request head must arrive within this, seconds.
    pub header_read_timeout_secs: u64,
    /// A request body must arrive within this of its head, seconds.
    pub body_read_timeout_secs: u64,
    /// A connection with no request in progress is closed after this
    /// long without receiving anything, seconds.
    pub idle_timeout_secs: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = crate::http_server::HttpOptions::default();
        HttpConfig {
            header_read_timeout_secs: d.header_read_timeout.as_secs(),
            body_read_timeout_secs: d.body_read_timeout.as_secs(),
            idle_timeout_secs: d.idle_timeout.as_secs(),
            max_connections: d.max_connections,
        }
    }
}

/// `[rate_limit]`: request budgets (GCRA, see [`crate::ratelimit`]). Shared
/// across instances through Redis when `redis_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Tenant API requests per minute per (tenant, API key), unless the
    /// tenant's `api.requests_per_minute` feature says otherwise.
    pub requests_per_minute: u64,
    /// Requests a key may send at once; unset = `requests_per_minute`
    /// (a burst above a key's rate is clamped to it).
    pub burst: Option<u64>,
    /// Webhook ingestion requests per minute per (tenant, provider).
    pub webhooks_per_minute: u64,
    /// Webhook diagnosis requests per minute per (tenant, provider).
    pub webhook_diagnosis_per_minute: u64,
    /// Keys the in-process limiter holds at most (idle keys are evicted).
    pub max_tracked_keys: usize,
    /// Prefix of the limiter's Redis keys.
    pub redis_key_prefix: String,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let d = crate::ratelimit::RateLimitOptions::default();
        RateLimitConfig {
            requests_per_minute: d.requests_per_minute,
            burst: d.burst,
            webhooks_per_minute: d.webhooks_per_minute,
            webhook_diagnosis_per_minute: d.webhook_diagnosis_per_minute,
            max_tracked_keys: d.max_tracked_keys,
            redis_key_prefix: d.redis_prefix,
        }
    }
}

/// `[janitor]`: the reconciliation janitor (see [`crate::janitor`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JanitorConfig {
    /// Run the janitor on this instance.
    pub enabled: bool,
    /// How often a pass runs, milliseconds.
    pub interval_ms: u64,
    /// Orders younger than this are left alone, seconds.
    pub min_age_secs: u64,
    /// Delay after the first check that finds an order still waiting,
    /// seconds; doubled after each further one.
    pub backoff_base_secs: u64,
    /// Longest delay between two checks of one order, seconds.
    pub backoff_max_secs: u64,
    /// Orders checked per pass at most.
    pub batch: u32,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        let d = crate::janitor::JanitorOptions::default();
        JanitorConfig {
            enabled: true,
            interval_ms: d.interval.as_millis() as u64,
            min_age_secs: d.min_age.as_secs(),
            backoff_base_secs: d.backoff_base.as_secs(),
            backoff_max_secs: d.backoff_max.as_secs(),
            batch: d.batch,
        }
    }
}

impl RateLimitConfig {
    /// Rates and the burst 1 to 1,000,000 per minute, `max_tracked_keys`
    /// 16 to 100,000,000, the prefix 1 to 128 bytes without whitespace.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("rate_limit.{key}"),
            message,
        };
        for (key, value) in [
            ("requests_per_minute", Some(self.requests_per_minute)),
            ("burst", self.burst),
            ("webhooks_per_minute", Some(self.webhooks_per_minute)),
            (
                "webhook_diagnosis_per_minute",
                Some(self.webhook_diagnosis_per_minute),
            ),
        ] {
            if let Some(v) = value
                && !(1..=1_000_000).contains(&v)
            {
                return Err(invalid(key, format!("must be 1 to 1000000, not {v}")));
            }
        }
        if !(16..=100_000_000).contains(&self.max_tracked_keys) {
            return Err(invalid(
                "max_tracked_keys",
                format!("must be 16 to 100000000, not {}", self.max_tracked_keys),
            ));
        }
        let p = &self.redis_key_prefix;
        if p.is_empty() || p.len() > 128 || p.chars().any(char::is_whitespace) {
            return Err(invalid(
                "redis_key_prefix",
                "must be 1 to 128 bytes without whitespace".into(),
            ));
        }
        Ok(())
    }
}

impl JanitorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: format!("janitor.{key}"),
            message: message.to_string(),
        };
        if self.interval_ms == 0 {
            return Err(invalid("interval_ms", "must be > 0"));
        }
        if self.backoff_base_secs == 0 {
            return Err(invalid("backoff_base_secs", "must be > 0"));
        }
        if self.backoff_max_secs < self.backoff_base_secs {
            return Err(invalid("backoff_max_secs", "must be >= backoff_base_secs"));
        }
        if self.batch == 0 {
            return Err(invalid("batch", "must be > 0"));
        }
        Ok(())
    }

    /// The janitor's options.
    pub fn options(&self) -> crate::janitor::JanitorOptions {
        crate::janitor::JanitorOptions {
            interval: Duration::from_millis(self.interval_ms),
            min_age: Duration::from_secs(self.min_age_secs),
            backoff_base: Duration::from_secs(self.backoff_base_secs),
            backoff_max: Duration::from_secs(self.backoff_max_secs),
            batch: self.batch,
        }
    }
}

/// `[providers.<id>]`: operator settings for one provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Base URL instead of the component's default.
    pub base_url: Option<String>,
    /// Allowed outbound origins (`scheme://host:port`), replacing the
    /// component's defaults.
    pub allowed_hosts: Option<Vec<String>>,
    /// Let allowed names resolve to private addresses.
    pub allow_private_networks: bool,
    /// Connect timeout, seconds.
    pub connect_timeout_secs: Option<u64>,
    /// First-byte timeout, seconds.
    pub response_timeout_secs: Option<u64>,
    /// Response body cap, KiB.
    pub max_response_kib: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            emulators: true,
            bundled_providers: true,
            providers_dir: None,
            limits: LimitsConfig::default(),
            providers: BTreeMap::new(),
            data_dir: PathBuf::from("payhost-data"),
            database_url: None,
            admin_token: None,
            master_key: None,
            master_key_id: "k1".into(),
            retired_master_keys: BTreeMap::new(),
            redis_url: None,
            max_body_kib: 64,
            max_mutations_in_progress: DEFAULT_MAX_MUTATIONS,
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            webhooks: WebhooksConfig::default(),
            jobs: JobsConfig::default(),
            janitor: JanitorConfig::default(),
            public_base_url: None,
        }
    }
}

/// `[webhooks]`: the inbound webhook pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Largest accepted webhook body, KiB.
    pub max_body_kib: usize,
    /// Worker tasks per instance.
    pub workers: usize,
    /// Inbox events one worker claims at a time.
    pub batch: usize,
    /// How long a claimed event stays leased to its worker, seconds.
    pub lease_secs: u64,
    /// How often the worker looks for due events besides being woken, ms.
    pub poll_interval_ms: u64,
    /// Where a new dead letter is announced (JSON POST, Slack-compatible
    /// `text`); none: no alerts.
    pub alert_url: Option<String>,
    /// Base URL of the operator API, for the link in an alert.
    pub alert_link_base: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            max_body_kib: 256,
            workers: 2,
            batch: 32,
            lease_secs: 60,
            poll_interval_ms: 1000,
            alert_url: None,
            alert_link_base: "http://127.0.0.1:8080".into(),
        }
    }
}

/// `[jobs]`: one retry policy per job type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Applying an inbox event (`webhook`).
    pub webhook: RetryConfig,
    /// Sending a dead-letter alert (`alert`).
    pub alert: RetryConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            webhook: RetryConfig::default(),
            alert: RetryConfig {
                max_attempts: 10,
                backoff: Backoff::Exponential,
                base_secs: 10,
                factor: 2,
            },
        }
    }
}

/// How a job type retries: attempt `n` (1-based) that fails waits
/// `base × factor^(n-1)` (exponential) or `base` (fixed) before the next;
/// after `max_attempts` failures the job is a dead letter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts before the job becomes a dead letter.
    pub max_attempts: u32,
    /// `exponential` or `fixed`.
    pub backoff: Backoff,
    /// First wait, seconds.
    pub base_secs: u64,
    /// Growth per attempt (exponential only).
    pub factor: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            base_secs: 60,
            factor: 5,
        }
    }
}

/// A retry policy's backoff strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `base × factor^(attempt-1)`.
    Exponential,
    /// Always `base`.
    Fixed,
}

impl Backoff {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Exponential => "exponential",
            Backoff::Fixed => "fixed",
        }
    }
}

impl RetryConfig {
    /// The wait after failed attempt `attempt` (1-based), capped at a day.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let base = self.base_secs;
        let secs = match self.backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let mut secs = base;
                for _ in 1..attempt.max(1) {
                    secs = secs.saturating_mul(u64::from(self.factor));
                }
                secs
            }
        };
        Duration::from_secs(secs.min(86_400))
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::Invalid {
                key: format!("jobs.{key}.max_attempts"),
                message: format!("must be 1 to 100, not {}", self.max_attempts),
            });
        }
        if self.base_secs > 86_400 {
            return Err(ConfigError::Invalid {
                key: format!("jobs.{key}.base_secs"),
                message: "must be at most 86400".into(),
            });
        }
        if self.backoff == Backoff::Exponential && !(1..=100).contains(&self.factor) {
            return Err(ConfigError::Invalid {
                key: format!("jobs.{key}.factor"),
                message: "must be 1 to 100".into(),
            });
        }
        Ok(())
    }
}

impl WebhooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: format!("webhooks.{key}"),
            message: message.to_string(),
        };
        if !(1..=16 * 1024).contains(&self.max_body_kib) {
            return Err(invalid("max_body_kib", "must be 1 to 16384"));
        }
        if !(1..=64).contains(&self.workers) {
            return Err(invalid("workers", "must be 1 to 64"));
        }
        if !(1..=1000).contains(&self.batch) {
            return Err(invalid("batch", "must be 1 to 1000"));
        }
        if !(1..=86_400).contains(&self.lease_secs) {
            return Err(invalid("lease_secs", "must be 1 to 86400"));
        }
        if !(10..=3_600_000).contains(&self.poll_interval_ms) {
            return Err(invalid("poll_interval_ms", "must be 10 to 3600000"));
        }
        if let Some(url) = &self.alert_url
            && Origin::of_url(url).is_none()
        {
            return Err(invalid("alert_url", "must be an http(s) URL"));
        }
        Ok(())
    }
}

/// A configuration problem, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Defaults, then `file` (if any), then `PAYHOST_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        for (var, value) in env {
            config.apply_env(&var, &value)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        let Some(key) = var.strip_prefix("PAYHOST_") else {
            return Ok(());
        };
        let bad = |message: String| ConfigError::Env {
            var: var.to_string(),
            message,
        };
        fn parse<T: std::str::FromStr>(v: &str) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            v.parse::<T>().map_err(|e| format!("`{v}`: {e}"))
        }
        match key {
            "LISTEN" => self.listen = parse(value).map_err(bad)?,
            "EMULATORS" => self.emulators = parse(value).map_err(bad)?,
            "BUNDLED_PROVIDERS" => self.bundled_providers = parse(value).map_err(bad)?,
            "PROVIDERS_DIR" => self.providers_dir = Some(PathBuf::from(value)),
            "CALL_DEADLINE_MS" => self.limits.call_deadline_ms = parse(value).map_err(bad)?,
            "MEMORY_CAP_MIB" => self.limits.memory_cap_mib = parse(value).map_err(bad)?,
            "MAX_INSTANCES" => self.limits.max_instances = parse(value).map_err(bad)?,
            "MAX_REQUESTS_PER_CALL" => {
                self.limits.max_requests_per_call = parse(value).map_err(bad)?
            }
            "DATA_DIR" => self.data_dir = PathBuf::from(value),
            "DATABASE_URL" => self.database_url = Some(value.to_string()),
            "ADMIN_TOKEN" => self.admin_token = Some(Secret::new(value)),
            "MASTER_KEY" => self.master_key = Some(Secret::new(value)),
            "MASTER_KEY_ID" => self.master_key_id = value.to_string(),
            "REDIS_URL" => self.redis_url = Some(value.to_string()),
            "MAX_BODY_KIB" => self.max_body_kib = parse(value).map_err(bad)?,
            "MAX_MUTATIONS_IN_PROGRESS" => {
                self.max_mutations_in_progress = parse(value).map_err(bad)?
            }
            "HTTP_HEADER_READ_TIMEOUT_SECS" => {
                self.http.header_read_timeout_secs = parse(value).map_err(bad)?;
            }
            "HTTP_BODY_READ_TIMEOUT_SECS" => {
                self.http.body_read_timeout_secs = parse(value).map_err(bad)?;
            }
            "HTTP_IDLE_TIMEOUT_SECS" => self.http.idle_timeout_secs = parse(value).map_err(bad)?,
            "HTTP_MAX_CONNECTIONS" => self.http.max_connections = parse(value).map_err(bad)?,
            "RATE_LIMIT_REQUESTS_PER_MINUTE" => {
                self.rate_limit.requests_per_minute = parse(value).map_err(bad)?;
            }
            "RATE_LIMIT_BURST" => self.rate_limit.burst = Some(parse(value).map_err(bad)?),
            "RATE_LIMIT_WEBHOOKS_PER_MINUTE" => {
                self.rate_limit.webhooks_per_minute = parse(value).map_err(bad)?;
            }
            "RATE_LIMIT_WEBHOOK_DIAGNOSIS_PER_MINUTE" => {
                self.rate_limit.webhook_diagnosis_per_minute = parse(value).map_err(bad)?;
            }
            "RATE_LIMIT_MAX_TRACKED_KEYS" => {
                self.rate_limit.max_tracked_keys = parse(value).map_err(bad)?;
            }
            "RATE_LIMIT_REDIS_KEY_PREFIX" => self.rate_limit.redis_key_prefix = value.to_string(),
            "WEBHOOKS_MAX_BODY_KIB" => self.webhooks.max_body_kib = parse(value).map_err(bad)?,
            "WEBHOOKS_WORKERS" => self.webhooks.workers = parse(value).map_err(bad)?,
            "WEBHOOKS_ALERT_URL" => self.webhooks.alert_url = Some(value.to_string()),
            "WEBHOOKS_ALERT_LINK_BASE" => self.webhooks.alert_link_base = value.to_string(),
            "JOBS_WEBHOOK_MAX_ATTEMPTS" => {
                self.jobs.webhook.max_attempts = parse(value).map_err(bad)?;
            }
            "JOBS_WEBHOOK_BASE_SECS" => self.jobs.webhook.base_secs = parse(value).map_err(bad)?,
            "JANITOR_ENABLED" => self.janitor.enabled = parse(value).map_err(bad)?,
            "JANITOR_INTERVAL_MS" => self.janitor.interval_ms = parse(value).map_err(bad)?,
            "JANITOR_MIN_AGE_SECS" => self.janitor.min_age_secs = parse(value).map_err(bad)?,
            "JANITOR_BACKOFF_BASE_SECS" => {
                self.janitor.backoff_base_secs = parse(value).map_err(bad)?
            }
            "JANITOR_BACKOFF_MAX_SECS" => {
                self.janitor.backoff_max_secs = parse(value).map_err(bad)?
            }
            "JANITOR_BATCH" => self.janitor.batch = parse(value).map_err(bad)?,
            "PUBLIC_BASE_URL" => self.public_base_url = Some(value.to_string()),
            // Variables for other tools (tests, logging) share the prefix.
            _ if key.starts_with("TEST_") || matches!(key, "LOG" | "SKIP_COMPONENT_BUILD") => {}
            _ => return Err(bad("unknown setting".into())),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.limits.call_deadline_ms == 0 {
            return Err(invalid("limits.call_deadline_ms", "must be > 0"));
        }
        if self.limits.memory_cap_mib == 0 {
            return Err(invalid("limits.memory_cap_mib", "must be > 0"));
        }
        if self.limits.max_instances == 0 {
            return Err(invalid("limits.max_instances", "must be > 0"));
        }
        if self.limits.max_requests_per_call == 0 {
            return Err(invalid("limits.max_requests_per_call", "must be > 0"));
        }
        if self.max_body_kib == 0 {
            return Err(invalid("max_body_kib", "must be > 0"));
        }
        if self.max_mutations_in_progress == 0 {
            return Err(invalid("max_mutations_in_progress", "must be > 0"));
        }
        self.http.validate()?;
        self.rate_limit.validate()?;
        self.webhooks.validate()?;
        self.jobs.webhook.validate("webhook")?;
        self.jobs.alert.validate("alert")?;
        self.janitor.validate()?;
        if let Some(url) = &self.public_base_url
            && Origin::of_url(url).is_none()
        {
            return Err(invalid("public_base_url", "must be an http(s) URL"));
        }
        if let Some(t) = &self.admin_token
            && t.expose().len() < 16
        {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        for (id, key) in std::iter::once((&self.master_key_id, self.master_key.as_ref()))
            .filter_map(|(id, k)| k.map(|k| (id, k)))
            .chain(self.retired_master_keys.iter())
        {
            crate::gateways::Vault::decode_key(id, key.expose()).map_err(|e| {
                ConfigError::Invalid {
                    key: format!("master key `{id}`"),
                    message: e.to_string(),
                }
            })?;
        }
        for (id, p) in &self.providers {
            if let Some(url) = &p.base_url
                && Origin::of_url(url).is_none()
            {
                return Err(invalid(
                    &format!("providers.{id}.base_url"),
                    "must be an http(s) URL",
                ));
            }
            for (i, h) in p.allowed_hosts.iter().flatten().enumerate() {
                Origin::parse(h).map_err(|e| ConfigError::Invalid {
                    key: format!("providers.{id}.allowed_hosts[{i}]"),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// `public_base_url`, or `http://<listen>` (no trailing slash).
    pub fn public_base(&self) -> String {
        match &self.public_base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The server loop's limits described by `[http]`.
    pub fn http_options(&self) -> crate::http_server::HttpOptions {
        crate::http_server::HttpOptions {
            header_read_timeout: Duration::from_secs(self.http.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.http.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.http.idle_timeout_secs),
            max_connections: self.http.max_connections,
        }
    }

    /// The rate limiter's options described by `[rate_limit]` and `redis_url`.
    pub fn rate_limit_options(&self) -> crate::ratelimit::RateLimitOptions {
        let r = &self.rate_limit;
        crate::ratelimit::RateLimitOptions {
            requests_per_minute: r.requests_per_minute,
            burst: r.burst,
            webhooks_per_minute: r.webhooks_per_minute,
            webhook_diagnosis_per_minute: r.webhook_diagnosis_per_minute,
            max_tracked_keys: r.max_tracked_keys,
            redis_url: self.redis_url.clone(),
            redis_prefix: r.redis_key_prefix.clone(),
        }
    }

    /// The sandbox limits described by `[limits]`.
    pub fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            call_deadline: Duration::from_millis(self.limits.call_deadline_ms),
            memory_cap_bytes: self.limits.memory_cap_mib * 1024 * 1024,
            max_instances: self.limits.max_instances,
            max_requests_per_call: self.limits.max_requests_per_call,
            ..SandboxLimits::default()
        }
    }

    /// Refuses a `[providers.<id>]` section naming no loaded provider (a
    /// typo would otherwise leave the real provider on its defaults, e.g.
    /// pointed at the live gateway). Checked once the providers are loaded,
    /// since ids come from their manifests.
    pub fn check_provider_sections<'a>(
        &self,
        loaded: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ConfigError> {
        let loaded: Vec<&str> = loaded.into_iter().collect();
        match self
            .providers
            .keys()
            .find(|id| !loaded.contains(&id.as_str()))
        {
            None => Ok(()),
            Some(id) => Err(ConfigError::Invalid {
                key: format!("providers.{id}"),
                message: format!(
                    "no loaded provider has the id `{id}` (loaded: {})",
                    if loaded.is_empty() {
                        "none".to_string()
                    } else {
                        loaded.join(", ")
                    }
                ),
            }),
        }
    }

    /// Runtime settings for provider `id` (validated origins; see `validate`).
    pub fn provider_settings(&self, id: &str) -> ProviderSettings {
        let Some(p) = self.providers.get(id) else {
            return ProviderSettings::default();
        };
        let defaults = OutboundPolicy::default();
        ProviderSettings {
            base_url: p.base_url.clone(),
            allowed_origins: p
                .allowed_hosts
                .as_ref()
                .map(|hosts| hosts.iter().filter_map(|h| Origin::parse(h).ok()).collect()),
            allow_private_networks: p.allow_private_networks,
            outbound: Some(OutboundPolicy {
                connect_timeout: p
                    .connect_timeout_secs
                    .map_or(defaults.connect_timeout, Duration::from_secs),
                first_byte_timeout: p
                    .response_timeout_secs
                    .map_or(defaults.first_byte_timeout, Duration::from_secs),
                max_response_bytes: p
                    .max_response_kib
                    .map_or(defaults.max_response_bytes, |k| k * 1024),
                ..defaults
            }),
        }
    }
}

impl HttpConfig {
    /// Every timeout 1 s to 1 h (0 would close every connection at once, and
    /// an unbounded one is what the timeouts exist to prevent);
    /// `max_connections` 1 to 1,000,000.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, secs) in [
            (
                "http.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("http.body_read_timeout_secs", self.body_read_timeout_secs),
            ("http.idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: format!("must be 1 to 3600 seconds, not {secs}"),
                });
            }
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(ConfigError::Invalid {
                key: "http.max_connections".into(),
                message: format!("must be 1 to 1000000, not {}", self.max_connections),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_section_layers_and_validates() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(
            c.http_options().header_read_timeout,
            Duration::from_secs(10)
        );
        let f = write("[http]\nidle_timeout_secs = 7\nmax_connections = 3\n");
        let env = vec![(
            "PAYHOST_HTTP_HEADER_READ_TIMEOUT_SECS".to_string(),
            "4".to_string(),
        )];
        let c = Config::load(Some(&f.0), env).unwrap();
        let o = c.http_options();
        assert_eq!(o.idle_timeout, Duration::from_secs(7));
        assert_eq!(o.header_read_timeout, Duration::from_secs(4));
        assert_eq!(o.max_connections, 3);

        let f = write("[http]\nbody_read_timeout_secs = 0\n");
        let err = Config::load(Some(&f.0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.body_read_timeout_secs"), "{err}");
        let f = write("[http]\nmax_connections = 0\n");
        let err = Config::load(Some(&f.0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.max_connections"), "{err}");
        let f = write("[http]\nheader_timeout = 3\n");
        let err = Config::load(Some(&f.0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("header_timeout"), "{err}");
    }

    #[test]
    fn rate_limit_section_layers_and_validates() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.rate_limit_options().requests_per_minute, 600);
        assert_eq!(c.rate_limit_options().burst, None);
        let f = write(
            "redis_url = \"redis://r:6379\"\n[rate_limit]\nrequests_per_minute = 30\nburst = 5\n",
        );
        let env = vec![(
            "PAYHOST_RATE_LIMIT_WEBHOOKS_PER_MINUTE".to_string(),
            "90".to_string(),
        )];
        let o = Config::load(Some(&f.0), env).unwrap().rate_limit_options();
        assert_eq!((o.requests_per_minute, o.burst), (30, Some(5)));
        assert_eq!(o.webhooks_per_minute, 90);
        assert_eq!(o.redis_url.as_deref(), Some("redis://r:6379"));
        for (text, key) in [
            (
                "[rate_limit]\nrequests_per_minute = 0\n",
                "rate_limit.requests_per_minute",
            ),
            ("[rate_limit]\nburst = 0\n", "rate_limit.burst"),
            (
                "[rate_limit]\nmax_tracked_keys = 1\n",
                "rate_limit.max_tracked_keys",
            ),
            (
                "[rate_limit]\nredis_key_prefix = \"\"\n",
                "rate_limit.redis_key_prefix",
            ),
            ("[rate_limit]\nper_minute = 3\n", "per_minute"),
        ] {
            let f = write(text);
            let err = Config::load(Some(&f.0), Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn debug_hides_url_passwords_and_secrets() {
        let config = Config {
            database_url: Some("postgres://app:pg-pass-1@db.internal:5432/pay".into()),
            redis_url: Some("redis://:redis-pass-2@cache:6379/0".into()),
            admin_token: Some(Secret::new("admin-token-3")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        for secret in ["pg-pass-1", "redis-pass-2", "admin-token-3"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(
            shown.contains("postgres://app:***@db.internal:5432/pay"),
            "{shown}"
        );
        assert!(shown.contains("redis://:***@cache:6379/0"), "{shown}");
        assert_eq!(
            redact_url_password("sqlite:///var/lib/payhost/a@b.db"),
            "sqlite:///var/lib/payhost/a@b.db"
        );
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// Minimal temp-file helper (avoids a dependency for three tests).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> TempPath {
                let path = std::env::temp_dir().join(format!(
                    "payhost-config-{}-{}.toml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::write(&path, text).expect("write temp config");
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_run_offline_on_loopback() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert!(c.emulators);
        assert!(c.bundled_providers);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn the_emulators_switch_off_in_the_file_or_the_environment() {
        let f = write("emulators = false\n");
        assert!(!Config::load(Some(&f.0), Vec::new()).unwrap().emulators);
        let env = vec![("PAYHOST_EMULATORS".to_string(), "false".to_string())];
        assert!(!Config::load(None, env).unwrap().emulators);
    }

    #[test]
    fn file_then_env_layering() {
        let f = write("listen = \"127.0.0.1:9000\"\n[limits]\nmemory_cap_mib = 16\n");
        let env = vec![("PAYHOST_LISTEN".to_string(), "127.0.0.1:9100".to_string())];
        let c = Config::load(Some(&f.0), env).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.limits.memory_cap_mib, 16);
    }

    #[test]
    fn the_request_budget_is_configurable_and_positive() {
        let f = write("[limits]\nmax_requests_per_call = 3\n");
        let c = Config::load(Some(&f.0), Vec::new()).unwrap();
        assert_eq!(c.sandbox_limits().max_requests_per_call, 3);
        assert_eq!(
            Config::default().sandbox_limits().max_requests_per_call,
            crate::runtime::DEFAULT_MAX_REQUESTS_PER_CALL
        );
        let env = vec![("PAYHOST_MAX_REQUESTS_PER_CALL".to_string(), "0".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("limits.max_requests_per_call"), "{err}");
    }

    #[test]
    fn a_provider_section_must_name_a_loaded_provider() {
        let f = write("[providers.stripee]\nbase_url = \"http://127.0.0.1:1\"\n");
        let c = Config::load(Some(&f.0), Vec::new()).unwrap();
        let err = c
            .check_provider_sections(["stripe", "hostile"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("providers.stripee"), "{err}");
        assert!(err.contains("loaded: stripe, hostile"), "{err}");
        let f = write("[providers.stripe]\nbase_url = \"http://127.0.0.1:1\"\n");
        let c = Config::load(Some(&f.0), Vec::new()).unwrap();
        c.check_provider_sections(["stripe"])
            .expect("a section of a loaded provider");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = write("lissten = \"x\"\n");
        let err = Config::load(Some(&f.0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lissten"), "{err}");

        let f = write("[providers.stripe]\nallowed_hosts = [\"https://a.example/path\"]\n");
        let err = Config::load(Some(&f.0), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("providers.stripe.allowed_hosts[0]"), "{err}");

        let env = vec![("PAYHOST_NOPE".to_string(), "1".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("PAYHOST_NOPE"), "{err}");
    }
}

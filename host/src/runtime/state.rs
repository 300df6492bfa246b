//! Per-call store state: a locked-down WASI context, the outbound HTTP hooks,
//! the memory limiter and the component's log sink.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::payhost::provider::{host, types};
use super::gate::SendGate;
use super::hooks::OutboundHooks;
use super::outbound::ConnectionPool;
use super::policy::{EventLog, OutboundPolicy, PolicyEvent, RequestBudget};

/// Longest component log line kept (longer lines are truncated).
const MAX_LOG_LINE: usize = 4 * 1024;
/// Component log lines kept per call; the rest are counted and dropped.
const MAX_LOG_LINES: u32 = 256;
/// Bytes of guest stderr kept (it carries panic messages).
pub(crate) const STDERR_CAPACITY: usize = 8 * 1024;

/// Enforces the per-instance linear-memory cap (summed over all of the
/// instance's memories) and records when it bites.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) events: EventLog,
    /// Bytes of linear memory granted so far in this store.
    used: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.events.push(PolicyEvent::MemoryCap {
                requested: total,
                limit: self.limit,
            });
            wasmtime::bail!(
                "memory cap exceeded: wanted {desired} bytes, cap {} bytes",
                self.limit
            );
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The `T` of every `Store<T>` the runtime creates. One per call, dropped
/// with the call: nothing in here outlives it.
pub(crate) struct CallState {
    pub(crate) provider: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) events: EventLog,
    pub(crate) stderr: MemoryOutputPipe,
    log_lines: u32,
    /// Secret values handed to this call; scrubbed from anything the
    /// component writes to the host's logs or error messages.
    secrets: Vec<String>,
}

impl CallState {
    /// Holds this call's outbound requests until `gate` opens.
    pub(crate) fn hold_requests_until(&mut self, gate: SendGate) {
        self.hooks.gate = Some(gate);
    }

    pub(crate) fn new(
        provider: Arc<str>,
        policy: Arc<OutboundPolicy>,
        connections: Arc<ConnectionPool>,
        memory_cap: usize,
        max_requests: u32,
        secrets: Vec<String>,
    ) -> Self {
        let events = EventLog::default();
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopens, no environment, no arguments, no sockets: the only
        // door out is wasi:http through `OutboundHooks`.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        CallState {
            provider,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks {
                policy,
                events: events.clone(),
                pool: connections,
                gate: None,
                budget: RequestBudget::new(max_requests),
            },
            limiter: MemoryLimiter {
                limit: memory_cap,
                events: events.clone(),
                used: 0,
            },
            events,
            stderr,
            log_lines: 0,
            secrets,
        }
    }

    /// The WASI randomness context (for linking `wasi:random/insecure*`).
    pub(crate) fn random(&mut self) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        self.wasi.random()
    }

    /// What the guest wrote to stderr (panic messages), lossily decoded
    /// and scrubbed of the call's secrets.
    pub(crate) fn stderr_text(&self) -> String {
        self.scrub(String::from_utf8_lossy(&self.stderr.contents()).trim())
    }

    /// The credential values handed to this call (for scrubbing its output).
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// A component's log message as the host logs it: capped at
    /// [`MAX_LOG_LINE`], without control characters (a newline could forge
    /// a log line) and without the call's secrets, like every guest string.
    fn log_line(&self, message: &str) -> String {
        super::sanitize::Cleaner::new(&self.secrets).text(message, MAX_LOG_LINE)
    }

    /// `text` with every secret of this call replaced by `[redacted]`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(provider = %self.provider, "component log budget exhausted; dropping further lines");
            }
            return;
        }
        let message = self.log_line(&message);
        let provider = &*self.provider;
        match level {
            host::LogLevel::Trace => {
                tracing::trace!(target: "payhost::component", provider, "{message}")
            }
            host::LogLevel::Debug => {
                tracing::debug!(target: "payhost::component", provider, "{message}")
            }
            host::LogLevel::Info => {
                tracing::info!(target: "payhost::component", provider, "{message}")
            }
            host::LogLevel::Warn => {
                tracing::warn!(target: "payhost::component", provider, "{message}")
            }
            host::LogLevel::Error => {
                tracing::error!(target: "payhost::component", provider, "{message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_log_lines_are_capped_single_lines_without_secrets() {
        let state = CallState::new(
            Arc::from("test"),
            Arc::new(OutboundPolicy::deny_all()),
            Arc::default(),
            1024 * 1024,
            1,
            vec!["sk_test_log_secret".into()],
        );
        let line = state.log_line("ok\n2026-12-01 ERROR forged line sk_test_log_secret");
        assert_eq!(line, "ok 2026-12-01 ERROR forged line [redacted]");
        let long = state.log_line(&"y".repeat(10 * MAX_LOG_LINE));
        assert!(long.len() <= MAX_LOG_LINE, "{}", long.len());
    }
}

//! The shared wasmtime engine, linker and sandbox limits.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};

use super::bindings::payhost::provider::{host, types};
use super::outbound::ConnectionPool;
use super::policy::OutboundPolicy;
use super::state::CallState;

/// Dirty linear-memory bytes per slot reset in place (rather than
/// unmapped) when a call ends; covers a typical provider's stack, data and
/// heap working set.
const KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;
/// The same for tables.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 * 1024;

/// Resource limits applied to every call of every provider.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Wall-clock budget of one call, instantiation included.
    pub call_deadline: Duration,
    /// Linear-memory cap of one instance.
    pub memory_cap_bytes: usize,
    /// Instances that may exist at once (pooling allocator slots).
    pub max_instances: u32,
    /// Granularity of the deadline (epoch tick).
    pub epoch_tick: Duration,
    /// Outbound requests one call may send; the next is denied before any
    /// I/O. Stripe's component sends one per call.
    pub max_requests_per_call: u32,
}

/// Default of [`SandboxLimits::max_requests_per_call`]: room for a
/// component that needs a few round trips (create, confirm, read back),
/// far below what a runaway loop would send.
pub const DEFAULT_MAX_REQUESTS_PER_CALL: u32 = 8;

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            call_deadline: Duration::from_secs(30),
            memory_cap_bytes: 64 * 1024 * 1024,
            max_instances: 128,
            epoch_tick: Duration::from_millis(5),
            max_requests_per_call: DEFAULT_MAX_REQUESTS_PER_CALL,
        }
    }
}

/// Error building the engine (bad limits, platform refusing the pool).
#[derive(Debug, thiserror::Error)]
#[error("cannot create the WebAssembly engine: {0}")]
pub struct EngineError(String);

/// The wasmtime engine, the linker with exactly the imports the contract
/// allows, and the limits. Cheap to clone; compile components against it once.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) limits: SandboxLimits,
    /// Keep-alive connections for every provider's outbound requests.
    pub(crate) connections: Arc<ConnectionPool>,
    /// One permit per pool slot (`max_instances`): a call waits here for a
    /// free slot, within its deadline, instead of failing to instantiate
    /// when a burst of calls has every slot busy.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Held only for its `Drop`, which stops the epoch thread.
    _ticker: Ticker,
}

/// Advances the engine epoch every tick so deadlines fire; stops when the
/// runtime is dropped.
struct Ticker(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build an engine (pooling allocator, epoch interruption) and a linker
    /// holding the contract's imports and nothing else.
    pub fn new(limits: SandboxLimits) -> Result<Runtime, EngineError> {
        let err = |e: wasmtime::Error| EngineError(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances.saturating_mul(8))
            .total_memories(limits.max_instances.saturating_mul(2))
            .total_tables(limits.max_instances.saturating_mul(4))
            .total_stacks(limits.max_instances)
            .max_memories_per_component(4)
            .max_memory_size(limits.memory_cap_bytes)
            .max_component_instance_size(4 * 1024 * 1024)
            .max_core_instance_size(4 * 1024 * 1024)
            // Reset a returned slot by copying back only the pages the guest
            // dirtied (found with Linux's PAGEMAP_SCAN) instead of unmapping
            // them: the next call on the slot takes no page faults and no
            // madvise. Without PAGEMAP_SCAN (older kernels, other OSes)
            // wasmtime would memset the whole `keep_resident` prefix every
            // call, which costs more than it saves, so keep nothing then.
            .pagemap_scan(Enabled::Auto);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
        }
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(err)?;

        let mut linker = Linker::<CallState>::new(&engine);
        // wasi:io, wasi:clocks, wasi:random, wasi:cli stdio; then the rest of
        // wasi:cli that Rust's std imports (empty environment, no terminal). Filesystem and
        // sockets are deliberately absent: a component importing them is
        // refused at load time.
        wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(&mut linker).map_err(err)?;
        {
            use wasmtime_wasi::cli::{WasiCli, WasiCliView};
            use wasmtime_wasi::p2::bindings::{cli, random};
            use wasmtime_wasi::random::WasiRandom;
            let l = &mut linker;
            cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli).map_err(err)?;
            cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)
                .map_err(err)?;
            random::insecure::add_to_linker::<CallState, WasiRandom>(l, |s| s.random())
                .map_err(err)?;
            random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |s| s.random())
                .map_err(err)?;
        }
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
        host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s).map_err(err)?;
        types::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s).map_err(err)?;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let weak = engine.weak();
        let tick = limits.epoch_tick;
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name("payhost-epoch".into())
            .spawn(move || {
                while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| EngineError(format!("cannot start epoch thread: {e}")))?;

        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                slots: Arc::new(tokio::sync::Semaphore::new(limits.max_instances as usize)),
                engine,
                linker,
                limits,
                connections: Arc::default(),
                _ticker: Ticker(stop),
            }),
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.inner.limits
    }

    /// The underlying engine (for precompilation and tests).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// A fresh store for one call: its own WASI context, HTTP hooks, memory
    /// limiter and epoch deadline.
    pub(crate) fn new_store(
        &self,
        provider: Arc<str>,
        policy: Arc<OutboundPolicy>,
        secrets: Vec<String>,
    ) -> Store<CallState> {
        let limits = &self.inner.limits;
        let state = CallState::new(
            provider,
            policy,
            self.inner.connections.clone(),
            limits.memory_cap_bytes,
            limits.max_requests_per_call,
            secrets,
        );
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks =
            (limits.call_deadline.as_micros() / limits.epoch_tick.as_micros().max(1)).max(1) as u64;
        // Yield to the executor on every epoch tick, so a guest that spins
        // holds a tokio worker for one tick at a time (not for its whole
        // deadline); the call's tokio timeout usually ends it. Trapping after
        // `ticks` ticks stays as the backstop should that timeout not be polled.
        let mut left = ticks;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }
}

//! Log lines that land in the host's tracing span for the current call
//! (which names the provider and the operation), through the contract's
//! `host.log` import.
//!
//! Never log credentials, webhook secrets, full request bodies or card data;
//! log references (`pi_…`), statuses and error codes.
//!
//! Outside a component (native unit tests) lines go to stderr instead.

use crate::LogLevel;

/// Writes `message` at `level`.
pub fn log(level: LogLevel, message: impl AsRef<str>) {
    let message = message.as_ref();
    // `#[cfg]`, not `cfg!`: the stderr path must not even be compiled into a
    // component, or it would import `wasi:cli/stderr`.
    #[cfg(target_arch = "wasm32")]
    crate::bindings::payhost::provider::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Writes `message` at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(LogLevel::Trace, message);
}

/// Writes `message` at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(LogLevel::Debug, message);
}

/// Writes `message` at info level.
pub fn info(message: impl AsRef<str>) {
    log(LogLevel::Info, message);
}

/// Writes `message` at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(LogLevel::Warn, message);
}

/// Writes `message` at error level.
pub fn error(message: impl AsRef<str>) {
    log(LogLevel::Error, message);
}

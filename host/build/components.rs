// Shared by `host/build.rs` and `tests/build.rs` (through `include!`):
// build guest crates for `wasm32-wasip2` with a nested `cargo build`, so that
// no manual build step is ever needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build `packages` (cargo package names) for wasm32-wasip2 in release mode
/// and return the path of each produced `.wasm`, in order.
///
/// Uses its own target directory next to the outer one, so the nested cargo
/// never waits on the outer build's lock.
fn build_components(workspace: &Path, packages: &[&str]) -> Vec<PathBuf> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("wasm-components");
    ensure_wasm_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Flags and wrappers meant for the outer (native) build must not leak
    // into the guest build: clippy's wrapper, coverage flags, a forced target.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo for wasm32-wasip2 components");
    if !status.success() {
        panic!(
            "building components {packages:?} for wasm32-wasip2 failed (see the cargo output above). \
             If the target is missing, rust-toolchain.toml lists it: run `rustup target add wasm32-wasip2`."
        );
    }
    packages
        .iter()
        .map(|p| {
            target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect()
}

/// rust-toolchain.toml lists wasm32-wasip2, but rustup only installs listed
/// targets together with a toolchain it installs itself; a machine that
/// already had the toolchain lacks the target. Add it (through rustup, for
/// the toolchain this build runs on) so `cargo test` works on a fresh
/// machine with no other step.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else { return };
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return;
    }
    // host/ and tests/ build scripts may both get here at once; the loser
    // of rustup's install lock fails, so retry until the target is there.
    for attempt in 1..=10 {
        let mut cmd = Command::new("rustup");
        cmd.args(["target", "add", "wasm32-wasip2"]);
        if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
            cmd.args(["--toolchain", &toolchain]);
        }
        let status = cmd.status();
        if sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir()
            && status.as_ref().is_ok_and(|s| s.success())
        {
            return;
        }
        if status.is_err() || attempt == 10 {
            // The nested build then fails with rustc's own message.
            println!("cargo:warning=`rustup target add wasm32-wasip2` failed: {status:?}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
}

/// Ask cargo to rerun the build script when anything under these paths changes.
fn rerun_if_changed(paths: &[PathBuf]) {
    for p in paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

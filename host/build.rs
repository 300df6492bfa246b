//! Builds the first-party provider components (`providers/*`) for
//! `wasm32-wasip2` and generates `bundled.rs`, which embeds them, so that
//! `cargo run -p payhost -- serve` needs no manual step.

include!("build/components.rs");

/// `(provider id, cargo package)` of every first-party provider.
const PROVIDERS: &[(&str, &str)] = &[("stripe", "payhost-stripe")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    rerun_if_changed(&[
        workspace.join("providers"),
        workspace.join("wit"),
        workspace.join("Cargo.lock"),
        manifest_dir.join("build"),
    ]);
    println!("cargo:rerun-if-env-changed=PAYHOST_SKIP_COMPONENT_BUILD");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    if std::env::var_os("PAYHOST_SKIP_COMPONENT_BUILD").is_some() {
        // For quick `cargo check` of host code only: no providers bundled.
        println!("cargo:warning=PAYHOST_SKIP_COMPONENT_BUILD is set: no providers are bundled");
        std::fs::write(
            out_dir.join("bundled.rs"),
            "pub const BUNDLED: &[(&str, &[u8])] = &[];\n",
        )
        .expect("write bundled.rs");
        return;
    }
    let packages: Vec<&str> = PROVIDERS.iter().map(|(_, p)| *p).collect();
    let built = build_components(&workspace, &packages);
    let mut entries = String::new();
    for ((id, _), wasm) in PROVIDERS.iter().zip(built) {
        let dest = out_dir.join(format!("{id}.wasm"));
        std::fs::copy(&wasm, &dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", wasm.display(), dest.display()));
        entries.push_str(&format!(
            "    ({id:?}, include_bytes!({:?})),\n",
            dest.display().to_string()
        ));
    }
    let code = format!(
        "/// `(id, component bytes)` of every first-party provider.\npub const BUNDLED: &[(&str, &[u8])] = &[\n{entries}];\n"
    );
    std::fs::write(out_dir.join("bundled.rs"), code).expect("write bundled.rs");
}

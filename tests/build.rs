//! Builds the test components under `tests/components/` for `wasm32-wasip2`
//! and exposes their paths to the tests as `PAYHOST_TEST_COMPONENT_<NAME>`.

include!("../host/build/components.rs");

/// Cargo packages of the test components.
const COMPONENTS: &[&str] = &[
    "hostile-provider",
    "wrong-version-provider",
    "no-gateway-component",
    "fs-importing-provider",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf();
    rerun_if_changed(&[
        manifest_dir.join("components"),
        workspace.join("providers/sdk"),
        workspace.join("wit"),
        workspace.join("host/build"),
    ]);
    for (package, wasm) in COMPONENTS
        .iter()
        .zip(build_components(&workspace, COMPONENTS))
    {
        let var = package.to_uppercase().replace('-', "_");
        println!(
            "cargo:rustc-env=PAYHOST_TEST_COMPONENT_{var}={}",
            wasm.display()
        );
    }
}

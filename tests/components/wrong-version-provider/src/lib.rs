//! Test component: exports `payhost:provider/gateway@0.9.0`, a contract
//! version the host does not serve. Loading it must fail, naming the version.
#![allow(unsafe_code)] // wit-bindgen's generated glue

wit_bindgen::generate!({ path: "wit", world: "provider" });

struct Component;

impl exports::payhost::provider::gateway::Guest for Component {
    fn manifest() -> String {
        "wrong-version".to_string()
    }
}

export!(Component);

//! Test component: a valid component that does not export
//! `payhost:provider/gateway` at all. Loading it must fail, naming the export.
#![allow(unsafe_code)] // wit-bindgen's generated glue

wit_bindgen::generate!({ path: "wit", world: "unrelated" });

struct Component;

impl exports::test::unrelated::greeter::Guest for Component {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Component);

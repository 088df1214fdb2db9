//! Generates the canvass.v1 types and their serde (canonical proto3 JSON) impls into OUT_DIR.
//!
//! protoc comes from the `protoc-bin-vendored` crate so that a fresh machine needs no
//! system protobuf compiler.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = ["campaign", "action", "contact", "state", "log"]
        .map(|name| root.join(format!("canvass/v1/{name}.proto")));
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("canvass_descriptor.bin");

    let mut config = prost_build::Config::new();
    config
        .protoc_executable(protoc)
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        // The more specific path wins: our Timestamp writes the canonical Z-normalized form.
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .extern_path(".google.protobuf.Struct", "crate::wkt::Struct")
        .extern_path(".google.protobuf.Value", "crate::wkt::Value")
        .extern_path(".google.protobuf.ListValue", "crate::wkt::ListValue")
        // BTreeMap keeps map fields in a fixed order: encoding is deterministic.
        .btree_map(["."]);
    config.compile_protos(&protos, &[root, include])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map(["."])
        .build(&[".canvass"])?;
    Ok(())
}

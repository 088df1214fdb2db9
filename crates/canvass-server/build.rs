//! Generates the tonic services of `canvass.v1` (servers and clients). Their messages are
//! canvass-proto's (`extern_path`), so there is one Rust type per proto message.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let services = [
        "campaign_service",
        "contact_service",
        "ingest_service",
        "action_service",
        "report_service",
        "operator_service",
    ]
    .map(|name| root.join(format!("canvass/v1/{name}.proto")));
    for proto in &services {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".canvass.v1", "::canvass_proto::v1")
        // A request that does not decode is INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::CanvassCodec")
        .compile_with_config(config, &services, &[root, include])?;
    Ok(())
}

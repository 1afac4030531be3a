//! Generates the Rust code for the `eventbus.v1` contract.
//!
//! Uses the protoc shipped in `protoc-bin-vendored` (a fresh machine has no
//! protoc), maps every proto `bytes` field to `bytes::Bytes`, and writes the
//! file descriptor set exposed as `eventbus_proto::FILE_DESCRIPTOR_SET`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the variable is sound.
    std::env::set_var("PROTOC", protoc);
    let wkt_include = protoc_bin_vendored::include_path()?;

    let proto_dir = PathBuf::from("eventbus/v1");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    // Pick up added or removed files, not only edits of known ones.
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();

    tonic_prost_build::configure()
        .build_client(feature("CLIENT"))
        .build_server(feature("SERVER"))
        .build_transport(feature("TRANSPORT"))
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("eventbus_v1_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("."), wkt_include])?;
    Ok(())
}

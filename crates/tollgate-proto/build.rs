//! Compiles `proto/tollgate/v1/*.proto` into prost structs plus pbjson (proto3 JSON
//! mapping) serde impls. `protoc` comes from `protoc-bin-vendored`, so no system install is
//! needed.

use std::env;
use std::error::Error;
use std::fs;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_dir = proto_root.join("tollgate/v1");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut protos: Vec<PathBuf> =
        fs::read_dir(&proto_dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let wkt_include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("tollgate_v1_descriptor.bin");

    prost_build::Config::new()
        .protoc_executable(protoc)
        .file_descriptor_set_path(&descriptor_path)
        .compile_well_known_types()
        // Any other well-known type comes from pbjson-types; Timestamp is our own type
        // because pbjson-types writes "+00:00" where proto3 JSON wants "Z" (most specific
        // extern path wins).
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".google.protobuf.Timestamp", "crate::Timestamp")
        .compile_protos(&protos, &[proto_root, wkt_include])?;

    let descriptor_set = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new().register_descriptors(&descriptor_set)?.build(&[".tollgate.v1"])?;

    Ok(())
}

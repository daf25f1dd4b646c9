//! Compiles `hubcast/v1/*.proto` with protox (pure Rust: no system `protoc`), generates prost
//! message types and tonic client and server stubs, and writes the encoded
//! `FileDescriptorSet` (with source info, so comments survive) for gRPC reflection.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

/// The proto files of package `hubcast.v1`, relative to the include root (this crate's dir).
const PROTOS: &[&str] = &[
    "hubcast/v1/admin.proto",
    "hubcast/v1/client.proto",
    "hubcast/v1/control.proto",
    "hubcast/v1/events.proto",
    "hubcast/v1/options.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["."])?;
    fs::write(
        out_dir.join("hubcast_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // `bytes` fields become `bytes::Bytes`: a binary payload decoded from a frame shares
        // the frame's buffer, and fan-out shares one allocation across recipients.
        .bytes(".")
        .build_server(true)
        .build_client(true)
        .emit_rerun_if_changed(false)
        .out_dir(&out_dir)
        .compile_fds(fds)?;
    Ok(())
}

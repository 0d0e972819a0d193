//! Generates the prost types from `proto/` with the protoc binary vendored by
//! `protoc-bin-vendored`, so a fresh machine builds with plain `cargo build`.

fn main() -> anyhow::Result<()> {
    let protos = [
        "proto/metapb.proto",
        "proto/errorpb.proto",
        "proto/raft_serverpb.proto",
        "proto/raft_cmdpb.proto",
        "proto/schedulerpb.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}

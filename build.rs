//! Generates the prost types and tonic services from `proto/` with the protoc binary vendored by
//! `protoc-bin-vendored`, so a fresh machine builds with plain `cargo build`.

fn main() -> anyhow::Result<()> {
    let protos = [
        "proto/metapb.proto",
        "proto/errorpb.proto",
        "proto/raft_serverpb.proto",
        "proto/raft_cmdpb.proto",
        "proto/schedulerpb.proto",
        "proto/kvpb.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-build reads the protoc location from the environment only.
    std::env::set_var("PROTOC", protoc);
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}

//! Compiles the `.proto` files under `proto/` into Rust.
//!
//! No system `protoc` is needed: the pure-Rust `protox` compiler turns the protos into a file
//! descriptor set in `OUT_DIR`, and `madsim-tonic-build` (imported as `tonic_build`) generates code
//! from that set. It writes two versions of every package: the real tonic stubs in
//! `$OUT_DIR/<package>.rs` and the simulated ones in `$OUT_DIR/sim/<package>.rs`;
//! `tonic::include_proto!` picks one according to `--cfg madsim`. `pbjson-build` adds serde
//! implementations of the etcd messages for the etcd API's HTTP gateway.

use std::path::PathBuf;

/// Directory that holds the protos; imports are resolved relative to it.
const PROTO_ROOT: &str = "proto";

/// The files to compile (their imports are found under [`PROTO_ROOT`]).
const PROTOS: &[&str] = &[
    "proto/keel/common.proto",
    "proto/keel/error.proto",
    "proto/keel/client.proto",
    "proto/keel/raft.proto",
    "proto/keel/admin.proto",
    "proto/etcd/kv.proto",
    "proto/etcd/auth.proto",
    "proto/etcd/rpc.proto",
    "proto/grpc/health.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("keel_descriptor_set.bin");

    // Source info is kept so that the proto comments become doc comments.
    let descriptor_set = protox::Compiler::new([PROTO_ROOT])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?
        .encode_file_descriptor_set();
    std::fs::write(&descriptor_path, descriptor_set)?;

    tonic_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        // `bytes` fields become `bytes::Bytes` (cheap clones, zero-copy decoding) instead of `Vec<u8>`.
        .bytes(["."])
        // The directories are watched by the line above already.
        .emit_rerun_if_changed(false)
        .compile_protos(PROTOS, &[PROTO_ROOT])?;

    // serde implementations of the etcd messages in proto3's JSON mapping (int64 as strings,
    // bytes as base64, enums by name, default values left out), with the proto field names
    // (`create_revision`, `ID`) as etcd's HTTP gateway writes them; they land beside the
    // messages as `$OUT_DIR/<package>.serde.rs`. Unknown fields are skipped, as in the binary
    // encoding.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}

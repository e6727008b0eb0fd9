//! Generates the tonic service code of the original's gRPC API from `grpc/proto/message.proto`
//! (server only). The messages are `lainlet-grpc`'s (`extern_path`), and every reply that
//! mirrors a view is `lainlet_grpc::EncodedReply`: one shared encoding per view state, sent
//! as it is to every caller (see `src/grpc/`).

use std::path::Path;

/// The replies built from a view (everything but `Lainlet`'s `VersionReply`/`StatusReply`).
const VIEW_REPLIES: [&str; 15] = [
    "AppnameReply",
    "AppsReply",
    "BackupctlReply",
    "ConfigReply",
    "ContainersReply",
    "CoreinfoReply",
    "DependsReply",
    "LocalspecReply",
    "NodesReply",
    "PodgroupReply",
    "ProxyReply",
    "RebellionLocalprocsReply",
    "StreamrouterPortsReply",
    "StreamrouterStreamprocsReply",
    "WebrouterWebprocsReply",
];

fn main() {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grpc/proto");
    let proto = proto_dir.join("message.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    // protoc: `PROTOC` when set, else Debian's /usr/bin/protoc, else PATH (as lainlet-grpc).
    if std::env::var_os("PROTOC").is_none() && Path::new("/usr/bin/protoc").exists() {
        config.protoc_executable("/usr/bin/protoc");
    }
    let mut builder = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .extern_path(".message", "::lainlet_grpc::message");
    for reply in VIEW_REPLIES {
        builder = builder.extern_path(format!(".message.{reply}"), "::lainlet_grpc::EncodedReply");
    }
    if let Err(err) = builder.compile_with_config(config, &[proto], &[proto_dir]) {
        eprintln!("lainlet: generating the gRPC services from message.proto failed: {err}");
        eprintln!("install protoc (scripts/ensure-deps.sh) or set PROTOC to its path");
        std::process::exit(1);
    }
}

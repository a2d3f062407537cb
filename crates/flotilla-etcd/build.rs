//! Compiles etcd's vendored protocol definitions (`proto/`, see its README) into the server
//! side of etcd's gRPC services (those of `rpc.proto`, Lock and Election). Needs `protoc`
//! (Debian: `protobuf-compiler`).

fn main() {
    let root = "proto";
    println!("cargo:rerun-if-changed={root}");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[
                "proto/etcd/api/etcdserverpb/rpc.proto",
                "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
                "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
            ],
            &[root],
        )
        .expect("compiling etcd's protocol definitions (is protoc installed?)");
}

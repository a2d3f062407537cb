//! etcd's protocol types and gRPC service traits, generated from the vendored definitions in
//! `proto/` (etcd's `api/` packages, and the
//! `v3lockpb` and `v3electionpb` packages of its server) by `build.rs`.

#![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]

/// Package `etcdserverpb`: the requests, responses and services of etcd's v3 API.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Package `mvccpb`: keys with their revisions, and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Package `authpb`: users and roles (the Auth service is not served).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// Package `v3lockpb`: etcd's Lock service (the v3 concurrency API).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Package `v3electionpb`: etcd's Election service (the v3 concurrency API).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

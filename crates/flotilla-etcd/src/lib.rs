//! etcd's v3 gRPC API served over a running [`flotilla::Node`], for one namespace.
//!
//! [`serve`] answers etcd's KV, Watch, Lease, Maintenance, Cluster, Lock and Election services on a TCP listener (gRPC over
//! cleartext HTTP/2), so `etcdctl` and etcd's client libraries use a Flotilla namespace as
//! they would an etcd cluster. Any node serves it: writes and linearizable reads are forwarded
//! to the leader as for the HTTP API. Which RPCs and options are served, and which are refused
//! with which error, is listed in `docs/ETCD.md`.
//!
//! The protocol types are generated at build time from etcd's published definitions
//! (vendored in `proto/`) by `tonic-prost-build`; see [`pb`].

#![deny(missing_docs)]

mod cluster_service;
mod concurrency;
mod context;
mod election_observer;
mod election_service;
mod error;
mod ids;
mod kv_service;
mod lease_service;
mod lock_service;
mod maintenance_service;
pub mod pb;
mod range;
mod server;
mod status;
mod txn;
mod watch_events;
mod watch_service;
mod watch_session;
mod withdraw;

pub use context::EtcdContext;
pub use error::EtcdError;
pub use ids::{cluster_id_of, member_id_of};
pub use server::{serve, ETCD_VERSION};
pub use status::status_of;

//! Flotilla's HTTP API: the server routes and the client the CLI uses.
//!
//! Values travel as raw bodies; everything else is JSON. Every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a stable code (and the revisions a
//! client acts on, for `compacted`, `future_revision` and `precondition_failed`). Responses
//! that reflect the replicated state carry the log index in the `X-Flotilla-Index` header and
//! the namespace's revision in `X-Flotilla-Revision`; a value's `ETag` is its mod revision.
//!
//! Key/value and read-only routes are open to any client that reaches the listener (the data
//! plane). With an admin token configured, the membership and admin routes require
//! `Authorization: Bearer <token>` and answer 401 `unauthorized` otherwise; a node refuses to
//! serve a non-loopback address without one. See `docs/SECURITY.md`.

#![deny(missing_docs)]

mod auth;
mod backup_routes;
pub mod client;
mod error;
mod json_errors;
mod kv_json;
mod kv_routes;
mod lease_routes;
mod lock_routes;
mod membership_routes;
mod metrics;
mod namespace_routes;
mod node_routes;
mod queue_routes;
mod restore_routes;
pub mod server;
mod txn_routes;
mod watch_routes;

pub use client::{Client, ClientError, Condition, Page, SseEvent};
pub use server::{router, serve};

/// Header carrying the log index a response reflects.
pub const INDEX_HEADER: &str = "x-flotilla-index";

/// Header carrying the namespace's revision a response reflects (or a write created).
pub const REVISION_HEADER: &str = "x-flotilla-revision";

/// Header carrying a key's create revision.
pub const CREATE_REVISION_HEADER: &str = "x-flotilla-create-revision";

/// Header carrying a key's mod revision (also its `ETag`).
pub const MOD_REVISION_HEADER: &str = "x-flotilla-mod-revision";

/// Header carrying a key's version (writes since its creation).
pub const VERSION_HEADER: &str = "x-flotilla-version";

/// Header carrying the oldest revision still readable, on a `compacted` error.
pub const COMPACTED_HEADER: &str = "x-flotilla-compacted-revision";

/// Request header naming a write, so a client's retry of it is applied at most once.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

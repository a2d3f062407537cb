//! Flotilla's HTTP API: the server routes and the client the CLI uses.
//!
//! Values travel as raw bodies; everything else is JSON. Every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a stable code. Responses that reflect
//! the replicated state carry the log index in the `X-Flotilla-Index` header.
//!
//! Key/value and read-only routes are open to any client that reaches the listener (the data
//! plane). With an admin token configured, the membership and admin routes require
//! `Authorization: Bearer <token>` and answer 401 `unauthorized` otherwise; a node refuses to
//! serve a non-loopback address without one. See `docs/SECURITY.md`.

#![deny(missing_docs)]

mod auth;
pub mod client;
mod error;
mod json_errors;
mod kv_routes;
mod membership_routes;
mod metrics;
mod namespace_routes;
mod node_routes;
pub mod server;

pub use client::{Client, ClientError};
pub use server::{router, serve};

/// Header carrying the log index a response reflects.
pub const INDEX_HEADER: &str = "x-flotilla-index";

/// Request header naming a write, so a client's retry of it is applied at most once.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

//! Flotilla's HTTP API: the server routes and the client the CLI uses.
//!
//! Values travel as raw bodies; everything else is JSON. Every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a stable code. Responses that reflect
//! the replicated state carry the log index in the `X-Flotilla-Index` header.

#![deny(missing_docs)]

pub mod client;
mod error;
mod kv_routes;
mod membership_routes;
mod metrics;
mod node_routes;
pub mod server;

pub use client::{Client, ClientError};
pub use server::{router, serve};

/// Header carrying the log index a response reflects.
pub const INDEX_HEADER: &str = "x-flotilla-index";

//! A lab of Linux network namespaces for running real `flotilla agent` processes.
//!
//! [`Lab::new`] builds a switch namespace holding a bridge and one namespace per host, each with
//! its own address on a per-process `10.a.b.0/24` subnet and a route that carries multicast, so
//! mDNS works between hosts exactly as on a LAN. A probe link from the calling process's
//! namespace into the bridge lets the test talk to every agent's HTTP API over plain TCP.
//! Nothing is routed anywhere else, and mDNS never crosses the probe (see [`Lab`]).
//!
//! [`Lab::spawn`] starts an [`Agent`] in a host namespace; the [`wait`] module polls agents with
//! explicit deadlines, e.g. [`wait::wait_one_cluster`].
//!
//! The [`chaos`] module runs fault scenarios (partitions, one-way and random loss through
//! nftables, `kill -9`, reboots, wiped data directories) against such agents under concurrent
//! clients, and checks the recorded history for linearizability with `flotilla-check`.
//!
//! Everything needs root: check [`Lab::available`] first and skip otherwise.
//!
//! ```no_run
//! use std::time::Duration;
//! use flotilla_lab::{wait, Lab};
//!
//! let lab = Lab::new(3)?;
//! let bin = std::path::Path::new("target/release/flotilla");
//! let agents: Vec<_> = (0..3).map(|h| lab.spawn(h, bin, &["--mdns-query-interval-ms", "500"])).collect::<Result<_, _>>()?;
//! let view = wait::wait_one_cluster(&agents, "default", 3, Duration::from_secs(30))?;
//! println!("leader {}", view.leader);
//! # anyhow::Ok(())
//! ```

#![deny(missing_docs)]

mod agent;
pub mod chaos;
pub mod http;
mod net;
pub mod wait;

pub use agent::Agent;
pub use http::Consistency;
pub use net::{cleanup_stale, Lab, Started, AGENT_HTTP_PORT, AGENT_P2P_PORT};

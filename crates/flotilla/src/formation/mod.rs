//! Cluster formation: discovery, founding, joining and the membership lifecycle.
//!
//! See `crates/flotilla/DESIGN-formation.md` for the protocol and why it is safe.

pub mod admission;
pub mod autopilot;
pub(crate) mod autopilot_loop;
pub mod balance;
pub(crate) mod balance_loop;
pub mod bootstrap;
pub(crate) mod discovery_loop;
pub(crate) mod dissolve;
pub(crate) mod driver;
pub mod founding;
pub mod ledger;
pub(crate) mod ledger_commit;
pub mod peers;
pub mod record;
pub mod rejoin;
mod serve;
pub mod split;
pub mod state;
pub mod view;

pub use bootstrap::BootstrapDiscovery;
pub use state::{Formation, FormationCounters, FormationPhase, FormationStatus, KnownPeer, SplitReport, TimelineEvent};

//! The swarm's behaviour and how the swarm is assembled.
//!
//! The behaviour is deliberately thin: RPC bytes never pass through it. `libp2p_stream` hands
//! negotiated streams straight to our tasks, so the swarm loop only dials, accepts connections
//! and runs identify, ping and (when enabled) mDNS.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, mdns, noise, ping, tcp, yamux, Swarm, SwarmBuilder};

use crate::address_book::{AddressBookBehaviour, SharedBook};
use crate::config::NetConfig;
use crate::error::NetError;

/// Protocol version announced through identify; peers of other applications that happen to
/// connect can tell Flotilla nodes apart by it.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/flotilla/id/1";

/// Shortest lifetime of the records we announce over mDNS. Peers drop our addresses this long
/// after our last answer, so it must span several query rounds (a lost packet must not make us
/// vanish) yet stay short enough that a stopped node disappears from discovery soon.
const MDNS_MIN_TTL: Duration = Duration::from_secs(20);
/// Query rounds an mDNS record outlives when the query interval is long.
const MDNS_TTL_ROUNDS: u32 = 3;

/// Everything a Flotilla swarm speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Raw streams for the RPC protocol.
    pub(crate) stream: libp2p_stream::Behaviour,
    /// Learns the listen addresses of connected peers.
    pub(crate) identify: identify::Behaviour,
    /// Detects dead connections.
    pub(crate) ping: ping::Behaviour,
    /// Supplies known addresses to dials by peer id.
    pub(crate) addresses: AddressBookBehaviour,
    /// Finds peers on the local network; disabled by configuration or when it cannot start.
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    fn new(key: &Keypair, book: SharedBook, config: &NetConfig) -> Self {
        let identify = identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
            .with_agent_version(format!("flotilla/{}", env!("CARGO_PKG_VERSION")))
            // Peers hear about new listen addresses without waiting for the periodic exchange.
            .with_push_listen_addr_updates(true)
            // Our own book keeps the addresses; identify's cache would also drop them on the
            // first failed dial, which is wrong for a cluster member that is merely restarting.
            .with_cache_size(0);
        Self {
            stream: libp2p_stream::Behaviour::new(),
            identify: identify::Behaviour::new(identify),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(config.ping_interval).with_timeout(config.ping_timeout),
            ),
            addresses: AddressBookBehaviour::new(book),
            mdns: config.mdns_query_interval.and_then(|interval| new_mdns(key, interval)).into(),
        }
    }
}

/// The mDNS behaviour, or `None` when it cannot start (no netlink socket to watch interfaces,
/// for instance in a sandbox): discovery over mDNS is a convenience, and the host still works
/// with bootstrap addresses.
fn new_mdns(key: &Keypair, query_interval: Duration) -> Option<mdns::tokio::Behaviour> {
    let config = mdns::Config {
        ttl: query_interval.saturating_mul(MDNS_TTL_ROUNDS).max(MDNS_MIN_TTL),
        query_interval,
        // Flotilla's lab and deployments are IPv4; libp2p-mdns serves one family per behaviour.
        enable_ipv6: false,
    };
    match mdns::tokio::Behaviour::new(config, key.public().to_peer_id()) {
        Ok(behaviour) => Some(behaviour),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start mDNS; running without local network discovery");
            None
        }
    }
}

/// Build the swarm: TCP + Noise + Yamux, with DNS resolution of `/dns*` addresses when the
/// system resolver configuration can be read.
pub(crate) fn build_swarm(
    keypair: &Keypair,
    book: &SharedBook,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let swarm_error = |e: &dyn std::fmt::Display| NetError::Swarm(e.to_string());
    let with_tcp = || {
        SwarmBuilder::with_existing_identity(keypair.clone())
            .with_tokio()
            .with_tcp(tcp::Config::new().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| swarm_error(&e))
    };
    let behaviour = |key: &Keypair| Behaviour::new(key, book.clone(), config);
    let swarm_config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(config.idle_connection_timeout);

    // The builder's typestate makes the DNS layer part of the type, so the fallback is a
    // second, DNS-less build rather than a conditional layer.
    match with_tcp()?.with_dns() {
        Ok(builder) => {
            let Ok(builder) = builder.with_behaviour(behaviour);
            Ok(builder.with_swarm_config(swarm_config).with_connection_timeout(config.connect_timeout).build())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system DNS configuration; /dns addresses will not resolve");
            let Ok(builder) = with_tcp()?.with_behaviour(behaviour);
            Ok(builder.with_swarm_config(swarm_config).with_connection_timeout(config.connect_timeout).build())
        }
    }
}

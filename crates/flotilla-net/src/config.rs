//! Tunables of the network layer.

use std::time::Duration;

/// Smallest frame limit a host accepts; smaller configured values are raised to it.
pub const MIN_FRAME_BYTES: usize = 1024;

/// Bounds of [`NetConfig::mdns_query_interval`]; values outside are moved inside.
///
/// libp2p-mdns panics on a zero interval (tokio refuses a zero period) and on one so long that
/// the next deadline overflows `Instant`, and below the minimum it would flood the LAN.
pub(crate) const MDNS_QUERY_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));

/// Limits and timings of a [`Host`](crate::Host).
///
/// Every queue and table of the host is bounded by one of these values, so a slow or hostile
/// peer can cost at most a known amount of memory.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Largest frame body (request id + encoded message) accepted or sent, in bytes. Should match
    /// [`flotilla_core::Config::max_frame_bytes`].
    pub max_frame_bytes: usize,
    /// Requests of one inbound stream handled concurrently; further requests wait unread, which
    /// pushes back on the sender through the stream's flow control.
    pub max_inflight_per_stream: usize,
    /// Requests of one outbound stream awaiting a response; further calls wait for a slot.
    pub max_pending_per_stream: usize,
    /// Inbound RPC streams served at once, over all peers; streams beyond it are refused.
    pub max_inbound_streams: usize,
    /// Deadline for dialing a peer and opening an RPC stream to it.
    pub connect_timeout: Duration,
    /// How long a connection without any open stream is kept before it is closed.
    pub idle_connection_timeout: Duration,
    /// How long an outbound RPC stream without traffic is kept before it is closed.
    pub idle_stream_timeout: Duration,
    /// First delay before reopening a stream whose opening failed; doubles per failure.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between attempts to reopen a stream.
    pub reconnect_backoff_max: Duration,
    /// Interval of the liveness ping on every connection.
    pub ping_interval: Duration,
    /// A ping unanswered for this long closes the connection, failing its calls at once instead
    /// of letting each one run into its own timeout.
    pub ping_timeout: Duration,
    /// Interval between mDNS queries on the local network, or `None` to run without mDNS.
    ///
    /// Discovered peers go into the address book and are reported by
    /// [`Host::mdns_discovery`](crate::Host::mdns_discovery). Values are kept between 100 ms and
    /// one hour.
    pub mdns_query_interval: Option<Duration>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024 * 1024,
            max_inflight_per_stream: 64,
            max_pending_per_stream: 1024,
            max_inbound_streams: 1024,
            connect_timeout: Duration::from_secs(5),
            idle_connection_timeout: Duration::from_secs(60),
            idle_stream_timeout: Duration::from_secs(120),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(20),
            // Off unless asked for: a host that multicasts is visible to the whole LAN, and
            // hosts in tests would find each other's unrelated clusters.
            mdns_query_interval: None,
        }
    }
}

impl NetConfig {
    /// The defaults, with the frame limit and mDNS settings (`no_mdns`,
    /// `mdns_query_interval_ms`) taken from the node configuration.
    pub fn from_node_config(config: &flotilla_core::Config) -> Self {
        let mdns_query_interval = (!config.no_mdns).then(|| Duration::from_millis(config.mdns_query_interval_ms));
        Self { max_frame_bytes: config.max_frame_bytes, mdns_query_interval, ..Self::default() }
    }

    /// The same configuration with zero-valued limits raised to 1, so no semaphore or channel
    /// is ever created with no capacity (which would wedge every call).
    pub(crate) fn sanitized(mut self) -> Self {
        self.max_inflight_per_stream = self.max_inflight_per_stream.max(1);
        self.max_pending_per_stream = self.max_pending_per_stream.max(1);
        self.max_inbound_streams = self.max_inbound_streams.max(1);
        // Below this, not even an error reply would fit; above it, the u32 length header
        // could not describe the frame.
        self.max_frame_bytes = self.max_frame_bytes.clamp(MIN_FRAME_BYTES, u32::MAX as usize);
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            self.reconnect_backoff_max = self.reconnect_backoff_min;
        }
        let (min, max) = MDNS_QUERY_INTERVAL_RANGE;
        self.mdns_query_interval = self.mdns_query_interval.map(|interval| interval.clamp(min, max));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdns_follows_the_node_config() {
        let mut node = flotilla_core::Config { mdns_query_interval_ms: 1_500, ..Default::default() };
        assert_eq!(NetConfig::from_node_config(&node).mdns_query_interval, Some(Duration::from_millis(1_500)));
        node.no_mdns = true;
        assert_eq!(NetConfig::from_node_config(&node).mdns_query_interval, None);
        assert_eq!(NetConfig::default().mdns_query_interval, None);
    }

    #[test]
    fn mdns_interval_is_kept_in_range() {
        let (min, max) = MDNS_QUERY_INTERVAL_RANGE;
        let sanitized = |interval| NetConfig { mdns_query_interval: interval, ..NetConfig::default() }.sanitized();
        assert_eq!(sanitized(Some(Duration::ZERO)).mdns_query_interval, Some(min));
        assert_eq!(sanitized(Some(Duration::MAX)).mdns_query_interval, Some(max));
        assert_eq!(sanitized(Some(Duration::from_secs(2))).mdns_query_interval, Some(Duration::from_secs(2)));
        assert_eq!(sanitized(None).mdns_query_interval, None);
    }
}

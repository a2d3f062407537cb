//! Helpers shared by the tests that run real agents on loopback.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Generous bound for anything cluster-wide on a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Poll `attempt` every 100 ms until it yields a value, for at most [`PATIENCE`].
pub async fn until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

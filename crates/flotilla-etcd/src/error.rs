//! Why the etcd endpoint could not be served.

/// A failure of [`crate::serve`].
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The listener's local address could not be read.
    #[error("reading the etcd listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// The gRPC server stopped with an error.
    #[error("serving the etcd API: {0}")]
    Serve(#[source] tonic::transport::Error),
}

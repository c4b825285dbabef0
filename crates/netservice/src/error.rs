//! The facade's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a [`crate::NetService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A configuration value is invalid; names the field and the value.
    #[error("invalid configuration: {field} = {value:?}: {reason}")]
    Config {
        /// The field, as written in the TOML file (`host.listen_addrs[0]`).
        field: String,
        /// The offending value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The configuration file cannot be read or parsed.
    #[error("configuration file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `start` was called on a running service.
    #[error("the service is already started")]
    AlreadyStarted,
    /// The service was stopped; it cannot be started again (build a new one).
    #[error("the service is stopped")]
    Stopped,
    /// The service has not been started yet.
    #[error("the service is not started")]
    NotStarted,
    /// A message kind that the wire format cannot carry.
    #[error("invalid message kind {0:?}")]
    InvalidKind(String),
    /// From the host.
    #[error(transparent)]
    Host(#[from] p2pnet_host::HostError),
    /// From the dispatcher.
    #[error(transparent)]
    Dispatch(#[from] p2pnet_dispatcher::DispatchError),
    /// From messaging.
    #[error(transparent)]
    Messaging(#[from] p2pnet_messaging::MessagingError),
    /// From forwarding.
    #[error(transparent)]
    Forward(#[from] p2pnet_forward::ForwardError),
    /// From discovery (Kademlia).
    #[error(transparent)]
    Discovery(#[from] p2pnet_kad::KadError),
    /// Discovery is switched off in the configuration (`[discovery] enabled = false`).
    #[error("discovery is disabled ([discovery] enabled = false)")]
    DiscoveryDisabled,
    /// Serving metrics failed (address in use…).
    #[error("metrics endpoint on {addr}: {reason}")]
    Metrics {
        /// The address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing the configuration failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

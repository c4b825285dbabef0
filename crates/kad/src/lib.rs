//! p2pnet-kad (work in progress)
#![deny(missing_docs)]

mod addrs;
pub mod config;
mod driver;
pub mod error;
pub mod key;
pub mod message;
pub mod outcome;
pub mod protocol;
pub mod query;
pub mod routing;
mod rpc;
pub mod store;

pub use config::{KadConfig, Mode};
pub use driver::Kademlia;
pub use error::KadError;

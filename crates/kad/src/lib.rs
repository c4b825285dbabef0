//! p2pnet-kad (work in progress)
#![deny(missing_docs)]

pub mod error;
pub mod key;
pub mod message;
pub mod protocol;
pub mod query;
pub mod routing;
pub mod store;

//! `p2pnet-host`: a libp2p host built on `libp2p-core`.
#![deny(missing_docs)]

//! Helpers shared by the test binaries; each uses a part of them.
#![allow(dead_code)]

pub mod quic_peer;
pub mod rust_peer;
pub(crate) mod tcp;

//! Built-in protocols every libp2p peer expects.

pub(crate) mod identify;
pub(crate) mod ping;

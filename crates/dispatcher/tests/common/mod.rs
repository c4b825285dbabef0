//! A small message type for the tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use p2pnet_dispatcher::Message;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestMsg {
    pub kind: u8,
    /// Which producer sent it.
    pub producer: u32,
    /// Its number in its producer's sequence.
    pub seq: u64,
    pub hash: Option<u64>,
    pub payload: [u8; 4],
}

impl TestMsg {
    pub fn new(kind: u8, seq: u64) -> Self {
        Self {
            kind,
            producer: 0,
            seq,
            hash: None,
            payload: [0; 4],
        }
    }

    pub fn by_producer(mut self, producer: u32) -> Self {
        self.producer = producer;
        self
    }

    pub fn with_hash(mut self, hash: u64) -> Self {
        self.hash = Some(hash);
        self
    }
}

impl Message for TestMsg {
    type Kind = u8;
    type Sender = u32;

    fn kind(&self) -> &u8 {
        &self.kind
    }

    fn sender(&self) -> &u32 {
        &self.producer
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn content_hash(&self) -> Option<u64> {
        self.hash
    }
}

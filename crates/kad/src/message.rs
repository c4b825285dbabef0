//! The kad-dht wire messages: the protobuf `Message` of the libp2p specification (written by
//! hand with prost, field numbers as specified) and the typed requests and responses made of it.
//!
//! Decoding is bounded by the frame (see [`crate::protocol`]) and never panics; what a peer
//! sends is cut to the bounds given (closer peers per answer, addresses per peer).

use p2pnet_host::{Multiaddr, PeerId};

use crate::error::KadError;

/// Most addresses taken per peer from any message.
pub const MAX_ADDRS_PER_PEER: usize = 32;

/// The protobuf messages, field numbers as in the kad-dht specification.
pub mod proto {
    /// `Message.MessageType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MessageType {
        /// `PUT_VALUE`.
        PutValue = 0,
        /// `GET_VALUE`.
        GetValue = 1,
        /// `ADD_PROVIDER`.
        AddProvider = 2,
        /// `GET_PROVIDERS`.
        GetProviders = 3,
        /// `FIND_NODE`.
        FindNode = 4,
        /// `PING` (deprecated: answered, never sent).
        Ping = 5,
    }

    /// `Message.ConnectionType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ConnectionType {
        /// No connection and no extra information.
        NotConnected = 0,
        /// The sender has a live connection to the peer.
        Connected = 1,
        /// The sender recently connected to the peer.
        CanConnect = 2,
        /// The sender tried hard to connect to the peer and failed.
        CannotConnect = 3,
    }

    /// `Record`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        /// The record's key.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// The record's value.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        /// When the receiver got the record (RFC 3339), set by the receiver.
        #[prost(string, tag = "5")]
        pub time_received: String,
    }

    /// `Message.Peer`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        /// The peer id's bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub id: Vec<u8>,
        /// Its multiaddrs, each in binary form.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub addrs: Vec<Vec<u8>>,
        /// The sender's connection to it.
        #[prost(enumeration = "ConnectionType", tag = "3")]
        pub connection: i32,
    }

    /// `Message`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        /// The message type.
        #[prost(enumeration = "MessageType", tag = "1")]
        pub r#type: i32,
        /// Unused (Coral cluster level).
        #[prost(int32, tag = "10")]
        pub cluster_level_raw: i32,
        /// The key of the request.
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        /// A record (`PUT_VALUE`, `GET_VALUE`).
        #[prost(message, optional, tag = "3")]
        pub record: Option<Record>,
        /// Peers closer to the key.
        #[prost(message, repeated, tag = "8")]
        pub closer_peers: Vec<Peer>,
        /// Providers of the key.
        #[prost(message, repeated, tag = "9")]
        pub provider_peers: Vec<Peer>,
    }
}

pub use proto::{ConnectionType, MessageType};

/// A peer as messages carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KadPeer {
    /// The peer.
    pub id: PeerId,
    /// Its addresses (at most [`MAX_ADDRS_PER_PEER`] when decoded).
    pub addrs: Vec<Multiaddr>,
    /// The sender's connection to it.
    pub connection: ConnectionType,
}

/// A record as messages carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KadRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A request, as a server receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `FIND_NODE`: the peers closest to `key` (a peer id's bytes).
    FindNode {
        /// The key.
        key: Vec<u8>,
    },
    /// `GET_VALUE`: the record of `key`, and closer peers.
    GetValue {
        /// The key.
        key: Vec<u8>,
    },
    /// `PUT_VALUE`: store `record`.
    PutValue {
        /// The record.
        record: KadRecord,
    },
    /// `GET_PROVIDERS`: the providers of `key`, and closer peers.
    GetProviders {
        /// The key.
        key: Vec<u8>,
    },
    /// `ADD_PROVIDER`: the sender provides `key` (no response).
    AddProvider {
        /// The key.
        key: Vec<u8>,
        /// The providers announced (only the sender itself is taken).
        providers: Vec<KadPeer>,
    },
    /// `PING`: answered with `PING`.
    Ping,
}

/// A response, as a client receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Peers closer to the key.
    pub closer_peers: Vec<KadPeer>,
    /// Providers of the key.
    pub provider_peers: Vec<KadPeer>,
    /// The record, for `GET_VALUE` and `PUT_VALUE`.
    pub record: Option<KadRecord>,
}

fn peer_to_proto(p: &KadPeer) -> proto::Peer {
    proto::Peer {
        id: p.id.to_bytes(),
        addrs: p
            .addrs
            .iter()
            .take(MAX_ADDRS_PER_PEER)
            .map(|a| a.to_vec())
            .collect(),
        connection: p.connection as i32,
    }
}

fn peers_from_proto(peers: Vec<proto::Peer>, max_peers: usize) -> Vec<KadPeer> {
    peers
        .into_iter()
        .filter_map(|p| {
            let id = PeerId::from_bytes(&p.id).ok()?;
            let addrs = p
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            Some(KadPeer {
                id,
                addrs,
                connection: ConnectionType::try_from(p.connection)
                    .unwrap_or(ConnectionType::NotConnected),
            })
        })
        .take(max_peers)
        .collect()
}

fn record_to_proto(r: &KadRecord) -> proto::Record {
    proto::Record {
        key: r.key.clone(),
        value: r.value.clone(),
        time_received: String::new(),
    }
}

impl Request {
    /// The wire type of this request.
    pub fn message_type(&self) -> MessageType {
        match self {
            Request::FindNode { .. } => MessageType::FindNode,
            Request::GetValue { .. } => MessageType::GetValue,
            Request::PutValue { .. } => MessageType::PutValue,
            Request::GetProviders { .. } => MessageType::GetProviders,
            Request::AddProvider { .. } => MessageType::AddProvider,
            Request::Ping => MessageType::Ping,
        }
    }

    /// Whether the server answers this request (`ADD_PROVIDER` has no response).
    pub fn expects_response(&self) -> bool {
        !matches!(self, Request::AddProvider { .. })
    }

    /// The protobuf message of this request.
    pub fn to_proto(&self) -> proto::Message {
        let mut m = proto::Message {
            r#type: self.message_type() as i32,
            ..Default::default()
        };
        match self {
            Request::FindNode { key }
            | Request::GetValue { key }
            | Request::GetProviders { key } => {
                m.key = key.clone();
            }
            Request::PutValue { record } => {
                m.key = record.key.clone();
                m.record = Some(record_to_proto(record));
            }
            Request::AddProvider { key, providers } => {
                m.key = key.clone();
                m.provider_peers = providers.iter().map(peer_to_proto).collect();
            }
            Request::Ping => {}
        }
        m
    }

    /// The request a protobuf message carries; at most `max_peers` providers are taken.
    pub fn from_proto(m: proto::Message, max_peers: usize) -> Result<Request, KadError> {
        let ty = MessageType::try_from(m.r#type)
            .map_err(|_| KadError::InvalidMessage("unknown type"))?;
        Ok(match ty {
            MessageType::FindNode => Request::FindNode { key: m.key },
            MessageType::GetValue => Request::GetValue { key: m.key },
            MessageType::GetProviders => Request::GetProviders { key: m.key },
            MessageType::PutValue => {
                let r = m
                    .record
                    .ok_or(KadError::InvalidMessage("PUT_VALUE without a record"))?;
                if !m.key.is_empty() && m.key != r.key {
                    return Err(KadError::InvalidMessage(
                        "PUT_VALUE key differs from its record's",
                    ));
                }
                Request::PutValue {
                    record: KadRecord {
                        key: r.key,
                        value: r.value,
                    },
                }
            }
            MessageType::AddProvider => Request::AddProvider {
                key: m.key,
                providers: peers_from_proto(m.provider_peers, max_peers),
            },
            MessageType::Ping => Request::Ping,
        })
    }
}

impl Response {
    /// The protobuf message answering a request of type `ty` for `key`.
    pub fn to_proto(&self, ty: MessageType, key: &[u8]) -> proto::Message {
        proto::Message {
            r#type: ty as i32,
            key: key.to_vec(),
            record: self.record.as_ref().map(record_to_proto),
            closer_peers: self.closer_peers.iter().map(peer_to_proto).collect(),
            provider_peers: self.provider_peers.iter().map(peer_to_proto).collect(),
            ..Default::default()
        }
    }

    /// The response a protobuf message carries, which must answer a request of type `ty`. At
    /// most `max_peers` closer peers and `max_peers` providers are taken, each with at most
    /// [`MAX_ADDRS_PER_PEER`] addresses.
    pub fn from_proto(
        m: proto::Message,
        ty: MessageType,
        max_peers: usize,
    ) -> Result<Response, KadError> {
        if m.r#type != ty as i32 {
            return Err(KadError::InvalidMessage("response of another type"));
        }
        Ok(Response {
            closer_peers: peers_from_proto(m.closer_peers, max_peers),
            provider_peers: peers_from_proto(m.provider_peers, max_peers),
            record: m.record.map(|r| KadRecord {
                key: r.key,
                value: r.value,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn field_numbers_match_the_spec() {
        let m = proto::Message {
            r#type: MessageType::GetValue as i32,
            cluster_level_raw: 1,
            key: b"k".to_vec(),
            record: Some(proto::Record {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                time_received: "t".into(),
            }),
            closer_peers: vec![proto::Peer {
                id: vec![7],
                addrs: vec![vec![8]],
                connection: 1,
            }],
            provider_peers: vec![],
        };
        let bytes = m.encode_to_vec();
        // tag = field << 3 | wire type
        assert_eq!(&bytes[..2], &[1 << 3, 1]); // type = 1 (varint)
        assert_eq!(&bytes[2..5], &[(2 << 3) | 2, 1, b'k']); // key
        assert_eq!(bytes[5], (3 << 3) | 2); // record
        let rec = &bytes[7..7 + bytes[6] as usize];
        assert_eq!(rec, &[0x0a, 1, b'k', 0x12, 1, b'v', (5 << 3) | 2, 1, b't']);
        let rest = &bytes[7 + bytes[6] as usize..];
        assert_eq!(rest[0], (8 << 3) | 2); // closerPeers
        assert_eq!(&rest[2..], &[0x0a, 1, 7, 0x12, 1, 8, 3 << 3, 1, 10 << 3, 1]);
        assert_eq!(proto::Message::decode(&*bytes).unwrap(), m);
    }

    #[test]
    fn requests_round_trip() {
        let p = KadPeer {
            id: PeerId::random(),
            addrs: vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()],
            connection: ConnectionType::Connected,
        };
        for r in [
            Request::FindNode { key: vec![1, 2] },
            Request::GetValue { key: vec![3] },
            Request::GetProviders { key: vec![4] },
            Request::PutValue {
                record: KadRecord {
                    key: vec![5],
                    value: vec![6],
                },
            },
            Request::AddProvider {
                key: vec![7],
                providers: vec![p],
            },
            Request::Ping,
        ] {
            assert_eq!(Request::from_proto(r.to_proto(), 20).unwrap(), r);
        }
    }

    #[test]
    fn decoding_is_bounded_and_skips_garbage() {
        let good = KadPeer {
            id: PeerId::random(),
            addrs: (0..50)
                .map(|i| format!("/ip4/1.2.3.4/tcp/{i}").parse().unwrap())
                .collect(),
            connection: ConnectionType::NotConnected,
        };
        let mut m = Response {
            closer_peers: vec![good.clone(); 30],
            ..Default::default()
        }
        .to_proto(MessageType::FindNode, b"x");
        // peer_to_proto caps what we send; a hostile sender sends more.
        m.closer_peers[0].addrs = (0..50).map(|_| good.addrs[0].to_vec()).collect();
        m.closer_peers[1].id = vec![0xff; 3];
        m.closer_peers[2].addrs.push(vec![0xff, 0xff]);
        let r = Response::from_proto(m.clone(), MessageType::FindNode, 20).unwrap();
        assert_eq!(r.closer_peers.len(), 20);
        assert!(r.closer_peers.iter().all(|p| p.addrs.len() <= 32));
        assert!(Response::from_proto(m, MessageType::GetValue, 20).is_err());
        let bad = proto::Message {
            r#type: 99,
            ..Default::default()
        };
        assert!(Request::from_proto(bad, 20).is_err());
        let no_record = proto::Message {
            r#type: MessageType::PutValue as i32,
            ..Default::default()
        };
        assert!(Request::from_proto(no_record, 20).is_err());
    }
}
